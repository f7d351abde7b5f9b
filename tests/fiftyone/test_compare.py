"""Comparing an SEI run with confident learning (sei_fiftyone.compare), on real CIFAR-10 images
with CIFAR-10N human labels (the bundled sample) and a real mongod."""

import numpy as np
import pytest

import fiftyone as fo
import fiftyone.core.brain as fob
import fiftyone.operators as foo
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

import sei_fiftyone as sfo
import sei_fiftyone.compare as cmp
import sei_fiftyone.runs as runs
import sei_fiftyone.writeback as writeback
from sei_fiftyone.__main__ import main as cli_main
from sei_fiftyone.demo import load_sample

URI = "@sei/fiftyone"
N = 240
NAMES = ("sei_cl", "sei_cl_mislabeled", "sei_cl_disagreements", "sei_cl_agreement", "sei_cl_mistakenness")
FIELDS = (NAMES[0], NAMES[1], NAMES[3], NAMES[4])


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    # The test machine's 2 cores are shared; OpenBLAS threads spinning against other processes
    # make the K-fold fits 10-40x slower there.
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def base():
    """N real images; an SEI run on EfficientNet-Lite0 features it stores in 'lite0'."""
    ds = load_sample(limit=N, name="sei-compare-base")
    sfo.compute_sei(ds, "ground_truth", model="efficientnet-lite0", embeddings_field="lite0", image_size=64,
                    epochs=4, progress=False)
    yield ds
    ds.delete()


def _labels(ds, field="ground_truth"):
    classes = list(ds.load_brain_results("sei").classes)
    return np.array([classes.index(v) for v in ds.values(f"{field}.label")]), classes


def _as_a_run_on_images(ds):
    """Make run 'sei' look like a run on the images, which stores no embeddings field."""
    config = ds.get_brain_info("sei").config
    config.embeddings_field = None
    fob.BrainMethod.update_run_config(ds, "sei", config)
    assert ds.get_brain_info("sei").config.embeddings_field is None


def _state(ds):
    """Everything the comparison consists of, as plain values."""
    ds.reload()
    schema = ds.get_field_schema()
    runs = ds.list_runs()
    return dict(
        schema=sorted(schema),
        values=[ds.values(f) for f in FIELDS if f in schema and f != NAMES[3]]
        + [ds.values(f"{NAMES[3]}.label")] if NAMES[3] in schema else [],
        views=sorted(ds.list_saved_views()),
        view=ds.load_saved_view(NAMES[2]).values("id") if ds.has_saved_view(NAMES[2]) else None,
        runs=runs,
        config=ds.get_run_info("sei_cl").config.serialize() if "sei_cl" in runs else None,
        results=ds.load_run_results("sei_cl", cache=False).serialize() if "sei_cl" in runs else None,
    )


def test_kfold_flags_are_cleanlabs_on_cross_validated_logistic_regression(ds):
    out = cmp.compare_with_confident_learning(ds, "sei", folds=4, seed=3)
    labels, _ = _labels(ds)
    X = np.stack(ds.values("lite0"))
    probs = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), X, labels,
                              cv=StratifiedKFold(4, shuffle=True, random_state=3), method="predict_proba")
    expected = find_label_issues(labels, probs)
    assert ds.values("sei_cl_mislabeled") == expected.tolist()
    assert np.allclose(ds.values("sei_cl"), get_label_quality_scores(labels, probs))
    assert out["n_cl_flagged"] == int(expected.sum()) > 0
    assert out["n_compared"] == N and out["cl_field"] == "sei_cl_mislabeled"
    assert (out["embeddings_field"], out["folds"], out["seed"]) == ("lite0", 4, 3)


def test_a_probabilities_field_flags_the_samples_it_contradicts(ds):
    labels, classes = _labels(ds)
    k = len(classes)
    probs = np.full((N, k), 0.1 / (k - 1))
    probs[np.arange(N), labels] = 0.9
    contradicted = np.arange(0, N, 12)  # confidently another class
    probs[contradicted] = 0.1 / (k - 1)
    probs[contradicted, (labels[contradicted] + 1) % k] = 0.9
    ds.set_values("oos_probs", [p for p in probs])
    out = cmp.compare_with_confident_learning(ds, "sei", probs_field="oos_probs")
    ids = np.array(ds.values("id"))
    assert set(ds.match({"sei_cl_mislabeled": True}).values("id")) == set(ids[contradicted])
    assert out["n_cl_flagged"] == len(contradicted) and out["probs_field"] == "oos_probs"
    assert out["embeddings_field"] is None


def test_the_saved_view_holds_exactly_the_samples_flagged_by_one_detector(ds):
    out = cmp.compare_with_confident_learning(ds, "sei")
    ids, sei, cl, score = ds.values(["id", "sei_mislabeled", "sei_cl_mislabeled", "sei"])
    one = {i for i, a, b in zip(ids, sei, cl) if a != b}
    view = ds.load_saved_view(out["view_name"])
    assert out["view_name"] == "sei_cl_disagreements"
    assert set(view.values("id")) == one and len(view) == out["n_disagree"] == len(one) > 0
    assert out["n_sei_only"] + out["n_cl_only"] == out["n_disagree"]
    assert out["n_both"] == sum(1 for a, b in zip(sei, cl) if a and b)
    assert view.values("sei") == sorted(view.values("sei"))  # most suspect by SEI first
    assert cmp.get_comparison(ds, "sei") == out


def test_the_grid_says_who_flagged_each_sample_and_it_follows_the_cutoff(ds):
    import sei_fiftyone.review as review

    out = cmp.compare_with_confident_learning(ds, "sei")
    sei, cl, who = ds.values(["sei_mislabeled", "sei_cl_mislabeled", "sei_cl_agreement.label"])
    expected = {(True, True): "both", (True, False): "SEI only", (False, True): "CL only", (False, False): None}
    assert who == [expected[a, b] for a, b in zip(sei, cl)]
    assert {"both", "SEI only", "CL only"} <= set(who) and out["agreement_field"] == "sei_cl_agreement"
    assert isinstance(ds.get_field("sei_cl_agreement").document_type(), fo.Classification)
    view = ds.load_saved_view(out["view_name"])  # the disagreements: most suspect by SEI first
    assert set(view.values("sei_cl_agreement.label")) == {"SEI only", "CL only"}
    assert view.values("sei") == sorted(view.values("sei"))
    review.set_cutoff(ds, "sei", float(np.max(ds.values("sei"))) + 1)  # now SEI flags every sample
    assert ds.values("sei_cl_agreement.label") == ["both" if c else "SEI only" for c in cl]
    assert cmp.get_comparison(ds, "sei")["n_sei_only"] == N - sum(cl)


def test_mistakenness_is_fiftyone_brains_on_the_runs_predictions(ds):
    import fiftyone.brain as fob

    datasets = sorted(fo.list_datasets())
    out = cmp.compare_with_confident_learning(ds, "sei", trusted_label_field="clean")
    assert ds.list_brain_runs() == ["sei"] and sorted(fo.list_datasets()) == datasets  # no Brain run, no clone left
    # Brain's own run on a copy of the two fields gives the same values
    copy = ds.select_fields(["ground_truth", "sei_suggestion"]).clone()
    try:
        fob.compute_mistakenness(copy, "sei_suggestion", "ground_truth", mistakenness_field="m", progress=False)
        assert np.allclose(ds.values("sei_cl_mistakenness"), copy.values("m"))
    finally:
        copy.delete()
    given, sugg, conf = ds.values(["ground_truth.label", "sei_suggestion.label", "sei_suggestion.confidence"])
    m = np.array(ds.values("sei_cl_mistakenness"))
    assert np.allclose(m, [(c + 1) / 2 if g != s else (1 - c) / 2 for g, s, c in zip(given, sugg, conf)])
    truth = np.array(given) != np.array(ds.values("clean.label"))
    got = out["metrics"]["mistakenness"]
    assert got["precision"] == pytest.approx(precision_score(truth, m > 0.5))
    assert got["recall"] == pytest.approx(recall_score(truth, m > 0.5))
    assert got["f1"] == pytest.approx(f1_score(truth, m > 0.5))
    assert got["auroc"] == pytest.approx(roc_auc_score(truth, m)) and got["auroc"] > 0.6
    assert out["n_mistakenness_flagged"] == int(np.sum(m > 0.5)) > 0 and out["predictions_field"] is None
    assert set(out["timings"]) == {"read", "confident learning", "mistakenness", "write"}
    assert all(v >= 0 for v in out["timings"].values())


def test_mistakenness_of_a_predictions_field_the_user_names(ds):
    labels, classes = _labels(ds, "clean")
    confident = [fo.Classification(label=classes[y], confidence=0.9) for y in labels]  # the clean labels
    ds.set_values("model_preds", confident)
    seen = []
    out = cmp.compare_with_confident_learning(ds, "sei", trusted_label_field="clean", predictions_field="model_preds",
                                              progress=lambda f, label: seen.append((f, label)))
    truth = np.array(ds.values("ground_truth.label")) != np.array(ds.values("clean.label"))
    assert np.allclose(ds.values("sei_cl_mistakenness"), np.where(truth, 0.95, 0.05))
    assert out["metrics"]["mistakenness"]["f1"] == 1.0 and out["predictions_field"] == "model_preds"
    assert [label for _, label in seen] == ["read", "confident learning", "mistakenness", "write", "write"]
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)


def test_metrics_equal_an_independent_sklearn_computation(ds):
    out = cmp.compare_with_confident_learning(ds, "sei", trusted_label_field="clean")
    given, clean, sei_flag, sei_score, cl_flag, cl_score = ds.values(
        ["ground_truth.label", "clean.label", "sei_mislabeled", "sei", "sei_cl_mislabeled", "sei_cl"])
    truth = np.array(given) != np.array(clean)
    for name, flags, score in (("sei", sei_flag, sei_score), ("cl", cl_flag, cl_score)):
        m = out["metrics"][name]
        assert m["precision"] == pytest.approx(precision_score(truth, flags))
        assert m["recall"] == pytest.approx(recall_score(truth, flags))
        assert m["f1"] == pytest.approx(f1_score(truth, flags))
        assert m["auroc"] == pytest.approx(roc_auc_score(truth, -np.array(score)))
        assert all(isinstance(m[k], float) for k in ("precision", "recall", "f1", "auroc"))
    assert out["metrics"]["cl"]["auroc"] > 0.6 and out["metrics"]["sei"]["auroc"] > 0.6  # real label noise


def test_counts_follow_the_current_sei_flags(ds):
    cmp.compare_with_confident_learning(ds, "sei")
    ds.set_values("sei_mislabeled", [True] * N)  # as when the review panel moves the cutoff
    out = cmp.get_comparison(ds, "sei")
    assert out["n_sei_flagged"] == N and out["n_disagree"] == N - out["n_cl_flagged"]
    assert len(ds.load_saved_view(out["view_name"])) == out["n_disagree"]


def test_rerunning_replaces_the_previous_comparison(ds):
    cmp.compare_with_confident_learning(ds, "sei", trusted_label_field="clean")
    view = ds.limit(100)
    labels, classes = _labels(ds)
    ds.set_values("oos_probs", [np.eye(len(classes))[y] * 0.8 + 0.2 / len(classes) for y in labels])
    out = cmp.compare_with_confident_learning(view, "sei", probs_field="oos_probs")
    assert ds.list_runs() == ["sei_cl"] and "metrics" not in out
    assert out["n_compared"] == 100 and out["n_cl_flagged"] == 0
    assert ds.exists("sei_cl_mislabeled").values("id") == view.values("id")  # the rest lost the old values
    assert ds.get_run_info("sei_cl").config.trusted_label_field is None


@pytest.mark.parametrize("phase", ["staged", "switching", "switched", "registered"])
@pytest.mark.parametrize("previous", [False, True])
def test_a_failure_midway_leaves_the_old_or_the_new_comparison(ds, monkeypatch, phase, previous):
    """The comparison is one journaled switch (sei_fiftyone.writeback): a failure before or
    during the switch leaves the dataset as it was; one after it (the values are in) leaves
    a journal that the next writer completes into the new comparison, never new flags under
    the old comparison's config."""
    if previous:
        cmp.compare_with_confident_learning(ds, "sei", trusted_label_field="clean")
    labels, classes = _labels(ds)
    ds.set_values("oos_probs", [np.roll(np.eye(len(classes))[y], 1) * 0.9 + 0.01 for y in labels])
    before = _state(ds)

    def fail(name):
        if name == phase:
            raise RuntimeError(f"injected at {name}")
    monkeypatch.setattr(writeback, "_phase", fail)
    if phase == "switching":
        monkeypatch.setattr(writeback, "_switch", lambda *a: fail("switching"))
    with pytest.raises(RuntimeError, match="injected"):
        cmp.compare_with_confident_learning(ds, "sei", probs_field="oos_probs")
    monkeypatch.undo()
    if phase in ("staged", "switching"):
        assert _state(ds) == before
        assert sfo.recover_interrupted_writes(ds) == []
        return
    assert sfo.recover_interrupted_writes(ds) == ["sei_cl"]
    after = _state(ds)
    assert after["config"]["probs_field"] == "oos_probs" and after["config"]["trusted_label_field"] is None
    assert after["view"] == runs.disagreement_view(ds, "sei").values("id")
    assert after["views"].count("sei_cl_disagreements") == 1
    assert after["results"]["n_compared"] == N and after["results"]["n_cl_flagged"] == sum(after["values"][1])
    assert sfo.recover_interrupted_writes(ds) == []


def test_bad_inputs_are_refused_before_anything_is_written(ds):
    labels, classes = _labels(ds)
    k = len(classes)
    ds.set_values("wide", [np.full(k + 1, 1 / (k + 1)) for _ in labels])
    ds.set_values("unnormalised", [np.full(k, 0.5) for _ in labels])
    ds.set_values("some", [np.full(k, 1 / k) if i % 2 else None for i in range(N)])
    ds.set_values("no_confidence", [fo.Classification(label=c) for c in ds.values("clean.label")])
    before, datasets = _state(ds), sorted(fo.list_datasets())
    cases = [
        (dict(brain_key="nope"), "No SEI run with brain key 'nope'"),
        (dict(probs_field="wide"), r"\[11\] value\(s\) per sample but the run has 10 classes"),
        (dict(probs_field="unnormalised"), "sum"),
        (dict(probs_field="some"), "120 compared sample"),
        (dict(probs_field="ground_truth"), "not a vector field"),
        (dict(trusted_label_field="ground_truth"), "other than the run's label field"),
        (dict(trusted_label_field="nope"), "available"),
        (dict(embeddings_field="filepath"), "not a vector field"),
        (dict(folds=1), "folds"),
        (dict(predictions_field="ground_truth"), "predictions_field must be a Classification field"),
        (dict(predictions_field="clean", trusted_label_field="clean"), "other than the run's label field"),
        (dict(predictions_field="no_confidence"), "needs a confidence .*use_logits=True"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            cmp.compare_with_confident_learning(ds, **{"brain_key": "sei", **kwargs})
    with pytest.raises(TypeError, match="folds"):
        cmp.compare_with_confident_learning(ds, "sei", folds=2.5)
    with pytest.raises(TypeError, match="use_logits"):
        cmp.compare_with_confident_learning(ds, "sei", use_logits="yes")
    assert _state(ds) == before
    assert sorted(fo.list_datasets()) == datasets  # Brain's temporary clones are gone


def test_a_run_without_stored_embeddings_says_what_to_do(ds):
    _as_a_run_on_images(ds)
    with pytest.raises(ValueError, match="stored no embeddings.*probs_field=.*embeddings_field="):
        cmp.compare_with_confident_learning(ds, "sei")
    out = cmp.compare_with_confident_learning(ds, "sei", embeddings_field="lite0")
    assert out["embeddings_field"] == "lite0"


def test_names_are_guarded_both_ways(ds):
    ds.add_sample_field("sei_cl", fo.StringField)  # a user's field
    with pytest.raises(ValueError, match="field 'sei_cl' already exist"):
        cmp.compare_with_confident_learning(ds, "sei")
    assert ds.get_field_schema()["sei_cl"].__class__ is fo.StringField
    ds.delete_sample_field("sei_cl")
    cmp.compare_with_confident_learning(ds, "sei")
    # a new SEI run cannot take the comparison's names
    with pytest.raises(ValueError, match="confident-learning comparison of run 'sei'"):
        sfo.compute_sei(ds, "ground_truth", brain_key="sei_cl", embeddings_field="lite0", epochs=1)
    ds.save_view("x_cl_disagreements", ds.limit(1))  # a user's saved view
    sfo.compute_sei(ds, "ground_truth", brain_key="x", embeddings_field="lite0", epochs=1, progress=False)
    with pytest.raises(ValueError, match="saved view 'x_cl_disagreements' already exist"):
        cmp.compare_with_confident_learning(ds, "x")
    assert len(ds.load_saved_view("x_cl_disagreements")) == 1


def test_deleting_or_renaming_the_run_takes_the_comparison_along(ds):
    cmp.compare_with_confident_learning(ds, "sei")
    ds.rename_brain_run("sei", "first")
    out = cmp.get_comparison(ds, "first")
    assert out["view_name"] == "first_cl_disagreements" and ds.list_runs() == ["first_cl"]
    assert {"first_cl", "first_cl_mislabeled"} <= set(ds.get_field_schema())
    assert len(ds.load_saved_view("first_cl_disagreements")) == out["n_disagree"]
    assert cmp.get_comparison(ds, "sei") is None and cmp.list_comparisons(ds) == ["first"]
    ds.delete_brain_run("first")
    assert ds.list_runs() == [] and not [f for f in ds.get_field_schema() if f.startswith("first")]
    assert ds.list_saved_views() == []


# ----------------------------------------------------------------------------- the operator
@pytest.fixture(scope="module")
def installed_plugin():
    cli_main(["install-plugin"])


def _form(ds, params):
    op = foo.get_operator(f"{URI}/compare_with_confident_learning")
    ctx = foo.ExecutionContext(request_params={"dataset_name": ds.name, "params": params})
    return op.resolve_input(ctx).type.properties


def test_the_operator_compares_and_opens_the_disagreements(ds, installed_plugin):
    props = _form(ds, {})
    assert props["brain_key"].type.values == ["sei"]
    assert props["trusted_label_field"].type.values == ["clean"]
    assert "probs_field" not in props and "kfold" in props  # the run's own vectors are not probabilities
    ds.set_values("oos_probs", [np.full(10, 0.1)] * N)
    assert _form(ds, {})["probs_field"].type.values == ["oos_probs"]
    assert "no_embeddings" not in props and "replaces" not in props
    result = foo.execute_operator(f"{URI}/compare_with_confident_learning", dataset=ds,
                                  params={"brain_key": "sei", "trusted_label_field": "clean", "folds": 3})
    assert result.error is None, result.error
    out = cmp.get_comparison(ds, "sei")
    assert result.result["n_disagree"] == out["n_disagree"] and out["folds"] == 3
    assert result.result["cl_metrics"].startswith(f"precision {out['metrics']['cl']['precision']:.3f}")
    requests = result.executor.to_json()["requests"]
    set_view = [r for r in requests if r["operator_uri"].endswith("set_view")]
    stages = [{k: v for k, v in st.items() if k != "_uuid"} for st in set_view[0]["params"]["view"]]
    assert stages == ds.load_saved_view("sei_cl_disagreements")._serialize(include_uuids=False)
    assert "replaces" in _form(ds, {"brain_key": "sei"})


def test_the_form_explains_what_blocks_a_comparison(ds, installed_plugin):
    _as_a_run_on_images(ds)
    assert "no_embeddings" in _form(ds, {"brain_key": "sei"})
    ds.add_sample_field("sei_cl_mislabeled", fo.BooleanField)
    prop = _form(ds, {"brain_key": "sei"})["brain_key"]
    assert prop.invalid and "sei_cl_mislabeled" in prop.error_message

