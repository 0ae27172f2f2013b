"""Occlusion: how much the target score drops when a window of the input is covered.

Every (row, window position) pair is one occluded copy; the copies form one stream
evaluated in forward passes of at most ``batch_size`` rows, and only the score drops are
kept, so memory is bounded by ``batch_size``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from explain.attributions.base import (
    Attribution,
    ModelFunction,
    check_positive_int,
    stream_chunks,
)
from explain.attributions.registry import register
from explain.budget import MethodWork, WorkInputs
from explain.errors import InputError, InputTypeError


def _sliding_axes(shape: tuple[int, ...]) -> int:
    """How many leading axes the window slides over; the rest are covered whole.

    Images (H, W, C) slide over H and W and cover all channels; sequences (T, F) slide
    over time and cover all features; tabular (F,) slides over features.
    """
    return 1 if len(shape) == 1 else len(shape) - 1


def _as_extent(name: str, value: Any, shape: tuple[int, ...], whole: tuple[int, ...]
               ) -> tuple[int, ...]:
    """``value`` (int or tuple) as one extent per axis of ``shape``."""
    n_slide = _sliding_axes(shape)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,) * n_slide
    if not isinstance(value, (tuple, list)):
        raise InputTypeError(
            f"{name} must be an int or a tuple of {n_slide} or {len(shape)} ints, got {value!r}"
        )
    if len(value) == n_slide:
        value = (*value, *whole[n_slide:])
    elif len(value) != len(shape):
        raise InputError(
            f"{name} must have {n_slide} (sliding axes) or {len(shape)} (all axes) entries "
            f"for inputs of shape (N, {', '.join(map(str, shape))}), got {tuple(value)}"
        )
    out = tuple(check_positive_int(name, v) for v in value)
    return out


def window_geometry(shape: tuple[int, ...], window: Any = None, stride: Any = None
                    ) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
    """The window extent and the start of every window position over an input ``shape``.

    Parameters
    ----------
    shape
        One row's shape (no batch axis).
    window
        None (images and sequences: an eighth of each sliding axis, rounded up; tabular:
        one feature), an int for every sliding axis, or a tuple per sliding axis or per axis.
    stride
        None (= window), or the same forms as ``window``; at most the window on every
        axis, so no element is skipped.

    Returns
    -------
    window, starts
        The window extent per axis, and the start index tuple of every position. The
        last position on each axis is moved back to end at the edge, so every element is
        covered by at least one window.
    """
    shape = tuple(int(d) for d in shape)
    n_slide = _sliding_axes(shape)
    if window is None:
        window = (1,) if len(shape) == 1 else tuple(math.ceil(d / 8) for d in shape[:n_slide])
    win = _as_extent("window", window, shape, shape)
    for axis, (w, d) in enumerate(zip(win, shape, strict=True), start=1):
        if w > d:
            raise InputError(f"window {win} does not fit the input: axis {axis} has size {d}")
    step = win if stride is None else _as_extent("stride", stride, shape, win)
    if any(s > w for s, w in zip(step, win, strict=True)):
        raise InputError(
            f"stride {step} must not exceed window {win} on any axis: elements between "
            "windows would never be occluded"
        )
    per_axis = []
    for w, d, s in zip(win, shape, step, strict=True):
        starts = list(range(0, d - w + 1, s))
        if starts[-1] + w < d:
            starts.append(d - w)
        per_axis.append(starts)
    return win, list(itertools.product(*per_axis))


def _slices(start: tuple[int, ...], win: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(a, a + w) for a, w in zip(start, win, strict=True))


def _fill_values(x: np.ndarray, fill: Any) -> np.ndarray:
    if isinstance(fill, str):
        if fill != "mean":
            raise InputError(f"fill must be a number or 'mean', got {fill!r}")
        return x.reshape(len(x), -1).mean(axis=1).astype(np.float32)
    if isinstance(fill, bool) or not isinstance(fill, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"fill must be a number or 'mean', got {fill!r}")
    if not np.isfinite(fill):
        raise InputError(f"fill must be a finite number or 'mean', got {fill}")
    return np.full(len(x), fill, np.float32)


def _cost(options: Mapping[str, Any], inputs: WorkInputs) -> MethodWork:
    """A forward pass per window position (at most one per feature) and the row's own."""
    return MethodWork(evaluations=inputs.features + 1, gradient=False)


@register(
    "occlusion",
    gradient_based=False,
    summary="Drop in the target score when a sliding window of the input is covered.",
    title="Occlusion",
    cost=_cost,
)
def occlusion(
    mf: ModelFunction,
    x: np.ndarray,
    targets: np.ndarray,
    *,
    batch_size: int,
    window: Any = None,
    stride: Any = None,
    fill: Any = 0.0,
) -> Attribution:
    """Mean score drop ``f(x)[t] - f(occluded)[t]`` over the windows covering each element.

    Parameters
    ----------
    mf
        The model as a function of its input.
    x
        float32 ``(N, ...)``, already validated: images ``(N, H, W, C)``, sequences
        ``(N, T, F)`` or tabular ``(N, F)``.
    targets
        int ``(N,)``.
    batch_size
        Maximum occluded copies per forward pass.
    window, stride
        See :func:`window_geometry`. For images an int or ``(h, w)`` patch covers all
        channels; for sequences an int covers all features of ``t`` time steps.
    fill
        The value covering the window: a number, or ``"mean"`` (each row's mean).

    Returns
    -------
    Attribution
        ``values`` float32 ``x.shape``; ``scores`` ``f(x)[t]``.

    Ref. Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks",
    ECCV 2014.
    """
    win, starts = window_geometry(x.shape[1:], window, stride)
    fills = _fill_values(x, fill)
    boxes = [_slices(s, win) for s in starts]

    counts = np.zeros(x.shape[1:], np.float64)
    for box in boxes:
        counts[box] += 1.0

    scores = mf.target_scores(x, targets, batch_size)
    acc = np.zeros(x.shape, np.float64)
    for rows, where in stream_chunks(len(x), len(boxes), batch_size):
        covered = x[rows].copy()
        for k, (row, pos) in enumerate(zip(rows, where, strict=True)):
            covered[k][boxes[pos]] = fills[row]
        drop = scores[rows].astype(np.float64) - mf.target_scores(
            covered, targets[rows], batch_size
        ).astype(np.float64)
        for k, (row, pos) in enumerate(zip(rows, where, strict=True)):
            acc[row][boxes[pos]] += drop[k]
    values = (acc / counts).astype(np.float32)
    return Attribution(values=values, method="occlusion", targets=targets, scores=scores,
                       extra={"window": win, "positions": len(boxes)})
