"""sei.train under torchrun with 2 CPU processes (gloo): sharded epochs, recorder merged across ranks."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent(r"""
    import json, os, sys
    import numpy as np
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[2])
    import sei
    from sei.engine.training import train

    out = sys.argv[1]
    runs = {}
    for mode in sys.argv[3].split(","):  # one torchrun, one process group, each mode's run in turn
        rng = np.random.default_rng(0)
        n, k = 203, 3  # odd N: shards are padded, padded repeats must not be recorded twice
        y = rng.integers(0, k, n)
        noisy, _ = sei.symmetric_noise(y, 0.2, num_classes=k, seed=0)
        records = []
        def on_record(epoch, ids, logits, labels):
            records.append((epoch, ids.tolist(), logits.tolist(), labels.tolist()))
        if mode == "embeddings":
            x = (np.eye(k)[y] * 2 + rng.normal(size=(n, k))).astype(np.float32)
            res = train(x, noisy, class_names=["a", "b", "c"], epochs=3, batch_size=16, lr=0.05, progress=False,
                        on_record=on_record, aux_class=True)
        else:
            import open_clip
            torch.manual_seed(0)
            clip = open_clip.CLIP(embed_dim=16, vision_cfg=open_clip.CLIPVisionCfg(layers=1, width=16, head_width=8,
                                  patch_size=8, image_size=16),
                                  text_cfg=open_clip.CLIPTextCfg(context_length=77, vocab_size=49408, width=16,
                                  heads=2, layers=1))
            n = 21
            noisy = noisy[:n]
            imgs = rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8)
            res = train(imgs, noisy, class_names=["a", "b", "c"], model=clip,
                        tokenizer=open_clip.get_tokenizer("ViT-B-32"), mode="finetune", epochs=2, batch_size=4,
                        progress=False, on_record=on_record, aux_class=False)
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, records)
        runs[mode] = (n, res.recorder, gathered)
    rank, world = dist.get_rank(), dist.get_world_size()
    dist.barrier()
    dist.destroy_process_group()  # the reference recorders below must not all-reduce
    if rank == 0:
        results = {}
        for mode, (n, merged, gathered) in runs.items():
            # Rebuild the recorder from the probabilities every rank fed, in one process.
            ref = sei.SEIRecorder(n, merged.num_classes, max_epochs=merged.max_epochs)
            per_epoch = {}
            for rank_records in gathered:
                for epoch, ids, logits, labels in rank_records:
                    per_epoch.setdefault(epoch, []).append((ids, logits, labels))
            counts = {}
            for epoch in sorted(per_epoch):
                ids_all = []
                for ids, logits, labels in per_epoch[epoch]:
                    ref.update(np.array(ids, dtype=np.int64), np.array(logits), np.array(labels), from_logits=True)
                    ids_all += ids
                ref.end_epoch()
                counts[epoch] = np.bincount(ids_all, minlength=n).tolist()
            results[mode] = {"merged": merged.scores("sei").tolist(), "gathered": ref.scores("sei").tolist(),
                             "counts": counts, "world": world,
                             "rank_sizes": [sum(len(r[1]) for r in g if r[0] == 0) for g in gathered]}
        json.dump(results, open(out, "w"))
""")
MODES = ("embeddings", "finetune")


@pytest.fixture(scope="module")
def torchrun_results(tmp_path_factory):
    """Both modes' runs in one ``torchrun --nproc_per_node=2`` (each process imports torch once)."""
    tmp_path = tmp_path_factory.mktemp("ddp")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "out.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(script), str(out), str(ROOT), ",".join(MODES)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("mode", MODES)
def test_ddp_two_gloo_processes_merge_equals_gathered(torchrun_results, mode):
    r = torchrun_results[mode]
    assert r["world"] == 2
    # each rank trained on its own shard ...
    assert all(s > 0 for s in r["rank_sizes"])
    # ... every sample was recorded exactly once per epoch over the two ranks ...
    for counts in r["counts"].values():
        assert set(counts) == {1}
    # ... and the all-reduced recorder equals one fed the gathered probabilities.
    np.testing.assert_allclose(np.array(r["merged"], float), np.array(r["gathered"], float), rtol=1e-5, atol=1e-6)
