"""The one object the assessment stages read: the plan's arrays and settings, the model
and the merged attributions (instead of long lists of positional arguments)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from explain.audit.attribute import merge_chunks
from explain.audit.config import AuditConfig
from explain.audit.plan import AuditPlan
from explain.audit.stages import Stages

if TYPE_CHECKING:
    from explain.attributions.base import Attribution


@dataclass
class AuditContext:
    """An audit between its attributions and its report.

    Attributes
    ----------
    plan, config
        From :func:`~explain.audit.prepare`.
    model
        The loaded Keras model.
    stages
        Progress and timings of the running audit.
    kind
        ``"image"`` or ``"tabular"``.
    regression
        Whether the model is a regressor.
    methods
        The audit's methods, in order.
    class_names, feature_names
        Of the data (None for regression / images).
    x, y, pred_all
        Every row, its label and the model's prediction (class index or value).
    proba
        Class probabilities of every row (classifiers), else None.
    idx
        The explained rows.
    global_rows
        Rows of the tabular global importance, or None to use the explained rows.
    options
        Each method's options, arrays included.
    attributions
        Each method's attribution of the explained rows.
    sensitive
        Sensitive attributes of every row (name → ``(N,)`` values), not model inputs.
    global_attribution
        ``(rows, values, method)`` the tabular global importance was computed from (set
        by the global-importance stage; the fairness stage groups them).
    """

    plan: AuditPlan
    config: AuditConfig
    model: Any
    stages: Stages
    kind: str
    regression: bool
    methods: list[str]
    class_names: list[str] | None
    feature_names: list[str] | None
    x: np.ndarray
    y: np.ndarray
    pred_all: np.ndarray
    proba: np.ndarray | None
    idx: np.ndarray
    global_rows: np.ndarray | None
    options: dict[str, dict[str, Any]]
    attributions: dict[str, Attribution]
    sensitive: dict[str, np.ndarray] = field(default_factory=dict)
    global_attribution: tuple[np.ndarray, np.ndarray, str] | None = None

    @classmethod
    def from_plan(cls, plan: AuditPlan,
                  chunks: Mapping[tuple[str, int, int], Mapping[str, np.ndarray]],
                  model: Any, stages: Stages) -> AuditContext:
        meta, arr = plan.meta, plan.arrays
        methods = plan.methods
        return cls(
            plan=plan, config=plan.config, model=model, stages=stages, kind=meta["kind"],
            regression=bool(meta["regression"]), methods=methods,
            class_names=meta["class_names"], feature_names=meta["feature_names"],
            x=arr["x"], y=arr["y"], pred_all=arr["pred_all"], proba=arr.get("proba"),
            idx=arr["idx"], global_rows=arr.get("global_rows"),
            options={m: plan.options(m) for m in methods},
            attributions=merge_chunks(plan, chunks),
            # In the data's order (the plan's arrays come back sorted by name).
            sensitive={k: arr[f"sensitive.{k}"] for k in meta.get("sensitive") or []
                       if f"sensitive.{k}" in arr})

    @property
    def xs(self) -> np.ndarray:
        """The explained rows' inputs."""
        return self.x[self.idx]

    @property
    def preds(self) -> np.ndarray:
        """The model's predictions on the explained rows."""
        return self.pred_all[self.idx]

    @property
    def labels(self) -> np.ndarray:
        """The labels of the explained rows."""
        return self.y[self.idx]

    @property
    def targets(self) -> np.ndarray:
        """The output each explained row's attribution explains (its predicted class)."""
        return self.attributions[self.methods[0]].targets
