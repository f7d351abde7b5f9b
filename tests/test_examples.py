"""The cleanlab-workflow examples run end to end and print what they promise."""

from pathlib import Path

import pytest

import forked

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(name):
    """``python examples/<name>``, forked from the tests' preloaded server (``forked``)."""
    p = forked.run(path=EXAMPLES / name, timeout=600)
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
