"""The App, driven by Debian's chromium: a CLIP model chosen in the compute_sei form.

Offline: the App server sees no cached open_clip weights and no network, so choosing
OpenAI's ViT-B/32 shows the weights warning in the form; then a tiny random open_clip model
saved as a local checkpoint folder is chosen, run at 32 px, and the App shows the new run's
sorted view. Saves a screenshot of the form; with SEI_UPDATE_DOCS=1 it replaces
docs/fiftyone_clip_form.png. Needs `apt-get install chromium` and the `playwright` package.
"""

import os
import shutil
import time
from pathlib import Path

import pytest

import fiftyone as fo

import sei_fiftyone as sfo
from sei_fiftyone.db import free_port
from sei_fiftyone.demo import load_sample

pytestmark = pytest.mark.browser
open_clip = pytest.importorskip("open_clip")
from tiny_clip import save_tiny_clip_folder  # noqa: E402

CHROMIUM = os.environ.get("SEI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "fiftyone_clip_form.png"


@pytest.fixture
def offline_app(tmp_path, monkeypatch):
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api")
    # the App server is a child process: it inherits an offline Hugging Face Hub with an empty cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    sfo.install_plugin()
    ds = load_sample(limit=60, name=f"sei-browser-clip-{int(time.time())}")
    port = free_port()
    session = fo.launch_app(ds, address="127.0.0.1", port=port, remote=True, auto=False)
    try:
        yield ds, session, f"http://127.0.0.1:{port}/datasets/{ds.name}"
    finally:
        session.close()
        ds.delete()


def _field(page, label):
    """The form row whose label is ``label`` (its nearest grid item)."""
    return page.locator(f"xpath=//p[text()={label!r}]/ancestor::div[contains(@class, 'MuiGrid-item')][1]")


def _choose(page, label, option):
    _field(page, label).get_by_role("combobox").click()
    page.get_by_role("option", name=option).click()


def test_a_clip_checkpoint_chosen_in_the_form_sorts_the_grid_by_its_score(offline_app, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    ds, session, url = offline_app
    folder = save_tiny_clip_folder(tmp_path / "tiny_clip")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, timeout=120_000)
            page.get_by_text("ground_truth").first.wait_for(timeout=120_000)
            dismiss = page.get_by_role("button", name="Dismiss")
            if dismiss.count():
                dismiss.first.click()
            page.keyboard.press("`")
            search = page.get_by_placeholder("Search operations by name...")
            search.wait_for(timeout=30_000)
            search.fill("compute_sei")
            page.get_by_text("Compute SEI (find mislabeled samples)").first.click()
            page.get_by_text("Label field").first.wait_for(timeout=30_000)

            _choose(page, "Model", "CLIP ViT-B/32, OpenAI weights (open_clip)")
            warning = page.get_by_text("These weights are not available here")
            expect(warning).to_be_visible(timeout=30_000)
            expect(page.get_by_text("create_model('ViT-B-32', pretrained='openai')", exact=False)).to_be_visible()
            shot = DOCS_SCREENSHOT if os.environ.get("SEI_UPDATE_DOCS") == "1" else tmp_path / "clip_form.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000

            _choose(page, "Model", "A local open_clip checkpoint (model folder, or weights file + architecture)")
            expect(warning).to_be_hidden(timeout=30_000)
            _field(page, "Checkpoint").locator("input").fill(folder)
            _field(page, "Image size (pixels)").locator("input").fill("32")
            _field(page, "Epochs").locator("input").fill("3")
            _field(page, "Brain key").locator("input").fill("clip")
            page.wait_for_timeout(1_500)  # the form re-resolves with the typed values
            page.get_by_role("button", name="Execute").click()

            done = page.get_by_role("button", name="Done")
            done.wait_for(timeout=120_000)
            for _ in range(5):  # close the finished run's progress dialog
                if not done.is_visible():
                    break
                done.click(force=True)
                page.wait_for_timeout(1_000)
            expect(page.get_by_text("clip_mislabeled").first).to_be_visible(timeout=60_000)
        finally:
            browser.close()

    ds.reload()
    config = ds.get_brain_info("clip").config
    assert (config.model, config.mode, config.epochs) == (folder, "frozen", 3)
    assert config.train_kwargs["image_size"] == 32
    # what the App shows is the new run's sorted view: flagged samples, lowest score first
    stages = [type(s).__name__ for s in session.view._stages]
    assert "SortBy" in stages and "Match" in stages
    assert session.view.values("id") == sfo.sorted_view(ds, "clip").values("id")
    scores = session.view.values("clip")
    assert scores == sorted(scores) and len(scores) > 0
