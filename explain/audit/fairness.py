"""The fairness stage: group metrics, attributions by group and proxies, when the data
names sensitive attributes (:mod:`explain.fairness` does the measuring)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from explain.audit.context import AuditContext
    from explain.findings import FindingThresholds
    from explain.result import AuditResult


def fairness_section(ctx: AuditContext, importance: dict[str, Any],
                     thresholds: FindingThresholds, prev: AuditResult | None
                     ) -> dict[str, Any] | None:
    """The ``fairness`` section of report.json, or None when the data names no
    sensitive attribute. With a previous audit that had one, ``drift`` compares the gaps.
    """
    from explain.evaluation import predict_proba
    from explain.fairness import FairnessOptions, assess_fairness, disparity_drift

    if not ctx.sensitive:
        return None
    cfg = ctx.config
    # Two classes are a binary decision whether the head is one sigmoid or a softmax of 2.
    task = ("regression" if ctx.regression
            else "binary" if len(ctx.class_names or []) == 2 else "multiclass")

    def predict(x: np.ndarray) -> np.ndarray:
        raw = predict_proba(ctx.model, x, batch_size=cfg.batch_size)
        raw = raw.reshape(len(raw), -1)
        if ctx.regression:
            return raw[:, 0].astype(np.float64)
        if raw.shape[1] == 1:
            return (raw[:, 0] >= 0.5).astype(np.int64)
        return raw.argmax(axis=1)

    rows = values = method = None
    if ctx.global_attribution is not None:
        rows, values, method = ctx.global_attribution
        values = values.reshape(len(values), -1)
    section = assess_fairness(
        sensitive=ctx.sensitive, x=ctx.x, y_true=ctx.y, y_pred=ctx.pred_all, task=task,
        predict=predict, kind=ctx.kind, thresholds=thresholds,
        options=FairnessOptions.from_config(cfg.fairness),
        confidence=None if ctx.proba is None else ctx.proba.max(axis=1),
        class_names=ctx.class_names,
        feature_names=ctx.feature_names if ctx.kind == "tabular" else None,
        importance=importance.get("items") if importance.get("kind") == "tabular" else None,
        attribution_rows=rows, attribution_values=values, attribution_method=method,
        seed=cfg.seed)
    if ctx.regression:
        section["error_scale"] = float(np.mean(np.abs(
            ctx.pred_all.astype(np.float64) - np.asarray(ctx.y, np.float64).reshape(
                len(ctx.y), -1)[:, 0])))
    if prev is not None:
        section["drift"] = disparity_drift(prev.report.get("fairness"), section)
        if section["drift"] is not None:
            section["drift_previous_audit"] = str(prev.report.get("title") or "")
    return section
