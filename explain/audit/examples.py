"""Which rows an audit explains one by one, and why."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def choose_examples(
    proba: np.ndarray,
    y: np.ndarray | None,
    n: int,
    rng: np.random.Generator,
    *,
    regression: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """Rows to explain one by one, and why each was chosen.

    Parameters
    ----------
    proba
        Classification: probabilities ``(N, K)``. Regression: predictions ``(N,)`` or
        ``(N, D)`` (the first output is used).
    y
        Class indices ``(N,)`` or regression targets, or None.
    n
        How many rows (all of them when the data has fewer).
    rng
        Seeded generator for the random draws.
    regression
        Whether ``proba`` holds regression predictions.

    Returns
    -------
    index
        int ``(m,)`` rows, ``m = min(n, N)``, in the order chosen.
    reasons
        One of ``misclassified``, ``least_confident``, ``largest_error``, ``stratified``
        per row.
    """
    total = len(proba)
    n = min(int(n), total)
    taken = np.zeros(total, dtype=bool)
    index: list[int] = []
    reasons: list[str] = []

    def take(rows: Sequence[int], reason: str) -> None:
        for r in rows:
            if len(index) < n and not taken[r]:
                taken[r] = True
                index.append(int(r))
                reasons.append(reason)

    if regression:
        pred = np.asarray(proba, np.float64).reshape(total, -1)[:, 0]
        if y is not None:
            err = np.abs(np.asarray(y, np.float64).reshape(total, -1)[:, 0] - pred)
            take(np.argsort(-err, kind="stable")[: max(1, n // 4)], "largest_error")
        # The rest spread over the range of predictions: one draw per quantile bin.
        rest = np.flatnonzero(~taken)
        bins = np.array_split(rest[np.argsort(pred[rest], kind="stable")], max(1, n - len(index)))
        take([int(rng.choice(b)) for b in bins if len(b)], "stratified")
        return np.asarray(index, dtype=np.int64), reasons

    proba = np.asarray(proba, np.float64)
    pred = proba.argmax(axis=1)
    conf = proba.max(axis=1)
    if y is not None:
        wrong = np.flatnonzero(pred != y)
        # The most confident mistakes are the ones a reviewer most needs to see.
        take(wrong[np.argsort(-conf[wrong], kind="stable")][: max(1, n // 4)], "misclassified")
    take(np.argsort(conf, kind="stable")[: max(1, n // 8)], "least_confident")
    strata = np.asarray(y if y is not None else pred)
    classes = np.unique(strata)
    pools = {c: list(rng.permutation(np.flatnonzero((strata == c) & ~taken))) for c in classes}
    # Round-robin over the classes: equal shares, and a small class's unused share goes to
    # the others.
    while len(index) < n and any(pools.values()):
        for c in classes:
            if pools[c] and len(index) < n:
                take([pools[c].pop(0)], "stratified")
    return np.asarray(index, dtype=np.int64), reasons


