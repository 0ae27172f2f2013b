"""SmoothGrad: the expected gradient under the documented noise, deterministic, batch-free."""

from __future__ import annotations

import numpy as np
import pytest

from explain import explain
from explain._backend import keras
from explain.attributions import smoothgrad as sg
from tests import models as M


@pytest.fixture(scope="module")
def mlp():
    model = M.mlp_classifier(n_features=8, n_classes=3)
    x = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
    return model, x, np.argmax(model(x).numpy(), axis=1)


def quadratic(n_features=4, s=0):
    """f(x) = sum_j w_j x_j^2, whose gradient 2 w x is linear, so E[grad(x + e)] = 2 w x."""
    inp = keras.Input((n_features,))
    out = keras.layers.Dense(1, use_bias=False)(keras.layers.Multiply()([inp, inp]))
    model = keras.Model(inp, out)
    w = np.random.default_rng(s).normal(size=(n_features, 1)).astype(np.float32)
    model.layers[-1].set_weights([w])
    return model, w[:, 0]


def test_zero_noise_is_the_plain_gradient(mlp):
    model, x, t = mlp
    smooth = explain(model, x, "smoothgrad", target=t, noise=0.0, samples=3).values
    plain = explain(model, x, "saliency", target=t).values
    np.testing.assert_allclose(smooth, plain, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("multiply_by_input", [False, True])
def test_linear_model_is_unaffected_by_noise(multiply_by_input):
    model, w, _ = M.linear_regression(n_features=5)
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    res = explain(model, x, "smoothgrad", noise=0.5, samples=5,
                  multiply_by_input=multiply_by_input)
    expected = x * w if multiply_by_input else np.broadcast_to(w, x.shape)
    np.testing.assert_allclose(res.values, expected, rtol=1e-5)


def test_averages_to_the_expected_gradient_under_noise():
    model, w = quadratic()
    x = np.random.default_rng(3).normal(size=(2, 4)).astype(np.float32)
    samples, noise = 3000, 0.2
    res = explain(model, x, "smoothgrad", noise=noise, samples=samples, batch_size=1024)
    sigma = sg.noise_scale(x, noise)[:, None]
    # Each sample's gradient is 2 w (x + e): the mean is 2 w x with sd 2|w| sigma / sqrt(S).
    tol = 5 * 2 * np.abs(w) * sigma / np.sqrt(samples)
    assert np.all(np.abs(res.values - 2 * w * x) < tol)
    # With no averaging the result would be visibly off: the test can tell.
    one = explain(model, x, "smoothgrad", noise=noise, samples=1).values
    assert np.any(np.abs(one - 2 * w * x) > tol)


def test_noise_std_is_the_requested_fraction_of_each_rows_range():
    x = np.stack([np.linspace(0, 1, 6), np.linspace(-10, 30, 6)]).astype(np.float32)
    sigma = sg.noise_scale(x, 0.1)
    np.testing.assert_allclose(sigma, [0.1, 4.0], rtol=1e-6)
    n = 4000
    for row in (0, 1):
        noisy = sg.noisy_rows(x, sigma, np.full(n, row), np.arange(n), seed=0)
        eps = noisy - x[row]
        assert abs(eps.std() - sigma[row]) < 0.05 * sigma[row]
        assert abs(eps.mean()) < 4 * sigma[row] / np.sqrt(eps.size)


def test_same_seed_same_result_other_seed_other_result(mlp):
    model, x, t = mlp
    a = explain(model, x, "smoothgrad", target=t, samples=6, seed=3).values
    b = explain(model, x, "smoothgrad", target=t, samples=6, seed=3).values
    c = explain(model, x, "smoothgrad", target=t, samples=6, seed=4).values
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_a_rows_result_does_not_depend_on_the_other_rows(mlp):
    model, x, t = mlp
    a = explain(model, x, "smoothgrad", target=t, samples=6).values
    x2 = x.copy()
    x2[0] *= 3.0
    b = explain(model, x2, "smoothgrad", target=t, samples=6).values
    np.testing.assert_allclose(b[1:], a[1:], rtol=1e-6, atol=1e-9)
    assert not np.allclose(b[0], a[0])


def test_batched_equals_unbatched():
    model = M.small_cnn(size=12)
    x = np.random.default_rng(2).random((3, 12, 12, 3)).astype(np.float32)
    runs = [explain(model, x, "smoothgrad", samples=5, batch_size=bs).values
            for bs in (1, 3, 1000)]
    scale = np.abs(runs[-1]).max()
    for r in runs[:-1]:
        np.testing.assert_allclose(r, runs[-1], rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"noise": -0.1}, ValueError, "noise must be a finite number >= 0"),
        ({"noise": "high"}, TypeError, "noise must be a number"),
        ({"samples": 0}, ValueError, "samples must be an integer >= 1"),
        ({"seed": 1.5}, TypeError, "seed must be an integer"),
        ({"multiply_by_input": 1}, TypeError, "multiply_by_input must be True or False"),
    ],
)
def test_bad_options_are_refused_with_a_reason(mlp, options, error, match):
    model, x, _ = mlp
    with pytest.raises(error, match=match):
        explain(model, x, "smoothgrad", **options)
