"""Occlusion: window geometry, exact score drops on linear models, images, sequences, batching."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from explain import explain
from explain._backend import keras
from explain.attributions import base, method_info
from explain.attributions import occlusion as oc
from tests import models as M


def linear_on(shape, s=0):
    """f(x) = <w, x> + 0.2 for rows of ``shape``; returns (model, w of the row shape)."""
    model = keras.Sequential([keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(1)])
    w = np.random.default_rng(s).normal(size=(int(np.prod(shape)), 1)).astype(np.float32)
    model.layers[-1].set_weights([w, np.array([0.2], np.float32)])
    return model, w.reshape(shape)


def brute_force(x, w, win, stride, fill):
    """Mean drop <w, x - occluded> over covering windows, one element at a time."""
    extent, starts = oc.window_geometry(x.shape[1:], win, stride)
    out = np.zeros(x.shape, np.float64)
    for i in range(len(x)):
        total = np.zeros(x.shape[1:])
        count = np.zeros(x.shape[1:])
        for s in starts:
            box = tuple(slice(a, a + k) for a, k in zip(s, extent, strict=True))
            covered = x[i].copy()
            covered[box] = fill[i] if np.ndim(fill) else fill
            total[box] += np.sum(w * (x[i] - covered))
            count[box] += 1
        out[i] = total / count
    return out


# --------------------------------------------------------------------------- geometry


def test_default_windows_per_input_kind():
    win, starts = oc.window_geometry((32, 24, 3))
    assert win == (4, 3, 3)  # an eighth of H and W, all channels
    assert len(starts) == 8 * 8
    win, starts = oc.window_geometry((10,))
    assert win == (1,) and len(starts) == 10
    win, starts = oc.window_geometry((20, 5))
    assert win == (3, 5)  # time steps x all features


@pytest.mark.parametrize(
    ("shape", "window", "stride"),
    [((9, 9, 2), 4, 3), ((9, 9, 2), (2, 5), None), ((7,), 3, 2), ((11, 3), 4, 3),
     ((6, 6, 3), (2, 2, 1), 2)],
)
def test_every_element_is_covered_and_windows_stay_inside(shape, window, stride):
    win, starts = oc.window_geometry(shape, window, stride)
    cover = np.zeros(shape, int)
    for s in starts:
        assert all(a >= 0 and a + k <= d for a, k, d in zip(s, win, shape, strict=True))
        cover[tuple(slice(a, a + k) for a, k in zip(s, win, strict=True))] += 1
    assert cover.min() >= 1


def test_int_window_covers_all_channels_and_full_tuple_does_not():
    assert oc.window_geometry((8, 8, 3), 2)[0] == (2, 2, 3)
    assert oc.window_geometry((8, 8, 3), (2, 4))[0] == (2, 4, 3)
    assert oc.window_geometry((8, 8, 3), (2, 2, 1))[0] == (2, 2, 1)


@pytest.mark.parametrize(
    ("window", "stride", "error", "match"),
    [
        (9, None, ValueError, "does not fit"),
        ((2, 2, 2, 2), None, ValueError, "2 .sliding axes. or 3 .all axes."),
        (0, None, ValueError, "window must be an integer >= 1"),
        (2.5, None, TypeError, "window must be an int or a tuple"),
        (2, 0, ValueError, "stride must be an integer >= 1"),
        (2, 3, ValueError, "must not exceed window"),
    ],
)
def test_bad_geometry_is_refused_with_a_reason(window, stride, error, match):
    with pytest.raises(error, match=match):
        oc.window_geometry((8, 8, 3), window, stride)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("fill", [0.0, 1.5, "mean"])
def test_single_feature_windows_on_a_linear_model_are_delta_times_weight(fill):
    model, w = linear_on((6,))
    x = np.random.default_rng(1).normal(size=(3, 6)).astype(np.float32)
    res = explain(model, x, "occlusion", fill=fill)
    f = x.mean(axis=1, keepdims=True) if fill == "mean" else fill
    np.testing.assert_allclose(res.values, (x - f) * w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(res.scores, (x * w).sum(1) + 0.2, rtol=1e-5)


@pytest.mark.parametrize(
    ("shape", "window", "stride"),
    [((6,), 2, 1), ((8, 8, 2), (2, 2), 2), ((8, 8, 2), 3, 2), ((7, 3), 2, 1)],
)
def test_overlapping_windows_average_the_drops_of_their_windows(shape, window, stride):
    model, w = linear_on(shape)
    x = np.random.default_rng(2).normal(size=(2, *shape)).astype(np.float32)
    res = explain(model, x, "occlusion", window=window, stride=stride, fill=-0.5)
    np.testing.assert_allclose(res.values, brute_force(x, w, window, stride, -0.5),
                               rtol=1e-4, atol=1e-5)


def test_image_patch_spans_all_channels():
    model, w = linear_on((4, 4, 3))
    x = np.random.default_rng(3).normal(size=(1, 4, 4, 3)).astype(np.float32)
    res = explain(model, x, "occlusion", window=2)
    # Every element of one 2x2 patch gets that patch's whole drop, channels included.
    patch = res.values[0, :2, :2, :]
    np.testing.assert_allclose(patch, np.sum(x[0, :2, :2] * w[:2, :2]), rtol=1e-4)


def test_a_cnn_and_its_batched_runs_agree():
    model = M.small_cnn(size=12)
    x = np.random.default_rng(4).random((3, 12, 12, 3)).astype(np.float32)
    runs = [explain(model, x, "occlusion", window=3, stride=2, batch_size=bs).values
            for bs in (1, 3, 1000)]
    assert runs[-1].shape == x.shape and np.abs(runs[-1]).max() > 0
    for r in runs[:-1]:
        np.testing.assert_allclose(r, runs[-1], rtol=1e-5, atol=1e-7)


def test_no_forward_pass_exceeds_batch_size(monkeypatch):
    model, _ = linear_on((5, 5, 1))
    x = np.random.default_rng(5).normal(size=(3, 5, 5, 1)).astype(np.float32)
    rows = []
    real = base._call_graph

    def spy(mf, chunk):
        rows.append(int(chunk.shape[0]))
        return real(mf, chunk)

    monkeypatch.setattr(base, "_call_graph", spy)
    res = explain(model, x, "occlusion", window=1, batch_size=4)
    assert max(rows) <= 4
    assert sum(rows) == len(x) + len(x) * 25  # the inputs, then every occluded copy once
    assert res.extra["positions"] == 25


def test_is_registered_as_forward_only_without_completeness():
    info = method_info("occlusion")
    assert info.gradient_based is False and info.completeness is False


@pytest.mark.parametrize(
    ("fill", "error", "match"),
    [("median", ValueError, "fill must be a number or 'mean'"),
     (None, TypeError, "fill must be a number or 'mean'"),
     (float("nan"), ValueError, "finite")],
)
def test_bad_fill_is_refused(fill, error, match):
    model, _ = linear_on((4,))
    with pytest.raises(error, match=match):
        explain(model, np.ones((1, 4), np.float32), "occlusion", fill=fill)


def test_each_element_averages_only_the_windows_that_cover_it():
    # A model that only reads feature 3: only windows covering it change the score.
    # Windows [0,1] [1,2] [2,3] [3,4]: feature 2 sees drops (0, 2), feature 4 only (2).
    model, w = linear_on((5,))
    w_only3 = np.zeros_like(w)
    w_only3[3] = 2.0
    model.layers[-1].set_weights([w_only3.reshape(-1, 1), np.array([0.0], np.float32)])
    x = np.ones((2, 5), np.float32)
    res = explain(model, x, "occlusion", window=2, stride=1)
    for i, j in itertools.product(range(2), range(5)):
        expected = {0: 0.0, 1: 0.0, 2: 1.0, 3: 2.0, 4: 2.0}[j]
        assert np.isclose(res.values[i, j], expected), (i, j, res.values[i])
