"""Rank agreement between methods: identical, reversed, Grad-CAM vs IG, resolutions."""

import numpy as np
import pytest

from explain.metrics import MethodAgreement, agreement, top_k_intersection


def test_identical_maps_agree_fully_and_reversed_maps_disagree_fully():
    maps = np.random.default_rng(0).uniform(1, 2, size=(3, 6, 6))
    same = agreement(maps, maps)
    assert same.score == pytest.approx(1.0)
    assert same.detail["global_spearman"] == pytest.approx(1.0)
    assert same.detail["mean_top_k"] == 1.0 and same.passed is True
    reversed_ = agreement(maps, 3.0 - maps)  # same magnitudes, opposite ranking
    assert reversed_.score == pytest.approx(-1.0)
    assert reversed_.detail["mean_top_k"] == 0.0 and reversed_.passed is False


def test_grad_cam_maps_against_per_channel_attributions():
    rng = np.random.default_rng(1)
    cam = rng.uniform(size=(2, 8, 8))
    # Channel signs differ but the summed magnitude per pixel is 3 x the map.
    ig = np.stack([cam, -cam, cam], axis=-1)
    result = agreement(cam, ig)
    assert result.detail["input_kind"] == "image"
    assert result.score == pytest.approx(1.0)


def test_maps_at_different_resolutions_are_resized():
    rng = np.random.default_rng(2)
    coarse = rng.uniform(size=(2, 4, 4))
    fine = np.repeat(np.repeat(coarse, 2, axis=1), 2, axis=2)  # the same map at 8x8
    result = agreement(fine, coarse)
    assert result.detail["resolution"] == [4, 4]
    assert result.score == pytest.approx(1.0)


def test_tabular_top_k_and_global_ranking():
    a = np.array([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    b = np.array([[-5.0, 1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 5.0, 4.0]])
    result = MethodAgreement(a, input_kind="tabular", top_k=2).detailed(b)
    assert result.detail["k"] == 2
    np.testing.assert_allclose(result.detail["per_example_top_k"], [0.5, 1.0])
    assert top_k_intersection(np.arange(5), np.arange(5)[::-1], 2) == 0.0
    assert -1.0 <= result.detail["global_spearman"] <= 1.0


def test_validation():
    with pytest.raises(ValueError, match="input_kind"):
        MethodAgreement(np.ones((2, 3)), input_kind="text")
    with pytest.raises(ValueError, match="top_k"):
        MethodAgreement(np.ones((2, 3)), top_k=1.5).evaluate(np.ones((2, 3)))
    with pytest.raises(ValueError, match="reference"):
        agreement(np.ones((2, 3)), np.ones((3, 3)))
