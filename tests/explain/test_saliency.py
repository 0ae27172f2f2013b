"""Saliency and gradient x input: exact on linear models, equal to a hand-taken gradient."""

from __future__ import annotations

import numpy as np
import pytest

from explain import explain
from explain._backend import keras, tf
from tests import models as M


@pytest.fixture(scope="module")
def linear():
    model, w, _ = M.linear_regression(n_features=5)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    return model, w, x


@pytest.fixture(scope="module")
def mlp():
    model = M.mlp_classifier(n_features=8, n_classes=3)
    x = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    return model, x


@pytest.mark.parametrize(
    ("multiply_by_input", "absolute", "expected"),
    [
        (False, False, lambda x, w: np.broadcast_to(w, x.shape)),
        (True, False, lambda x, w: x * w),
        (False, True, lambda x, w: np.broadcast_to(np.abs(w), x.shape)),
        (True, True, lambda x, w: np.abs(x * w)),
    ],
)
def test_linear_model_gradient_is_the_weight_vector(linear, multiply_by_input, absolute,
                                                    expected):
    model, w, x = linear
    res = explain(model, x, "saliency", multiply_by_input=multiply_by_input, absolute=absolute)
    assert res.values.dtype == np.float32 and res.values.shape == x.shape
    np.testing.assert_allclose(res.values, expected(x, w), rtol=1e-6)


def test_matches_a_hand_taken_gradient_of_the_probability(mlp):
    model, x = mlp
    targets = np.array([0, 1, 2, 1, 0])
    res = explain(model, x, "saliency", target=targets)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        probs = model(xt)
        picked = tf.gather(probs, targets, axis=1, batch_dims=1)
    np.testing.assert_allclose(res.values, tape.gradient(picked, xt).numpy(), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(res.scores, picked.numpy(), rtol=1e-6)


def test_logits_explains_the_pre_softmax_score(mlp):
    model, x = mlp
    targets = np.array([2, 2, 0, 1, 1])
    res = explain(model, x, "saliency", target=targets, logits=True)
    trunk = keras.Model(model.inputs, model.layers[-1].input)
    kernel, bias = model.layers[-1].get_weights()
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        z = tf.matmul(trunk(xt), kernel) + bias
        picked = tf.gather(z, targets, axis=1, batch_dims=1)
    np.testing.assert_allclose(res.values, tape.gradient(picked, xt).numpy(), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(res.scores, picked.numpy(), rtol=1e-5)


def test_default_target_is_the_predicted_class(mlp):
    model, x = mlp
    res = explain(model, x, "saliency")
    np.testing.assert_array_equal(res.targets, np.argmax(model(x).numpy(), axis=1))


def test_batched_equals_unbatched():
    model = M.small_cnn(size=12)
    x = np.random.default_rng(2).random((3, 12, 12, 3)).astype(np.float32)
    runs = [explain(model, x, "saliency", multiply_by_input=True, batch_size=bs).values
            for bs in (1, 3, 1000)]
    scale = np.abs(runs[-1]).max()
    for r in runs[:-1]:
        np.testing.assert_allclose(r, runs[-1], rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("option", ["multiply_by_input", "absolute"])
def test_flags_must_be_booleans(linear, option):
    model, _, x = linear
    with pytest.raises(TypeError, match=f"{option} must be True or False"):
        explain(model, x, "saliency", **{option: "yes"})
