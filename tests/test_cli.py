"""python -m sei train: help, embeddings file, folder-per-class images, outputs."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sei", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_train_help_lists_the_main_options():
    p = run_cli("train", "--help")
    assert p.returncode == 0
    for opt in ("--images", "--embeddings", "--labels", "--model", "--mode", "--epochs", "--output",
                "--lr-schedule", "--logit-scale", "--record", "--no-aux", "--resume", "--head"):
        assert opt in p.stdout


def test_no_command_prints_usage():
    p = run_cli()
    assert p.returncode == 2 and "train" in p.stdout


@pytest.mark.parametrize("head", ["prompt", "linear"])
def test_train_on_embeddings_file_writes_scores_recorder_summary(tmp_path, head):
    import sei

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 240)
    x = (np.eye(3)[y] * 5 + rng.normal(size=(240, 3))).astype(np.float32)
    noisy, is_bad = sei.symmetric_noise(y, 0.15, num_classes=3, seed=0)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", noisy)
    out = tmp_path / "run"
    p = run_cli("train", "--embeddings", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--class-names",
                "a,b,c", "--epochs", 15, "--lr", 0.1, "--threshold", "zero", "--output", out, "--quiet",
                "--head", head)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert len(rows) == 240 and rows[0]["label_name"] in "abc"
    flagged = np.array([r["mislabeled"] == "1" for r in rows])
    assert is_bad[flagged].mean() > 0.6
    rec = sei.SEIRecorder.load(out / "recorder.npz")
    assert rec.num_epochs == 15
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_samples"] == 240 and len(summary["train_loss"]) == 15
    assert (out / "checkpoint" / "checkpoint.pt").exists()


def test_train_on_folder_per_class_images(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(["red", "green"]):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(6):
            a = rng.integers(0, 60, (16, 16, 3))
            a[..., k] += 190
            Image.fromarray(a.astype(np.uint8)).save(tmp_path / "data" / name / f"{i}.png")
    (tmp_path / "data" / "red" / "broken.png").write_bytes(b"nope")
    out = tmp_path / "run"
    p = run_cli("train", "--images", tmp_path / "data", "--epochs", 2, "--image-size", 32, "--output", out,
                "--quiet", "--no-aux")
    assert p.returncode == 0, p.stderr[-2000:]
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert len(rows) == 13
    broken = [r for r in rows if r["path"].endswith("broken.png")]
    assert broken[0]["skipped"] == "1" and broken[0]["score"] == "" and broken[0]["mislabeled"] == "0"
    assert {r["label_name"] for r in rows} == {"red", "green"}


def test_cli_module_and_package_import_without_torch():
    code = "import sys, sei, sei.__main__ as m; m.build_parser(); assert 'torch' not in sys.modules, 'torch imported'"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
