"""Group metrics, gaps with intervals, binning, proxies and the fairness finding rules."""

from __future__ import annotations

import numpy as np
import pytest
from fairlearn.metrics import (
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
)

from explain.errors import DataError
from explain.fairness import (
    FairnessOptions,
    ablate_feature,
    attribution_by_group,
    disparity_drift,
    group_labels,
    group_metrics,
    point_disparities,
    proxy_candidates,
    sensitive_groups,
)
from explain.findings import FindingInputs, FindingThresholds, run_rules


def _data(n=900, seed=0):
    rng = np.random.default_rng(seed)
    groups = rng.choice(np.array(["a", "b", "c"]), size=n, p=[0.5, 0.3, 0.2])
    y = (rng.random(n) < 0.5).astype(int)
    # Group b is approved less often and makes more errors.
    flip = rng.random(n) < np.where(groups == "b", 0.35, 0.1)
    pred = np.where(flip, 1 - y, y)
    pred = np.where((groups == "b") & (rng.random(n) < 0.2), 0, pred)
    conf = rng.uniform(0.5, 1.0, size=n)
    return y, pred, groups, conf


def test_group_metrics_equal_fairlearn_and_hand_computed():
    y, pred, groups, conf = _data()
    out = group_metrics(y, pred, groups, task="binary", min_group=30, confidence=conf,
                        n_boot=50, seed=0)
    by = {r["group"]: r for r in out["per_group"]}
    for g in ("a", "b", "c"):
        sel = groups == g
        yt, yp = y[sel], pred[sel]
        assert by[g]["count"] == sel.sum()
        assert by[g]["selection_rate"] == pytest.approx(np.mean(yp == 1))
        assert by[g]["accuracy"] == pytest.approx(np.mean(yt == yp))
        assert by[g]["tpr"] == pytest.approx(np.mean(yp[yt == 1] == 1))
        assert by[g]["fpr"] == pytest.approx(np.mean(yp[yt == 0] == 1))
        assert by[g]["precision"] == pytest.approx(np.mean(yt[yp == 1] == 1))
        # ECE by hand: 10 equal-width bins of the confidence.
        c, ok = conf[sel], (yt == yp).astype(float)
        b = np.clip(np.ceil(c * 10).astype(int) - 1, 0, 9)
        ece = sum(np.sum(b == k) / len(c) * abs(ok[b == k].mean() - c[b == k].mean())
                  for k in range(10) if np.any(b == k))
        assert by[g]["ece"] == pytest.approx(ece)
    gaps = {d["metric"]: d for d in out["disparities"]}
    kw = {"sensitive_features": groups}
    assert gaps["demographic_parity_difference"]["value"] == pytest.approx(
        demographic_parity_difference(y, pred, **kw))
    assert gaps["demographic_parity_ratio"]["value"] == pytest.approx(
        demographic_parity_ratio(y, pred, **kw))
    assert gaps["equalized_odds_difference"]["value"] == pytest.approx(
        equalized_odds_difference(y, pred, **kw))
    assert gaps["equal_opportunity_difference"]["value"] == pytest.approx(
        equal_opportunity_difference(y, pred, **kw))
    assert gaps["demographic_parity_difference"]["groups"] == ["a", "b"]
    for d in out["disparities"]:
        lo, hi = d["interval"]
        assert lo <= hi
        assert lo <= d["value"] + 0.05 and d["value"] - 0.05 <= hi


def test_intervals_are_seeded_and_narrow_with_more_rows():
    y, pred, groups, conf = _data(n=600)
    a = group_metrics(y, pred, groups, task="binary", min_group=30, n_boot=100, seed=3)
    b = group_metrics(y, pred, groups, task="binary", min_group=30, n_boot=100, seed=3)
    assert a["disparities"] == b["disparities"]
    y4, pred4, groups4, _ = _data(n=6000)
    big = group_metrics(y4, pred4, groups4, task="binary", min_group=30, n_boot=100, seed=3)

    def width(out):
        d = out["disparities"][0]["interval"]
        return d[1] - d[0]

    assert width(big) < width(a) / 2


def test_small_groups_are_reported_but_never_judged():
    y, pred, groups, _ = _data(n=900)
    groups = groups.astype("<U8")
    # Ten rows of a tiny group that the model never approves.
    groups[:10] = "tiny"
    pred = pred.copy()
    pred[:10] = 0
    out = group_metrics(y, pred, groups, task="binary", min_group=30, n_boot=50)
    tiny = next(r for r in out["per_group"] if r["group"] == "tiny")
    assert tiny["small"] is True and tiny["count"] == 10 and tiny["selection_rate"] == 0.0
    # Every group carries its own interval: the tiny group's is far wider.
    big = next(r for r in out["per_group"] if r["group"] == "a")
    assert tiny["interval_metric"] == "selection_rate" and tiny["interval"] == [0.0, 0.0]
    assert big["interval"][0] < big["selection_rate"] < big["interval"][1]
    assert "tiny" not in out["eligible_groups"]
    for d in out["disparities"]:
        assert "tiny" not in d["groups"]
    section = {"attributes": [{"name": "g", "groups": out["per_group"],
                               "disparities": out["disparities"], "proxies": []}],
               "min_group": 30}
    found = run_rules(FindingInputs(report={"fairness": section}))
    assert all("tiny" not in f["evidence"]["groups"] for f in found
               if f["code"] == "group_disparity")


def test_equal_groups_raise_no_disparity():
    rng = np.random.default_rng(5)
    n = 1200
    groups = rng.choice(np.array(["x", "y", "z", "w"]), size=n)
    y = (rng.random(n) < 0.5).astype(int)
    pred = np.where(rng.random(n) < 0.15, 1 - y, y)
    out = group_metrics(y, pred, groups, task="binary", min_group=30, n_boot=200)
    section = {"attributes": [{"name": "g", "groups": out["per_group"],
                               "disparities": out["disparities"], "proxies": []}]}
    assert run_rules(FindingInputs(report={"fairness": section})) == []


def test_regression_and_multiclass_metrics():
    rng = np.random.default_rng(1)
    n = 400
    groups = np.where(rng.random(n) < 0.5, "p", "q")
    y = rng.normal(size=n)
    pred = y + np.where(groups == "q", 0.5, 0.0) + rng.normal(0, 0.1, size=n)
    out = group_metrics(y, pred, groups, task="regression", min_group=30, n_boot=50)
    by = {r["group"]: r for r in out["per_group"]}
    for g in ("p", "q"):
        sel = groups == g
        assert by[g]["mean_error"] == pytest.approx(np.mean(pred[sel] - y[sel]))
        assert by[g]["mae"] == pytest.approx(np.mean(np.abs(pred[sel] - y[sel])))
    gaps = {d["metric"]: d["value"] for d in out["disparities"]}
    assert gaps["mean_error_difference"] == pytest.approx(
        abs(by["q"]["mean_error"] - by["p"]["mean_error"]))

    yc = rng.integers(0, 3, size=n)
    pc = np.where(groups == "q", (yc + 1) % 3, yc)
    out = group_metrics(yc, pc, groups, task="multiclass", min_group=30, n_boot=50)
    assert [d["metric"] for d in out["disparities"]] == ["accuracy_difference"]
    assert out["disparities"][0]["value"] == pytest.approx(1.0)
    out = group_metrics(yc, pc, groups, task="multiclass", min_group=30, n_boot=50,
                        positive_class=2)
    assert "demographic_parity_difference" in {d["metric"] for d in out["disparities"]}


def test_continuous_attributes_are_binned_with_the_bins_reported():
    age = np.arange(20, 80)
    labels, info = group_labels(age, "age", n_bins=4)
    assert info["binned"] is True
    edges = [b["upper"] for b in info["bins"][:-1]]
    assert edges == sorted(edges) and len(info["bins"]) == 4
    assert info["bins"][0]["lower"] is None and info["bins"][-1]["upper"] is None
    assert labels[0] == info["bins"][0]["group"] and labels[-1] == info["bins"][-1]["group"]
    labels, info = group_labels(age, "age", edges=[40, 60])
    assert [b["group"] for b in info["bins"]] == ["< 40", "40-60", ">= 60"]
    assert labels[age == 40][0] == "40-60" and labels[age == 39][0] == "< 40"
    # Few distinct numbers are categories, text is kept as it is.
    labels, info = group_labels(np.array([0, 1, 1, 0]), "sex")
    assert labels.tolist() == ["0", "1", "1", "0"] and info["binned"] is False
    labels, _ = group_labels(np.array(["f", "m"]), "sex")
    assert labels.tolist() == ["f", "m"]


def test_an_attribute_needs_two_groups_large_enough():
    values = np.array(["a"] * 50 + ["b"] * 5)
    with pytest.raises(DataError, match="at least two groups of 30") as err:
        sensitive_groups({"g": values}, 55, 30, FairnessOptions())
    assert err.value.code == "bad_sensitive"
    with pytest.raises(DataError, match="shape"):
        sensitive_groups({"g": values[:10]}, 55, 30, FairnessOptions())
    with pytest.raises(DataError, match="fairness.bins"):
        sensitive_groups({"g": values}, 55, 5, FairnessOptions(bins={"age": [3]}))
    with pytest.raises(ValueError, match="unknown fairness option"):
        FairnessOptions.from_config({"n_bootstrap": 3})
    with pytest.raises(ValueError, match="increasing"):
        FairnessOptions.from_config({"bins": {"age": [60, 40]}})


def test_proxy_candidates_and_ablation():
    rng = np.random.default_rng(0)
    n = 800
    g = np.where(rng.random(n) < 0.4, "B", "A")
    proxy = (g == "B") * 1.0 + rng.normal(0, 0.3, size=n)
    honest = rng.normal(size=n)
    x = np.stack([honest, proxy], axis=1)
    cands = proxy_candidates(x, g, ["A", "B"], ["honest", "proxy"],
                             {"honest": 0.6, "proxy": 0.4})
    by = {c["feature"]: c for c in cands}
    assert by["proxy"]["auc"] > 0.9 and by["honest"]["auc"] < 0.6
    assert by["proxy"]["mutual_information"] > by["honest"]["mutual_information"]
    assert by["proxy"]["attribution_share"] == 0.4

    def predict(xx):  # a model that approves on the honest score, minus the proxy
        return ((xx[:, 0] - 1.5 * xx[:, 1]) > -0.5).astype(int)

    y = (honest > 0).astype(int)
    pred = predict(x)
    base = point_disparities(y, pred, g, ["A", "B"], "binary", 1)
    without = ablate_feature(predict, x, 1, y, g, ["A", "B"], "binary", 1)
    assert base["demographic_parity_difference"] > 0.3
    assert without["demographic_parity_difference"] < 0.1
    kept = ablate_feature(predict, x, 0, y, g, ["A", "B"], "binary", 1)
    assert kept["demographic_parity_difference"] > 0.3


def test_attribution_by_group_names_the_feature_that_differs():
    rng = np.random.default_rng(0)
    g = np.array(["A"] * 50 + ["B"] * 50)
    values = rng.normal(0, 0.05, size=(100, 3))
    values[g == "B", 2] -= 1.0
    out = attribution_by_group(values, g, ["f0", "f1", "f2"], ["A", "B"])
    top = out["largest_differences"][0]
    assert top["feature"] == "f2" and top["highest"] == "A" and top["lowest"] == "B"
    assert out["per_group"]["B"]["rows"] == 50


def _section(disparities, proxies=(), drift=None):
    return {"fairness": {"attributes": [{"name": "group", "groups": [], "bins": None,
                                         "disparities": list(disparities),
                                         "proxies": list(proxies)}],
                         "min_group": 30, "positive_class": "approved", "drift": drift}}


def _codes(report, **th):
    return [f["code"] for f in run_rules(FindingInputs(report=report),
                                         FindingThresholds.from_config(th))]


def test_group_disparity_judges_the_interval_not_the_point():
    d = {"metric": "demographic_parity_difference", "kind": "difference", "value": 0.2,
         "interval": [0.12, 0.28], "groups": ["A", "B"]}
    found = run_rules(FindingInputs(report=_section([d])))
    assert [f["code"] for f in found] == ["group_disparity"]
    ev = found[0]["evidence"]
    assert ev["metric"] == "demographic_parity_difference" and ev["groups"] == ["A", "B"]
    assert ev["interval"] == [0.12, 0.28] and ev["threshold"] == 0.10
    # The same point value with a wide interval (a small sample) is not a finding.
    wide = {**d, "interval": [0.02, 0.38]}
    assert _codes(_section([wide])) == []
    # Overridable per audit.
    assert _codes(_section([d]), disparity_max_difference=0.15) == []
    ratio = {"metric": "demographic_parity_ratio", "kind": "ratio", "value": 0.6,
             "interval": [0.5, 0.7], "groups": ["A", "B"]}
    assert _codes(_section([ratio])) == ["group_disparity"]
    assert _codes(_section([{**ratio, "interval": [0.5, 0.85]}])) == []
    # One finding per attribute: headed by demographic parity, every crossing gap listed.
    eo = {"metric": "equalized_odds_difference", "kind": "difference", "value": 0.4,
          "interval": [0.3, 0.5], "groups": ["B", "A"]}
    found = run_rules(FindingInputs(report=_section([eo, ratio, d, wide])))
    assert [f["code"] for f in found] == ["group_disparity"]
    ev = found[0]["evidence"]
    assert ev["metric"] == "demographic_parity_difference"
    assert [g["metric"] for g in ev["flagged"]] == [
        "demographic_parity_difference", "equalized_odds_difference",
        "demographic_parity_ratio"]
    assert found[0]["severity"] == "critical"  # the equalized-odds interval starts at 3x
    assert "Also beyond their thresholds: equalized odds difference" in found[0]["message"]


def test_proxy_feature_needs_predictiveness_and_attribution():
    d = {"metric": "demographic_parity_difference", "kind": "difference", "value": 0.2,
         "interval": [0.12, 0.28], "groups": ["A", "B"]}
    p = {"feature": "district", "auc": 0.95, "mutual_information": 0.4,
         "attribution_share": 0.12,
         "disparity_with": {"demographic_parity_difference": 0.2},
         "disparity_without": {"demographic_parity_difference": 0.05}}
    found = run_rules(FindingInputs(report=_section([d], [p])))
    proxy = next(f for f in found if f["code"] == "proxy_feature")
    assert proxy["severity"] == "critical"
    assert proxy["evidence"]["feature"] == "district"
    assert proxy["evidence"]["share_of_gap_carried"] == pytest.approx(0.75)
    assert "district" in proxy["message"] and "0.20 to 0.05" in proxy["message"]
    assert "proxy_feature" not in _codes(_section([d], [{**p, "auc": 0.6}]))
    assert "proxy_feature" not in _codes(_section([d], [{**p, "attribution_share": 0.01}]))


def test_disparity_drift_when_the_gap_moves_beyond_the_noise():
    prev = _section([{"metric": "demographic_parity_difference", "kind": "difference",
                      "value": 0.05, "interval": [0.0, 0.1], "groups": ["A", "B"]}])
    cur = _section([{"metric": "demographic_parity_difference", "kind": "difference",
                     "value": 0.25, "interval": [0.18, 0.32], "groups": ["A", "B"]}])
    drift = disparity_drift(prev["fairness"], cur["fairness"])
    assert drift[0]["change"] == pytest.approx(0.2)
    cur["fairness"]["drift"] = drift
    assert "disparity_drift" in _codes(cur)
    # Overlapping intervals: within the noise.
    drift[0]["interval"] = [0.08, 0.4]
    assert "disparity_drift" not in _codes(cur)
    assert disparity_drift(None, cur["fairness"]) is None


def test_regression_gaps_are_judged_against_the_error_scale():
    from explain.fairness import assess_fairness

    rng = np.random.default_rng(2)
    n = 600
    g = np.where(rng.random(n) < 0.5, "p", "q")
    x = np.stack([rng.normal(size=n), (g == "q") + rng.normal(0, 0.2, size=n)], axis=1)
    y = x[:, 0]

    def predict(xx):  # over-predicts for rows that look like group q
        return xx[:, 0] + 0.6 * (xx[:, 1] > 0.5) + 0.05 * np.sin(7 * xx[:, 0])

    section = assess_fairness(
        sensitive={"g": g}, x=x, y_true=y, y_pred=predict(x), task="regression",
        predict=predict, kind="tabular", thresholds=FindingThresholds(),
        feature_names=["score", "zone"],
        importance=[{"feature": "score", "score": 1.0}, {"feature": "zone", "score": 0.4}])
    assert section["positive_class"] is None
    gaps = {d["metric"] for d in section["attributes"][0]["disparities"]}
    assert gaps == {"mean_error_difference", "mae_difference"}
    # The rule needs the error scale (the audit adds the overall MAE): a gap of ~0.5
    # against an MAE of ~0.25 is a disparity.
    section["error_scale"] = float(np.mean(np.abs(predict(x) - y)))
    found = run_rules(FindingInputs(report={"fairness": section}))
    codes = [f["code"] for f in found]
    assert "group_disparity" in codes and "proxy_feature" in codes
    proxy = next(f for f in found if f["code"] == "proxy_feature")["evidence"]
    assert proxy["feature"] == "zone"
    assert proxy["disparity_without"]["mean_error_difference"] < 0.2


def test_image_models_get_group_metrics_but_no_proxies():
    from explain.fairness import assess_fairness

    rng = np.random.default_rng(0)
    g = np.where(rng.random(200) < 0.5, "a", "b")
    y = rng.integers(0, 2, size=200)
    section = assess_fairness(
        sensitive={"g": g}, x=rng.random((200, 8, 8, 1)), y_true=y, y_pred=y, task="binary",
        predict=None, kind="image", thresholds=FindingThresholds())
    attr = section["attributes"][0]
    assert attr["proxies"] == [] and attr["attribution"] is None
    assert "tabular" in section["notes"][0]
    assert attr["disparities"][0]["value"] == pytest.approx(
        demographic_parity_difference(y, y, sensitive_features=g))


def test_identifiers_are_not_groups_and_long_labels_are_cut():
    ids = np.array([f"user{i}" for i in range(300)])
    with pytest.raises(DataError, match="300 distinct values") as err:
        sensitive_groups({"id": ids}, 300, 2, FairnessOptions())
    assert err.value.code == "bad_sensitive"
    labels, _ = group_labels(np.array(["x" * 500, "y"]), "g")
    assert max(len(v) for v in labels) <= 80


def test_bootstrap_in_blocks_matches_one_block(monkeypatch):
    import explain.fairness as fairness

    y, pred, groups, _ = _data(n=900)
    one = group_metrics(y, pred, groups, task="binary", min_group=30, n_boot=60, seed=1)
    monkeypatch.setattr(fairness, "_BOOT_BLOCK", 1000)  # a few replicates per block
    blocks = group_metrics(y, pred, groups, task="binary", min_group=30, n_boot=60, seed=1)
    assert [d["value"] for d in one["disparities"]] == [d["value"] for d in blocks["disparities"]]
    for a, b in zip(one["disparities"], blocks["disparities"], strict=True):
        assert a["interval"][1] - a["interval"][0] == pytest.approx(
            b["interval"][1] - b["interval"][0], abs=0.08)


def test_each_group_has_an_interval_wider_for_small_groups():
    y, pred, groups, _ = _data(n=900)
    groups = groups.astype("<U8")
    groups[:12] = "few"
    pred = pred.copy()
    pred[:12] = np.arange(12) % 2  # half approved
    out = group_metrics(y, pred, groups, task="binary", min_group=30, n_boot=200)
    by = {r["group"]: r for r in out["per_group"]}
    width = {g: r["interval"][1] - r["interval"][0] for g, r in by.items()}
    assert width["few"] > 0.3 and width["a"] < 0.15
    assert by["few"]["interval"][0] <= 0.5 <= by["few"]["interval"][1]
