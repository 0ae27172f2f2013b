"""Audits that never answer nonsense: the regression report renders, drift with features
present in one audit only, degenerate attributions, one completeness rule, labels in CSV."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from explain import Attribution
from explain.attributions.base import completeness_gap
from explain.audit import run_audit
from explain.cli import main
from explain.datasets import DataError, Dataset, load_data_file, validate_for_model
from explain.findings import (
    FindingInputs,
    FindingRuleError,
    degenerate_examples,
    run_rules,
)
from explain.metrics import CompletenessGap, ModelParameterRandomization
from explain.modelio import load_model_safely
from reports import render_html
from tests import models


def test_regression_table_audit_renders_a_report(tmp_path):
    model = models.mlp_regressor(n_features=6)
    path = tmp_path / "price.keras"
    model.save(path)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 6)).astype(np.float32)
    y = model.predict(x, verbose=0)[:, 0] + rng.normal(0, 0.1, 60).astype(np.float32)
    result = run_audit(path, Dataset(x=x, y=y), {"samples": 6, "methods": [
        "integrated_gradients"], "quality": {"randomization": False, "faithfulness": False}})
    html = render_html(result)
    assert "Global importance" in html and "per_class" not in html


def test_drift_items_without_a_change_do_not_crash_the_findings():
    report = {"drift": {"ndcg": 0.2, "previous_audit": "prev", "items": [
        {"feature": "a", "previous_score": 1.0, "score": 0.1, "change": -0.9},
        {"feature": "new", "previous_score": None, "score": 2.0, "change": None},
        {"feature": "gone", "previous_score": 0.5, "score": None, "change": None},
    ]}}
    found = run_rules(FindingInputs(report=report))
    drift = [f for f in found if f["code"] == "attribution_drift"]
    assert len(drift) == 1
    movers = [m["feature"] for m in drift[0]["evidence"]["largest_changes"]]
    assert movers == ["new", "a", "gone"]


def test_a_crashing_rule_is_an_internal_error_not_the_users_input():
    # Whatever a rule raises becomes FindingRuleError: neither ValueError nor TypeError,
    # which a service would report as the caller's invalid input.
    bad = {"performance": {"per_class": [{"class": "a", "recall": "x", "support": 9},
                                         {"class": "b", "recall": 0.5, "support": 9}]}}
    with pytest.raises(FindingRuleError) as info:
        run_rules(FindingInputs(report=bad))
    assert not isinstance(info.value, (ValueError, TypeError))
    assert "weak_class" in str(info.value)


def test_degenerate_examples():
    v = np.zeros((3, 4, 4))
    v[1] = 2.0
    v[2, 0, 0] = 1.0
    assert degenerate_examples(v).tolist() == [True, True, False]
    assert degenerate_examples(np.zeros((2, 5))).tolist() == [True, True]


@pytest.mark.parametrize("fill", [0.0, 0.3])
def test_zero_or_constant_attributions_are_an_explanation_failed_finding(fill):
    values = np.full((6, 8), fill)
    found = run_rules(FindingInputs(report={}, attributions={
        "shap": values, "integrated_gradients": np.random.default_rng(0).normal(size=(6, 8))}))
    failed = [f for f in found if f["code"] == "explanation_failed"]
    assert [f["evidence"]["method"] for f in failed] == ["shap"]
    assert failed[0]["severity"] == "critical"
    assert failed[0]["evidence"]["all_zero"] is (fill == 0.0)


def test_all_zero_maps_fail_the_randomization_check():
    model = models.mlp_classifier(n_features=6, n_classes=3)
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)

    def zeros(m, xx, targets):
        return np.zeros(xx.shape, np.float32)

    r = ModelParameterRandomization(model, x, method=zeros, max_layers=1).detailed(None)
    assert r.score == pytest.approx(1.0) and r.passed is False


def _attr(gaps, deltas):
    n = len(gaps)
    base = np.zeros(n, np.float32)
    scores = np.asarray(deltas, np.float32)
    values = np.zeros((n, 3), np.float32)
    values[:, 0] = scores + np.asarray(gaps, np.float32)
    return Attribution(values=values, method="integrated_gradients",
                       targets=np.zeros(n, np.int64), scores=scores, baseline_scores=base,
                       completeness_gap=completeness_gap(values, scores, base))


def test_pooled_completeness_verdict_and_count_follow_one_rule():
    # One example barely moves: its own ratio is huge, the pooled gap is small.
    a = _attr([0.004, 0.001, 0.001, 0.001], [0.003, 1.0, 1.0, 1.0])
    pooled = CompletenessGap(0.05, pooled=True).detailed(a)
    assert pooled.score == pytest.approx(0.007 / 4 / (3.003 / 4), rel=1e-3)
    assert pooled.passed is True and pooled.detail["n_over_tolerance"] == 0
    assert CompletenessGap(0.05).detailed(a).passed is False  # the max rule differs
    big = _attr([0.2, 0.001, 0.001, 0.001], [1.0, 1.0, 1.0, 1.0])
    r = CompletenessGap(0.05, pooled=True).detailed(big)
    assert r.score == pytest.approx(0.203 / 4, rel=1e-3)
    assert r.passed is False and r.detail["n_over_tolerance"] == 1


def _csv(path, with_label=True):
    rng = np.random.default_rng(0)
    rows = ["a,b,c,target" if with_label else "a,b,c"]
    for _ in range(12):
        vals = rng.normal(size=3)
        rows.append(",".join(f"{v:.3f}" for v in vals) + (f",{int(vals[0] > 0)}"
                                                          if with_label else ""))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_csv_with_label_column_but_no_label_says_to_pass_label(tmp_path):
    model = models.mlp_classifier(n_features=3, n_classes=2)
    model.save(tmp_path / "m.keras")
    _, spec = load_model_safely(tmp_path / "m.keras")
    data = load_data_file(_csv(tmp_path / "d.csv"))
    with pytest.raises(DataError) as info:
        validate_for_model(data, spec)
    assert info.value.code == "bad_shape"
    assert "--label 'target'" in info.value.message and "label field" in info.value.message
    ok = validate_for_model(load_data_file(tmp_path / "d.csv", label="target"), spec)
    assert ok.x.shape == (12, 3)


def test_cli_explain_takes_label_and_says_to_pass_it(tmp_path):
    model = models.mlp_classifier(n_features=3, n_classes=2)
    model.save(tmp_path / "m.keras")
    csv_path = _csv(tmp_path / "d.csv")
    r = CliRunner().invoke(main, ["explain", str(tmp_path / "m.keras"), "--data",
                                  str(csv_path), "--out", str(tmp_path / "a.npy")])
    assert r.exit_code == 2 and "--label" in r.stderr and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["explain", str(tmp_path / "m.keras"), "--data",
                                  str(csv_path), "--label", "target", "--rows", "4",
                                  "--out", str(tmp_path / "a.npy")])
    assert r.exit_code == 0, r.stderr
    assert np.load(tmp_path / "a.npy").shape == (4, 3)
    r = CliRunner().invoke(main, ["audit", str(tmp_path / "m.keras"), "--data",
                                  str(csv_path), "--out", str(tmp_path / "r.html"), "--quiet"])
    assert r.exit_code == 2 and "--label" in r.stderr


def test_audit_of_a_model_with_constant_output_reports_explanation_failed(tmp_path):
    model = models.mlp_classifier(n_features=5, n_classes=3)
    last = model.layers[-1]
    kernel, bias = last.get_weights()
    last.set_weights([np.zeros_like(kernel), np.array([2.0, 0.0, -1.0], np.float32)])
    path = tmp_path / "flat.keras"
    model.save(path)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = np.arange(40) % 3
    result = run_audit(path, Dataset(x=x, y=y), {"samples": 6, "methods": [
        "integrated_gradients"], "quality": {"faithfulness": False}})
    report = result.report
    codes = [f["code"] for f in report["findings"]]
    assert "explanation_failed" in codes
    assert report["verdict"]["level"] == "fail"
    checks = {c["metric"]: c for c in report["explanation_quality"][
        "integrated_gradients"]["checks"]}
    assert checks["randomization_similarity"]["passed"] is False
    assert report["explanation_quality"]["integrated_gradients"]["passed"] is False
    comp = report["explanation_quality"]["integrated_gradients"]["completeness"]
    assert comp["passed"] is checks["completeness_gap"]["passed"]
    assert comp["relative_gap"] == pytest.approx(checks["completeness_gap"]["score"])


def _table_report(scores, drops, metric="accuracy"):
    items = [{"feature": f"f{i}", "score": s} for i, s in enumerate(scores)]
    perm = {"metric": metric, "baseline": 0.95,
            "items": [{"feature": f"f{i}", "drop": d, "score": 0.95 - d}
                      for i, d in enumerate(drops)]}
    return {"global_importance": {"kind": "tabular", "method": "integrated_gradients",
                                  "items": items, "grid": None, "permutation": perm}}


def test_dominant_feature_backed_by_permutation_when_its_share_is_diluted():
    # 64 features: the leak holds 0.29 of the importance at 7.6x the next, and shuffling
    # it costs 0.46 accuracy, far more than any other feature.
    scores = [0.29] + [0.71 / 63] * 63
    found = run_rules(FindingInputs(report=_table_report(scores, [0.46, 0.01, 0.007])))
    dom = [f for f in found if f["code"] == "dominant_feature"]
    assert len(dom) == 1 and dom[0]["evidence"]["feature"] == "f0"
    assert dom[0]["evidence"]["judged_by"] == "permutation"
    assert dom[0]["evidence"]["permutation_drop"] == pytest.approx(0.46)
    assert "Shuffling it drops the model's accuracy by 0.46" in dom[0]["message"]
    # A clean top feature: small lead, and shuffling it costs about what the next does.
    clean = run_rules(FindingInputs(report=_table_report([0.2, 0.15, 0.12, 0.1] + [0.05] * 8,
                                                         [0.19, 0.15, 0.06])))
    assert not [f for f in clean if f["code"] == "dominant_feature"]
    # The lead in attribution alone, without the model's behaviour behind it, is not enough.
    weak = run_rules(FindingInputs(report=_table_report([0.25, 0.14] + [0.061] * 10,
                                                        [0.05, 0.04, 0.03])))
    assert not [f for f in weak if f["code"] == "dominant_feature"]


def test_regression_audit_reports_r2_permutation_drop(tmp_path):
    model = models.linear_regression(n_features=5)[0]
    path = tmp_path / "lin.keras"
    model.save(path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 5)).astype(np.float32)
    y = model.predict(x, verbose=0)[:, 0]
    result = run_audit(path, Dataset(x=x, y=y), {"samples": 6, "methods": [
        "integrated_gradients"], "quality": {"randomization": False, "faithfulness": False}})
    perm = result.report["global_importance"]["permutation"]
    assert perm["metric"] == "r2" and perm["baseline"] == pytest.approx(1.0, abs=1e-4)
    assert all(p["drop"] > 0 for p in perm["items"]) and len(perm["items"]) == 3


def test_correlation_ratio_is_the_share_of_the_output_one_column_explains():
    from explain.audit.permutation import correlation_ratio

    rng = np.random.default_rng(0)
    leak = rng.integers(0, 2, 400) + rng.normal(0, 0.05, 400)
    noise = rng.normal(size=400)
    # An output that is a function of the column: nearly all of it (ten quantile bins
    # leave the variation inside each); with noise of its own added, part of it (two
    # columns, as a softmax pair).
    assert correlation_ratio(np.tanh(leak), leak) > 0.9
    out = np.stack([leak + rng.normal(0, 0.5, 400), -leak], axis=1)
    assert 0.5 < correlation_ratio(out, leak) < 0.75
    # An unrelated column scores about (bins - 1) / n; a constant output scores 0.
    assert correlation_ratio(np.tanh(leak), noise) < 0.06
    assert correlation_ratio(np.ones(50), noise[:50]) == 0.0
    # A column with two distinct values makes two bins, not ten.
    assert correlation_ratio(np.round(leak), np.round(leak)) == pytest.approx(1.0)


def _alone_report(scores, drops, alone):
    report = _table_report(scores, drops)
    for item, a in zip(report["global_importance"]["permutation"]["items"], alone,
                       strict=True):
        item["alone"] = a
    return report


def test_dominant_feature_when_one_feature_alone_explains_the_output():
    # planted_tab_06 of bench/truthfulness.py: a sigmoid model on 20 features whose leak
    # leads by only 1.15x in attribution and 1.7x in permutation drop, yet explains 74%
    # of the model's output on its own.
    scores = [0.135, 0.117, 0.1, 0.09] + [0.558 / 16] * 16
    found = run_rules(FindingInputs(report=_alone_report(
        scores, [0.166, 0.094, 0.09], [0.737, 0.2, 0.1])))
    dom = [f for f in found if f["code"] == "dominant_feature"]
    assert len(dom) == 1 and dom[0]["evidence"]["judged_by"] == "output_alone"
    assert dom[0]["evidence"]["output_explained_alone"] == pytest.approx(0.737)
    assert "On its own it explains 74% of the variance" in dom[0]["message"]
    # The clean twins: the top feature explains at most 0.41 of the output.
    for alone, drops in ((0.41, [0.47, 0.40, 0.3]), (0.38, [0.18, 0.13, 0.1])):
        clean = run_rules(FindingInputs(report=_alone_report(scores, drops,
                                                             [alone, 0.3, 0.2])))
        assert not [f for f in clean if f["code"] == "dominant_feature"]
    # Explaining the output is not enough without the model losing the most without it,
    # and without losing at least the minimum drop.
    for drops in ([0.10, 0.12, 0.05], [0.04, 0.01, 0.01]):
        weak = run_rules(FindingInputs(report=_alone_report(scores, drops,
                                                            [0.8, 0.3, 0.2])))
        assert not [f for f in weak if f["code"] == "dominant_feature"]
