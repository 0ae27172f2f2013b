"""The ``shap`` attribution method: every estimator against closed forms and shap itself."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import shap

from explain.attributions import ModelFunction, explain
from explain.attributions import _coalitions as co
from tests import models

AGNOSTIC = ["exact", "kernel", "permutation", "sampled"]


def _rows(shape, n, s):
    return np.random.default_rng(s).normal(size=(n, *shape)).astype("float32")


@pytest.fixture(scope="module")
def linear():
    model, w, _ = models.linear_regression(5)
    return model, w, _rows((5,), 6, 1), _rows((5,), 20, 2)


@pytest.fixture(scope="module")
def mlp():
    model = models.mlp_classifier(8, n_classes=3)
    return model, _rows((8,), 5, 3), _rows((8,), 15, 4)


@pytest.fixture(scope="module")
def shap_exact(mlp):
    """shap's ExactExplainer with the independent masker over the same background."""
    model, x, bg = mlp
    mf = ModelFunction(model)
    explainer = shap.ExactExplainer(lambda z: mf.predict(np.asarray(z, np.float32), 4096),
                                    shap.maskers.Independent(bg, max_samples=len(bg)))
    values = explainer(x, silent=True, batch_size=4096).values  # (N, M, K)
    targets = np.argmax(mf.predict(x), axis=1)
    return values[np.arange(len(x)), :, targets], targets


# --------------------------------------------------------------------------- numeric core


def test_exact_closed_form_equals_permutation_average():
    """The closed-form weights reproduce the textbook average over all m! orderings."""
    m = 4
    rng = np.random.default_rng(0)
    coalitions = co.all_coalitions(m)
    v = rng.normal(size=(3, 2**m))
    code = {tuple(c): k for k, c in enumerate(coalitions.astype(int))}
    brute = np.zeros((3, m))
    for perm in itertools.permutations(range(m)):
        held = np.zeros(m, int)
        for j in perm:
            before = code[tuple(held)]
            held[j] = 1
            brute[:, j] += v[:, code[tuple(held)]] - v[:, before]
    brute /= math.factorial(m)
    np.testing.assert_allclose(co.exact_shapley(v, coalitions), brute, atol=1e-12)


def test_kernel_solve_on_all_coalitions_is_exact():
    """KernelSHAP's constrained regression over every coalition gives the Shapley values."""
    m = 6
    rng = np.random.default_rng(1)
    coalitions = co.all_coalitions(m)
    v = rng.normal(size=(4, 2**m))
    masks, weights = co.kernel_design(m, 2**m, rng)
    assert len(masks) == 2**m - 2
    phi = co.kernel_solve(masks, weights, v[:, 1:-1], v[:, 0], v[:, -1])
    np.testing.assert_allclose(phi, co.exact_shapley(v, coalitions), atol=1e-10)


@pytest.mark.parametrize("budget", [40, 200, 700])
def test_kernel_design_keeps_each_size_mass_and_budget(budget):
    m = 12
    masks, weights = co.kernel_design(m, budget, np.random.default_rng(0))
    assert len(masks) <= budget
    assert len({row.tobytes() for row in masks}) == len(masks)  # no coalition twice
    size = masks.sum(axis=1)
    assert size.min() >= 1 and size.max() <= m - 1
    mass = co.kernel_size_mass(m)
    for s in np.unique(size):
        assert np.isclose(weights[size == s].sum(), mass[s - 1])
    # paired sampling: every sampled coalition comes with its complement
    keys = {row.tobytes() for row in masks}
    assert all((~row).tobytes() in keys for row in masks)


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("estimator", [*AGNOSTIC, "gradient", "deep"])
def test_linear_model_equals_weights_times_centred_input(linear, estimator):
    """For f(x) = w.x + b the SHAP values are w * (x - E[background]) for every estimator."""
    model, w, x, bg = linear
    # samples=16 < 2^5 - 2 keeps kernel and permutation on their sampling paths
    opts = {"samples": 16} if estimator in ("kernel", "permutation", "sampled") else {}
    res = explain(model, x, "shap", estimator=estimator, background=bg, **opts)
    assert res.extra["estimator"] == estimator
    np.testing.assert_allclose(res.values, w * (x - bg.mean(axis=0)), atol=2e-5)
    np.testing.assert_allclose(res.baseline_scores, model(bg).numpy().mean(), atol=1e-5)


def test_grouped_features_on_linear_model(linear):
    """A group's value is the sum of its features' terms, shared evenly by its features."""
    model, w, x, bg = linear
    groups = np.array([0, 0, 1, 2, 2])
    res = explain(model, x, "shap", estimator="exact", background=bg, feature_groups=groups)
    terms = w * (x - bg.mean(axis=0))
    expected = np.stack([terms[:, groups == g].sum(1) for g in range(3)], axis=1)
    np.testing.assert_allclose(res.extra["group_values"], expected, atol=1e-5)
    np.testing.assert_allclose(res.values[:, 0], res.values[:, 1])
    np.testing.assert_allclose(res.values[:, :2].sum(1), expected[:, 0], atol=1e-5)


# --------------------------------------------------------------------------- against shap


# shap's ExactExplainer JIT-compiles its numba kernels on first use (tens of seconds once).
@pytest.mark.slow
def test_exact_matches_shap_exact_explainer(mlp, shap_exact):
    model, x, bg = mlp
    ref, targets = shap_exact
    for estimator in ("exact", "auto"):
        res = explain(model, x, "shap", estimator=estimator, background=bg)
        np.testing.assert_array_equal(res.targets, targets)
        assert res.extra["estimator"] == "exact"
        np.testing.assert_allclose(res.values, ref, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("estimator,samples", [
    ("kernel", None),  # 2^8 - 2 coalitions fit in the default budget: enumerated exactly
    ("kernel", 100),
    ("permutation", None),
    ("permutation", 400),
    ("sampled", None),
    ("sampled", 1500),  # forward passes per row: as many as kernel 100 x 15 rows
])
def test_sampling_estimators_close_to_shap_exact(mlp, shap_exact, estimator, samples):
    """Stated tolerance: max abs error <= 2% of the range of the exact values."""
    model, x, bg = mlp
    ref, _ = shap_exact
    res = explain(model, x, "shap", estimator=estimator, background=bg, samples=samples)
    err = np.abs(res.values - ref).max()
    if estimator == "kernel" and samples is None:
        assert res.extra["estimator"] == "exact"
        assert err <= 1e-5
    else:
        assert err <= 0.02 * np.ptp(ref), (err, np.ptp(ref))
        assert err > 0  # genuinely sampled, not enumerated
    assert np.abs(res.completeness_gap).max() <= 1e-5


def test_auto_samples_background_rows_beyond_exact():
    """Above 10 players with a multi-row background, auto walks orderings per background
    row: efficiency stays exact, the seed fixes the result, every row is walked."""
    model = models.mlp_regressor(12)
    x, bg = _rows((12,), 3, 11), _rows((12,), 9, 12)
    res = explain(model, x, "shap", background=bg, samples=60)
    assert res.extra["estimator"] == "sampled"
    assert res.extra["model_rows"] == 3 * 10 * 11  # 60 / 11 -> 5, raised to B = 9, even
    assert np.abs(res.completeness_gap).max() <= 1e-5
    again = explain(model, x, "shap", background=bg, samples=60)
    np.testing.assert_array_equal(res.values, again.values)


def test_gradient_on_nonlinear_model_is_nearly_complete(mlp):
    """Expected gradients is complete only in expectation: the gap is a few % of the change."""
    model, x, bg = mlp
    res = explain(model, x, "shap", estimator="gradient", background=bg, samples=300)
    change = np.abs(res.scores - res.baseline_scores)
    assert np.all(np.abs(res.completeness_gap) <= 0.1 * change + 2e-3)


def test_deep_heads_logits_and_multi_output():
    """DeepSHAP on a chosen head of a multi-output model and on pre-softmax logits."""
    x, bg = _rows((6,), 4, 5), _rows((6,), 10, 6)
    model = models.multi_output(6)
    res = explain(model, x, "shap", estimator="deep", background=bg, output="reg")
    assert res.values.shape == x.shape
    assert np.abs(res.completeness_gap).max() <= 1e-5
    np.testing.assert_allclose(res.scores, model(x)[1].numpy()[:, 0], atol=1e-6)
    clf = models.mlp_classifier(6)
    res = explain(clf, x, "shap", estimator="deep", background=bg, logits=True, target=2)
    assert np.abs(res.completeness_gap).max() <= 1e-5
    exact = explain(clf, x, "shap", estimator="exact", background=bg, logits=True, target=2)
    np.testing.assert_allclose(res.scores, exact.scores, atol=1e-6)


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize("estimator", AGNOSTIC)
def test_batched_equals_unbatched(mlp, estimator):
    model, x, bg = mlp
    x, bg = x[:2], bg[:6]  # batch_size 7 means one model call per 7 rows: keep it small
    opts = {"samples": 100} if estimator != "exact" else {}
    small = explain(model, x, "shap", estimator=estimator, background=bg, batch_size=7,
                    seed=3, **opts)
    large = explain(model, x, "shap", estimator=estimator, background=bg, batch_size=4096,
                    seed=3, **opts)
    np.testing.assert_allclose(small.values, large.values, atol=1e-6)


def test_seed_controls_sampling(mlp):
    model, x, bg = mlp
    runs = [explain(model, x, "shap", estimator="kernel", background=bg, samples=60, seed=s)
            .values for s in (0, 0, 1)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2])


def test_background_defaults_and_int(mlp):
    model, x, _ = mlp
    assert explain(model, x, "shap").extra["background_rows"] == len(x)
    res = explain(model, x, "shap", background=3)
    assert res.extra["background_rows"] == 3
    assert np.abs(res.completeness_gap).max() <= 1e-5


def test_image_grid_on_small_cnn():
    model = models.small_cnn(16, channels=3)
    x = np.random.default_rng(7).random((2, 16, 16, 3)).astype("float32")
    res = explain(model, x, "shap", grid=4)  # M = 16 > 10: auto runs kernel
    assert res.extra["estimator"] == "kernel"
    assert res.values.shape == x.shape
    assert res.extra["groups"].shape == (16, 16)
    assert res.extra["group_values"].shape == (2, 16)
    assert res.extra["background_rows"] == 1  # the per-channel mean image
    assert np.abs(res.completeness_gap).max() <= 1e-5
    # a cell's pixels share its value evenly: 4x4 pixels x 3 channels
    cell = res.values[0, :4, :4, :]
    np.testing.assert_allclose(cell, res.extra["group_values"][0, 0] / 48, atol=1e-8)


def test_image_regions_with_background_images_are_sampled():
    """With several background images auto walks orderings per background image; per-image
    region maps (superpixels) go through the same path, in any batch size."""
    model = models.small_cnn(16, channels=3)
    x = np.random.default_rng(9).random((2, 16, 16, 3)).astype("float32")
    bg = np.random.default_rng(10).random((3, 16, 16, 3)).astype("float32")
    runs = [explain(model, x, "shap", groups="superpixels", grid=4, background=bg,
                    samples=200, batch_size=bs) for bs in (37, 4096)]
    assert runs[0].extra["estimator"] == "sampled"
    np.testing.assert_allclose(runs[0].values, runs[1].values, atol=1e-6)
    assert np.abs(runs[0].completeness_gap).max() <= 1e-5


def test_image_superpixels_and_custom_map():
    model = models.small_cnn(16, channels=3)
    x = np.random.default_rng(8).random((2, 16, 16, 3)).astype("float32")
    x[:, :, :8, 0] += 2.0  # a colour edge the regions should follow
    res = explain(model, x, "shap", groups="superpixels", grid=3, estimator="exact")
    maps = res.extra["groups"]
    assert maps.shape == (2, 16, 16)
    assert all(len(np.unique(m)) == 9 for m in maps)
    assert np.abs(res.completeness_gap).max() <= 1e-5
    assert not np.any((maps[:, :, :8, None] == maps[:, :, None, 8:]).all(axis=1))
    halves = np.repeat(np.array([[0, 1]]), 16, axis=0).repeat(8, axis=1)
    res = explain(model, x, "shap", groups=halves)
    assert res.extra["group_values"].shape == (2, 2)
    assert np.abs(res.completeness_gap).max() <= 1e-5


# --------------------------------------------------------------------------- bad options


@pytest.mark.parametrize("opts,message", [
    ({"estimator": "lime"}, "unknown SHAP estimator 'lime'"),
    ({"background": np.zeros((4, 7))}, r"background must have shape \(B, 8\)"),
    ({"background": np.full((4, 8), np.nan)}, "background contains NaN"),
    ({"background": 99}, "background=99 samples that many rows of x"),
    ({"groups": "grid"}, "groups and grid apply to image inputs"),
    ({"feature_groups": np.zeros(3, int)}, r"feature_groups must have shape \(8,\)"),
    ({"estimator": "kernel", "samples": 4}, "samples must be at least M"),
])
def test_bad_options_raise_value_error(mlp, opts, message):
    model, x, _ = mlp
    with pytest.raises(ValueError, match=message):
        explain(model, x, "shap", **opts)


def test_too_many_players_for_exact():
    model = models.mlp_regressor(15)
    x = _rows((15,), 2, 9)
    with pytest.raises(ValueError, match="allows at most 14 players; this input has M=15"):
        explain(model, x, "shap", estimator="exact")


def test_grid_larger_than_image():
    model = models.small_cnn(8, channels=1)
    x = np.zeros((1, 8, 8, 1), "float32")
    with pytest.raises(ValueError, match=r"grid must be in \[1, 8\]"):
        explain(model, x, "shap", grid=9)


def test_deep_unsupported_model_points_to_gradient():
    model = models.small_cnn(8, channels=1)
    model_with_unknown_op = _with_custom_op(model)
    x = _rows((8, 8, 1), 2, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="use estimator='gradient'"):
            explain(model_with_unknown_op, x, "shap", estimator="deep", background=x)


def _with_custom_op(model):
    """A model with an op DeepExplainer has no rule for (a cumulative sum)."""
    from explain._backend import keras

    class CumSum(keras.layers.Layer):
        def call(self, t):
            return keras.ops.cumsum(t, axis=-1)

    inp = keras.Input(model.inputs[0].shape[1:])
    return keras.Model(inp, CumSum()(model(inp)))
