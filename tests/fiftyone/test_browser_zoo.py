"""The App, driven by Debian's chromium: a FiftyOne zoo model chosen in the compute_sei form.

The zoo holds a stand-in registered through FiftyOne's custom manifest (tiny_zoo.py; the shared
App server of browser_util, a child process, reads FIFTYONE_MODEL_ZOO_MANIFEST_PATHS /
FIFTYONE_MODEL_ZOO_DIR).
Choosing the model whose weights are absent shows at once that they cannot be had offline;
choosing the one in the zoo's folder runs, and the App shows the new run's sorted view. Saves a
screenshot of the form; with SEI_UPDATE_DOCS=1 it replaces docs/fiftyone_zoo_form.png.
"""

import time

import pytest

from browser_util import (app_page, execute, choose, close_progress, form_row, open_operator, screenshot,
                          served_sample, zoo_paths)
import tiny_zoo

pytestmark = pytest.mark.browser


@pytest.fixture
def zoo_app(monkeypatch):
    import fiftyone as fo

    manifest, zoo_dir = zoo_paths()  # what the shared App server was started with
    monkeypatch.setattr(fo.config, "model_zoo_manifest_paths", [manifest])
    monkeypatch.setattr(fo.config, "model_zoo_dir", zoo_dir)
    with served_sample("sei-browser-zoo", limit=60) as served_app:
        yield served_app


def test_a_zoo_model_chosen_in_the_form_runs_frozen(zoo_app, tmp_path):
    from playwright.sync_api import expect

    ds, session, url = zoo_app
    with app_page(url, height=1000) as page:
        open_operator(page, "compute_sei", "Compute SEI (find mislabeled samples)", "Label field")
        choose(page, "Model", "A FiftyOne zoo model that produces embeddings (frozen)")
        choose(page, "Zoo model", tiny_zoo.MISSING, exact=True)
        warning = page.get_by_text("This zoo model cannot be used here")
        start = time.perf_counter()
        expect(warning).to_be_visible(timeout=30_000)
        assert time.perf_counter() - start < 15  # asked without a download attempt
        expect(page.get_by_text(f"fiftyone zoo models download {tiny_zoo.MISSING}", exact=False)).to_be_visible()
        screenshot(page, tmp_path, "fiftyone_zoo_form.png")

        choose(page, "Zoo model", tiny_zoo.PRESENT, exact=True)
        expect(warning).to_be_hidden(timeout=30_000)
        form_row(page, "Epochs").locator("input").fill("5")
        form_row(page, "Brain key").locator("input").fill("zoo")
        page.wait_for_timeout(1_500)  # the form re-resolves with the typed values
        execute(page)
        close_progress(page, 120_000)
        expect(page.get_by_text("zoo_mislabeled").first).to_be_visible(timeout=60_000)

    ds.reload()
    config = ds.get_brain_info("zoo").config
    assert (config.model, config.mode, config.epochs) == (f"zoo:{tiny_zoo.PRESENT}", "frozen", 5)
    assert session.view.values("id") == __import__("sei_fiftyone").sorted_view(ds, "zoo").values("id")
