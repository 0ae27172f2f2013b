"""Players of the SHAP game: which input elements move together when a coalition is masked.

Tabular inputs play one feature per player unless ``feature_groups`` merges some. Images
play regions (a regular grid of cells, or superpixels), each region covering all the
channels of its pixels, since per-pixel players would make ``M`` far too large for any
Shapley estimator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from explain.errors import InputError, InputTypeError


@dataclass(frozen=True)
class Grouping:
    """Players of the game.

    Attributes
    ----------
    elements
        int ``(D,)`` (shared by all rows) or ``(N, D)`` (one map per row): the player of
        each flattened input element.
    m
        Number of players.
    group_map
        What the result reports: ``(H, W)`` / ``(N, H, W)`` region maps for images,
        ``(D,)`` feature-to-group for other inputs.
    """

    elements: np.ndarray
    m: int
    group_map: np.ndarray

    def element_counts(self) -> np.ndarray:
        """Elements per player, ``(M,)`` or ``(N, M)``."""
        if self.elements.ndim == 1:
            return np.bincount(self.elements, minlength=self.m)
        return np.stack([np.bincount(row, minlength=self.m) for row in self.elements])

    def spread(self, group_values: np.ndarray) -> np.ndarray:
        """Per-element values ``(N, D)``: each player's value shared evenly by its elements."""
        per = group_values / np.maximum(self.element_counts(), 1)
        if self.elements.ndim == 1:
            return per[:, self.elements]
        return np.take_along_axis(per, self.elements, axis=1)

    def collect(self, element_values: np.ndarray) -> np.ndarray:
        """Per-player sums ``(N, M)`` of per-element values ``(N, D)``."""
        n = len(element_values)
        rows = np.repeat(np.arange(n), element_values.shape[1])
        el = self.elements if self.elements.ndim == 2 else np.broadcast_to(
            self.elements, element_values.shape)
        out = np.bincount(rows * self.m + el.ravel(), weights=element_values.ravel(),
                          minlength=n * self.m)
        return out.reshape(n, self.m)


def _as_int_map(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.integer):
        raise InputTypeError(f"{name} must be an integer array of shape {shape}, got {value!r:.80}")
    if arr.shape != shape:
        raise InputError(f"{name} must have shape {shape}, got {arr.shape}")
    if arr.size and arr.min() < 0:
        raise InputError(f"{name} must hold group ids >= 0")
    return arr


def tabular_groups(feature_shape: tuple[int, ...], feature_groups: Any) -> Grouping:
    """One player per feature, or the groups of ``feature_groups`` (ids relabelled 0..M-1).

    ``feature_groups`` is an int array of the per-row input shape (or its flattened size)
    giving each feature's group id.
    """
    d = int(np.prod(feature_shape))
    if feature_groups is None:
        return Grouping(np.arange(d), d, np.arange(d))
    flat_shape = (d,)
    arr = np.asarray(feature_groups)
    shape = feature_shape if arr.shape == feature_shape else flat_shape
    arr = _as_int_map("feature_groups", feature_groups, shape).reshape(-1)
    _, inverse = np.unique(arr, return_inverse=True)
    inverse = inverse.astype(np.int64)
    return Grouping(inverse, int(inverse.max()) + 1, inverse)


def grid_map(h: int, w: int, grid: int) -> np.ndarray:
    """``(H, W)`` labels of a ``grid`` x ``grid`` partition into near-equal cells."""
    rows = np.arange(h) * grid // h
    cols = np.arange(w) * grid // w
    return (rows[:, None] * grid + cols[None, :]).astype(np.int64)


def superpixel_maps(images: np.ndarray, n_segments_side: int, iters: int = 10) -> np.ndarray:
    """``(N, H, W)`` superpixels with exactly ``k = n_segments_side**2`` regions per image.

    A small SLIC-style k-means on (position, colour): centres start on a regular grid
    (so the result is deterministic), the position is measured in grid-cell units and the
    colour in units of the image's own spread, so regions stay compact and follow colour
    edges. Regions that end up empty take the farthest pixel of the largest region, so
    every image has the same number of players.

    Ref. Achanta et al. 2012 (SLIC superpixels).
    """
    n, h, w, c = images.shape
    k = n_segments_side * n_segments_side
    yy, xx = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    pos = np.stack([yy.ravel() * n_segments_side / h, xx.ravel() * n_segments_side / w], 1)
    init = grid_map(h, w, n_segments_side).ravel()
    maps = np.empty((n, h * w), dtype=np.int64)
    for i in range(n):
        col = images[i].reshape(-1, c).astype(np.float64)
        col = (col - col.mean(0)) / max(float(col.std()), 1e-12)
        feats = np.concatenate([pos, col], axis=1)
        labels = init.copy()
        for _ in range(iters):
            centres = np.stack([
                feats[labels == j].mean(0) if np.any(labels == j) else feats[init == j].mean(0)
                for j in range(k)
            ])
            dist = ((feats[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
            new = np.argmin(dist, axis=1)
            if np.array_equal(new, labels):
                break
            labels = new
        counts = np.bincount(labels, minlength=k)
        for j in np.flatnonzero(counts == 0):
            big = int(np.argmax(counts))
            members = np.flatnonzero(labels == big)
            centre = feats[members].mean(0)
            far = members[np.argmax(((feats[members] - centre) ** 2).sum(1))]
            labels[far] = j
            counts[big] -= 1
            counts[j] += 1
        maps[i] = labels
    return maps.reshape(n, h, w)


def image_groups(x: np.ndarray, groups: Any, grid: Any) -> Grouping:
    """Players for images ``(N, H, W, C)``: grid cells, superpixels, or a user map."""
    n, h, w, c = x.shape
    if isinstance(groups, str) or groups is None:
        kind = "grid" if groups is None else groups
        if kind not in ("grid", "superpixels"):
            raise InputError(
                f"groups must be 'grid', 'superpixels' or an int array of shape ({h}, {w}); "
                f"got {groups!r}"
            )
        if grid is None:
            grid = 8 if min(h, w) >= 16 else 4
            grid = min(grid, h, w)
        if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)):
            raise InputTypeError(f"grid must be an integer >= 1, got {grid!r}")
        if not 1 <= grid <= min(h, w):
            raise InputError(f"grid must be in [1, {min(h, w)}] for {h}x{w} images, got {grid}")
        grid = int(grid)
        if kind == "grid":
            pix = grid_map(h, w, grid)
            return Grouping(np.repeat(pix.reshape(-1), c), grid * grid, pix)
        maps = superpixel_maps(x, grid)
        return Grouping(np.repeat(maps.reshape(n, -1), c, axis=1), grid * grid, maps)
    if grid is not None:
        raise InputError("grid applies only to groups='grid' or groups='superpixels'")
    pix = _as_int_map("groups", groups, (h, w))
    _, inverse = np.unique(pix.reshape(-1), return_inverse=True)
    pix = inverse.reshape(h, w).astype(np.int64)
    return Grouping(np.repeat(pix.reshape(-1), c), int(pix.max()) + 1, pix)
