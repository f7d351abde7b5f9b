"""The App, driven by Debian's chromium: run compute_sei from the operator browser.

Needs `apt-get install chromium` and the `playwright` package (never `playwright
install`). The App server listens on 127.0.0.1 only and stops with the session.
Saves a screenshot; with SEI_UPDATE_DOCS=1 it replaces docs/fiftyone_sorted_view.png.
"""

import os
import shutil
import time
from pathlib import Path

import pytest

import fiftyone as fo

import sei_fiftyone as sfo
from sei_fiftyone.demo import load_sample
from sei_fiftyone.db import free_port

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("SEI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "fiftyone_sorted_view.png"


@pytest.fixture
def app(tmp_path):
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api")
    sfo.install_plugin()
    # 200 real CIFAR-10 images with CIFAR-10N 'worse' human labels, from the bundled sample
    ds = load_sample(limit=200, name=f"sei-browser-{int(time.time())}")
    port = free_port()
    session = fo.launch_app(ds, address="127.0.0.1", port=port, remote=True, auto=False)
    try:
        yield ds, session, f"http://127.0.0.1:{port}/datasets/{ds.name}"
    finally:
        session.close()
        ds.delete()


def test_compute_sei_from_the_operator_browser_shows_the_sorted_view(app, tmp_path):
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
            search.fill("compute_sei")
            page.get_by_text("Compute SEI (find mislabeled samples)").first.click()
            page.get_by_text("Label field").first.wait_for(timeout=30_000)
            epochs = page.locator("xpath=//p[text()='Epochs']/ancestor::div[contains(@class, 'MuiGrid-item')][1]")
            epochs.locator("input").fill("8")  # typed into the form
            page.get_by_role("button", name="Execute").click()

            done = page.get_by_role("button", name="Done")
            done.wait_for(timeout=240_000)
            page.wait_for_timeout(1_000)
            for _ in range(5):  # close the finished run's progress dialog
                if not done.is_visible():
                    break
                done.click(force=True)
                page.wait_for_timeout(1_000)
            expect(done).to_be_hidden(timeout=10_000)
            expect(page.get_by_text("sei_mislabeled").first).to_be_visible(timeout=60_000)
            page.wait_for_timeout(4_000)  # let the grid render the sorted view
            shot = DOCS_SCREENSHOT if os.environ.get("SEI_UPDATE_DOCS") == "1" else tmp_path / "sorted_view.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()

    ds.reload()
    assert ds.list_brain_runs() == ["sei"]
    assert {"sei", "sei_mislabeled", "sei_suggestion"} <= set(ds.get_field_schema())
    assert ds.get_brain_info("sei").config.epochs == 8
    assert "sei_most_likely_mislabeled" in ds.list_saved_views()
    # The App's view is the sorted view: the session mirrors the App's state.
    stages = [type(s).__name__ for s in (session.view._stages if session.view is not None else [])]
    assert "SortBy" in stages and "Match" in stages
    expected = sfo.sorted_view(ds).values("id")
    assert session.view.values("id") == expected
