"""Model-parameter randomization: gradients decorrelate, a model-blind map does not."""

import json

import numpy as np
import pytest

from explain._backend import tf
from explain.metrics import ModelParameterRandomization
from explain.metrics.sanity import weighted_leaf_layers
from tests import models


def tape_gradient(model, x, targets):
    """d model(x)[target] / dx, computed independently of the attribution registry."""
    xt = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = model(xt)
        score = tf.gather(out, tf.convert_to_tensor(targets, tf.int32), axis=1, batch_dims=1)
    return tape.gradient(score, xt).numpy()


def input_itself(model, x, targets):
    """An "explanation" that ignores the model entirely."""
    return np.array(x, copy=True)


@pytest.fixture(scope="module")
def cnn():
    model = models.small_cnn(size=8, channels=3, n_classes=3)
    x = np.random.default_rng(0).uniform(size=(6, 8, 8, 3)).astype("float32")
    return model, x


def _weights(model):
    return [w.copy() for w in model.get_weights()]


def test_gradient_decorrelates_and_passes(cnn):
    model, x = cnn
    before = _weights(model)
    result = ModelParameterRandomization(model, x, method="saliency").detailed()
    assert result.score < 0.5 and result.passed is True
    # Cascading from the top: one step per weighted layer, the last covers them all.
    assert [s["layer"] for s in result.detail["curve"]] == ["probs", "last_conv", "conv1"]
    assert result.detail["curve"][-1]["randomized_layers"] == 3
    assert result.detail["per_example_raw"] is not None
    json.dumps(result.to_dict())
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # The user's model still answers exactly as before.
    np.testing.assert_allclose(model.predict(x, verbose=0),
                               models.small_cnn(size=8, channels=3, n_classes=3)
                               .predict(x, verbose=0), atol=1e-6)


def test_callable_gradient_matches_the_named_method(cnn):
    model, x = cnn
    named = ModelParameterRandomization(model, x, method="saliency", seed=4).evaluate()
    tape = ModelParameterRandomization(model, x, method=tape_gradient, seed=4).evaluate()
    assert tape == pytest.approx(named, abs=1e-6)


def test_model_blind_explanation_fails(cnn):
    model, x = cnn
    result = ModelParameterRandomization(model, x, method=input_itself).detailed()
    assert result.score == pytest.approx(1.0)
    assert result.passed is False
    assert result.detail["method"] == "input_itself"
    assert all(s["spearman_abs"] == pytest.approx(1.0) for s in result.detail["curve"])


def test_mlp_saliency_passes_and_input_fails():
    model = models.mlp_classifier(n_features=8)
    x = np.random.default_rng(1).normal(size=(16, 8)).astype("float32")
    assert ModelParameterRandomization(model, x, method="saliency").check() is True
    assert ModelParameterRandomization(model, x, method=input_itself).check() is False


def test_independent_mode_and_max_layers(cnn):
    model, x = cnn
    result = ModelParameterRandomization(model, x, method=tape_gradient,
                                         layers="independent", max_layers=2).detailed()
    curve = result.detail["curve"]
    assert [s["layer"] for s in curve] == ["probs", "last_conv", "all"]
    assert [s["randomized_layers"] for s in curve] == [1, 1, 3]
    assert result.score == pytest.approx(curve[-1]["spearman_abs"])


def test_spatial_maps_use_absolute_values_only(cnn):
    model, x = cnn
    result = ModelParameterRandomization(model, x, method="grad_cam", max_layers=1).detailed()
    assert result.detail["per_example_raw"] is None
    assert result.detail["curve"][-1]["layer"] == "all"
    assert np.isfinite(result.score)


def test_given_explanations_are_used_as_the_original(cnn):
    model, x = cnn
    metric = ModelParameterRandomization(model, x, method=tape_gradient, max_layers=0)
    own = tape_gradient(model, x, metric.targets)
    assert metric.evaluate(own) == pytest.approx(metric.evaluate())
    with pytest.raises(ValueError, match="explanations"):
        metric.evaluate(own[:2])


def test_nested_model_randomizes_leaf_layers_without_touching_the_original():
    model = models.nested_cnn(size=32)
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    before = _weights(model)
    result = ModelParameterRandomization(model, x, method=tape_gradient,
                                         max_layers=1).detailed()
    leaves = weighted_leaf_layers(model)
    assert result.detail["n_weighted_layers"] == len(leaves) > 50
    curve = result.detail["curve"]
    assert len(curve) == 2 and curve[-1]["layer"] == "all"
    assert curve[0]["layer"] == leaves[-1].name  # the top Dense layer first
    assert np.isfinite(result.score) and result.score < 1.0
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_validation(cnn):
    model, x = cnn
    with pytest.raises(ValueError, match="layers"):
        ModelParameterRandomization(model, x, layers="bottom_up")
    with pytest.raises(ValueError, match="unknown attribution method"):
        ModelParameterRandomization(model, x, method="nope")
    with pytest.raises(ValueError, match="partial"):
        ModelParameterRandomization(model, x, method=input_itself, method_options={"steps": 3})
    with pytest.raises(TypeError):
        ModelParameterRandomization(model, x, method=42)
    with pytest.raises(ValueError, match="max_layers"):
        ModelParameterRandomization(model, x, max_layers=-1)
