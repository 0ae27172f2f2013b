"""Global importance: which features (tables) or image regions matter over the audit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from explain.audit.context import AuditContext

#: The region grid of an image audit's global importance.
IMAGE_IMPORTANCE_GRID = (4, 4)


def global_importance(ctx: AuditContext) -> tuple[dict[str, Any], dict[str, np.ndarray],
                                                 dict[str, np.ndarray]]:
    """The global importance section, the per-class maps and the per-example maps."""
    from explain.attributions.registry import explain as attribute_full
    from explain.metrics import global_importance as explain_global
    from explain.metrics import region_importance

    kind, methods, attributions, options = ctx.kind, ctx.methods, ctx.attributions, ctx.options
    x, idx, preds, class_names = ctx.x, ctx.idx, ctx.preds, ctx.class_names
    maps: dict[str, np.ndarray] = {}
    class_maps: dict[str, np.ndarray] = {}
    if kind in ("text", "sequence"):
        # text: the signed score of each token (the report colours tokens by it);
        # sequences: |attribution| over time, summed over channels
        return _time_importance(ctx), class_maps, {
            m: (np.asarray(a.values, np.float32) if kind == "text" else time_map(a.values))
            for m, a in attributions.items()}
    if kind == "tabular":
        for m, a in attributions.items():
            maps[m] = a.values.reshape(len(a.values), -1).astype(np.float32)
        method = global_method(methods, "tabular")
        if ctx.global_rows is not None:
            rows = ctx.global_rows
            values = attribute_full(ctx.model, x[rows], method, **options[method]).values
            groups = ctx.pred_all[rows]
        else:
            rows, values, groups = idx, attributions[method].values, preds
        ctx.global_attribution = (np.asarray(rows), np.asarray(values), method)
        items = explain_global(values, ctx.feature_names)
        section = {"method": method, "kind": "tabular", "items": items, "grid": None}
        if not ctx.regression:
            section["per_class"] = {
                class_names[c]: explain_global(values[groups == c], ctx.feature_names)
                for c in range(len(class_names)) if np.any(groups == c)
            }
        return section, class_maps, maps

    for m, a in attributions.items():
        maps[m] = image_map(a.values)
    method = global_method(methods, "image")
    grid = (min(IMAGE_IMPORTANCE_GRID[0], x.shape[1]), min(IMAGE_IMPORTANCE_GRID[1], x.shape[2]))

    def ranked(sel: np.ndarray) -> list[dict[str, Any]]:
        regions, _ = region_importance(maps[method][sel], grid)
        return [{"feature": r["feature"], "score": r["score"], "cell": [r["row"], r["col"]]}
                for r in regions]

    section = {"method": method, "kind": "image", "items": ranked(np.arange(len(idx))),
               "grid": list(grid)}
    if not ctx.regression:
        section["per_class"] = {class_names[c]: ranked(np.flatnonzero(preds == c))
                                for c in range(len(class_names)) if np.any(preds == c)}
        h, w = x.shape[1:3]
        for m, mp in maps.items():
            # Each example's map is scaled to unit mass first, so one high-gradient example
            # does not paint the whole class.
            mass = mp.reshape(len(mp), -1).sum(axis=1)
            unit = mp / np.where(mass > 0, mass, 1.0)[:, None, None]
            class_maps[m] = np.stack([
                unit[preds == c].mean(axis=0) if np.any(preds == c)
                else np.zeros((h, w), np.float32)
                for c in range(len(class_names))]).astype(np.float32)
    return section, class_maps, maps


def time_map(values: np.ndarray) -> np.ndarray:
    """Per-example importance over time ``(n, T)``: ``|values|``, summed over channels."""
    v = np.abs(np.asarray(values, np.float32))
    return v.sum(axis=2) if v.ndim == 3 else v


def _time_importance(ctx: AuditContext) -> dict[str, Any]:
    """Global importance of a text audit (tokens by share of |attribution|) or a sequence
    audit (windows of steps by mean |attribution|)."""
    from explain.audit.sequences import section_method

    method = section_method(ctx.methods)
    values = np.asarray(ctx.attributions[method].values)
    preds, class_names = ctx.preds, ctx.class_names

    if ctx.kind == "text":
        vocab = ctx.plan.arrays.get("vocabulary")
        ids = np.asarray(ctx.xs).astype(np.int64)

        def ranked(sel: np.ndarray) -> list[dict[str, Any]]:
            mass = np.abs(values[sel]).ravel()
            tok = ids[sel].ravel()
            keep = tok != 0
            size = int(ids.max()) + 1
            total = np.bincount(tok[keep], weights=mass[keep], minlength=size)
            whole = float(total.sum()) or 1.0
            order = [int(t) for t in np.argsort(-total) if total[t] > 0][:20]
            return [{"feature": (str(vocab[t]) if vocab is not None and t < len(vocab)
                                 else f"#{t}"), "score": float(total[t] / whole)}
                    for t in order]
    else:
        t_len = values.shape[1]
        width = max(1, t_len // 20)
        per_step = np.abs(values).sum(axis=2) if values.ndim == 3 else np.abs(values)

        def ranked(sel: np.ndarray) -> list[dict[str, Any]]:
            step = per_step[sel].mean(axis=0)
            items = [{"feature": f"steps {a}-{min(a + width, t_len) - 1}",
                      "score": float(step[a:a + width].mean())}
                     for a in range(0, t_len, width)]
            return sorted(items, key=lambda i: -i["score"])

    section = {"method": method, "kind": ctx.kind, "items": ranked(np.arange(len(values))),
               "grid": None}
    if not ctx.regression:
        section["per_class"] = {class_names[c]: ranked(np.flatnonzero(preds == c))
                                for c in range(len(class_names)) if np.any(preds == c)}
    return section


def method_is_cheap(method: str) -> bool:
    """Methods cheap enough to run on ``global_rows`` rows (the registry says)."""
    from explain.attributions.registry import method_info

    return method_info(method).cheap


def global_method(methods: Sequence[str], kind: str) -> str:
    """The method that ranks global importance for ``kind`` inputs (the registry's
    ``global_priority``; the first method when none claims it)."""
    from explain.attributions.registry import global_method as ranked

    return ranked(list(methods), kind)


def image_map(values: np.ndarray) -> np.ndarray:
    """Per-example image maps ``(n, H, W)`` of non-negative importance."""
    from explain.metrics import reduce_to_map

    return np.abs(reduce_to_map(values, "image")).astype(np.float32)

