"""The App, driven by Debian's chromium: compare an SEI run with confident learning from the
operator browser, and see the samples where the two disagree.

The run is made in Python first (EfficientNet-Lite0 features of 200 real CIFAR-10 images with
CIFAR-10N human labels, stored in 'lite0'); the comparison is chosen and executed in the App
with 'clean' as the trusted labels. Saves a screenshot; with SEI_UPDATE_DOCS=1 it replaces
docs/fiftyone_compare_cl.png. Needs `apt-get install chromium` and the `playwright` package.
"""

import os
import shutil
import time
from pathlib import Path

import pytest

import fiftyone as fo

import sei_fiftyone as sfo
from sei_fiftyone.compare import get_comparison
from sei_fiftyone.db import free_port
from sei_fiftyone.demo import load_sample

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("SEI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "fiftyone_compare_cl.png"


@pytest.fixture
def app(monkeypatch):
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api")
    # The App server is a child process. On a busy 2-core machine OpenBLAS threads spinning
    # against other processes make the K-fold fits many times slower; one thread is enough here.
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    sfo.install_plugin()
    ds = load_sample(limit=200, name=f"sei-browser-cl-{int(time.time())}")
    sfo.compute_sei(ds, "ground_truth", model="efficientnet-lite0", embeddings_field="lite0", image_size=64,
                    epochs=4, progress=False)
    port = free_port()
    session = fo.launch_app(ds, address="127.0.0.1", port=port, remote=True, auto=False)
    try:
        yield ds, session, f"http://127.0.0.1:{port}/datasets/{ds.name}"
    finally:
        session.close()
        ds.delete()


def _choose(page, label, option):
    """Pick ``option`` in the form's dropdown labelled ``label``."""
    row = page.locator(f"xpath=//p[text()={label!r}]/ancestor::div[contains(@class, 'MuiGrid-item')][1]")
    row.get_by_role("combobox").click()
    page.get_by_role("option", name=option, exact=True).click()


def test_compare_from_the_operator_browser_opens_the_disagreements(app, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    ds, session, url = app
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(url, timeout=120_000)
            page.get_by_text("ground_truth").first.wait_for(timeout=120_000)
            dismiss = page.get_by_role("button", name="Dismiss")
            if dismiss.count():
                dismiss.first.click()
            page.keyboard.press("`")  # the operator browser
            search = page.get_by_placeholder("Search operations by name...")
            search.wait_for(timeout=30_000)
            search.fill("confident")
            page.get_by_text("Compare SEI run with confident learning").first.click()
            page.get_by_text("Trusted label field (optional)").first.wait_for(timeout=30_000)
            _choose(page, "Trusted label field (optional)", "clean")
            page.get_by_role("button", name="Execute").click()

            close = page.get_by_role("button", name="Close")  # the operator's output
            close.wait_for(timeout=120_000)
            ds.reload()  # the App's server wrote the comparison
            out = get_comparison(ds, "sei")
            cl = out["metrics"]["cl"]
            expect(page.get_by_text("Confident learning against the trusted labels")).to_be_visible()
            expect(page.get_by_text(f"precision {cl['precision']:.3f}, recall {cl['recall']:.3f}")).to_be_visible()
            close.click()
            expect(close).to_be_hidden(timeout=10_000)
            expect(page.get_by_text(f"{out['n_disagree']} samples", exact=True)).to_be_visible(timeout=30_000)
            for field in ("sei_mislabeled", "sei_cl_mislabeled"):  # show both flags on the grid's tiles
                page.locator(f'[data-cy="checkbox-{field}"]').click()
            grid = page.locator('[data-cy="fo-grid"]')
            sei_tags, cl_tags = (grid.locator(f'[data-cy="tag-{f}"]') for f in ("sei_mislabeled", "sei_cl_mislabeled"))
            expect(cl_tags.first).to_be_visible(timeout=30_000)
            page.wait_for_timeout(2_000)  # let the grid render the tiles
            shown = list(zip(sei_tags.all_inner_texts(), cl_tags.all_inner_texts()))
            assert shown and all(a != b for a, b in shown), shown  # every tile: flagged by one detector only
            shot = DOCS_SCREENSHOT if os.environ.get("SEI_UPDATE_DOCS") == "1" else tmp_path / "compare_cl.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
        except Exception:
            if os.environ.get("SEI_DEBUG_SHOT"):
                page.screenshot(path=os.environ["SEI_DEBUG_SHOT"])
            raise
        finally:
            browser.close()

    ds.reload()
    out = get_comparison(ds, "sei")
    assert out["trusted_label_field"] == "clean" and set(out["metrics"]) == {"sei", "cl"}
    assert ds.list_runs() == ["sei_cl"] and "sei_cl_disagreements" in ds.list_saved_views()
    # The App's view is the saved view of the disagreements: the session mirrors the App's state.
    expected = ds.load_saved_view("sei_cl_disagreements")
    assert session.view.values("id") == expected.values("id") and len(expected) == out["n_disagree"] > 0
    sei, cl = session.view.values(["sei_mislabeled", "sei_cl_mislabeled"])
    assert all(a != b for a, b in zip(sei, cl))
