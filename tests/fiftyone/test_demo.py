"""`python -m sei_fiftyone demo`: no MongoDB notice on the first screen, a last line that says
how to open the App on the result, and `--app` serving it on 127.0.0.1 until Ctrl+C."""

import os
import subprocess
import sys

import pytest

import fiftyone as fo

from sei_fiftyone import demo
from sei_fiftyone.__main__ import main as cli_main
from sei_fiftyone.db import DATABASE_VALIDATION_ENV

NOTICE = "oldest supported major version of MongoDB"
CONNECT = "import fiftyone as fo; fo.list_datasets()"


def _connect_output(code):
    env = {k: v for k, v in os.environ.items() if k != DATABASE_VALIDATION_ENV}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr


def test_skipping_database_validation_removes_fiftyones_mongodb_notice():
    # the tests' mongod is FiftyOne's bundled MongoDB 6.0: FiftyOne's own check logs the notice
    assert NOTICE in _connect_output(CONNECT)
    quiet = _connect_output("from sei_fiftyone.db import skip_database_validation; "
                            f"assert skip_database_validation(); {CONNECT}")
    assert NOTICE not in quiet


@pytest.fixture
def demo_env(monkeypatch):
    monkeypatch.delenv(DATABASE_VALIDATION_ENV, raising=False)
    monkeypatch.setattr(fo.config, "database_validation", fo.config.database_validation)
    yield
    if fo.dataset_exists(demo.DATASET_NAME):
        fo.delete_dataset(demo.DATASET_NAME)


def test_the_demo_ends_saying_how_to_open_the_app(demo_env, capsys):
    assert cli_main(["demo", "--limit", "40", "--epochs", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("Loaded 40 CIFAR-10N images")
    assert any(line.startswith("phases: read ") for line in lines)
    assert any(line.startswith("Comparison skipped: 40 samples") for line in lines)  # too few for 5 folds
    assert lines[-1].startswith(f"Open the App on the result: fiftyone app launch {demo.DATASET_NAME}")
    assert "--app" in lines[-1] and "sei_most_likely_mislabeled" in lines[-1]
    assert os.environ[DATABASE_VALIDATION_ENV] == "false" and fo.config.database_validation is False
    dataset = fo.load_dataset(demo.DATASET_NAME)
    assert dataset.persistent  # still there for `fiftyone app launch`
    assert "private database" in demo.how_to_open(demo.DATASET_NAME, private_db=True)


def test_a_user_setting_of_database_validation_is_kept(monkeypatch):
    from sei_fiftyone.db import skip_database_validation

    monkeypatch.setenv(DATABASE_VALIDATION_ENV, "true")
    monkeypatch.setattr(fo.config, "database_validation", True)
    assert skip_database_validation() is False and fo.config.database_validation is True


class _Session:
    """What `--app` needs of fo.launch_app's session; wait() is where the user presses Ctrl+C."""

    def __init__(self, calls):
        self.calls = calls

    def wait(self, wait=3):
        self.calls.append(("wait", wait))
        raise KeyboardInterrupt

    def close(self):
        self.calls.append(("close",))


def test_app_serves_the_sorted_view_on_localhost_until_ctrl_c(dataset, monkeypatch, capsys):
    import sei_fiftyone as sfo

    sfo.compute_sei(dataset, "ground_truth", embeddings_field="embedding", epochs=2)
    calls = []

    def launch_app(samples, view=None, **kwargs):
        calls.append(("launch", samples.name, view, kwargs))
        return _Session(calls)

    monkeypatch.setattr(fo, "launch_app", launch_app)
    assert demo.open_app(dataset, port=5999) == 0
    (_, name, view, kwargs), wait, close = calls
    assert name == dataset.name and kwargs["address"] == "127.0.0.1" and kwargs["port"] == 5999
    assert view.values("id") == sfo.sorted_view(dataset).values("id")
    assert wait == ("wait", -1) and close == ("close",)
    out = capsys.readouterr().out
    assert "App: http://127.0.0.1:5999/" in out and "Ctrl+C" in out and "App stopped" in out


def test_the_demo_compares_sei_confident_learning_and_mistakenness(demo_env, capsys):
    assert cli_main(["demo", "--limit", "300", "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    from sei_fiftyone.compare import get_comparison

    found = get_comparison(fo.load_dataset(demo.DATASET_NAME), "sei")
    for key, name in (("sei", "SEI"), ("cl", "confident learning"), ("mistakenness", "mistakenness (Brain)")):
        m = found["metrics"][key]
        assert f"{m['precision']:>11.3f}{m['recall']:>8.3f}{m['f1']:>7.3f}{m['auroc']:>7.3f}" in out
        assert f"\n{name:<24}" in out
