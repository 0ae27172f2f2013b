"""Group fairness through the audit: the lending twins, the CLI and drift of the gap."""

from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner
from fairlearn.metrics import demographic_parity_difference

from explain.audit import run_audit
from explain.cli import main
from explain.datasets import LENDING_PROXY
from explain.errors import DataError
from explain.training import train_reference_model
from reports import validate_report

FAST = {"methods": ["integrated_gradients"], "samples": 6, "global_rows": 150}


@pytest.fixture(scope="module")
def biased(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lending")
    return train_reference_model("lending", out=folder / "lending.keras", seed=0,
                                 verbose=0, save_test=folder / "test.npz")


@pytest.fixture(scope="module")
def result(biased):
    return run_audit(biased.model_path, biased.test_path,
                     {**FAST, "sensitive": ["group", "age"]})


@pytest.fixture(scope="module")
def report(result):
    return result.report


def test_fairness_section_measures_every_row(biased, report):
    validate_report(report)
    attrs = {a["name"]: a for a in report["fairness"]["attributes"]}
    assert set(attrs) == {"group", "age"}
    assert report["fairness"]["positive_class"] == "approved"
    group = attrs["group"]
    assert {g["group"] for g in group["groups"]} == {"A", "B"}
    assert sum(g["count"] for g in group["groups"]) == biased.test.n
    # The gap equals Fairlearn's on the model's own predictions over every row.
    proba = biased.model.predict(biased.test.x, verbose=0)
    pred = proba.argmax(axis=1)
    dp = next(d for d in group["disparities"]
              if d["metric"] == "demographic_parity_difference")
    assert dp["value"] == pytest.approx(demographic_parity_difference(
        biased.test.y, pred, sensitive_features=biased.test.sensitive["group"]), abs=1e-6)
    # Age is continuous: binned, with the bins in the report.
    age = attrs["age"]
    assert age["binned"] is True and len(age["bins"]) == 4
    assert age["attribution"] is not None and group["attribution"]["rows"] == 150
    proxy = next(p for p in group["proxies"] if p["feature"] == LENDING_PROXY)
    assert proxy["auc"] > 0.9
    # The sensitive attributes never reach the model's inputs.
    assert "group" not in report["dataset"]["feature_names"]


def test_report_has_a_fairness_section(biased, result):
    from reports import render_html

    html = render_html(result)
    assert 'id="fairness"' in html and 'href="#fairness"' in html
    assert "Gaps between group groups" in html  # the interval chart's alt text
    assert LENDING_PROXY in html and "small group: not judged" not in html
    # Group labels are data: escaped, never markup.
    ds = biased.test.subset(np.arange(biased.test.n))
    ds.sensitive = {"group": np.where(ds.sensitive["group"] == "B",
                                      "<script>alert(1)</script>", "A")}
    hostile = run_audit(biased.model_path, ds, {**FAST, "samples": 4})
    text = render_html(hostile)
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)" in text


def test_no_sensitive_attribute_no_section(biased):
    report = run_audit(biased.model_path, biased.test.subset(np.arange(120)),
                       {**FAST, "sensitive": None, "samples": 4}, ).report
    # The bundled test split carries its attributes: without a choice, all are audited.
    assert report["fairness"] is not None
    bare = biased.test.subset(np.arange(120))
    bare.sensitive = None
    assert run_audit(biased.model_path, bare, {**FAST, "samples": 4}).report["fairness"] is None


def test_unknown_or_too_small_attributes_are_refused(biased):
    with pytest.raises(DataError, match="'race'") as err:
        run_audit(biased.model_path, biased.test_path, {**FAST, "sensitive": ["race"]})
    assert err.value.code == "bad_sensitive"
    with pytest.raises(DataError, match="two groups of 500") as err:
        run_audit(biased.model_path, biased.test_path,
                  {**FAST, "sensitive": ["group"],
                   "thresholds": {"fairness_min_group": 500}})
    assert err.value.code == "bad_sensitive"
    with pytest.raises(ValueError, match="unknown fairness option"):
        run_audit(biased.model_path, biased.test_path, {**FAST, "fairness": {"nboot": 5}})
    with pytest.raises(ValueError, match="the model has 2 classes"):
        run_audit(biased.model_path, biased.test_path,
                  {**FAST, "fairness": {"positive_class": 5}})


def test_gap_drift_against_the_previous_audit(biased, report):
    again = run_audit(biased.model_path, biased.test_path,
                      {**FAST, "sensitive": ["group", "age"]}, previous=report).report
    drift = again["fairness"]["drift"]
    assert drift and all(abs(d["change"]) < 1e-9 for d in drift)
    assert not [f for f in again["findings"] if f["code"] == "disparity_drift"]
    # A previous audit where the gap was small: the gap moved, and the audit says so.
    before = copy.deepcopy(report)
    for a in before["fairness"]["attributes"]:
        for d in a["disparities"]:
            if d["metric"] == "equalized_odds_difference" and a["name"] == "group":
                d["value"], d["interval"] = 0.01, [0.0, 0.03]
    moved = run_audit(biased.model_path, biased.test_path,
                      {**FAST, "sensitive": ["group", "age"]}, previous=before).report
    found = [f for f in moved["findings"] if f["code"] == "disparity_drift"]
    assert [f["evidence"]["metric"] for f in found] == ["equalized_odds_difference"]
    assert [c["metric"] for c in found[0]["evidence"]["changes"]] == [
        "equalized_odds_difference"]


def test_cli_audit_of_a_csv_with_sensitive_columns(biased, tmp_path):
    data = biased.test.to_csv(tmp_path / "loans.csv", label="approved")
    js = tmp_path / "r.json"
    args = ["audit", str(biased.model_path), "--data", str(data), "--label", "approved",
            "--out", str(tmp_path / "r.html"), "--json", str(js), "--samples", "4",
            "--methods", "integrated_gradients", "--quiet"]
    r = CliRunner().invoke(main, [*args, "--sensitive", "group,age"])
    assert r.exit_code == 0, r.output + r.stderr
    rep = json.loads(js.read_text())
    assert [a["name"] for a in rep["fairness"]["attributes"]] == ["group", "age"]
    assert rep["config"]["sensitive"] == ["group", "age"]
    # Without --sensitive the text column cannot be an input: a one-line error.
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and r.stderr.startswith("error [non_numeric]")
    r = CliRunner().invoke(main, [*args, "--sensitive", "group,race"])
    assert r.exit_code == 2 and "error [bad_sensitive]" in r.stderr
    assert "Traceback" not in r.output + r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_biased_twin_is_flagged_and_the_clean_twin_is_not(seed, tmp_path):
    """Ground truth: the biased model gets group_disparity and a proxy_feature naming the
    proxy; the clean twin gets neither (and the unrelated age attribute never does)."""
    config = {"methods": ["integrated_gradients"], "samples": 8, "seed": seed,
              "sensitive": ["group", "age"]}
    found = {}
    for bias in (True, False):
        res = train_reference_model("lending", out=tmp_path / f"m{bias}.keras", seed=seed,
                                    shortcut=bias, verbose=0)
        report = run_audit(res.model_path, res.test, config).report
        found[bias] = [f for f in report["findings"]
                       if f["code"] in ("group_disparity", "proxy_feature")]
    biased, clean = found[True], found[False]
    assert any(f["code"] == "group_disparity" and f["evidence"]["attribute"] == "group"
               for f in biased)
    proxies = [f["evidence"]["feature"] for f in biased if f["code"] == "proxy_feature"]
    assert proxies == [LENDING_PROXY]
    proxy = next(f for f in biased if f["code"] == "proxy_feature")["evidence"]
    assert proxy["disparity_without"] is not None and proxy["share_of_gap_carried"] > 0.3
    assert not [f for f in biased if f["evidence"]["attribute"] == "age"]
    assert clean == []


def test_cli_explain_leaves_sensitive_columns_out(biased, tmp_path):
    data = tmp_path / "rows.csv"
    test = biased.test
    with open(data, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*test.feature_names, "group", "approved"])
        for i in range(40):
            w.writerow([*[f"{v:.6g}" for v in test.x[i]], test.sensitive["group"][i],
                        int(test.y[i])])
    out = tmp_path / "a.npy"
    r = CliRunner().invoke(main, ["explain", str(biased.model_path), "--data", str(data),
                                  "--label", "approved", "--sensitive", "group",
                                  "--rows", "40", "--out", str(out)])
    assert r.exit_code == 0, r.output + r.stderr
    assert np.load(out).shape == (40, len(test.feature_names))
    assert "group: 2 groups in 40 rows; attribution differs most for:" in r.stdout


def test_a_plan_carries_the_attributes_to_another_process(biased, report):
    from explain.audit import AuditPlan, assess, attribute_chunk, prepare

    config = {**FAST, "sensitive": ["group", "age"]}
    plan = AuditPlan.from_bytes(prepare(biased.model_path, biased.test_path,
                                        config).to_bytes())
    assert plan.arrays["sensitive.group"].dtype.kind == "U"
    chunks = {c: attribute_chunk(plan, *c) for c in plan.chunks()}
    again = assess(plan, chunks).report["fairness"]
    assert again["attributes"] == report["fairness"]["attributes"]


@pytest.mark.parametrize("kind", ["regression", "image"])
def test_regression_and_image_audits_report_group_metrics(kind, tmp_path):
    from explain.datasets import Dataset
    from reports import render_html
    from tests import models

    rng = np.random.default_rng(0)
    n = 120
    groups = np.where(rng.random(n) < 0.5, "p", "q")
    if kind == "regression":
        model = models.mlp_regressor(n_features=6)
        x = rng.normal(size=(n, 6)).astype(np.float32)
        y = model.predict(x, verbose=0).reshape(-1) + np.where(groups == "q", 0.5, 0.0)
        config = {**FAST}
    else:
        model = models.small_cnn(size=16, n_classes=3)
        x = rng.random((n, 16, 16, 3)).astype(np.float32)
        y = model.predict(x, verbose=0).argmax(axis=1)
        config = {"methods": ["grad_cam"], "samples": 4}
    path = tmp_path / "m.keras"
    model.save(path)
    ds = Dataset(x=x, y=y, name="rows", kind="image" if kind == "image" else "tabular",
                 sensitive={"g": groups})
    result = run_audit(path, ds, config)
    section = result.report["fairness"]
    assert section["task"] == ("regression" if kind == "regression" else "multiclass")
    metrics = {d["metric"] for d in section["attributes"][0]["disparities"]}
    if kind == "regression":
        assert metrics == {"mean_error_difference", "mae_difference"}
        assert section["error_scale"] > 0
        # Labels shifted by 0.5 for group q: the mean error differs by about 0.5.
        gap = next(d for d in section["attributes"][0]["disparities"]
                   if d["metric"] == "mean_error_difference")
        assert gap["value"] == pytest.approx(0.5, abs=0.05)
    else:
        assert metrics == {"accuracy_difference"}
        assert section["attributes"][0]["proxies"] == []
    html = render_html(result)
    assert 'id="fairness"' in html
