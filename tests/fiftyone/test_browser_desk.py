"""The review desk in the App, driven by Debian's chromium, one test per part of issue 25:

- *Edit in the App*: a queued sample opens in FiftyOne's own label editor (the Annotate tab of
  the sample view, the label selected); the edit made there is recorded like Accept;
- the comparison section of the panel: SEI, confident learning and FiftyOne Brain's
  mistakenness side by side against trusted labels;
- the phases of the run (and of delegated runs) in the panel.

Same setup as the other browser tests (``browser_util``: never `playwright install`; the App on
127.0.0.1 only). Each saves a screenshot; with SEI_UPDATE_DOCS=1 they replace the pictures in docs/.
"""

import re
import threading

import pytest

import fiftyone.operators as foo
from fiftyone.operators.delegated import DelegatedOperationService

import sei_fiftyone as sfo
from sei_fiftyone import review
from sei_fiftyone.compare import compare_with_confident_learning, get_comparison

from browser_util import app_page, screenshot, served_sample
from test_browser_panel import _open_panel, _until

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def app():
    def run(ds):
        sfo.compute_sei(ds, "ground_truth", epochs=4, image_size=64, embeddings_field="lite0", progress=False)

    with served_sample("sei-browser-desk", limit=120, prepare=run) as served_app:
        yield served_app


def _panel(page, ds):
    from playwright.sync_api import expect

    page.keyboard.press("Escape")
    _open_panel(page, "SEI label review")
    expect(page.get_by_text("Run phases:")).to_be_visible(timeout=30_000)


def _queued_sample(page, ds):
    """The sample of the first row of the relabel queue."""
    import re

    import fiftyone as fo

    first = page.locator("p", has_text=re.compile(r"\.jpg given ")).first.inner_text().split()[0]
    return ds.match(fo.ViewField("filepath").ends_with("/" + first)).first()


def test_edit_in_the_app_opens_fiftyones_label_editor_and_counts_as_accept(app, tmp_path):
    from playwright.sync_api import expect

    ds, session, url = app
    with app_page(url, width=1600, height=1000) as page:
        _panel(page, ds)
        page.get_by_role("button", name="Next batch").click()
        edit = page.get_by_role("button", name="Edit in the App")
        edit.first.wait_for(timeout=20_000)
        sample = _queued_sample(page, ds)
        given = sample.ground_truth.label
        edit.first.click()
        # FiftyOne's own sample view, on its Annotate tab, with the run's label field to edit
        row = page.locator(f'[data-cy="annotate-label-{sample.ground_truth.id}"][data-cy-path="ground_truth"]')
        row.wait_for(timeout=30_000)
        expect(row).to_have_attribute("data-cy-label", given)
        row.click()
        new_label = next(c for c in ds.load_brain_results("sei").classes if c not in (given, sample.sei_suggestion.label))
        page.get_by_role("radio", name=new_label, exact=True).click()
        assert _until(lambda: ds.select(sample.id).values("ground_truth.label") == [new_label], timeout=30)
        page.wait_for_timeout(1_000)
        screenshot(page, tmp_path, "fiftyone_edit_in_app.png")

        page.keyboard.press("Escape")  # leave the label, then the sample view
        page.wait_for_timeout(500)
        page.keyboard.press("Escape")
        # the panel records the edit as a decision like Accept, the old label kept
        expect(page.get_by_text("1 accepted")).to_be_visible(timeout=30_000)
        ds.reload()
        sample = ds[sample.id]
        assert sample.ground_truth.label == new_label and sample.ground_truth_original.label == given
        assert "ground_truth_accepted" in sample.tags and "sei_relabel" not in sample.tags


def test_the_panel_compares_sei_confident_learning_and_mistakenness(app, tmp_path):
    from playwright.sync_api import expect

    ds, session, url = app
    found = compare_with_confident_learning(ds, "sei", trusted_label_field="clean")
    with app_page(url, width=1600, height=1000) as page:
        _panel(page, ds)
        table = page.locator("table").filter(has_text="FiftyOne mistakenness")
        table.scroll_into_view_if_needed(timeout=30_000)
        for key, name in (("sei", "SEI"), ("cl", "Confident learning"), ("mistakenness", "FiftyOne mistakenness")):
            m = found["metrics"][key]
            row = table.locator("tr").filter(has_text=name)
            expect(row.first).to_contain_text(f"{m['f1']:.3f}")
            expect(row.first).to_contain_text(f"{m['auroc']:.3f}")
        page.wait_for_timeout(1_000)
        screenshot(page, tmp_path, "fiftyone_three_way.png")
    assert get_comparison(ds, "sei")["metrics"]["mistakenness"]["n"] == len(ds)


def test_the_panel_shows_the_seconds_of_the_runs_phases(app, tmp_path):
    from playwright.sync_api import expect

    from sei_fiftyone.runs import phases_text

    ds, session, url = app
    timings = ds.load_brain_results("sei").timings
    assert tuple(timings) == ("read", "train", "score", "write")
    # a delegated run, queued as the form's "Delegate execution" does, run by a worker below
    result = foo.execute_operator("@sei/fiftyone/compute_sei", dataset=ds, request_delegation=True, params=dict(
        label_field="ground_truth", model="efficientnet-lite0", image_size=224, epochs=300, brain_key="sei_worker"))
    assert result.error is None, result.error
    with app_page(url, width=1600, height=1000) as page:
        _panel(page, ds)
        expect(page.get_by_text(f"Run phases: {phases_text(timings)}")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("Delegated compute_sei queued: waiting for a worker")).to_be_visible()
        service = DelegatedOperationService()
        worker = threading.Thread(target=service.execute_queued_operations, kwargs={"dataset_name": ds.name})
        worker.start()
        try:
            running = page.get_by_text(re.compile(r"Delegated compute_sei running: (read|train|score|write)"))
            for _ in range(60):  # what the worker reported last, read from FiftyOne's store on each refresh
                if running.count() or not worker.is_alive():
                    break
                refresh = page.get_by_role("button", name="Refresh progress")
                (refresh if refresh.count() else page.get_by_role("button", name="Next batch")).first.click()
                page.wait_for_timeout(300)
            expect(running).to_be_visible()
            page.wait_for_timeout(500)
            screenshot(page, tmp_path, "fiftyone_phases.png")
        finally:
            worker.join(timeout=300)
        ds.reload()
        assert tuple(ds.load_brain_results("sei_worker").timings) == ("read", "train", "score", "write")
