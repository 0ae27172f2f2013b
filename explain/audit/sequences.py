"""The text and sequence sections of an audit: top tokens per class, importance over time
and per channel, and the ablated shortcut candidates the ``shortcut_token`` and
``shortcut_span`` rules judge (see :mod:`explain.shortcuts`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from explain.result import to_jsonable

if TYPE_CHECKING:
    from explain.audit.context import AuditContext
    from explain.audit.plan import AuditPlan

#: Methods whose attributions the sections are computed from, in order of preference.
SECTION_METHODS = ("integrated_gradients", "shap", "smoothgrad", "saliency", "occlusion")
#: Rows drawn at random from the data for the sections (the explained examples lean to
#: misclassified and unsure ones, which would understate what the model does).
SECTION_ROWS = 128


def section_method(methods: list[str]) -> str:
    return next((m for m in SECTION_METHODS if m in methods), methods[0])


def _predict_classes(model: Any, batch_size: int):
    from explain.evaluation import predict_proba

    def predict(z: np.ndarray) -> np.ndarray:
        p = predict_proba(model, np.asarray(z, np.float32), batch_size=batch_size)
        p = p.reshape(len(p), -1)
        if p.shape[1] == 1:
            return (p[:, 0] >= 0.5).astype(np.int64)
        return p.argmax(axis=1)

    return predict


def _single_unit(model: Any) -> bool:
    out = getattr(model, "outputs", None) or []
    return bool(out) and int(np.prod([d for d in tuple(out[0].shape)[1:] if d])) == 1


def sequence_sections(ctx: AuditContext, plan: AuditPlan) -> dict[str, Any]:
    """``{"text": ...}`` for a text audit, ``{"sequence": ...}`` for a sequence audit."""
    from explain.attributions.registry import explain as attribute_full
    from explain.attributions.registry import method_info
    from explain.shortcuts import sequence_summary, token_summary

    method = section_method(ctx.methods)
    if method_info(method).gradient_based:
        # a seeded random sample of the data, attributed like the explained examples
        rng = np.random.default_rng([int(ctx.config.seed), 11])
        rows = np.sort(rng.choice(len(ctx.x), min(SECTION_ROWS, len(ctx.x)), replace=False))
        a = attribute_full(ctx.model, ctx.x[rows], method, **ctx.options[method])
    else:
        rows = ctx.idx
        a = ctx.attributions[method]
    values = np.asarray(a.values)
    targets = np.asarray(a.targets)
    predict = _predict_classes(ctx.model, ctx.config.batch_size)
    all_preds = np.asarray(ctx.pred_all).astype(np.int64)
    if ctx.proba is not None and np.all(targets == 0) and _single_unit(ctx.model):
        # one sigmoid unit: the attributions explain the positive class; towards a
        # predicted negative they count with the opposite sign
        targets = all_preds[rows]
        sign = np.where(targets == 1, 1.0, -1.0).reshape((-1,) + (1,) * (values.ndim - 1))
        values = values * sign
    if ctx.kind == "text":
        vocab = plan.arrays.get("vocabulary")
        vocab = None if vocab is None else [str(t) for t in vocab.tolist()]
        ids = np.asarray(ctx.x[rows]).astype(np.int64)
        from explain.attributions.tokens import default_mask_id

        # The id the audit's token-masking methods were given (mask_id: SHAP's and
        # occlusion's option on text models; the section method's own first), else the
        # model's default, which is theirs too.
        chosen = next((ctx.options.get(m, {}).get("mask_id") for m in (method, *ctx.methods)
                       if ctx.options.get(m, {}).get("mask_id") is not None), None)
        mask_id = int(chosen) if chosen is not None else default_mask_id(ctx.model)
        section = token_summary(values, ids, targets, predict=predict,
                                all_ids=np.asarray(ctx.x).astype(np.int64),
                                all_preds=all_preds, vocabulary=vocab, mask_id=mask_id)
        # Each explained example as its tokens (padding left out), for the report.
        def token(t: int) -> str:
            return str(vocab[t]) if vocab is not None and 0 <= t < len(vocab) else f"#{t}"

        shown = np.asarray(ctx.xs).astype(np.int64)
        examples = [{"positions": [int(p) for p in np.flatnonzero(row != 0)],
                     "tokens": [token(int(t)) for t in row[row != 0]]} for row in shown]
        return {"text": to_jsonable({"method": method, "rows": int(len(rows)),
                                     "vocabulary_known": vocab is not None,
                                     "examples": examples, **section})}
    section = sequence_summary(values, targets, predict=predict, all_x=np.asarray(ctx.x),
                               all_preds=all_preds)
    return {"sequence": to_jsonable({"method": method, "rows": int(len(rows)), **section})}
