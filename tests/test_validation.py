"""Bad inputs raise ValueError or TypeError that say what was wrong and how to fix it."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import sei
from sei_cleanlab import find_label_issues, get_label_quality_scores

GOOD = np.tile(np.array([[[0.8, 0.2], [0.3, 0.7]]]), (3, 1, 1))
LABELS = np.array([0, 1])


@pytest.mark.parametrize(
    "labels, history, match",
    [
        (LABELS, GOOD[0], "3-D"),
        (LABELS, GOOD[:, :0], "empty"),
        (np.array([0, 1, 1]), GOOD, "one label per sample"),
        (np.array([0.0, 1.0]), GOOD, "astype\\(int\\)"),
        (np.array(["a", "b"]), GOOD, "integer class indices"),
        (np.array([0, 2]), GOOD, "0..1"),
        (np.array([[0, 1]]), GOOD, "1-D"),
        (LABELS, GOOD * 3, "from_logits=True"),
        (LABELS, GOOD * 0.5, "sum to 1"),
        (LABELS, np.where(GOOD > 0.5, np.nan, GOOD), "NaN or inf"),
        (LABELS, GOOD[..., :1], "at least 2 classes"),
        (LABELS, "not an array", "SEIRecorder"),
    ],
)
def test_bad_input_messages(labels, history, match):
    with pytest.raises((ValueError, TypeError), match=match):
        find_label_issues(labels, history)


def test_out_of_range_threshold_samples():
    with pytest.raises(ValueError, match="0..1"):
        find_label_issues(LABELS, GOOD, threshold="aux_mean", threshold_samples=[5])


def test_fewer_than_two_classes_in_recorder():
    with pytest.raises(ValueError, match="at least 2"):
        sei.SEIRecorder(3, 1)


def test_recorder_update_rejects_logits_passed_as_probabilities():
    rec = sei.SEIRecorder(2, 2)
    with pytest.raises(ValueError, match="from_logits=True"):
        rec.update([0, 1], np.array([[2.0, -1.0], [0.5, 3.0]]), [0, 1])


def test_unknown_score_and_threshold():
    with pytest.raises(ValueError, match="choose one of"):
        find_label_issues(LABELS, GOOD, score="nope")
    with pytest.raises(ValueError, match="Unknown threshold"):
        find_label_issues(LABELS, GOOD, threshold="nope")


arrays = st.one_of(
    hnp.arrays(hnp.floating_dtypes() | hnp.integer_dtypes(), hnp.array_shapes(min_dims=0, max_dims=4, max_side=4)),
    st.lists(st.integers(-3, 3), max_size=4),
    st.none(),
    st.text(max_size=3),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labels=arrays, history=arrays)
def test_generated_bad_inputs_raise_only_value_or_type_errors(labels, history):
    for fn in (find_label_issues, get_label_quality_scores):
        try:
            fn(labels, history)
        except (ValueError, TypeError):
            pass


# ---- fuzzing with torch, float16 and bfloat16 inputs, and select_for_relabeling (issue 13)
torch = pytest.importorskip("torch")
from hypothesis import assume  # noqa: E402

from sei_cleanlab import select_for_relabeling  # noqa: E402

_DTYPES = ("np.float64", "np.float32", "np.float16", "torch.float64", "torch.float32", "torch.float16",
           "torch.bfloat16")


def _cast(a, dtype):
    lib, name = dtype.split(".")
    if lib == "np":
        return np.asarray(a).astype(name)
    return torch.tensor(np.asarray(a, dtype=np.float64)).to(getattr(torch, name))


@st.composite
def valid_histories(draw):
    t, n, k = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(2, 5))
    logits = draw(hnp.arrays(np.float64, (t, n, k), elements=st.floats(-30, 30)))
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    labels = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, k - 1)))
    return _cast(p, draw(st.sampled_from(_DTYPES))), labels


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=valid_histories(), score=st.sampled_from(["aum_prob", "sei", "loss", "mistakenness", "ei"]))
def test_valid_low_precision_and_torch_histories_give_finite_results(data, score):
    history, labels = data
    mask = find_label_issues(labels, history, score=score)
    assert mask.dtype == bool and mask.shape == labels.shape
    q = get_label_quality_scores(labels, history, method=score)
    assert np.all(np.isfinite(q)) and np.all((q >= 0) & (q <= 1))
    raw = sei.SEIRecorder.from_history(history, labels).scores(score)
    assert np.all(np.isfinite(raw))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=valid_histories(), method=st.sampled_from(["sei", "entropy", "corractive", "lossent", "random"]),
       budget=st.integers(0, 8))
def test_select_for_relabeling_valid_inputs_pick_distinct_samples(data, method, budget):
    history, labels = data
    picks = select_for_relabeling(labels, history, budget=budget, method=method)
    assert picks.dtype == np.int64 and len(picks) == min(budget, labels.size)
    assert len(set(picks.tolist())) == len(picks) and np.all((picks >= 0) & (picks < labels.size))


def _maybe_torch(a, to_torch, bf16):
    if not to_torch or a is None or isinstance(a, (str, list)):
        return a
    a = np.asarray(a)
    assume(a.dtype.isnative and a.dtype.kind in "fiub" and a.dtype not in (np.uint16, np.uint32, np.uint64))
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.to(torch.bfloat16) if bf16 and t.is_floating_point() else t


# (T, N, K)-shaped arrays of any values: past the shape checks, into the value checks.
histories_3d = hnp.arrays(hnp.floating_dtypes(endianness="=") | hnp.integer_dtypes(endianness="="),
                          hnp.array_shapes(min_dims=3, max_dims=3, max_side=4))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labels=arrays, history=st.one_of(arrays, histories_3d), to_torch=st.booleans(), bf16=st.booleans())
def test_generated_bad_torch_and_half_inputs_raise_only_value_or_type_errors(labels, history, to_torch, bf16):
    if isinstance(history, np.ndarray) and history.dtype.kind == "f" and not to_torch:
        with np.errstate(over="ignore"):
            history = history.astype(np.float16)
    history = _maybe_torch(history, to_torch, bf16)
    for fn in (find_label_issues, get_label_quality_scores):
        try:
            fn(labels, history)
        except (ValueError, TypeError):
            pass


small = st.one_of(st.none(), arrays)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labels=arrays, history=st.one_of(arrays, histories_3d), features=small, exclude=small, alpha=small,
       budget=st.one_of(st.integers(-2, 6), st.floats(-1, 5), st.none()),
       method=st.sampled_from(["sei_propagation", "sei", "entropy", "kim", "random"]), to_torch=st.booleans())
def test_select_for_relabeling_bad_inputs_raise_only_value_or_type_errors(labels, history, features, exclude,
                                                                           alpha, budget, method, to_torch):
    history = _maybe_torch(history, to_torch, False)
    try:
        select_for_relabeling(labels, history, features, budget=budget, method=method, exclude=exclude, alpha=alpha)
    except (ValueError, TypeError):
        pass


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=valid_histories(), exclude=small, alpha=small, budget=st.integers(0, 8))
def test_select_for_relabeling_with_valid_history_and_bad_options(data, exclude, alpha, budget):
    history, labels = data
    try:
        picks = select_for_relabeling(labels, history, budget=budget, method="sei", exclude=exclude, alpha=alpha)
    except (ValueError, TypeError):
        return
    assert len(set(picks.tolist())) == len(picks)


# --------------------------------------------------------------------------- one public module
_ADAPTERS = ("sei_cleanlab", "sei_fiftyone")
# Switching to sei.validation in its owner's change; remove it from here then.
_PENDING = set()
_PRIVATE_USE = r"(from|import)\s+sei(\.\w+)*\._\w+|\bsei\._\w+|\.(_total|_from_checked_history|_acc|_layout)\b"


def test_adapters_use_only_the_public_core():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent
    offenders = []
    for package in _ADAPTERS:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel in _PENDING:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(_PRIVATE_USE, line):
                    offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, "adapters reach into private core code:\n" + "\n".join(offenders)


def test_neighbour_and_threshold_inputs_are_checked_by_the_validation_module():
    from sei import validation

    with pytest.raises(ValueError, match="one row per sample"):
        validation.check_features(np.zeros((3, 2)), 4)
    with pytest.raises(ValueError, match="0..2"):
        validation.check_neighbors(np.array([[1], [2], [3]]), 3)
    with pytest.raises(ValueError, match="1-D"):
        sei.compute_threshold(np.zeros((2, 2)), "zero")
    with pytest.raises(ValueError, match="labels must lie"):
        sei.knn_label_margin(np.array([0, 5]), neighbors=np.array([[1], [0]]), num_classes=2)
