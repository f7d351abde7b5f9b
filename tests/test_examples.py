"""The cleanlab-workflow examples run end to end and print what they promise."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(name):
    p = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def test_cleanlab_quickstart():
    out = _run("cleanlab_quickstart.py")
    assert "confident_learning" in out and "aum_prob_knn: precision" in out


def test_active_relabeling_example():
    pytest.importorskip("hnswlib")
    out = _run("active_relabeling.py")
    assert "round 3" in out and "relabelled" in out


def test_shard_merge_example():
    out = _run("shard_merge.py")
    assert "3 shards merged: scores equal to one recorder: True" in out
