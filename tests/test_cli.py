"""python -m sei train: help, embeddings file, folder-per-class images, outputs."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import forked

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, fresh=False):
    """``python -m sei *args`` in ROOT; forked from the tests' preloaded server (``forked``: the
    same module run as ``__main__``, without a fresh interpreter's 4 s of imports) unless ``fresh``."""
    if fresh:
        return subprocess.run([sys.executable, "-m", "sei", *map(str, args)], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
    return forked.run(module="sei", args=args, cwd=ROOT, timeout=300)


def test_train_help_lists_the_main_options():
    p = run_cli("train", "--help", fresh=True)
    assert p.returncode == 0
    for opt in ("--images", "--embeddings", "--labels", "--model", "--mode", "--epochs", "--output",
                "--lr-schedule", "--logit-scale", "--record", "--no-aux", "--resume", "--head"):
        assert opt in p.stdout


def test_no_command_prints_usage():
    p = run_cli(fresh=True)
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


# ----------------------------------------------------------------------------- issue 13: clear errors, exit 2
def _emb_files(tmp_path, labels=None, x=None):
    rng = np.random.default_rng(0)
    y = np.arange(30) % 3 if labels is None else labels
    x = rng.normal(size=(len(y), 4)).astype(np.float32) if x is None else x
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path / "x.npy", tmp_path / "y.npy"


def _assert_clean_error(p, *needles):
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "error: " in p.stderr
    for s in needles:
        assert s in p.stderr, p.stderr[-2000:]


def test_non_integral_float_labels_are_refused_not_truncated(tmp_path):
    x, y = _emb_files(tmp_path, labels=np.array([0, 1, 1.5, 2] * 5))
    p = run_cli("train", "--embeddings", x, "--labels", y, "--epochs", 1, "--output", tmp_path / "o", "--quiet")
    _assert_clean_error(p, "1.5", "whole number")
    (tmp_path / "y.txt").write_text("0\n1\n2.5\n" * 10)
    p = run_cli("train", "--embeddings", _emb_files(tmp_path)[0], "--labels", tmp_path / "y.txt", "--epochs", 1,
                "--output", tmp_path / "o", "--quiet")
    _assert_clean_error(p, "2.5")


def test_class_missing_from_class_names_is_a_clear_error(tmp_path):
    (tmp_path / "imgs").mkdir()
    for i in range(4):
        (tmp_path / "imgs" / f"{i}.png").write_bytes(b"x")
    (tmp_path / "labels.csv").write_text("path,label\n0.png,cat\n1.png,dog\n2.png,cat\n3.png,bird\n")
    p = run_cli("train", "--images", tmp_path / "imgs", "--labels", tmp_path / "labels.csv", "--class-names",
                "cat,bird", "--epochs", 1, "--output", tmp_path / "o", "--quiet")
    _assert_clean_error(p, "dog", "--class-names")


@pytest.mark.parametrize("case", ["batch_size_0", "all_nan", "missing_file", "corrupt_checkpoint", "too_few_names"])
def test_cli_errors_exit_2_with_a_message_and_no_traceback(tmp_path, case):
    x, y = _emb_files(tmp_path, x=np.full((30, 4), np.nan, np.float32) if case == "all_nan" else None)
    out = tmp_path / "o"
    args = ["train", "--embeddings", x, "--labels", y, "--epochs", 1, "--output", out, "--quiet"]
    needle = {"batch_size_0": "batch_size", "all_nan": "finite", "missing_file": "nope.npy",
              "corrupt_checkpoint": "checkpoint.pt", "too_few_names": "class-names"}[case]
    if case == "batch_size_0":
        args += ["--batch-size", 0]
    elif case == "missing_file":
        args[2] = tmp_path / "nope.npy"
    elif case == "corrupt_checkpoint":
        (out / "checkpoint").mkdir(parents=True)
        (out / "checkpoint" / "checkpoint.pt").write_bytes(b"garbage")
        args += ["--resume"]
    elif case == "too_few_names":
        args += ["--class-names", "a,b"]
    _assert_clean_error(run_cli(*args), needle)
