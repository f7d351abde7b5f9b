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
