"""The App, driven by Debian's chromium: compare an SEI run with confident learning from the
operator browser, and see the samples where the two disagree, each tile saying who flagged it;
the operator's output has FiftyOne Brain's mistakenness beside them.

The run is made in Python first (EfficientNet-Lite0 features of 100 real CIFAR-10 images, 200 for docs/, with
CIFAR-10N human labels, stored in 'lite0'); the comparison is chosen and executed in the App
with 'clean' as the trusted labels. Saves a screenshot; with SEI_UPDATE_DOCS=1 it replaces
docs/fiftyone_compare_cl.png. Needs `apt-get install chromium` and the `playwright` package.
"""

import pytest

import sei_fiftyone as sfo
from sei_fiftyone.compare import get_comparison

from browser_util import UPDATE_DOCS, app_page, execute, choose, open_operator, screenshot, served_sample

pytestmark = pytest.mark.browser


@pytest.fixture
def app():
    # the shared App server runs the K-fold fits with one OpenBLAS thread (browser_util)
    def run(ds):
        sfo.compute_sei(ds, "ground_truth", model="efficientnet-lite0", embeddings_field="lite0", image_size=64,
                        epochs=4, progress=False)

    with served_sample("sei-browser-cl", limit=200 if UPDATE_DOCS else 100, prepare=run) as served_app:
        yield served_app


def test_compare_from_the_operator_browser_opens_the_disagreements(app, tmp_path):
    from playwright.sync_api import expect

    ds, session, url = app
    with app_page(url) as page:
        open_operator(page, "confident", "Compare SEI run with confident learning", "Trusted label field (optional)")
        choose(page, "Trusted label field (optional)", "clean", exact=True)
        execute(page)

        close = page.get_by_role("button", name="Close")  # the operator's output
        close.wait_for(timeout=120_000)
        ds.reload()  # the App's server wrote the comparison
        out = get_comparison(ds, "sei")
        for key, label in (("cl", "Confident learning"), ("mistakenness", "Mistakenness")):
            m = out["metrics"][key]
            expect(page.get_by_text(f"{label} against the trusted labels")).to_be_visible()
            expect(page.get_by_text(f"precision {m['precision']:.3f}, recall {m['recall']:.3f}")).to_be_visible()
        close.click()
        expect(close).to_be_hidden(timeout=10_000)
        expect(page.get_by_text(f"{out['n_disagree']} samples", exact=True)).to_be_visible(timeout=30_000)
        # who flagged each tile, at a glance: the agreement label (shown like any label field)
        grid = page.locator('[data-cy="fo-grid"]')
        who = grid.locator('[data-cy="tag-sei_cl_agreement"]')
        for _ in range(10):  # the sidebar lists the new field once the App reloaded the dataset
            page.locator('[data-cy="checkbox-sei_cl_agreement"]').click()
            try:
                who.first.wait_for(timeout=3_000)
                break
            except Exception:
                pass
        expect(who.first).to_be_visible(timeout=30_000)
        page.wait_for_timeout(2_000)  # let the grid render the tiles
        shown = who.all_inner_texts()
        assert shown and set(shown) <= {"SEI only", "CL only"}, shown  # every tile: flagged by one detector only
        expected = ds.load_saved_view("sei_cl_disagreements").values("sei_cl_agreement.label")
        assert shown == expected[: len(shown)]  # in the saved view's order: lowest SEI score first
        screenshot(page, tmp_path, "fiftyone_compare_cl.png")

    ds.reload()
    out = get_comparison(ds, "sei")
    assert out["trusted_label_field"] == "clean" and set(out["metrics"]) == {"sei", "cl", "mistakenness"}
    assert ds.list_runs() == ["sei_cl"] and "sei_cl_disagreements" in ds.list_saved_views()
    # The App's view is the saved view of the disagreements: the session mirrors the App's state.
    expected = ds.load_saved_view("sei_cl_disagreements")
    assert session.view.values("id") == expected.values("id") and len(expected) == out["n_disagree"] > 0
    sei, cl = session.view.values(["sei_mislabeled", "sei_cl_mislabeled"])
    assert all(a != b for a, b in zip(sei, cl))
