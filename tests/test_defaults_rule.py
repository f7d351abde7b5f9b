"""The defaults rule (benchmarks/defaults_rule.py) on small hand-made tables of cells."""

import pytest

from benchmarks.defaults_rule import choose, choose_defaults, evaluate


def _cell(cl_auroc, cl_f1, aum_auroc, **cands):
    return {"cl_auroc": cl_auroc, "cl_f1": cl_f1, "aum_auroc": aum_auroc,
            "candidates": {tuple(k.split("|")): {"auroc": a, "f1": f} for k, (a, f) in cands.items()}}


def _table():
    # two regime-a cells (heads apply) and one regime-b cell (head None)
    a1 = {"linear|aum_prob|auto": (0.92, 0.50), "prompt|aum_prob|auto": (0.91, 0.52),
          "linear|sei|auto": (0.80, 0.60), "linear|aum_prob_knn|auto": (0.95, 0.55)}
    a2 = {"linear|aum_prob|auto": (0.93, 0.70), "prompt|aum_prob|auto": (0.90, 0.72),
          "linear|sei|auto": (0.81, 0.75), "linear|aum_prob_knn|auto": (0.94, 0.71)}
    b = {"None|aum_prob|auto": (0.90, 0.45), "None|sei|auto": (0.85, 0.50), "None|aum_prob_knn|auto": (0.93, 0.46)}
    cells = {("a", "x", "s1", 0): _cell(0.90, 0.48, 0.905, **a1), ("a", "x", "s2", 0): _cell(0.91, 0.69, 0.91, **a2),
             ("b", "x", "s1", 0): _cell(0.86, 0.44, 0.88, **b)}
    for c in cells.values():  # regime b has no head: key it as (None, score, threshold)
        c["candidates"] = {((None if k[0] == "None" else k[0]),) + k[1:]: v for k, v in c["candidates"].items()}
    return cells


CANDS = [("linear", "aum_prob", "auto"), ("prompt", "aum_prob", "auto"), ("linear", "sei", "auto"),
         ("linear", "aum_prob_knn", "auto")]


def test_both_goals_count_first_then_f1_then_lead():
    cells = _table()
    # sei wins F1 everywhere but never the AUROC goal; aum_prob (linear) meets both goals in all cells
    cand, key, verdicts = choose(cells, CANDS[:3])
    assert cand == ("linear", "aum_prob", "auto")
    assert key[:2] == (3, 3) and len(verdicts) == 3
    # with features: the kNN variant meets both goals everywhere and leads by more
    out = choose_defaults(cells, CANDS)
    assert out["without_features"][0] == ("linear", "aum_prob", "auto")
    assert out["with_features"][0] == ("linear", "aum_prob_knn", "auto")
    assert out["head"] == "linear"


def test_regime_b_cells_fall_back_to_the_headless_entry():
    v = evaluate(_table(), ("prompt", "aum_prob", "auto"))
    assert [round(x["lead"], 3) for x in v] == [0.005, -0.01, 0.02]
    assert [x["auroc_goal"] for x in v] == [False, False, True]


def test_ties_go_to_the_simpler_option():
    cells = {("a", "x", "s", 0): _cell(0.8, 0.4, 0.8, **{"prompt|aum|aux_quantile": (0.9, 0.5),
                                                       "prompt|aum|auto": (0.9, 0.5),
                                                       "linear|aum|auto": (0.9004, 0.5)})}
    cands = [("prompt", "aum", "aux_quantile"), ("prompt", "aum", "auto"), ("linear", "aum", "auto")]
    # equal within the 0.001 rounding: no auxiliary samples beats auxiliary, linear beats prompt
    assert choose(cells, cands)[0] == ("linear", "aum", "auto")
    assert choose(cells, cands[:2])[0] == ("prompt", "aum", "auto")


def test_a_candidate_missing_from_a_cell_does_not_compete():
    cells = _table()
    missing = ("linear", "poe", "auto")
    assert evaluate(cells, missing) is None
    assert choose(cells, [missing] + CANDS[:1])[0] == CANDS[0]
    with pytest.raises(ValueError, match="no candidate"):
        choose(cells, [missing])
    with pytest.raises(ValueError, match="at least one cell"):
        choose({}, CANDS)


def test_report_applies_the_rule_to_cifar_cells_only(tmp_path):
    from benchmarks.defaults_report import write_report

    def rec(data, seed, knn_auroc):
        cands = {"linear|aum_prob|auto": {"auroc": 0.92, "f1": 0.50}, "prompt|aum_prob|auto": {"auroc": 0.90, "f1": 0.52},
                 "linear|aum_prob_knn|auto": {"auroc": knn_auroc, "f1": 0.51}}
        return {"regime": "a", "data": data, "labels": "x", "seed": seed, "noise": 0.2, "cl_auroc": 0.90,
                "cl_f1": 0.49, "aum_auroc": 0.905, "candidates": cands}

    # the added set would prefer aum_prob over the kNN variant; it must not change the choice
    cells = {"a/cifar10n/x/0": rec("cifar10n", 0, 0.95), "a/digits/x/0": rec("digits", 0, 0.80)}
    choice = write_report(cells, tmp_path / "defaults.md")
    assert choice["with_features"][0] == ("linear", "aum_prob_knn", "auto")
    assert choice["without_features"][0] == ("linear", "aum_prob", "auto") and choice["head"] == "linear"
    text = (tmp_path / "defaults.md").read_text()
    assert "| a | digits | x | 0 |" in text and "not met" in text


def test_library_defaults_are_the_committed_choice():
    # sei.constants keeps only the chosen values; the choice (and the cells behind it) lives in
    # benchmarks/results/ (defaults.json, defaults_choice.md, defaults.md)
    import json
    from pathlib import Path

    from sei import constants

    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    choice = json.loads((results / "defaults.json").read_text())
    bench_name = {"poe": "poe_knn"}  # the benchmark's product of experts is the registry's poe_knn
    _, score, threshold = choice["history_only"]["candidate"]
    assert (score, threshold) == (constants.DEFAULT_SCORE, constants.DEFAULT_THRESHOLD)
    head, score, threshold = choice["with_features"]["candidate"]
    assert (bench_name.get(score, score), threshold) == (constants.DEFAULT_FEATURE_SCORE, constants.DEFAULT_THRESHOLD)
    assert choice["head"] == head == constants.DEFAULT_HEAD
    assert (results / "defaults_choice.md").exists()


def test_the_library_cuts_where_the_cutoff_rule_chose():
    # issue #22 item 3: the rule over every committed peers cell picks the cutoff of the default's ranking;
    # threshold="auto" for the default with features is that cutoff in every entry point
    import json
    from pathlib import Path

    from benchmarks.defaults_rule import LIBRARY_CUTOFF, choose_cutoff
    from sei import constants
    from sei.thresholds import resolve_threshold

    cells = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "peers_cells.json").read_text())
    chosen = choose_cutoff(cells)[0]
    assert LIBRARY_CUTOFF[chosen] == constants.AUTO_THRESHOLDS[constants.DEFAULT_FEATURE_SCORE]
    assert resolve_threshold(constants.DEFAULT_THRESHOLD, constants.DEFAULT_FEATURE_SCORE) == LIBRARY_CUTOFF[chosen]


def _cut_cell(peer_f1s, cut_f1s):
    return {"methods": {"SEI default (poe_knn, zero)": {"f1": 0.99}, **{f"p{i}": {"f1": f} for i, f in enumerate(peer_f1s)}},
            "cutoffs": {c: {"f1": f} for c, f in cut_f1s.items()}}


def test_cutoff_rule_counts_cells_at_or_above_the_best_peer_then_worst_lead():
    from benchmarks.defaults_rule import choose_cutoff

    cells = {"c1": _cut_cell([0.50, 0.60], {"zero": 0.55, "gmm": 0.61, "cl_count_mean": 0.62}),
             "c2": _cut_cell([0.70], {"zero": 0.72, "gmm": 0.69, "cl_count_mean": 0.70})}
    # the default's own 0.99 is not a peer; zero and gmm each meet one cell, cl_count_mean both
    cut, rank, leads = choose_cutoff(cells)
    assert cut == "cl_count_mean" and rank[0] == 2
    assert leads == pytest.approx({"c1": 0.02, "c2": 0.0})
    # without it: one cell each, the worst lead decides (gmm -0.01 beats zero -0.05)
    assert choose_cutoff(cells, ("zero", "gmm"))[0] == "gmm"


def test_cutoff_rule_ties_go_to_the_simpler_and_missing_ones_do_not_compete():
    from benchmarks.defaults_rule import choose_cutoff

    cells = {"c1": _cut_cell([0.5], {"zero": 0.6, "gmm": 0.6, "cl_count_last": 0.9})}
    cells["c2"] = _cut_cell([0.5], {"zero": 0.6, "gmm": 0.6})
    assert choose_cutoff(cells)[0] == "zero"
    with pytest.raises(ValueError):
        choose_cutoff({"c": _cut_cell([0.5], {})})
