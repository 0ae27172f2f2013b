"""Unit tests of the finding rules on hand-made measurements."""

import numpy as np
import pytest

from explain.findings import (
    FindingInputs,
    FindingThresholds,
    detect_shortcut_regions,
    ndcg,
    region_name,
    run_rules,
)


def _maps_with_corner(n, corner, rng, size=32, strength=1.0):
    """Diffuse noise maps plus a 4x4 hot spot in one corner."""
    maps = rng.random((n, size, size)) * 0.02
    y = 0 if corner[0] == "top" else size - 4
    x = 0 if corner[1] == "left" else size - 4
    maps[:, y:y + 4, x:x + 4] += strength
    return maps


def _object_maps(n, rng, size=32):
    """Mass on a blob whose position varies from example to example (a clean model)."""
    maps = rng.random((n, size, size)) * 0.02
    for i in range(n):
        cy, cx = rng.integers(6, size - 6, size=2)
        maps[i, cy - 5:cy + 5, cx - 5:cx + 5] += 1.0
    return maps


def test_region_names():
    assert region_name(0, 0.1, 0, 0.1) == "top-left corner"
    assert region_name(0.9, 1, 0.9, 1) == "bottom-right corner"
    assert region_name(0.4, 0.6, 0.4, 0.6) == "center"
    assert region_name(0.0, 0.1, 0.4, 0.6) == "top edge"
    assert region_name(0.4, 0.6, 0.9, 1.0) == "right edge"


def test_shortcut_per_class_names_the_corner_and_class():
    rng = np.random.default_rng(0)
    maps = np.concatenate([
        _maps_with_corner(10, ("top", "left"), rng),
        _maps_with_corner(10, ("bottom", "right"), rng),
        _object_maps(10, rng),
    ])
    preds = np.repeat([0, 1, 2], 10)
    found = run_rules(FindingInputs(report={}, image_maps={"ig": maps, "grad_cam": maps},
                                    predictions=preds, class_names=["cat", "dog", "fox"]))
    shortcut = [f for f in found if f["code"] == "shortcut_region"]
    regions = {f["evidence"]["region"]: f["evidence"]["classes"] for f in shortcut}
    assert regions == {"top-left corner": ["cat"], "bottom-right corner": ["dog"]}
    assert all(f["severity"] == "critical" for f in shortcut)


def test_no_shortcut_on_object_attention():
    rng = np.random.default_rng(1)
    maps = _object_maps(30, rng)
    preds = np.repeat([0, 1, 2], 10)
    assert detect_shortcut_regions(maps, preds, FindingThresholds()) == []
    found = run_rules(FindingInputs(report={}, image_maps={"ig": maps}, predictions=preds))
    assert not [f for f in found if f["code"] == "shortcut_region"]


def test_shortcut_needs_half_the_methods():
    rng = np.random.default_rng(2)
    hot = _maps_with_corner(12, ("top", "right"), rng)
    clean = _object_maps(12, rng)
    preds = np.zeros(12, int)
    one_of_three = FindingInputs(report={}, image_maps={"a": hot, "b": clean, "c": clean},
                                 predictions=preds)
    assert not [f for f in run_rules(one_of_three) if f["code"] == "shortcut_region"]
    two_of_three = FindingInputs(report={}, image_maps={"a": hot, "b": hot, "c": clean},
                                 predictions=preds)
    codes = [f["code"] for f in run_rules(two_of_three)]
    assert "shortcut_region" in codes


def test_dominant_feature():
    report = {"global_importance": {"kind": "tabular", "method": "shap", "items": [
        {"feature": "account_flag", "score": 8.0}, {"feature": "age", "score": 1.0},
        {"feature": "income", "score": 1.0}]}}
    found = run_rules(FindingInputs(report=report))
    assert [f["code"] for f in found] == ["dominant_feature"]
    assert found[0]["evidence"]["feature"] == "account_flag"
    even = {"global_importance": {"kind": "tabular", "items": [
        {"feature": f"f{i}", "score": 1.0} for i in range(5)]}}
    assert run_rules(FindingInputs(report=even)) == []


def test_quality_and_performance_rules():
    report = {
        "performance": {
            "per_class": [{"class": "a", "recall": 0.95, "support": 20},
                          {"class": "b", "recall": 0.9, "support": 20},
                          {"class": "c", "recall": 0.3, "support": 20}],
            "calibration": {"ece": 0.2},
        },
        "explanation_quality": {"saliency": {"checks": [
            {"metric": "randomization_sanity", "score": 0.9, "threshold": 0.5, "passed": False},
            {"metric": "deletion_gain", "score": -0.01, "threshold": 0.0, "passed": False},
        ]}, "integrated_gradients": {"checks": [
            {"metric": "completeness_gap", "score": 0.2, "threshold": 0.05, "passed": False},
        ]}},
        "agreement": [{"a": "ig", "b": "shap", "global_rank_correlation": 0.1}],
    }
    codes = sorted(f["code"] for f in run_rules(FindingInputs(report=report)))
    assert codes == ["explanation_failed_sanity", "incomplete_attribution", "methods_disagree",
                     "poor_calibration", "unfaithful_explanation", "weak_class"]


def test_drift_and_ndcg():
    prev = [{"feature": "a", "score": 3.0}, {"feature": "b", "score": 2.0},
            {"feature": "c", "score": 1.0}, {"feature": "d", "score": 0.1}]
    assert ndcg(prev, prev) == pytest.approx(1.0)
    flipped = [{"feature": n, "score": s} for n, s in zip("abcd", [0.1, 1.0, 2.0, 3.0], strict=True)]
    assert ndcg(prev, flipped) < 0.9
    found = run_rules(FindingInputs(report={"drift": {"ndcg": ndcg(prev, flipped),
                                                      "items": []}}))
    assert [f["code"] for f in found] == ["attribution_drift"]


def test_threshold_overrides_validated():
    assert FindingThresholds.from_config({"drift_min_ndcg": 0.5}).drift_min_ndcg == 0.5
    with pytest.raises(ValueError, match="unknown finding threshold"):
        FindingThresholds.from_config({"nope": 1})
    with pytest.raises(TypeError):
        FindingThresholds.from_config({"drift_min_ndcg": "high"})


def test_central_object_is_not_a_shortcut_but_a_border_patch_is():
    # Every example attends to the middle of the image (where the objects are): with the
    # border restriction that is no shortcut; without it, the same maps would be flagged.
    rng = np.random.default_rng(3)
    maps = rng.random((12, 32, 32)) * 0.02
    maps[:, 12:20, 12:20] += 1.0
    preds = np.zeros(12, int)
    inputs = FindingInputs(report={}, image_maps={"a": maps, "b": maps}, predictions=preds)
    assert not [f for f in run_rules(inputs) if f["code"] == "shortcut_region"]
    anywhere = FindingThresholds(shortcut_border_cells=0)
    assert [f["evidence"]["region"] for f in run_rules(inputs, anywhere)
            if f["code"] == "shortcut_region"] == ["center"]
    edge = rng.random((12, 32, 32)) * 0.02
    edge[:, 12:20, 0:6] += 1.0
    found = run_rules(FindingInputs(report={}, image_maps={"a": edge}, predictions=preds))
    assert [f["evidence"]["region"] for f in found if f["code"] == "shortcut_region"] == [
        "left edge"]


def test_dominant_feature_needs_share_and_lead_over_runner_up():
    def report(scores):
        return {"global_importance": {"kind": "tabular", "items": [
            {"feature": f"f{i}", "score": s} for i, s in enumerate(scores)]}}

    # A leak among honest features: 40 % of the importance, 3x the next one.
    leak = run_rules(FindingInputs(report=report([4.0, 1.3, 1.2, 1.1, 1.0, 0.9, 0.5])))
    assert [f["code"] for f in leak] == ["dominant_feature"]
    assert leak[0]["evidence"]["feature"] == "f0"
    # Two strong features sharing the lead: a large share but no single dominant one.
    pair = run_rules(FindingInputs(report=report([4.0, 3.5, 0.5, 0.5])))
    assert pair == []
