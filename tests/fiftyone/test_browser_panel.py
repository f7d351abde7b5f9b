"""The label-review panel in the App, driven by Debian's chromium: open it, move the cutoff,
click a cell of the label matrix, accept five suggestions.

Same setup as the other browser tests (``browser_util``: never `playwright install`; the App on 127.0.0.1 only).
Saves a screenshot; with SEI_UPDATE_DOCS=1 it replaces docs/fiftyone_review_panel.png.
"""

import re
import time

import numpy as np
import pytest

import fiftyone as fo

import sei_fiftyone as sfo
from sei_fiftyone import review

from browser_util import app_page, screenshot, served_sample

pytestmark = pytest.mark.browser


@pytest.fixture
def app_with_run():
    def run(ds):
        sfo.compute_sei(ds, "ground_truth", epochs=10, image_size=64)

    with served_sample("sei-browser-panel", prepare=run) as served_app:
        yield served_app


def _until(check, timeout=20.0):
    """Poll ``check`` (which reads the database or the session) until it is truthy."""
    end = time.time() + timeout
    while True:
        value = check()
        if value or time.time() > end:
            return value
        time.sleep(0.25)


def _open_panel(page, label, tries=10):
    """Click "+" in the panel bar and then the panel (the App registers plugin panels after
    it has loaded: until then the list has only the built-in ones)."""
    for _ in range(tries):
        page.locator('[data-cy="new-panel-btn"]').first.click()
        item = page.get_by_text(label, exact=True)
        try:
            item.first.click(timeout=3_000)
            return
        except Exception:
            page.keyboard.press("Escape")
    raise AssertionError(f"no panel '{label}' in the App's list of panels")


def _flags_at(ds, cutoff):
    ds.reload()
    scores, flags = ds.values(["sei", "sei_mislabeled"])
    if flags != [s < cutoff for s in scores]:
        return False
    try:
        return ds.load_brain_results("sei", cache=False).threshold == cutoff
    except AttributeError:  # read while the App's server replaces the results file (GridFS)
        return False


def _move_cutoff(page, ds, cutoff):
    """Type a cutoff and apply it: the samples are re-flagged, the run records it."""
    from playwright.sync_api import expect

    cutoff_input = page.locator(
        "xpath=//p[text()='Cutoff']/ancestor::div[contains(@class,'MuiBox-root')][3]//input")
    cutoff_input.fill(str(cutoff))
    page.wait_for_timeout(500)  # the typed value reaches the panel's state
    page.get_by_role("button", name="Apply cutoff").click()
    assert _until(lambda: _flags_at(ds, cutoff))
    n_flagged = sum(ds.values("sei_mislabeled"))
    expect(page.get_by_text(f"{n_flagged} flagged")).to_be_visible(timeout=20_000)


def _click_largest_cell(page, ds, session):
    """Click the largest off-diagonal cell of the label matrix: the grid shows its samples."""
    from playwright.sync_api import expect

    conf = review.confusion(ds, "sei")
    z = np.array(conf["data"][0]["z"])
    np.fill_diagonal(z, 0)
    i, j = np.unravel_index(np.argmax(z), z.shape)
    given, suggested, n = conf["classes"][i], conf["classes"][j], int(z[i, j])
    k = len(conf["classes"])
    box = page.locator(".js-plotly-plot").nth(1).locator(".nsewdrag").first.bounding_box()
    page.mouse.click(box["x"] + (j + 0.5) * box["width"] / k, box["y"] + (i + 0.5) * box["height"] / k)
    expected = review.cell_view(ds, "sei", given, suggested).values("id")
    assert _until(lambda: session.view is not None and session.view.values("id") == expected)
    expect(page.get_by_text(f"{n} samples", exact=True)).to_be_visible(timeout=20_000)
    grid = page.locator('[data-cy="fo-grid"]')
    expect(grid.locator('[data-cy="looker"]')).to_have_count(n, timeout=20_000)
    expect(grid.locator('[data-cy="tag-ground_truth"]')).to_have_text([given] * n)
    expect(grid.locator('[data-cy="tag-sei_suggestion"]')).to_have_text([suggested] * n)


def _accept_five_of_next_batch(page, ds):
    """Next batch, accept its first five suggestions one by one: each label changes, the old one
    is kept, the answered row leaves the queue."""
    from playwright.sync_api import expect

    page.get_by_role("button", name="Next batch").click()
    accept = page.get_by_role("button", name="Accept")
    for i in range(1, 6):
        accept.first.wait_for(timeout=20_000)
        first = page.locator("p", has_text=re.compile(r"\.jpg given ")).first.inner_text().split()[0]
        sample = ds.match(fo.ViewField("filepath").ends_with("/" + first)).first()
        old, new = sample.ground_truth.label, sample.sei_suggestion.label
        accept.first.click()
        expect(page.get_by_text(f"{i} accepted")).to_be_visible(timeout=20_000)
        ds.reload()  # the App's server added ground_truth_original
        sample = ds[sample.id]
        assert sample.ground_truth.label == new and sample.ground_truth_original.label == old
        assert "ground_truth_accepted" in sample.tags
    assert len(ds.match_tags("ground_truth_accepted")) == 5


def test_review_panel_cutoff_cell_click_and_accept(app_with_run, tmp_path):
    from playwright.sync_api import expect

    ds, session, url = app_with_run
    cutoff = round(float(np.quantile(ds.values("sei"), 0.4)), 3)
    assert cutoff != ds.load_brain_results("sei").threshold
    with app_page(url, width=1600, height=1000) as page:
        page.keyboard.press("Escape")
        _open_panel(page, "SEI label review")  # from the "+" of the panel bar, as a user would
        expect(page.get_by_text(f"{ds.load_brain_results('sei').num_flagged} flagged")).to_be_visible(
            timeout=30_000)
        _move_cutoff(page, ds, cutoff)
        _click_largest_cell(page, ds, session)
        _accept_five_of_next_batch(page, ds)

        page.set_viewport_size({"width": 1600, "height": 1500})  # the whole panel
        page.get_by_text("SEI run").first.scroll_into_view_if_needed()
        page.wait_for_timeout(1_500)
        screenshot(page, tmp_path, "fiftyone_review_panel.png")
