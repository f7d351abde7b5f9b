"""The App, driven by Debian's chromium: run compute_sei from the operator browser.

Needs `apt-get install chromium` and the `playwright` package (never `playwright
install`). The App server listens on 127.0.0.1 only and stops with the session.
Saves a screenshot; with SEI_UPDATE_DOCS=1 it replaces docs/fiftyone_sorted_view.png.
"""

import pytest

import sei_fiftyone as sfo

from browser_util import UPDATE_DOCS, app_page, execute, close_progress, form_row, open_operator, screenshot, served_sample

pytestmark = pytest.mark.browser


@pytest.fixture
def app():
    # real CIFAR-10 images with CIFAR-10N 'worse' human labels, from the bundled sample (200 for docs/)
    with served_sample("sei-browser", limit=200 if UPDATE_DOCS else 60) as served_app:
        yield served_app


def test_compute_sei_from_the_operator_browser_shows_the_sorted_view(app, tmp_path):
    from playwright.sync_api import expect

    ds, session, url = app
    with app_page(url) as page:
        open_operator(page, "compute_sei", "Compute SEI (find mislabeled samples)", "Label field")
        form_row(page, "Epochs").locator("input").fill("8")  # typed into the form
        execute(page)
        close_progress(page, 240_000)
        expect(page.get_by_text("sei_mislabeled").first).to_be_visible(timeout=60_000)
        page.wait_for_timeout(4_000)  # let the grid render the sorted view
        screenshot(page, tmp_path, "fiftyone_sorted_view.png")

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
