"""Explanation quality: per-method checks (completeness, faithfulness, randomization,
stability) and the agreement of each pair of methods."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from explain.audit.importance import image_map
from explain.result import to_jsonable

if TYPE_CHECKING:
    from explain.audit.context import AuditContext

#: The region grid on which image methods' global rankings are compared (finer than the
#: grid of global importance).
IMAGE_AGREEMENT_GRID = (8, 8)


def measure_quality(ctx: AuditContext, tolerance: float
                    ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Per-method checks and pairwise agreement.

    ``tolerance`` is the completeness tolerance of the finding thresholds.
    """
    from explain.attributions.registry import method_info
    from explain.attributions.tokens import default_mask_id
    from explain.metrics import (
        CompletenessGap,
        Deletion,
        Insertion,
        MaxSensitivity,
        ModelParameterRandomization,
        agreement,
        region_importance,
    )
    from explain.metrics.base import safe_spearman

    cfg, stages, model, kind = ctx.config, ctx.stages, ctx.model, ctx.kind
    methods, attributions, options = ctx.methods, ctx.attributions, ctx.options
    xs, targets, x_all = ctx.xs, ctx.targets, ctx.x
    q = cfg.quality
    quality: dict[str, dict[str, Any]] = {}
    sanity_idx = spread_rows(len(xs), cfg.sanity_rows)
    reference = x_all if len(x_all) <= 2000 else x_all[spread_rows(len(x_all), 2000)]
    jobs = len(methods) * 3 + (1 if q["agreement"] else 0)
    done = 0
    for m in methods:
        info = method_info(m)
        a = attributions[m]
        checks: list[dict[str, Any]] = []
        entry: dict[str, Any] = {"checks": checks}
        if q["completeness"] and info.completeness and a.completeness_gap is not None:
            # Judged on the pooled gap mean |gap| / mean |f(x) - f(baseline)|, not on
            # per-example ratios: an example whose output barely moves from the baseline
            # turns a negligible gap into a huge ratio (measured on a ReLU MLP: |gap| 0.004
            # on a move of 0.003 is 130 %). The metric's own score and verdict are the
            # report's, and its count of examples over tolerance uses the same rule.
            r = CompletenessGap(tolerance, pooled=True).detailed(a)
            checks.append(check("completeness_gap", "axiomatic", r.score, r.threshold, False,
                                r.passed))
            # No per-example count beside it: under the pooled rule a few examples can
            # exceed the tolerance while the audit passes, and the report says one thing.
            entry["completeness"] = {"relative_gap": r.score, "passed": r.passed,
                                     "rule": r.detail["rule"],
                                     "tolerance": r.threshold,
                                     "max_per_example_relative_gap":
                                         r.detail["max_relative_gap"]}
        done += 1
        stages.step(done / jobs)
        if q["faithfulness"]:
            # Tokens are deleted by masking them (the padding id, or the out-of-vocabulary
            # id when an all-padding text has no finite output); a mean token id means
            # nothing.
            common = dict(steps=cfg.faithfulness_steps,
                          baseline=float(default_mask_id(model)) if kind == "text"
                          else "mean", reference=reference,
                          random_orders=3, seed=cfg.seed, batch_size=cfg.batch_size)
            for cls, key in ((Deletion, "deletion"), (Insertion, "insertion")):
                r = cls(model, xs, targets, **common).detailed(a.values)
                d = r.detail
                # The bar to clear is chance: the same curve for random feature orders.
                checks.append(check(f"{key}_auc", "faithfulness", r.score,
                                     d["mean_random_auc"], key == "insertion", r.passed))
                entry[f"{key}_curve"] = [float(v) for v in d["curve"]]
                entry[f"random_{key}_curve"] = [float(v) for v in d["random_curve"]]
                entry[f"{key}_gain"] = {
                    "normalized_gain": to_jsonable(d["normalized_gain"]),
                    "better_than_random_fraction": d["better_than_random_fraction"],
                    "wilcoxon_p": d["wilcoxon_p"],
                }
        done += 1
        stages.step(done / jobs)
        sub_opts = {k: v for k, v in options[m].items()}
        if q["randomization"] and "randomization" in info.sanity_checks:
            r = ModelParameterRandomization(
                model, xs[sanity_idx], targets[sanity_idx], method=m,
                method_options=sub_opts, max_layers=cfg.randomization_layers,
                seed=cfg.seed).detailed(None)
            checks.append(check("randomization_similarity", "randomisation", r.score,
                                 r.threshold, False, r.passed))
            entry["randomization_curve"] = to_jsonable(r.detail["curve"])
        # Stability adds noise to the input, which token ids do not take.
        if q["stability"] and "stability" in info.sanity_checks and kind != "text":
            radius = 0.05 * float(np.std(x_all)) or 0.05
            r = MaxSensitivity(model, xs[sanity_idx], targets[sanity_idx], method=m,
                               method_options=sub_opts, radius=radius, samples=5,
                               seed=cfg.seed).detailed(None)
            checks.append(check("max_sensitivity", "robustness", r.score, r.threshold,
                                 False, r.passed))
        done += 1
        stages.step(done / jobs)
        gated = [c["passed"] for c in checks if c["passed"] is not None]
        entry["passed"] = all(gated) if gated else None
        quality[m] = entry

    pairs: list[dict[str, Any]] = []
    if q["agreement"] and len(methods) > 1:
        grids = {}
        if kind == "image":
            grid = (min(IMAGE_AGREEMENT_GRID[0], xs.shape[1]),
                    min(IMAGE_AGREEMENT_GRID[1], xs.shape[2]))
            grids = {m: region_importance(image_map(a.values), grid)[1].ravel()
                     for m, a in attributions.items()}
        for i, ma in enumerate(methods):
            for mb in methods[i + 1:]:
                r = agreement(attributions[ma].values, attributions[mb].values,
                              input_kind="image" if kind == "image" else "tabular")
                glob = (safe_spearman(grids[ma], grids[mb]) if kind == "image"
                        else r.detail["global_spearman"])
                pairs.append({"a": ma, "b": mb,
                              "global_rank_correlation": clip_corr(glob),
                              "local_rank_correlation": clip_corr(r.score)})
        done += 1
        stages.step(1.0)
    return quality, pairs


def clip_corr(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return min(1.0, max(-1.0, f)) if math.isfinite(f) else None


def check(metric: str, category: str, score: Any, threshold: Any, higher_is_better: bool,
           passed: Any) -> dict[str, Any]:
    def num(v: Any) -> float | None:
        if v is None:
            return None
        f = float(v)
        return f if math.isfinite(f) else None

    score, threshold = num(score), num(threshold)
    return {"metric": metric, "category": category, "score": score, "threshold": threshold,
            "higher_is_better": bool(higher_is_better),
            # The metric's own verdict, also when it could measure nothing (a NaN score,
            # e.g. zero attributions everywhere): that is a failure, not "not checked".
            "passed": None if passed is None else bool(passed)}


def spread_rows(n: int, k: int) -> np.ndarray:
    """``min(k, n)`` row indices spread evenly over ``range(n)``."""
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(np.int64))

