"""Deletion / insertion curves: true order beats random and reverse on a linear model."""

import json

import numpy as np
import pytest

from explain import attribute
from explain.metrics import CausalFidelity, Deletion, Direction, Insertion
from tests import models


@pytest.fixture(scope="module")
def linear():
    model, w, b = models.linear_regression(n_features=8, s=1)
    x = np.random.default_rng(2).normal(size=(6, 8)).astype("float32")
    return model, x, w, b


def test_true_order_beats_random_and_reverse_on_deletion(linear):
    model, x, w, b = linear
    true_attr = x * w  # exact contribution of each feature against a zero baseline
    metric = Deletion(model, x, steps=8, random_orders=5, seed=3)
    true = metric.detailed(true_attr)
    reverse = metric.detailed(-true_attr)
    assert true.detail["mean_auc"] < true.detail["mean_random_auc"]
    assert true.detail["mean_auc"] < reverse.detail["mean_auc"]
    # Greedy removal of the largest contributions gives the lowest possible curve.
    assert np.all(true.detail["per_example_auc"] <= reverse.detail["per_example_auc"] + 1e-6)
    assert true.detail["gain"] > 0 and true.detail["normalized_gain"] > 0
    assert true.passed is True
    assert reverse.detail["gain"] < 0 and reverse.passed is False
    assert true.direction is Direction.LOWER and true.name == "deletion_auc"


def test_true_order_beats_random_and_reverse_on_insertion(linear):
    model, x, w, b = linear
    true_attr = x * w
    metric = Insertion(model, x, steps=8, random_orders=5, seed=3)
    true = metric.detailed(true_attr)
    reverse = metric.detailed(-true_attr)
    assert true.score > true.detail["mean_random_auc"] > reverse.score
    assert true.passed is True and reverse.passed is False
    assert metric.direction is Direction.HIGHER


def test_integrated_gradients_order_is_the_optimal_deletion_order(linear):
    model, x, w, b = linear
    ig = attribute(model, x, "integrated_gradients")  # exactly x * w for a linear model
    metric = Deletion(model, x, steps=8)
    np.testing.assert_allclose(metric.evaluate(ig), metric.evaluate(x * w), atol=1e-5)
    assert metric.check(ig) is True


def test_curve_endpoints_are_f_x_and_f_baseline(linear):
    model, x, w, b = linear
    fx = x @ w + b
    baseline = np.linspace(-1, 1, 8).astype("float32")
    f_base = float(baseline @ w + b)
    d = Deletion(model, x, baseline=baseline, random_orders=1).detailed(x * w).detail
    curves = d["per_example_curves"]
    np.testing.assert_allclose(curves[:, 0], fx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(curves[:, -1], f_base, rtol=1e-5, atol=1e-5)
    i = Insertion(model, x, baseline=baseline, random_orders=1).detailed(x * w).detail
    np.testing.assert_allclose(i["per_example_curves"][:, 0], f_base, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(i["per_example_curves"][:, -1], fx, rtol=1e-5, atol=1e-5)
    assert d["fractions"][0] == 0 and d["fractions"][-1] == 1


def test_auc_is_trapezoid_over_fractions(linear):
    model, x, w, b = linear
    d = Deletion(model, x, steps=4, random_orders=0).detailed(x * w).detail
    c = d["per_example_curves"]
    by_hand = ((c[:, :-1] + c[:, 1:]) / 2).mean(axis=1)  # 4 equal steps of 2 features
    np.testing.assert_allclose(d["per_example_auc"], by_hand, rtol=1e-9)
    assert "gain" not in d


def test_batched_equals_unbatched(linear):
    model, x, w, b = linear
    attr = x * w
    one = Deletion(model, x, batch_size=1, seed=5).detailed(attr).detail
    big = Deletion(model, x, batch_size=4096, seed=5).detailed(attr).detail
    np.testing.assert_allclose(one["per_example_curves"], big["per_example_curves"], atol=1e-5)
    np.testing.assert_allclose(one["random_auc"], big["random_auc"], atol=1e-5)


def test_mean_baseline_uses_reference(linear):
    model, x, w, b = linear
    reference = np.random.default_rng(9).normal(loc=2.0, size=(50, 8)).astype("float32")
    d = Deletion(model, x, baseline="mean", reference=reference).detailed(x * w).detail
    expected = float(reference.mean(axis=0) @ w + b)
    np.testing.assert_allclose(d["score_at_baseline"], expected, rtol=1e-4)
    with pytest.raises(ValueError, match="reference"):
        Deletion(model, x, baseline="mean")


@pytest.fixture(scope="module")
def cnn():
    model = models.small_cnn(size=8, channels=3, n_classes=3)
    x = np.random.default_rng(0).uniform(size=(3, 8, 8, 3)).astype("float32")
    return model, x


def test_image_patches_accept_channel_attributions_and_spatial_maps(cnn):
    model, x = cnn
    attr = np.random.default_rng(1).normal(size=x.shape)
    metric = Deletion(model, x, patch=2, steps=16, random_orders=2)
    with_channels = metric.detailed(attr)
    as_map = metric.detailed(attr.sum(axis=-1))  # Grad-CAM-like (N, H, W)
    assert with_channels.detail["n_features"] == 16
    np.testing.assert_allclose(with_channels.detail["per_example_auc"],
                               as_map.detail["per_example_auc"], atol=1e-6)
    probs = model.predict(x, verbose=0)
    targets = probs.argmax(axis=1)
    np.testing.assert_allclose(with_channels.detail["score_at_input"],
                               probs[np.arange(3), targets], atol=1e-5)
    blank = model.predict(np.zeros_like(x), verbose=0)[np.arange(3), targets]
    np.testing.assert_allclose(with_channels.detail["score_at_baseline"], blank, atol=1e-5)
    assert json.loads(json.dumps(with_channels.to_dict()))["detail"]["patch"] == [2, 2]


def test_patch_scores_sum_attribution_per_cell(cnn):
    model, x = cnn
    maps = np.zeros((3, 8, 8))
    maps[:, 0:4, 4:8] = 1.0  # top-right 4x4 block
    units = Deletion(model, x, patch=4).unit_scores(maps)
    np.testing.assert_array_equal(units, np.tile([0.0, 16.0, 0.0, 0.0], (3, 1)))
    with pytest.raises(ValueError, match="shape"):
        Deletion(model, x, patch=4).unit_scores(np.zeros((3, 4, 4)))


def test_blur_baseline_is_a_blurred_image(cnn):
    model, x = cnn
    metric = Insertion(model, x, baseline="blur", blur_sigma=1.0, patch=4)
    assert metric.baselines.shape == x.shape
    assert metric.baselines.std() < x.std()
    np.testing.assert_allclose(metric.baselines.mean(axis=(1, 2)), x.mean(axis=(1, 2)),
                               atol=0.05)


def test_validation(linear, cnn):
    model, x, w, b = linear
    with pytest.raises(TypeError):
        CausalFidelity(model, x)
    with pytest.raises(ValueError, match="baseline"):
        Deletion(model, x, baseline="noise")
    with pytest.raises(ValueError, match="blur"):
        Deletion(model, x, baseline="blur")
    with pytest.raises(ValueError, match="explanations"):
        Deletion(model, x).evaluate(np.zeros((6, 7)))
    with pytest.raises(ValueError, match="NaN"):
        Deletion(model, x).evaluate(np.full((6, 8), np.nan))
    with pytest.raises(ValueError, match="patch"):
        Deletion(cnn[0], cnn[1], patch=9)
