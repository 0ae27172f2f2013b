"""Map reduction, tabular global importance and named image regions."""

import json

import numpy as np
import pytest

from explain.metrics import global_importance, reduce_to_map, region_importance, region_label


def test_reduce_to_map_sums_absolute_channels_and_keeps_spatial_maps():
    attr = np.zeros((1, 2, 2, 3))
    attr[0, 0, 0] = [1.0, -2.0, 0.5]
    m = reduce_to_map(attr, "image")
    assert m.shape == (1, 2, 2) and m[0, 0, 0] == pytest.approx(3.5)
    cam = np.ones((2, 4, 4))
    assert reduce_to_map(cam, "image") is not None
    np.testing.assert_array_equal(reduce_to_map(cam, "image"), cam)
    assert reduce_to_map(np.ones((3, 2, 2)), "tabular").shape == (3, 4)
    with pytest.raises(ValueError, match="input_kind"):
        reduce_to_map(cam, "audio")


def test_global_importance_sorted_by_mean_absolute_value():
    attr = np.array([[1.0, -3.0, 0.5], [-1.0, 1.0, 0.5]])
    ranked = global_importance(attr, ["age", "income", "zip"])
    assert ranked == [{"feature": "income", "score": 2.0},
                      {"feature": "age", "score": 1.0},
                      {"feature": "zip", "score": 0.5}]
    assert global_importance(attr)[0]["feature"] == "x1"
    with pytest.raises(ValueError, match="feature_names"):
        global_importance(attr, ["a", "b"])


def test_region_names_on_a_4x4_grid():
    names = {(r, c): region_label(r, c, (4, 4)) for r in range(4) for c in range(4)}
    assert names[0, 0] == "top-left corner (row 1, col 1)"
    assert names[0, 3] == "top-right corner (row 1, col 4)"
    assert names[3, 0] == "bottom-left corner (row 4, col 1)"
    assert names[3, 3] == "bottom-right corner (row 4, col 4)"
    assert names[0, 1] == "top edge (row 1, col 2)"
    assert names[2, 3] == "right edge (row 3, col 4)"
    assert all(names[r, c].startswith("center ") for r in (1, 2) for c in (1, 2))
    assert len(set(names.values())) == 16
    assert region_label(1, 1, (3, 3)) == "center (row 2, col 2)"
    assert region_label(1, 1, (5, 5)) == "inner area (row 2, col 2)"


def test_region_importance_finds_the_hot_corner():
    maps = np.full((3, 16, 16), 0.01)
    maps[:, 12:, 12:] = 1.0  # a bottom-right patch, e.g. a planted watermark
    regions, grid = region_importance(maps, grid=(4, 4))
    assert grid.shape == (4, 4) and grid.sum() == pytest.approx(1.0)
    assert regions[0]["feature"] == "bottom-right corner (row 4, col 4)"
    assert regions[0]["score"] == pytest.approx(grid[3, 3]) and grid[3, 3] > 0.8
    assert [r["score"] for r in regions] == sorted((r["score"] for r in regions), reverse=True)
    json.dumps(regions)


def test_region_importance_uneven_sizes_and_channels():
    attr = np.ones((2, 10, 7, 3))
    regions, grid = region_importance(attr, grid=(3, 2))
    assert grid.shape == (3, 2) and grid.sum() == pytest.approx(1.0)
    assert len(regions) == 6
    with pytest.raises(ValueError, match="grid"):
        region_importance(attr, grid=(20, 2))
    _, zero = region_importance(np.zeros((1, 4, 4)))
    assert zero.sum() == 0
