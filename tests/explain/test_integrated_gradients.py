"""Integrated Gradients: exactness on linear models, completeness, rules, baselines, batching."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from explain import explain
from explain._backend import keras, tf
from explain.attributions import base
from explain.attributions import integrated_gradients as ig
from tests import models as M

RULES = sorted(ig.RULES)


@pytest.fixture(scope="module")
def linear():
    model, w, b = M.linear_regression(n_features=5)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    return model, w, b, x


@pytest.fixture(scope="module")
def mlp():
    model = M.mlp_classifier(n_features=8, n_classes=3)
    x = (2.0 * np.random.default_rng(1).normal(size=(6, 8))).astype(np.float32)
    return model, x


@pytest.fixture(scope="module")
def cnn():
    model = M.small_cnn(size=12)
    x = np.random.default_rng(2).random((3, 12, 12, 3)).astype(np.float32)
    return model, x


def linear_image(shape=(8, 8, 2), s=0):
    """f(x) = <w, x> + 0.1 for image-shaped x; returns (model, w of x's row shape)."""
    model = keras.Sequential([keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(1)])
    w = np.random.default_rng(s).normal(size=(int(np.prod(shape)), 1)).astype(np.float32)
    model.layers[-1].set_weights([w, np.array([0.1], np.float32)])
    return model, w.reshape(shape)


# --------------------------------------------------------------------------- rules and helpers


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("steps", [2, 5, 32])
def test_rule_weights_sum_to_one_and_alphas_lie_on_the_path(rule, steps):
    alphas, weights = ig.rule_points(rule, steps)
    assert alphas.shape == weights.shape == (steps,)
    assert alphas.dtype == weights.dtype == np.float32
    assert np.isclose(weights.astype(np.float64).sum(), 1.0, atol=1e-6)
    assert np.all((alphas >= 0) & (alphas <= 1))
    assert np.all(np.diff(alphas) > 0)


def test_riemann_rules_place_points_where_their_names_say():
    left, _ = ig.rule_points("riemann_left", 4)
    right, _ = ig.rule_points("riemann_right", 4)
    middle, _ = ig.rule_points("riemann_middle", 4)
    trap, trap_w = ig.rule_points("riemann_trapezoid", 5)
    np.testing.assert_allclose(left, [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(right, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(middle, [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(trap, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(trap_w, [0.125, 0.25, 0.25, 0.25, 0.125])


def test_gauss_legendre_on_unit_interval_is_exact_for_degree_2n_minus_1():
    alphas, weights = ig.rule_points("gausslegendre", 3)
    a, w = alphas.astype(np.float64), weights.astype(np.float64)
    # 3 points integrate t^5 over [0, 1] exactly: 1/6.
    assert np.isclose(np.sum(w * a**5), 1 / 6, rtol=1e-6)


def test_interpolate_path_hits_both_endpoints_and_the_midpoint():
    x = tf.constant(np.full((3, 2, 2), 4.0, np.float32))
    b = tf.constant(np.full((3, 2, 2), -2.0, np.float32))
    out = ig.interpolate_path(x, b, tf.constant([0.0, 1.0, 0.5])).numpy()
    np.testing.assert_array_equal(out[0], -2.0)
    np.testing.assert_array_equal(out[1], 4.0)
    np.testing.assert_array_equal(out[2], 1.0)


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("kind", ["zeros", "constant", "row_array", "batch_array"])
def test_linear_model_attributions_are_exactly_delta_times_weights(linear, rule, kind):
    model, w, bias, x = linear
    rng = np.random.default_rng(3)
    baseline = {
        "zeros": "zeros",
        "constant": 0.7,
        "row_array": rng.normal(size=x.shape[1:]).astype(np.float32),
        "batch_array": rng.normal(size=x.shape).astype(np.float32),
    }[kind]
    b = {"zeros": np.zeros_like(x), "constant": np.full_like(x, 0.7)}.get(
        kind, np.broadcast_to(baseline, x.shape)
    )
    res = explain(model, x, "integrated_gradients", rule=rule, steps=7, baseline=baseline)
    np.testing.assert_allclose(res.values, (x - b) * w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(res.scores, x @ w + bias, rtol=1e-5)
    np.testing.assert_allclose(res.baseline_scores, b @ w + bias, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.completeness_gap, 0.0, atol=1e-5)


def test_blur_baseline_is_the_gaussian_blur_of_each_image():
    model, w = linear_image((8, 8, 2))
    x = np.random.default_rng(4).random((2, 8, 8, 2)).astype(np.float32)
    res = explain(model, x, "integrated_gradients", baseline="blur", blur_sigma=1.5, steps=4)
    blurred = gaussian_filter(x, sigma=(0, 1.5, 1.5, 0), mode="nearest")
    np.testing.assert_allclose(res.values, (x - blurred) * w, rtol=1e-4, atol=1e-6)
    # A different sigma is a different baseline.
    other = explain(model, x, "integrated_gradients", baseline="blur", blur_sigma=3.0, steps=4)
    assert not np.allclose(other.values, res.values)


def test_blur_baseline_needs_spatial_or_time_axes(linear):
    model, _, _, x = linear
    with pytest.raises(ValueError, match="image"):
        explain(model, x, "integrated_gradients", baseline="blur")


def test_uniform_baselines_lie_in_each_rows_range_and_are_averaged(linear):
    model, w, bias, x = linear
    res = explain(model, x, "integrated_gradients", baseline="uniform", baseline_samples=6,
                  seed=5, steps=4)
    # Linear model: values = (x - mean_b) * w, so the mean baseline is recoverable.
    mean_b = x - res.values / w
    assert np.all(mean_b >= x.min(axis=1, keepdims=True) - 1e-4)
    assert np.all(mean_b <= x.max(axis=1, keepdims=True) + 1e-4)
    np.testing.assert_allclose(res.baseline_scores, mean_b @ w + bias, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res.completeness_gap, 0.0, atol=1e-5)
    assert res.extra["baseline_draws"] == 6


def test_uniform_baselines_follow_the_seed_and_not_other_rows(mlp):
    model, x = mlp
    a = explain(model, x, "integrated_gradients", baseline="uniform", seed=1, steps=8).values
    again = explain(model, x, "integrated_gradients", baseline="uniform", seed=1, steps=8).values
    other_seed = explain(model, x, "integrated_gradients", baseline="uniform", seed=2,
                         steps=8).values
    x2 = x.copy()
    x2[0] = -x2[0]
    changed_row0 = explain(model, x2, "integrated_gradients", target=np.argmax(model(x), 1),
                           baseline="uniform", seed=1, steps=8).values
    np.testing.assert_array_equal(a, again)
    assert not np.allclose(a, other_seed)
    np.testing.assert_allclose(changed_row0[1:], a[1:], rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- completeness


@pytest.mark.parametrize("logits", [False, True])
def test_gauss_legendre_32_steps_is_complete_within_one_percent(mlp, logits):
    model, x = mlp
    res = explain(model, x, "integrated_gradients", logits=logits)
    assert res.options["rule"] == "gausslegendre" and res.options["steps"] == 32
    assert np.all(res.relative_gap() < 0.01)
    # The explained quantity really differs: probabilities vs pre-softmax scores.
    assert np.all(res.scores > 0) if not logits else np.any(res.scores < 0)


@pytest.mark.parametrize("rule", ["riemann_left", "riemann_right", "riemann_trapezoid"])
def test_riemann_gap_shrinks_as_steps_grow(mlp, rule):
    model, x = mlp
    gaps = [
        np.abs(explain(model, x, "integrated_gradients", rule=rule, steps=s,
                       logits=True).completeness_gap).mean()
        for s in (8, 32, 128)
    ]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[0] > 1e-4  # the coarse rule is visibly inexact on this model


# --------------------------------------------------------------------------- batching


@pytest.mark.parametrize("baseline", ["zeros", "uniform", "per_row"])
def test_batched_equals_unbatched(cnn, baseline):
    model, x = cnn
    if baseline == "per_row":
        baseline = 0.5 * x[::-1]
    runs = [
        explain(model, x, "integrated_gradients", steps=6, baseline=baseline,
                baseline_samples=2, batch_size=bs)
        for bs in (1, 3, 1000)
    ]
    scale = np.abs(runs[-1].values).max()
    for r in runs[:-1]:
        np.testing.assert_allclose(r.values, runs[-1].values, rtol=1e-5, atol=1e-6 * scale)
        np.testing.assert_allclose(r.baseline_scores, runs[-1].baseline_scores, rtol=1e-5)


def test_no_forward_pass_exceeds_batch_size(mlp, monkeypatch):
    model, x = mlp
    grad_rows, forward_rows = [], []
    real_gradient_fn, real_call = ig.gradient_fn, base._call_graph

    def spy_gradient_fn(mf):
        inner = real_gradient_fn(mf)

        def call(points, targets):
            grad_rows.append(int(points.shape[0]))
            return inner(points, targets)

        return call

    def spy_call(mf, chunk):
        forward_rows.append(int(chunk.shape[0]))
        return real_call(mf, chunk)

    monkeypatch.setattr(ig, "gradient_fn", spy_gradient_fn)
    monkeypatch.setattr(base, "_call_graph", spy_call)
    explain(model, x, "integrated_gradients", steps=10, baseline="uniform",
            baseline_samples=3, batch_size=7)
    assert max(grad_rows) <= 7 and max(forward_rows) <= 7
    assert sum(grad_rows) == len(x) * 10 * 3  # every (row, draw, step) exactly once


class _RowCounter(keras.layers.Layer):
    """Identity layer recording the largest batch it saw and the rows it saw in total."""

    def build(self, shape):
        self.peak = self.add_weight(shape=(), dtype="int32", initializer="zeros",
                                    trainable=False)
        self.total = self.add_weight(shape=(), dtype="int32", initializer="zeros",
                                     trainable=False)

    def call(self, x):
        rows = tf.shape(x)[0]
        self.peak.assign(tf.maximum(self.peak, rows))
        self.total.assign_add(rows)
        return x


@pytest.mark.parametrize("baseline", ["zeros", "per_row"])
@pytest.mark.parametrize("target", [None, 1])
def test_fixed_baselines_bound_every_pass_and_evaluate_f_x_once(baseline, target):
    inp = keras.Input((8,))
    counter = _RowCounter()
    h = keras.layers.Dense(16, activation="tanh")(counter(inp))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))
    x = np.random.default_rng(3).normal(size=(6, 8)).astype(np.float32)
    spec = 0.5 * x[::-1] if baseline == "per_row" else baseline
    ref = explain(model, x, "integrated_gradients", steps=10, baseline=spec, target=target,
                  batch_size=1000)
    counter.peak.assign(0)
    counter.total.assign(0)
    res = explain(model, x, "integrated_gradients", steps=10, baseline=spec, target=target,
                  batch_size=7)
    assert int(counter.peak.numpy()) <= 7
    # Every (row, step) once, f(x) once (shared with finding the predicted class), and
    # f(baseline) once per distinct baseline.
    n_base = 1 if baseline == "zeros" else len(x)
    assert int(counter.total.numpy()) == len(x) * 10 + len(x) + n_base
    np.testing.assert_allclose(res.values, ref.values, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(res.scores, ref.scores, rtol=1e-6)
    probs = model(x).numpy()
    t = probs.argmax(1) if target is None else np.full(len(x), target)
    np.testing.assert_array_equal(res.targets, t)
    np.testing.assert_allclose(res.scores, probs[np.arange(len(x)), t], rtol=1e-5)


def test_output_head_by_name_equals_by_index():
    model = M.multi_output()
    x = np.random.default_rng(6).normal(size=(3, 6)).astype(np.float32)
    by_name = explain(model, x, "integrated_gradients", output="reg", steps=8)
    by_index = explain(model, x, "integrated_gradients", output=1, steps=8)
    cls = explain(model, x, "integrated_gradients", output="cls", steps=8)
    np.testing.assert_array_equal(by_name.values, by_index.values)
    np.testing.assert_array_equal(by_name.targets, 0)
    assert not np.allclose(cls.values, by_name.values)


# --------------------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"rule": "simpson"}, ValueError, "rule must be one of"),
        ({"steps": 0}, ValueError, "steps must be an integer >= 1"),
        ({"steps": 2.5}, TypeError, "steps must be an integer"),
        ({"rule": "riemann_trapezoid", "steps": 1}, ValueError, "steps must be an integer >= 2"),
        ({"baseline": "black"}, ValueError, "baseline must be 'zeros', 'blur', 'uniform'"),
        ({"baseline": np.zeros(4)}, ValueError, r"shape \(5,\) .* or \(4, 5\)"),
        ({"baseline": np.full(5, np.nan)}, ValueError, "NaN"),
        ({"baseline": np.array(["a"] * 5)}, TypeError, "numeric"),
        ({"baseline": float("inf")}, ValueError, "finite"),
        ({"baseline": "uniform", "baseline_samples": 0}, ValueError, "baseline_samples"),
        ({"baseline": "uniform", "seed": -1}, ValueError, "seed must be an integer >= 0"),
    ],
)
def test_bad_options_are_refused_with_a_reason(linear, options, error, match):
    model, _, _, x = linear
    with pytest.raises(error, match=match):
        explain(model, x, "integrated_gradients", **options)


def test_bad_blur_sigma_is_refused():
    model, _ = linear_image((8, 8, 2))
    x = np.zeros((1, 8, 8, 2), np.float32)
    with pytest.raises(ValueError, match="blur_sigma must be a positive number"):
        explain(model, x, "integrated_gradients", baseline="blur", blur_sigma=-1.0)
    with pytest.raises(TypeError, match="blur_sigma"):
        explain(model, x, "integrated_gradients", baseline="blur", blur_sigma="wide")
