"""Permutation drop of the top tabular features: what the model loses without them.

For each of the few features that global importance ranks first, the column is shuffled
(seeded, a few repeats) over the audit's rows and the model's score is measured again:
accuracy for classifiers, R² for regressors. The drop backs an attribution-based finding
(``dominant_feature``) with what the model *does*.

Beside the drop, each of those features gets ``alone``: the share of the variance of the
model's output that the feature explains on its own (:func:`correlation_ratio`). A leaked
label is a near-deterministic function of the target, so a model that leans on it
outputs almost a function of that one column; an honest feature of a model that combines
several explains a smaller part.

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


#: Quantile bins of :func:`correlation_ratio`.
ALONE_BINS = 10


def correlation_ratio(out: np.ndarray, column: np.ndarray, bins: int = ALONE_BINS) -> float:
    """Share of the variance of ``out`` explained by ``column`` alone: Pearson's
    correlation ratio η² = Var(E[out | bin of column]) / Var(out), the column cut into
    ``bins`` quantile bins (fewer when it has fewer distinct values), summed over the
    output's columns. The first-order sensitivity index of the model's output to the
    feature, estimated on the audit's rows.

    Hand-written: numpy, scipy and scikit-learn have no correlation ratio, and it is a
    few lines of binned means. With ``n`` rows, a column unrelated to the output scores
    about ``(bins - 1) / n`` (0.025 on 360 rows).

    Parameters
    ----------
    out
        The model's output ``(N,)`` or ``(N, K)``.
    column
        The feature's values ``(N,)``.

    Returns
    -------
    float
        In [0, 1]; 0 when the output is constant.
    """
    out = np.asarray(out, np.float64).reshape(len(out), -1)
    column = np.asarray(column, np.float64)
    centred = out - out.mean(axis=0)
    total = float((centred ** 2).sum())
    if not np.isfinite(total) or total <= 0:
        return 0.0
    edges = np.unique(np.quantile(column, np.linspace(0, 1, bins + 1)[1:-1]))
    which = np.searchsorted(edges, column)
    counts = np.bincount(which, minlength=len(edges) + 1).astype(np.float64)
    sums = np.stack([np.bincount(which, weights=centred[:, k], minlength=len(edges) + 1)
                     for k in range(centred.shape[1])], axis=1)
    used = counts > 0
    between = float((sums[used] ** 2 / counts[used, None]).sum())
    return float(min(max(between / total, 0.0), 1.0))


def permutation_drops(ctx: AuditContext, items: list[dict[str, Any]]
                      ) -> dict[str, Any] | None:
    """``{metric, baseline, items: [{feature, drop, score, alone}]}`` for the top
    features (``alone``: :func:`correlation_ratio` of the model's output on the feature);
    None when the score cannot be measured (e.g. R² of a constant target)."""
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

    output = predict_proba(ctx.model, x, batch_size=batch)
    baseline = _score(y, output, ctx.regression)
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
        out.append({"feature": item["feature"], "score": mean, "drop": baseline - mean,
                    "alone": correlation_ratio(output, x[:, j])})
    return {"metric": "r2" if ctx.regression else "accuracy", "baseline": baseline,
            "repeats": REPEATS, "rows": int(len(x)), "items": out}
