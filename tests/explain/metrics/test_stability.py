"""Max-sensitivity: smooth gradients are stable; a copy of the input scales with radius."""

import numpy as np
import pytest

from explain.metrics import MaxSensitivity
from tests import models


def input_itself(model, x, targets):
    return np.array(x, copy=True)


@pytest.fixture(scope="module")
def mlp():
    model = models.mlp_classifier(n_features=8)
    x = np.random.default_rng(0).normal(size=(5, 8)).astype("float32")
    return model, x


def test_smooth_model_saliency_is_finite_and_small(mlp):
    model, x = mlp
    result = MaxSensitivity(model, x, method="saliency", radius=0.01, samples=5).detailed()
    assert np.isfinite(result.score) and 0 < result.score < 0.5
    assert result.passed is True
    assert result.detail["per_example"].shape == (5,)
    assert result.detail["n_zero_explanations"] == 0


def test_input_as_explanation_scales_with_radius(mlp):
    model, x = mlp
    small = MaxSensitivity(model, x, method=input_itself, radius=0.05, samples=8).detailed()
    large = MaxSensitivity(model, x, method=input_itself, radius=0.1, samples=8).detailed()
    # Same seed, twice the noise: exactly twice the relative change.
    assert large.score == pytest.approx(2 * small.score, rel=1e-4)
    # ||d|| / ||x|| with d uniform in [-r, r]^8: about r * sqrt(8 / 3) / ||x||, never
    # more than r * sqrt(8) / ||x||.
    norms = np.linalg.norm(x, axis=1)
    per = small.detail["per_example"]
    assert np.all(per <= 0.05 * np.sqrt(8) / norms + 1e-6)
    assert np.mean(per / (0.05 * np.sqrt(8 / 3) / norms)) == pytest.approx(1.0, abs=0.5)


def test_zero_explanations_are_left_out(mlp):
    model, x = mlp
    result = MaxSensitivity(model, x, method=lambda m, v, t: np.zeros_like(v),
                            samples=2).detailed()
    assert result.detail["n_zero_explanations"] == 5
    assert result.passed is False
    assert result.to_dict()["score"] is None


def test_validation(mlp):
    model, x = mlp
    with pytest.raises(ValueError, match="radius"):
        MaxSensitivity(model, x, radius=0)
    with pytest.raises(ValueError, match="samples"):
        MaxSensitivity(model, x, samples=0)
    with pytest.raises(ValueError, match="explanations"):
        MaxSensitivity(model, x, method=input_itself).evaluate(np.ones((2, 8)))
