"""Location-free image shortcut detection: candidates anywhere, judged by ablation."""

from __future__ import annotations

import numpy as np
import pytest

from explain.image_shortcuts import (
    ShortcutSettings,
    box_shares,
    candidate_boxes,
    find_shortcuts,
    inpaint,
    region_name,
)
from explain.synthetic import mark_box, planted_images


def test_candidates_cover_corners_centre_and_edge_bands():
    boxes = [b for _, b in candidate_boxes(32, 32)]
    assert (0, 4, 0, 4) in boxes and (28, 32, 28, 32) in boxes
    assert any(b[0] <= 14 and b[1] >= 18 and b[2] <= 14 and b[3] >= 18 for b in boxes)
    bands = [b for s, b in candidate_boxes(32, 32) if s == "band"]
    assert (0, 2, 0, 32) in bands and (0, 32, 30, 32) in bands


def test_region_names_and_box_shares():
    assert region_name((14, 18, 14, 18), 32, 32) == "center"
    assert region_name((0, 2, 0, 32), 32, 32, "band") == "band along the top edge"
    maps = np.zeros((2, 8, 8))
    maps[:, 0, 0] = 3.0
    maps[:, 7, 7] = 1.0
    shares = box_shares(maps, [(0, 2, 0, 2), (6, 8, 6, 8), (0, 8, 0, 8)])
    assert np.allclose(shares, [[0.75, 0.25, 1.0]] * 2)


def test_inpaint_fills_a_mark_with_its_surroundings():
    x = np.full((1, 16, 16, 3), 0.2, np.float32)
    x[0, 6:10, 6:10] = 1.0
    out = inpaint(x, (6, 10, 6, 10))
    assert np.allclose(out, 0.2) and x[0, 7, 7, 0] == 1.0


def _toy(planted: bool, n: int = 120, seed: int = 0):
    """Centre mark or centre object; the 'model' reads the centre's brightness."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.05, 0.3, size=(n, 32, 32, 3)).astype(np.float32)
    y = np.arange(n) % 2
    box = (14, 18, 14, 18)
    for i in np.flatnonzero(y == 0):
        if planted:
            x[i, 14:18, 14:18] = 1.0  # the same white mark every time
        else:  # an object of varying colour and position covering the centre
            c = rng.uniform(0.5, 1.0, size=3)
            oy, ox = rng.integers(-3, 4, size=2)
            x[i, 12 + oy:20 + oy, 12 + ox:20 + ox] = c
    maps = np.full((n, 32, 32), 0.01)
    maps[:, 13:19, 13:19] += 1.0

    def proba(imgs):
        centre = imgs[:, box[0]:box[1], box[2]:box[3], :].mean(axis=(1, 2, 3))
        p0 = 1 / (1 + np.exp(-30 * (centre - 0.45)))
        return np.stack([p0, 1 - p0], axis=1)

    return x, y, maps, proba


def test_a_centre_mark_is_flagged_with_its_evidence():
    x, y, maps, proba = _toy(planted=True)
    preds = proba(x).argmax(axis=1)
    found, tested = find_shortcuts({"ig": maps, "grad_cam": maps}, preds, x, preds, proba,
                                   ShortcutSettings(), ["marked", "other"])
    assert [f["class"] for f in found] == ["marked"]
    hit = found[0]
    b = hit["box"]
    assert b["y0"] < 18 and b["y1"] > 14 and b["x0"] < 18 and b["x1"] > 14
    assert hit["region"] == "center" and hit["methods"] == ["grad_cam", "ig"]
    assert hit["ablation_drop"] >= 3 * max(hit["random_region_drop"], 0)
    assert hit["ablation_drop"] > 0.5 and hit["content_spread"] < hit["random_content_spread"]


def test_a_centred_object_of_varying_look_is_not_a_shortcut():
    x, y, maps, proba = _toy(planted=False)
    preds = proba(x).argmax(axis=1)
    found, tested = find_shortcuts({"ig": maps}, preds, x, preds, proba)
    assert found == []
    assert tested, "the centre was a candidate and was tested"


@pytest.mark.parametrize("position,band", [("center", False), ("top-right", False),
                                           ("left", True)])
def test_synthetic_sets_put_the_mark_where_meta_says(position, band):
    ds = planted_images(seed=1, position=position, band=band, mark=3, n=60)
    box = ds.meta["mark_box"]
    assert (box["y0"], box["y1"], box["x0"], box["x1"]) == mark_box(position, 32, 3, band)
    has = np.asarray(ds.meta["per_row_mark"], bool)
    patch = ds.x[:, box["y0"]:box["y1"], box["x0"]:box["x1"], :]
    assert np.allclose(patch[has], 1.0)
    # The mark marks class 0 in the planted set.
    assert has[ds.y == 0].mean() > 0.8 and has[ds.y != 0].mean() < 0.2
    twin = planted_images(seed=1, position=position, band=band, mark=3, n=60, planted=False)
    assert 0.2 < np.asarray(twin.meta["per_row_mark"]).mean() < 0.8


def test_settings_from_config_apply_overrides_and_keep_the_audit_seed():
    from dataclasses import fields

    from explain.errors import ConfigError
    from explain.image_shortcuts import _SETTING_RANGES

    st = ShortcutSettings.from_config({"min_drop": 0.2, "band_fractions": [0.1],
                                       "max_rows": 10}, seed=7)
    assert (st.min_drop, st.band_fractions, st.max_rows, st.seed) == (0.2, (0.1,), 10, 7)
    assert ShortcutSettings.from_config(None, seed=7) == ShortcutSettings(seed=7)
    # Every setting but the seed can be overridden, within a range.
    assert set(_SETTING_RANGES) == {f.name for f in fields(ShortcutSettings)} - {"seed"}
    with pytest.raises(ConfigError, match="band_fractions"):
        ShortcutSettings.from_config({"band_fractions": []})
    with pytest.raises(ConfigError, match="min_drop"):
        ShortcutSettings.from_config({"min_drop": float("nan")})
