"""Agreement between two attribution methods on the same inputs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from explain.metrics.base import Category, Direction, Metric, as_array, safe_spearman
from explain.metrics.maps import INPUT_KINDS, reduce_to_map, resize_maps


def _top_k_count(top_k: int | float, n_features: int) -> int:
    if isinstance(top_k, bool):
        raise TypeError(f"top_k must be an int or a fraction in (0, 1], got {top_k!r}")
    if isinstance(top_k, (int, np.integer)):
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        return min(int(top_k), n_features)
    if isinstance(top_k, float) and 0 < top_k <= 1:
        return max(1, math.ceil(top_k * n_features))
    raise ValueError(f"top_k must be an int >= 1 or a fraction in (0, 1], got {top_k!r}")


def top_k_intersection(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Fraction of the ``k`` largest entries of ``a`` that are among the ``k`` largest of
    ``b`` (ties broken by position)."""
    ta = np.argsort(-np.ravel(a), kind="stable")[:k]
    tb = np.argsort(-np.ravel(b), kind="stable")[:k]
    return len(np.intersect1d(ta, tb)) / k


def _infer_kind(a: np.ndarray, b: np.ndarray) -> str:
    return "image" if max(a.ndim, b.ndim) == 4 or (a.ndim == 3 and b.ndim == 3) else "tabular"


class MethodAgreement(Metric):
    """Rank agreement of two methods' attributions on the same examples.

    Both attributions are reduced to importance magnitudes, since methods differ in sign
    conventions (Grad-CAM is rectified, saliency unsigned): images to ``(N, H, W)`` maps
    with :func:`reduce_to_map` (``sum_c |attr|``; Grad-CAM maps as they are) and resized
    to the smaller common resolution when they differ; tabular attributions to
    ``|attr|`` per feature. Per example: Spearman rank correlation of the two maps and
    the top-k intersection (share of the k most important features both agree on).
    Globally: the same on the mean-magnitude vectors (global importance).

    Score: mean per-example Spearman correlation (higher is better; 1.0 for identical
    rankings, -1.0 for reversed ones). Verdict: passes when ``score > threshold``
    (default 0.5: the two methods broadly rank features alike).

    Parameters
    ----------
    reference
        The attributions compared against (array or Attribution), ``(N, ...)``.
    input_kind
        ``"image"``, ``"tabular"`` or None to infer (rank 4, or two rank-3 maps: image).
    top_k
        k for the top-k intersection: an int, or a fraction of the features (default
        0.1, at least 1).
    threshold
        Pass when the score is above it (default 0.5).

    Ref. Krishna et al., "The Disagreement Problem in Explainable Machine Learning",
    2022 (rank correlation and feature agreement between explanation methods).
    """

    name = "method_agreement"
    category = Category.AGREEMENT
    direction = Direction.HIGHER
    default_threshold = 0.5

    def __init__(self, reference: Any, *, input_kind: str | None = None,
                 top_k: int | float = 0.1, threshold: float | None = None):
        super().__init__(threshold)
        if input_kind is not None and input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind must be one of {INPUT_KINDS} or None, got {input_kind!r}")
        self.reference = as_array(reference, name="reference")
        self.input_kind = input_kind
        self.top_k = top_k

    def _compute(self, explanations: Any) -> tuple[float, dict[str, Any]]:
        other = as_array(explanations)
        ref = self.reference
        if len(other) != len(ref):
            raise ValueError(f"got {len(other)} explanations for {len(ref)} reference ones")
        kind = self.input_kind or _infer_kind(ref, other)
        a = np.abs(reduce_to_map(ref, kind))
        b = np.abs(reduce_to_map(other, kind))
        if kind == "image" and a.shape != b.shape:
            size = (min(a.shape[1], b.shape[1]), min(a.shape[2], b.shape[2]))
            a, b = resize_maps(a, size), resize_maps(b, size)
        if a.shape != b.shape:
            raise ValueError(f"cannot compare attributions of shapes {ref.shape} and {other.shape}")
        flat_a, flat_b = a.reshape(len(a), -1), b.reshape(len(b), -1)
        k = _top_k_count(self.top_k, flat_a.shape[1])
        spearman = np.array([safe_spearman(x, y) for x, y in zip(flat_a, flat_b, strict=True)])
        overlap = np.array([top_k_intersection(x, y, k)
                            for x, y in zip(flat_a, flat_b, strict=True)])
        glob_a, glob_b = flat_a.mean(axis=0), flat_b.mean(axis=0)
        detail = {
            "input_kind": kind,
            "resolution": list(a.shape[1:]),
            "k": k,
            "per_example_spearman": spearman,
            "per_example_top_k": overlap,
            "mean_top_k": float(overlap.mean()),
            "global_spearman": safe_spearman(glob_a, glob_b),
            "global_top_k": top_k_intersection(glob_a, glob_b, k),
        }
        return float(spearman.mean()), detail


def agreement(a: Any, b: Any, *, input_kind: str | None = None, top_k: int | float = 0.1):
    """:class:`MethodAgreement` of ``b`` against ``a`` as a MetricResult.

    Ref. Krishna et al., "The Disagreement Problem in Explainable Machine Learning", 2022.
    """
    return MethodAgreement(a, input_kind=input_kind, top_k=top_k).detailed(b)
