"""Fixtures for the FiftyOne adapter: a real mongod on a free 127.0.0.1 port, no mocks.

mongod must run before ``import fiftyone`` (FiftyOne reads FIFTYONE_DATABASE_URI once),
and test modules import fiftyone at collection time, so it starts when this conftest is
loaded and stops when pytest unconfigures.
"""

import os
import shutil
import sys
import tempfile
import pytest

import importlib.util

if importlib.util.find_spec("fiftyone") is None:  # importing it here would read its config too early
    pytest.skip("the FiftyOne extra is not installed", allow_module_level=True)

from sei_fiftyone.db import temporary_mongod  # noqa: E402  (does not import fiftyone)

_TMP = tempfile.mkdtemp(prefix="sei-fo-tests-")
_MONGOD = temporary_mongod()
_URI = _MONGOD.__enter__()
os.environ["FIFTYONE_DATABASE_URI"] = _URI
os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
os.environ["FIFTYONE_PLUGINS_DIR"] = os.path.join(_TMP, "plugins")
os.environ["FIFTYONE_SHOW_PROGRESS_BARS"] = "false"
os.environ.setdefault("FIFTYONE_DEFAULT_DATASET_DIR", os.path.join(_TMP, "datasets"))
if "fiftyone" in sys.modules:  # imported by an earlier test module: point its config here too
    import fiftyone as _fo

    _fo.config.database_uri = _URI
    _fo.config.do_not_track = True
    _fo.config.plugins_dir = os.environ["FIFTYONE_PLUGINS_DIR"]
    _fo.config.show_progress_bars = False


def pytest_unconfigure(config):
    browser_util = sys.modules.get("browser_util")
    if browser_util is not None:  # the browser tests' shared App server
        browser_util.shutdown()
    try:
        import fiftyone.core.odm.database as food

        food._disconnect()
    except Exception:
        pass
    _MONGOD.__exit__(None, None, None)
    shutil.rmtree(_TMP, ignore_errors=True)


from sei_fo_testutil import build_dataset  # noqa: E402


@pytest.fixture
def dataset(tmp_path):
    ds = build_dataset(str(tmp_path / "images"))
    yield ds
    ds.delete()


@pytest.fixture
def ds(base):
    """A clone of the module's ``base`` dataset (a module-scoped fixture of the module that asks
    for ``ds``), deleted after the test: each test may change it."""
    clone = base.clone()
    yield clone
    clone.delete()


@pytest.fixture
def plugins_dir():
    return os.environ["FIFTYONE_PLUGINS_DIR"]
