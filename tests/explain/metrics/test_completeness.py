"""Completeness gap from Attribution results, hand-made and from Integrated Gradients."""

import numpy as np
import pytest

from explain import Attribution, explain
from explain.attributions.base import completeness_gap
from explain.metrics import COMPLETENESS_TOLERANCE, CompletenessGap
from tests import models


def made(method, rel_gaps):
    """An Attribution whose rows miss f(x) - f(baseline) = 2 by the given fractions."""
    n = len(rel_gaps)
    scores = np.full(n, 3.0, dtype=np.float32)
    base = np.ones(n, dtype=np.float32)
    values = np.zeros((n, 4), dtype=np.float32)
    values[:, 0] = 2.0 * (1.0 + np.asarray(rel_gaps, dtype=np.float32))
    return Attribution(values=values, method=method, targets=np.zeros(n, dtype=np.int64),
                       scores=scores, baseline_scores=base,
                       completeness_gap=completeness_gap(values, scores, base))


def test_relative_gap_mean_max_and_default_tolerances():
    result = CompletenessGap().detailed(made("integrated_gradients", [0.001, -0.004, 0.002]))
    assert result.score == pytest.approx(0.004, rel=1e-3)
    assert result.detail["mean_relative_gap"] == pytest.approx(0.007 / 3, rel=1e-3)
    assert result.threshold == COMPLETENESS_TOLERANCE["integrated_gradients"] == 0.01
    assert result.passed is True
    assert CompletenessGap().check(made("integrated_gradients", [0.0, 0.02])) is False
    # The same 2% gap is within SHAP's looser 5% tolerance...
    shap = CompletenessGap().detailed(made("shap", [0.0, 0.02]))
    assert shap.threshold == 0.05 and shap.passed is True
    # ...unless the caller sets the tolerance.
    assert CompletenessGap(tolerance=0.01).check(made("shap", [0.0, 0.02])) is False


def test_small_output_change_is_judged_against_the_floor():
    attr = made("integrated_gradients", [0.0])
    attr.scores = np.array([1.0], dtype=np.float32)
    attr.baseline_scores = np.array([1.0], dtype=np.float32)  # f(x) == f(baseline)
    attr.completeness_gap = np.array([5e-6], dtype=np.float32)
    result = CompletenessGap(min_delta=1e-3).detailed(attr)
    assert result.score == pytest.approx(5e-3, rel=1e-3)
    assert result.detail["n_small_delta"] == 1


def test_integrated_gradients_on_a_linear_model_is_complete():
    model, w, b = models.linear_regression(n_features=5)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    result = CompletenessGap().detailed(explain(model, x, "integrated_gradients"))
    assert result.passed is True and result.score < 1e-3


def test_rejects_results_without_a_gap():
    no_gap = Attribution(values=np.zeros((2, 3), np.float32), method="saliency",
                         targets=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="no completeness gap"):
        CompletenessGap().evaluate(no_gap)
    with pytest.raises(TypeError, match="Attribution"):
        CompletenessGap().evaluate(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="min_delta"):
        CompletenessGap(min_delta=0)
