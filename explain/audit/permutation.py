"""Permutation drop of the top tabular features: what the model loses without them.

For each of the few features that global importance ranks first, the column is shuffled
(seeded, a few repeats) over the audit's rows and the model's score is measured again:
accuracy for classifiers, R² for regressors. The drop backs an attribution-based finding
(``dominant_feature``) with what the model *does*.

Hand-written rather than :func:`sklearn.inspection.permutation_importance`, which scores
every column: an audit only needs the top few, and a 60-feature model would cost 60× the
forward passes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from explain.audit.context import AuditContext

#: Features (from the top of global importance) whose permutation drop is measured.
TOP_FEATURES = 3
REPEATS = 3
MAX_ROWS = 2000


def _score(y: np.ndarray, out: np.ndarray, regression: bool) -> float:
    from sklearn.metrics import accuracy_score, r2_score

    out = np.asarray(out, np.float64).reshape(len(out), -1)
    if regression:
        return float(r2_score(np.asarray(y, np.float64).reshape(len(y), -1)[:, 0], out[:, 0]))
    pred = (out[:, 0] >= 0.5).astype(int) if out.shape[1] == 1 else out.argmax(axis=1)
    return float(accuracy_score(np.asarray(y).astype(int), pred))


def permutation_drops(ctx: AuditContext, items: list[dict[str, Any]]
                      ) -> dict[str, Any] | None:
    """``{metric, baseline, items: [{feature, drop, score}]}`` for the top features; None
    when the score cannot be measured (e.g. R² of a constant target)."""
    from explain.evaluation import predict_proba

    x, y = ctx.x, ctx.y
    rng = np.random.default_rng(ctx.config.seed)
    if len(x) > MAX_ROWS:
        rows = np.sort(rng.choice(len(x), MAX_ROWS, replace=False))
        x, y = x[rows], y[rows]
    names = [str(n) for n in ctx.feature_names] if ctx.feature_names else \
        [f"x{i}" for i in range(x.shape[1])]  # the names global importance uses
    batch = ctx.config.batch_size

    def score(inputs: np.ndarray) -> float:
        return _score(y, predict_proba(ctx.model, inputs, batch_size=batch), ctx.regression)

    baseline = score(x)
    if not np.isfinite(baseline):
        return None
    out = []
    for item in items[:TOP_FEATURES]:
        if item["feature"] not in names:
            continue
        j = names.index(item["feature"])
        scores = []
        for _ in range(REPEATS):
            shuffled = x.copy()
            shuffled[:, j] = rng.permutation(shuffled[:, j])
            scores.append(score(shuffled))
        mean = float(np.mean(scores))
        if not np.isfinite(mean):
            continue
        out.append({"feature": item["feature"], "score": mean, "drop": baseline - mean})
    return {"metric": "r2" if ctx.regression else "accuracy", "baseline": baseline,
            "repeats": REPEATS, "rows": int(len(x)), "items": out}
