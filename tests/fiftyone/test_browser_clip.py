"""The App, driven by Debian's chromium: a CLIP model chosen in the compute_sei form.

Offline: the shared App server of browser_util sees no cached open_clip weights and no network, so choosing
OpenAI's ViT-B/32 shows the weights warning in the form; then a tiny random open_clip model
saved as a local checkpoint folder is chosen, run at 32 px, and the App shows the new run's
sorted view. Saves a screenshot of the form; with SEI_UPDATE_DOCS=1 it replaces
docs/fiftyone_clip_form.png. Needs `apt-get install chromium` and the `playwright` package.
"""

import pytest

import sei_fiftyone as sfo

from browser_util import (app_page, app_root, execute, choose, close_progress, form_row, open_operator, screenshot,
                          served_sample)

pytestmark = pytest.mark.browser
open_clip = pytest.importorskip("open_clip")
from tiny_clip import save_tiny_clip_folder  # noqa: E402


@pytest.fixture
def offline_app():
    # the shared App server inherited an offline Hugging Face Hub with an empty cache and takes
    # paths under app_root() only
    with served_sample("sei-browser-clip", limit=60) as served_app:
        yield served_app


def test_a_clip_checkpoint_chosen_in_the_form_sorts_the_grid_by_its_score(offline_app, tmp_path):
    from playwright.sync_api import expect

    ds, session, url = offline_app
    folder = save_tiny_clip_folder(app_root() / f"tiny_clip-{ds.name}")
    with app_page(url, height=1000) as page:
        open_operator(page, "compute_sei", "Compute SEI (find mislabeled samples)", "Label field")
        choose(page, "Model", "CLIP ViT-B/32, OpenAI weights (open_clip)")
        warning = page.get_by_text("These weights are not available here")
        expect(warning).to_be_visible(timeout=30_000)
        expect(page.get_by_text("create_model('ViT-B-32', pretrained='openai')", exact=False)).to_be_visible()
        screenshot(page, tmp_path, "fiftyone_clip_form.png")

        choose(page, "Model", "A local open_clip checkpoint (model folder, or weights file + architecture)")
        expect(warning).to_be_hidden(timeout=30_000)
        form_row(page, "Checkpoint").locator("input").fill(folder)
        form_row(page, "Image size (pixels)").locator("input").fill("32")
        form_row(page, "Epochs").locator("input").fill("3")
        form_row(page, "Brain key").locator("input").fill("clip")
        page.wait_for_timeout(1_500)  # the form re-resolves with the typed values
        execute(page)
        close_progress(page, 120_000)
        expect(page.get_by_text("clip_mislabeled").first).to_be_visible(timeout=60_000)

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
