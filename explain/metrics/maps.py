"""Turn attributions into what a report quotes: per-example maps, a global importance
ranking of features, and a named grid of image regions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from explain.metrics.base import as_array

INPUT_KINDS = ("image", "tabular")


def reduce_to_map(attr: Any, input_kind: str) -> np.ndarray:
    """One importance map per example.

    Parameters
    ----------
    attr
        Attributions (array or :class:`~explain.Attribution`): ``(N, H, W, C)`` or
        ``(N, H, W)`` (Grad-CAM) for images, ``(N, ...)`` for tabular data.
    input_kind
        ``"image"`` or ``"tabular"``.

    Returns
    -------
    numpy.ndarray
        ``"image"``: ``(N, H, W)``; per-channel attributions are reduced to
        ``sum_c |attr|`` (a pixel matters when any of its channels does, whatever the
        sign), maps that are already ``(N, H, W)`` are returned unchanged.
        ``"tabular"``: ``(N, F)``, the signed attributions flattened per example.

    Ref. Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018 (channel
    reduction by summed absolute values).
    """
    arr = as_array(attr, name="attributions")
    if input_kind == "image":
        if arr.ndim == 4:
            return np.abs(arr).sum(axis=-1)
        if arr.ndim == 3:
            return arr
        raise ValueError(
            f"image attributions must be (N, H, W, C) or (N, H, W); got shape {arr.shape}"
        )
    if input_kind == "tabular":
        return arr.reshape(len(arr), -1)
    raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")


def global_importance(attr: Any, feature_names: Sequence[str] | None = None
                      ) -> list[dict[str, Any]]:
    """Mean absolute attribution per feature, most important first.

    Parameters
    ----------
    attr
        Tabular attributions ``(N, F)`` (array or Attribution).
    feature_names
        ``F`` names; ``x0 .. x{F-1}`` when None.

    Returns
    -------
    list of dict
        ``[{"feature": name, "score": mean |attr|}, ...]`` sorted by score, descending
        (ties keep the feature order).

    Ref. Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS
    2017 (global importance as mean |SHAP value|).
    """
    arr = reduce_to_map(attr, "tabular")
    n_features = arr.shape[1]
    if feature_names is None:
        names = [f"x{i}" for i in range(n_features)]
    else:
        names = [str(n) for n in feature_names]
        if len(names) != n_features:
            raise ValueError(
                f"feature_names has {len(names)} names for {n_features} features"
            )
    scores = np.abs(arr).mean(axis=0)
    order = np.argsort(-scores, kind="stable")
    return [{"feature": names[i], "score": float(scores[i])} for i in order]


def _edges(size: int, parts: int) -> np.ndarray:
    # Boundaries of `parts` near-equal slices; the remainder is spread, not dumped at the end.
    return np.linspace(0, size, parts + 1).round().astype(int)


def region_label(row: int, col: int, grid: tuple[int, int]) -> str:
    """A plain-words name of grid cell ``(row, col)`` (0-based) with its 1-based position.

    Border cells are corners (``"top-left corner"``) or edges (``"top edge"``); inner
    cells in the middle of the grid are ``"center"``, other inner cells ``"inner area"``.
    The ``"(row r, col c)"`` suffix makes every name unique.
    """
    rows, cols = grid
    vert = "top" if row == 0 and rows > 1 else "bottom" if row == rows - 1 and rows > 1 else ""
    horiz = "left" if col == 0 and cols > 1 else "right" if col == cols - 1 and cols > 1 else ""
    if rows == 1 and cols == 1:
        label = "whole image"
    elif vert and horiz:
        label = f"{vert}-{horiz} corner"
    elif vert or horiz:
        label = f"{vert or horiz} edge"
    else:
        # The middle one (odd size) or two (even size) rows/columns.
        mid_rows = {(rows - 1) // 2, rows // 2}
        mid_cols = {(cols - 1) // 2, cols // 2}
        label = "center" if row in mid_rows and col in mid_cols else "inner area"
    return f"{label} (row {row + 1}, col {col + 1})"


def region_importance(maps: Any, grid: tuple[int, int] = (4, 4)
                      ) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Share of the attribution mass in each cell of a ``grid`` over the image.

    Parameters
    ----------
    maps
        ``(N, H, W)`` maps, or ``(N, H, W, C)`` attributions (reduced with
        :func:`reduce_to_map`).
    grid
        ``(rows, cols)``; cells are near-equal slices when H or W do not divide evenly.

    Returns
    -------
    regions
        ``[{"feature": "top-left corner (row 1, col 1)", "score": share, "row": r,
        "col": c}, ...]`` sorted by score, descending. ``score`` is the cell's share of
        the total ``|map|`` mass, averaged over examples (scores sum to 1; all zero when
        every map is zero).
    grid_scores
        ``(rows, cols)`` array of the same shares in image layout.

    Ref. Lapuschkin et al., "Unmasking Clever Hans predictors", Nat. Commun. 2019
    (where the relevance mass falls reveals shortcuts).
    """
    m = np.abs(reduce_to_map(maps, "image"))
    if (not isinstance(grid, (tuple, list)) or len(grid) != 2
            or not all(isinstance(g, (int, np.integer)) and g >= 1 for g in grid)):
        raise ValueError(f"grid must be (rows, cols) of positive ints, got {grid!r}")
    rows, cols = int(grid[0]), int(grid[1])
    n, h, w = m.shape
    if rows > h or cols > w:
        raise ValueError(f"grid {rows}x{cols} is finer than the {h}x{w} maps")
    re, ce = _edges(h, rows), _edges(w, cols)
    cells = np.zeros((n, rows, cols))
    for r in range(rows):
        for c in range(cols):
            cells[:, r, c] = m[:, re[r]:re[r + 1], ce[c]:ce[c + 1]].sum(axis=(1, 2))
    totals = cells.sum(axis=(1, 2), keepdims=True)
    # Per-example shares so a few high-magnitude examples do not dominate the layout.
    shares = np.divide(cells, totals, out=np.zeros_like(cells), where=totals > 0)
    grid_scores = shares.mean(axis=0)
    flat = grid_scores.ravel()
    order = np.argsort(-flat, kind="stable")
    regions = []
    for i in order:
        r, c = divmod(int(i), cols)
        regions.append({"feature": region_label(r, c, (rows, cols)),
                        "score": float(flat[i]), "row": r, "col": c})
    return regions, grid_scores


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(N, H, W)`` maps resampled to ``size`` by area averaging (bilinear when enlarging)."""
    from explain._backend import tf

    if maps.shape[1:] == tuple(size):
        return maps
    shrinking = size[0] <= maps.shape[1] and size[1] <= maps.shape[2]
    out = tf.image.resize(maps[..., None].astype(np.float32), size,
                          method="area" if shrinking else "bilinear")
    return out.numpy()[..., 0].astype(np.float64)
