"""Shortcut measurements for text and sequence models: which token or time span carries
an outsized share of a class's attribution mass, and what masking it does.

Attribution mass alone is not proof: a token can soak up attribution while the model would
decide the same without it. So each candidate is also *ablated*: the token is replaced by
the mask id (the span by the row's own per-channel mean outside it) in every row of the
data predicted as that class that holds it, and ``ablation_drop`` is the share of those
predictions that change. The finding rules (:mod:`explain.findings`, ``shortcut_token``
and ``shortcut_span``) read both numbers.

Mass is the positive part of the attributions towards the predicted class: a token's (or
a step's) mass share is its positive attribution summed over the class's explained
examples, over the class's total positive attribution. Padding holds no mass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: Top tokens per class listed in the report.
TOP_TOKENS = 10
#: Candidate tokens per class that are ablated.
CANDIDATES = 3
#: A class needs this many explained examples to be judged.
MIN_EXAMPLES = 3
#: An ablation is measured on at least this many rows, else it is None.
MIN_ABLATION_ROWS = 3


def _classes(preds: np.ndarray) -> list[int]:
    found, counts = np.unique(preds, return_counts=True)
    return [int(c) for c, n in zip(found, counts, strict=True) if n >= MIN_EXAMPLES]


def token_summary(values: np.ndarray, ids: np.ndarray, preds: np.ndarray, *,
                  predict: Callable[[np.ndarray], np.ndarray], all_ids: np.ndarray,
                  all_preds: np.ndarray, vocabulary: Sequence[str] | None = None,
                  pad_id: int = 0, mask_id: int = 0) -> dict[str, Any]:
    """Top tokens per class and ablated shortcut candidates.

    Parameters
    ----------
    values
        Per-token attributions ``(n, T)`` towards each example's predicted class.
    ids
        Their token ids ``(n, T)``.
    preds
        Predicted class of each explained example ``(n,)``.
    predict
        ``ids (m, T) -> class (m,)``.
    all_ids, all_preds
        Every row of the data and its predicted class, for the ablations.
    vocabulary
        Token strings by id, or None (tokens shown as ``#id``).

    Returns
    -------
    dict
        ``{"classes": [{"class": c, "examples": n, "top_tokens": [...]}],
        "candidates": [{class, token, token_id, mass_share, mean_attribution, frequency,
        ablation_rows, ablation_drop}]}``.
    """
    def name(t: int) -> str:
        if vocabulary is not None and 0 <= t < len(vocabulary):
            return str(vocabulary[t])
        return f"#{t}"

    classes, candidates = [], []
    for c in _classes(preds):
        rows = np.flatnonzero(preds == c)
        v, tok = values[rows], ids[rows].astype(np.int64)
        real = tok != pad_id
        pos = np.where(real, np.clip(v, 0, None), 0.0)
        total = float(pos.sum())
        size = int(tok.max()) + 1
        mass = np.bincount(tok.ravel(), weights=pos.ravel(), minlength=size)
        summed = np.bincount(tok.ravel(), weights=np.where(real, v, 0).ravel(), minlength=size)
        count = np.bincount(tok[real].ravel(), minlength=size)
        present = np.zeros(size)
        for r in range(len(rows)):
            present[np.unique(tok[r][real[r]])] += 1
        mass[pad_id] = -1.0
        order = [int(t) for t in np.argsort(-mass) if mass[t] > 0][:TOP_TOKENS]
        top = [{"token": name(t), "token_id": t,
                "mass_share": float(mass[t] / total) if total > 0 else 0.0,
                "mean_attribution": float(summed[t] / max(count[t], 1)),
                "frequency": float(present[t] / len(rows))} for t in order]
        classes.append({"class": c, "examples": int(len(rows)), "top_tokens": top})
        for item in top[:CANDIDATES]:
            t = item["token_id"]
            held = np.flatnonzero((all_preds == c) & np.any(all_ids == t, axis=1))
            drop = None
            if len(held) >= MIN_ABLATION_ROWS:
                masked = all_ids[held].copy()
                masked[masked == t] = mask_id
                drop = float(np.mean(predict(masked) != c))
            candidates.append({"class": c, **item, "ablation_rows": int(len(held)),
                               "ablation_drop": drop})
    return {"classes": classes, "candidates": candidates}


def _window_sums(m: np.ndarray, window: int) -> np.ndarray:
    c = np.concatenate([[0.0], np.cumsum(m)])
    return c[window:] - c[:-window]


def default_span_window(length: int) -> int:
    """Steps per candidate span: a twentieth of the sequence, at least 2."""
    return max(2, length // 20)


def sequence_summary(values: np.ndarray, preds: np.ndarray, *,
                     predict: Callable[[np.ndarray], np.ndarray], all_x: np.ndarray,
                     all_preds: np.ndarray, window: int | None = None) -> dict[str, Any]:
    """Importance over time and per channel, and the best span of each class, ablated.

    Parameters
    ----------
    values
        Attributions ``(n, T, F)`` towards each example's predicted class.
    preds
        Predicted classes ``(n,)``.
    predict
        ``x (m, T, F) -> class (m,)``.
    all_x, all_preds
        Every row of the data and its predicted class, for the ablations.
    window
        Span width in steps (default :func:`default_span_window`).

    Returns
    -------
    dict
        ``{"over_time": [T floats], "per_channel": [F floats], "classes": [{class,
        examples, over_time}], "candidates": [{class, span: [a, b), mass_share,
        ablation_rows, ablation_drop}]}``; importances are mean ``|attribution|``.
    """
    n, t_len, _f = values.shape
    window = default_span_window(t_len) if window is None else int(window)
    window = min(window, t_len)
    absval = np.abs(values)
    out: dict[str, Any] = {
        "over_time": absval.sum(axis=2).mean(axis=0).tolist(),
        "per_channel": absval.sum(axis=1).mean(axis=0).tolist(),
        "window": window, "classes": [], "candidates": [],
    }
    for c in _classes(preds):
        rows = np.flatnonzero(preds == c)
        step = np.clip(values[rows].sum(axis=2), 0, None).sum(axis=0)
        total = float(step.sum())
        sums = _window_sums(step, window)
        a = int(np.argmax(sums))
        b = a + window
        share = float(sums[a] / total) if total > 0 else 0.0
        out["classes"].append({"class": c, "examples": int(len(rows)),
                               "over_time": absval[rows].sum(axis=2).mean(axis=0).tolist()})
        held = np.flatnonzero(all_preds == c)
        drop = None
        if len(held) >= MIN_ABLATION_ROWS:
            xs = all_x[held].copy()
            outside = np.concatenate([xs[:, :a], xs[:, b:]], axis=1)
            fill = outside.mean(axis=1, keepdims=True) if outside.shape[1] else 0.0
            xs[:, a:b] = fill
            drop = float(np.mean(predict(xs) != c))
        out["candidates"].append({"class": c, "span": [a, b], "mass_share": share,
                                  "uniform_share": window / t_len,
                                  "ablation_rows": int(len(held)), "ablation_drop": drop})
    return out
