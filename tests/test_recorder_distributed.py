"""Under torch.distributed the recorder merges ranks: two or three gloo CPU processes, each seeing
a shard (with DistributedSampler-style padding repeats), end with the single-process result."""

import socket

import numpy as np
import pytest

from dynamics import planted_history

torch = pytest.importorskip("torch")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out_dir, top_k):
    import torch.distributed as dist

    import sei

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    hist, labels, _, _ = planted_history(epochs=6)
    n = labels.size
    rec = sei.SEIRecorder(n, hist.shape[2], max_epochs=6, extra_scores="mean_logp", top_k=top_k)
    for t in range(6):
        order = np.random.default_rng(t).permutation(n)
        padded = np.r_[order, order[: (-n) % world]]  # DistributedSampler pads with repeats
        shard = padded[rank::world]
        for chunk in np.array_split(shard, 4):
            rec.update(torch.from_numpy(chunk), torch.from_numpy(hist[t, chunk]), torch.from_numpy(labels[chunk]))
        rec.end_epoch()
    if rank == 0:
        rec.save(f"{out_dir}/rank0.npz")
    dist.destroy_process_group()


@pytest.mark.parametrize("world,top_k", [(2, "auto"), (3, 2)])  # all classes kept, and the top 2 only
def test_gloo_ranks_merge_to_the_single_process_result(tmp_path, world, top_k):
    import torch.multiprocessing as mp

    import sei

    mp.spawn(_worker, args=(world, _free_port(), str(tmp_path), top_k), nprocs=world, join=True)
    merged = sei.SEIRecorder.load(tmp_path / "rank0.npz")
    hist, labels, _, _ = planted_history(epochs=6)
    ref = sei.SEIRecorder.from_history(hist, labels, top_k=top_k)
    assert merged.top_k == ref.top_k
    for a, b in zip(merged.latest_top(), ref.latest_top()):
        np.testing.assert_allclose(a, b)
    assert np.all(merged._total["epochs"] == 6)  # every sample scored once per epoch
    for name in ("sei", "sei_mean", "ei", "se_last", "se_mid", "aum_prob", "mistakenness", "mean_logp"):
        np.testing.assert_allclose(merged.scores(name), ref.scores(name), atol=1e-9, err_msg=name)
