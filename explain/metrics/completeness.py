"""Completeness: do the attributions add up to the change in the model's output?"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from explain.attributions.base import Attribution
from explain.metrics.base import Category, Direction, Metric

DEFAULT_TOLERANCE = 0.05


class _Tolerances(Mapping):
    """Tolerance on the max relative gap of each method that claims completeness, as its
    registration says (``completeness_tolerance``): Integrated Gradients converges to
    exact completeness as its steps grow, so 1% flags too coarse an integral; SHAP
    estimators (sampling, background expectations) are looser by construction."""

    def _table(self) -> dict[str, float]:
        from explain.attributions import METHODS, method_info

        return {m: float(method_info(m).completeness_tolerance) for m in METHODS
                if method_info(m).completeness_tolerance is not None}

    def __getitem__(self, method: str) -> float:
        return self._table()[method]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


#: ``{method: tolerance}`` from the registry.
COMPLETENESS_TOLERANCE: Mapping[str, float] = _Tolerances()


class CompletenessGap(Metric):
    """Relative completeness gap of attributions that claim completeness (IG, SHAP).

    Per example, ``gap = sum(attr) - (f(x) - f(baseline))`` (the Attribution's
    ``completeness_gap``), and the relative gap is
    ``|gap| / max(|f(x) - f(baseline)|, min_delta)``. The floor ``min_delta`` keeps an
    example whose output barely differs from the baseline from blowing the ratio up; the
    detail counts those examples.

    Score: the max relative gap over examples (lower is better); the detail holds the
    mean and per-example values. Verdict: passes when ``score < tolerance``; the default
    tolerance is 1% for ``integrated_gradients``, 5% for ``shap`` and 5% for any other
    method with a completeness gap.

    This is Captum's convergence delta made relative; Quantus calls the property
    Completeness (its check is a pass/fail on the absolute gap).

    Parameters
    ----------
    tolerance
        Max relative gap allowed; None picks the method's default (see above).
    min_delta
        Floor of the denominator ``|f(x) - f(baseline)|``.
    pooled
        Score the pooled relative gap ``mean |gap| / max(mean |f(x) - f(baseline)|,
        min_delta)`` instead of the max per-example ratio. An example whose output barely
        moves from the baseline turns a negligible gap into a huge ratio (a ReLU MLP:
        ``|gap|`` 0.004 on a move of 0.003 is 130 %), so an audit judges the pooled gap.
        Either way the verdict is ``score < tolerance``; the detail's
        ``n_over_tolerance`` counts examples whose own gap, on the same denominator as
        the score, reaches the tolerance.

    Ref. Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017
    (completeness); Lundberg & Lee, NeurIPS 2017 (local accuracy).
    """

    name = "completeness_gap"
    category = Category.AXIOMATIC
    direction = Direction.LOWER
    default_threshold = DEFAULT_TOLERANCE

    def __init__(self, tolerance: float | None = None, *, min_delta: float = 1e-3,
                 pooled: bool = False):
        super().__init__(tolerance)
        self.pooled = bool(pooled)
        self._explicit = tolerance is not None
        if not (isinstance(min_delta, (int, float)) and min_delta > 0):
            raise ValueError(f"min_delta must be a number > 0, got {min_delta!r}")
        self.min_delta = float(min_delta)

    def tolerance_for(self, method: str) -> float:
        """The tolerance applied to ``method`` (the explicit one if given)."""
        if self._explicit:
            return self.threshold
        return COMPLETENESS_TOLERANCE.get(method, DEFAULT_TOLERANCE)

    def detailed(self, explanations: Any = None):
        """Score an :class:`~explain.Attribution` carrying a completeness gap."""
        if not isinstance(explanations, Attribution):
            raise TypeError(
                "CompletenessGap needs an Attribution result from explain.explain(), got "
                f"{type(explanations).__name__}"
            )
        # The threshold depends on the method being judged.
        self.threshold = self.tolerance_for(explanations.method)
        return super().detailed(explanations)

    def _compute(self, explanations: Attribution) -> tuple[float, dict[str, Any]]:
        attr = explanations
        if attr.completeness_gap is None or attr.scores is None or attr.baseline_scores is None:
            raise ValueError(
                f"method {attr.method!r} reports no completeness gap; completeness applies "
                "to methods such as integrated_gradients and shap"
            )
        gap = np.asarray(attr.completeness_gap, dtype=np.float64)
        delta = np.abs(np.asarray(attr.scores, np.float64)
                       - np.asarray(attr.baseline_scores, np.float64))
        if gap.shape != delta.shape or gap.ndim != 1 or len(gap) == 0:
            raise ValueError(
                f"completeness_gap {gap.shape} and scores {delta.shape} must be (N,) alike"
            )
        relative = np.abs(gap) / np.maximum(delta, self.min_delta)
        pooled_denominator = max(float(delta.mean()), self.min_delta)
        pooled = float(np.abs(gap).mean()) / pooled_denominator
        own = np.abs(gap) / pooled_denominator if self.pooled else relative
        detail = {
            "rule": ("pooled: mean |gap| / mean |f(x) - f(baseline)|" if self.pooled
                     else "max per-example |gap| / |f(x) - f(baseline)|"),
            "pooled_relative_gap": pooled,
            "method": attr.method,
            "tolerance": self.threshold,
            "per_example_relative_gap": relative,
            "per_example_gap": gap,
            "mean_relative_gap": float(relative.mean()),
            "max_relative_gap": float(relative.max()),
            "mean_abs_gap": float(np.abs(gap).mean()),
            "n_small_delta": int((delta < self.min_delta).sum()),
            "n_over_tolerance": int((own >= self.threshold).sum()),
        }
        return (pooled if self.pooled else float(relative.max())), detail
