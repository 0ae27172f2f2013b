"""What every explanation-quality metric shares: metadata enums, the result object, the
pass/fail rule, and how an "explainer" (a method name or a callable) is run.

A metric is bound at construction to what it judges (model, inputs, targets, options) and
then scores explanations: :meth:`Metric.evaluate` returns one float,
:meth:`Metric.detailed` returns a :class:`MetricResult` with the per-example values or the
curve, JSON-safe through :meth:`MetricResult.to_dict`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

import numpy as np

from explain._backend import keras
from explain.attributions.base import Attribution
from explain.attributions.registry import explain, method_info
from explain.result import to_jsonable

#: An attribution method: a registered name, or ``f(model, x, targets) -> attributions``.
Explainer = str | Callable[[keras.Model, np.ndarray, np.ndarray], Any]


class Category(str, Enum):
    """What property of an explanation a metric measures (the report groups by it)."""

    FAITHFULNESS = "faithfulness"
    RANDOMISATION = "randomisation"
    AXIOMATIC = "axiomatic"
    ROBUSTNESS = "robustness"
    AGREEMENT = "agreement"


class Direction(str, Enum):
    """Whether a higher or a lower score means a better explanation."""

    HIGHER = "higher"
    LOWER = "lower"


@dataclass
class MetricResult:
    """The outcome of one metric on one set of explanations.

    Attributes
    ----------
    score
        The headline number (see the metric's ``direction``).
    detail
        Per-example values, curves and secondary numbers (numpy arrays allowed).
    name, category, direction
        The metric's metadata, copied so a result stands on its own in a report.
    threshold
        The threshold the pass/fail verdict used.
    passed
        The verdict (see the metric's docstring for the rule).
    """

    score: float
    detail: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    category: Category | None = None
    direction: Direction | None = None
    threshold: float | None = None
    passed: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: lists instead of arrays, None instead of NaN/Inf."""
        # strict=False: a detail holds what its metric put there (int keys, say)
        return to_jsonable({
            "name": self.name,
            "category": self.category,
            "direction": self.direction,
            "score": self.score,
            "threshold": self.threshold,
            "passed": self.passed,
            "detail": self.detail,
        }, strict=False)


class Metric:
    """Base of every metric: metadata on the class, one scoring rule per subclass.

    Subclasses set ``name``, ``category``, ``direction`` and ``default_threshold`` and
    implement :meth:`_compute` returning ``(score, detail)``.
    """

    name: ClassVar[str] = ""
    category: ClassVar[Category]
    direction: ClassVar[Direction]
    default_threshold: ClassVar[float]

    def __init__(self, threshold: float | None = None):
        self.threshold = float(self.default_threshold if threshold is None else threshold)
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be a finite number, got {threshold!r}")

    def _compute(self, explanations: Any) -> tuple[float, dict[str, Any]]:
        raise NotImplementedError

    def passes(self, score: float, detail: Mapping[str, Any] | None = None) -> bool:
        """The verdict for ``score``: strictly better than the threshold in ``direction``.

        A NaN score (nothing could be measured) never passes.
        """
        if score is None or not math.isfinite(score):
            return False
        if self.direction is Direction.HIGHER:
            return bool(score > self.threshold)
        return bool(score < self.threshold)

    def detailed(self, explanations: Any = None) -> MetricResult:
        """Score ``explanations`` and return the score with its detail and verdict."""
        score, detail = self._compute(explanations)
        score = float(score)
        return MetricResult(
            score=score,
            detail=detail,
            name=self.name,
            category=self.category,
            direction=self.direction,
            threshold=self.threshold,
            passed=self.passes(score, detail),
        )

    def evaluate(self, explanations: Any = None) -> float:
        """Score ``explanations`` (see :meth:`detailed` for the detail)."""
        return self.detailed(explanations).score

    def check(self, explanations: Any = None) -> bool:
        """True when ``explanations`` pass this metric's threshold."""
        return bool(self.detailed(explanations).passed)


# --------------------------------------------------------------------------- helpers


def as_array(explanations: Any, name: str = "explanations") -> np.ndarray:
    """An :class:`Attribution` or array-like as a finite float64 numpy array."""
    if isinstance(explanations, Attribution):
        explanations = explanations.values
    if explanations is None:
        raise ValueError(f"{name} are required")
    try:
        arr = np.asarray(explanations, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numeric array: {exc}") from None
    if arr.ndim < 2:
        raise ValueError(f"{name} must have a batch axis, shape (N, ...); got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contain NaN or Inf")
    return arr


def is_spatial(explainer: Explainer, attributions: np.ndarray, x: np.ndarray) -> bool:
    """True when the explainer gives (N, H, W) maps for (N, H, W, C) inputs (Grad-CAM)."""
    if isinstance(explainer, str):
        return method_info(explainer).output == "spatial"
    return attributions.ndim == 3 and x.ndim == 4


def check_explainer(explainer: Explainer, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate ``explainer`` and its options; return the options as a dict."""
    opts = dict(options or {})
    if isinstance(explainer, str):
        method_info(explainer)  # ValueError naming the known methods
        return opts
    if not callable(explainer):
        raise TypeError(
            "method must be a registered method name or a callable "
            f"explainer(model, x, targets) -> attributions; got {type(explainer).__name__}"
        )
    if opts:
        raise ValueError(
            "method_options apply to registered method names only; bind options into a "
            "callable explainer with functools.partial"
        )
    return opts


def run_explainer(
    explainer: Explainer,
    model: keras.Model,
    x: np.ndarray,
    targets: np.ndarray,
    options: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Attributions of ``model`` at ``targets`` for ``x`` as float64.

    A method name goes through :func:`explain.explain` with ``options``; a callable is
    called as ``explainer(model, x, targets)`` and may return an array or an Attribution.
    """
    if isinstance(explainer, str):
        values = explain(model, x, explainer, target=targets, **dict(options or {})).values
    else:
        values = explainer(model, x, targets)
    values = as_array(values, name="attributions returned by the explainer")
    if len(values) != len(x):
        raise ValueError(
            f"the explainer returned {len(values)} attributions for {len(x)} inputs"
        )
    return values


def safe_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two flat vectors; 0.0 when either is constant.

    A constant map ranks nothing, so it shares no ordering with the other map; scipy
    would return NaN there.
    """
    from scipy.stats import spearmanr

    a = np.ravel(a)
    b = np.ravel(b)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)
