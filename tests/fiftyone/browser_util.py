"""What the browser tests share: Debian's chromium driven by Playwright against the App on
127.0.0.1 (never `playwright install`), the operator browser and the form's rows.

One App server serves every browser test of a pytest process (started at first use, stopped by
:func:`shutdown` when pytest unconfigures): each test points the session at its own dataset. The
server starts with what any of the tests needs of its environment (see :func:`app_root`): an
offline Hugging Face Hub with an empty cache, the stand-in zoo of ``tiny_zoo``, path roots under
one temporary folder, one OpenBLAS thread.

``SEI_UPDATE_DOCS=1`` makes :func:`screenshot` replace the picture in ``docs/``;
``SEI_DEBUG_SHOT=<path>`` saves the page when a test fails inside :func:`app_page`.
"""

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import pytest

import fiftyone as fo

import sei_fiftyone as sfo
from sei_fiftyone.db import free_port
from sei_fiftyone.demo import load_sample

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tiny_zoo  # noqa: E402

CHROMIUM = os.environ.get("SEI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
DOCS = Path(__file__).resolve().parents[2] / "docs"
UPDATE_DOCS = os.environ.get("SEI_UPDATE_DOCS") == "1"  # the pictures in docs/ are made from larger samples

_SHARED = {}  # "root", "zoo", "session", "port": made at first use


def app_root():
    """The shared App server's folder: its path root (``SEI_FIFTYONE_PATH_ROOTS``; a checkpoint a
    test types into a form must lie under it), its empty Hugging Face cache (``hub/``) and the
    stand-in zoo (``zoo/``, see :func:`zoo_paths`)."""
    if "root" not in _SHARED:
        root = os.path.realpath(tempfile.mkdtemp(prefix="sei-app-"))
        _SHARED["zoo"] = tiny_zoo.register(os.path.join(root, "zoo"))
        _SHARED["root"] = Path(root)
    return _SHARED["root"]


def zoo_paths():
    """``(manifest, zoo_dir)`` of the stand-in zoo the shared App server sees."""
    app_root()
    return _SHARED["zoo"]


def _server():
    """The shared App session (a FiftyOne server child process on 127.0.0.1)."""
    if "session" not in _SHARED:
        root = app_root()
        manifest, zoo_dir = zoo_paths()
        env = {
            "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(root / "hub"),
            "SEI_FIFTYONE_PATH_ROOTS": str(root),  # the App takes paths under its roots only
            "FIFTYONE_MODEL_ZOO_MANIFEST_PATHS": manifest, "FIFTYONE_MODEL_ZOO_DIR": zoo_dir,
            "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", ""),  # the server imports tiny_zoo
            # OpenBLAS threads spinning against other processes on a busy 2-core machine make the
            # server's K-fold fits many times slower; one thread is enough here
            "OPENBLAS_NUM_THREADS": "1",
        }
        # the server is a child process: it takes the environment at its start (restored after)
        with mock.patch.dict(os.environ, env):
            port = free_port()
            _SHARED["session"] = fo.launch_app(address="127.0.0.1", port=port, remote=True, auto=False)
            _SHARED["port"] = port
    return _SHARED["session"], _SHARED["port"]


def shutdown():
    """Close the shared App server and remove its folder (pytest_unconfigure of the FiftyOne conftest)."""
    session = _SHARED.pop("session", None)
    if session is not None:
        with contextlib.suppress(Exception):
            session.close()
    root = _SHARED.pop("root", None)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


def require_browser():
    """Skip without chromium or playwright; install the plugin where the App finds it."""
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api")
    sfo.install_plugin()


@contextlib.contextmanager
def served(ds):
    """The shared App on ``ds`` at 127.0.0.1: ``(session, url)``; ``ds`` is deleted at the end."""
    session, port = _server()
    deadline = time.time() + 60
    while True:  # a session whose first subscription failed (a busy server still starting) retries in 10 s
        try:
            session.dataset = ds
            break
        except RuntimeError as e:
            if "not connected" not in str(e) or time.time() > deadline:
                raise
            time.sleep(0.5)
    try:
        yield session, f"http://127.0.0.1:{port}/datasets/{ds.name}"
    finally:
        with contextlib.suppress(Exception):
            session.clear_dataset()
        ds.delete()


@contextlib.contextmanager
def served_sample(name, *, limit=200, prepare=None):
    """The browser tests' App: skip without a browser (:func:`require_browser`), load the bundled
    sample's first ``limit`` images as dataset ``<name>-<time>``, ``prepare(ds)`` (e.g. an SEI run),
    then :func:`served`: ``(ds, session, url)``."""
    require_browser()
    ds = load_sample(limit=limit, name=f"{name}-{int(time.time())}")
    if prepare is not None:
        prepare(ds)
    with served(ds) as (session, url):
        yield ds, session, url


@contextlib.contextmanager
def app_page(url, width=1400, height=900):
    """A chromium page on the App at ``url``, loaded and with FiftyOne's notices dismissed.

    Chromium is started for each page: Playwright's sync API marks its event loop as running in
    this thread between calls, so one kept open across tests would break the tests' own asyncio
    (FiftyOne's ``execute_operator`` returns a Task instead of running)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url, timeout=120_000)
            page.get_by_text("ground_truth").first.wait_for(timeout=120_000)
            dismiss = page.get_by_role("button", name="Dismiss")
            if dismiss.count():
                dismiss.first.click()
            try:
                yield page
            except Exception:
                if os.environ.get("SEI_DEBUG_SHOT"):
                    page.screenshot(path=os.environ["SEI_DEBUG_SHOT"])
                raise
        finally:
            browser.close()


def open_operator(page, search, label, ready):
    """Open the operator browser (`), find ``search``, click the operator ``label`` and wait
    for the text ``ready`` in its form."""
    page.keyboard.press("`")
    box = page.get_by_placeholder("Search operations by name...")
    box.wait_for(timeout=30_000)
    box.fill(search)
    page.get_by_text(label).first.click()
    page.get_by_text(ready).first.wait_for(timeout=30_000)


def execute(page, timeout=120_000):
    """Click the operator form's Execute once the App has enabled it (the form resolves its inputs
    on the server first, which a loaded machine can take well past Playwright's 30 s default)."""
    from playwright.sync_api import expect

    button = page.get_by_role("button", name="Execute")
    expect(button).to_be_enabled(timeout=timeout)
    button.click(timeout=timeout)


def form_row(page, label):
    """The form row whose label is ``label`` (its nearest grid item)."""
    return page.locator(f"xpath=//p[text()={label!r}]/ancestor::div[contains(@class, 'MuiGrid-item')][1]")


def choose(page, label, option, exact=False):
    """Pick ``option`` in the form's dropdown labelled ``label``."""
    form_row(page, label).get_by_role("combobox").click()
    page.get_by_role("option", name=option, exact=exact).click()


def close_progress(page, timeout):
    """Wait for a run's progress dialog to finish (up to ``timeout`` ms), then close it."""
    from playwright.sync_api import expect

    done = page.get_by_role("button", name="Done")
    done.wait_for(timeout=timeout)
    page.wait_for_timeout(1_000)
    for _ in range(5):
        if not done.is_visible():
            break
        done.click(force=True)
        page.wait_for_timeout(1_000)
    expect(done).to_be_hidden(timeout=10_000)


def screenshot(page, tmp_path, docs_name):
    """Save the page: into ``docs/<docs_name>`` with SEI_UPDATE_DOCS=1, else under ``tmp_path``."""
    shot = DOCS / docs_name if UPDATE_DOCS else tmp_path / docs_name
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    return shot
