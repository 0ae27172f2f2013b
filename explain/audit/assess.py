"""Assessment: global importance, explanation quality, drift and findings turn a plan and
its attribution chunks into the audit's :class:`~explain.result.AuditResult`."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from explain.audit.context import AuditContext
from explain.audit.fairness import fairness_section
from explain.audit.importance import global_importance, image_map
from explain.audit.plan import AuditPlan
from explain.audit.prepare import load_model
from explain.audit.quality import measure_quality
from explain.audit.sequences import sequence_sections
from explain.audit.stages import Progress, Stages
from explain.errors import InputError, InputTypeError
from explain.result import AuditResult, to_jsonable


def assess(
    plan: AuditPlan,
    chunks: Mapping[tuple[str, int, int], Mapping[str, np.ndarray]],
    previous: Any = None,
    progress: Progress | None = None,
    model: tuple[Any, Any] | None = None,
    timings: Mapping[str, float] | None = None,
) -> AuditResult:
    """Global importance, explanation quality, drift, findings: the audit's result.

    Parameters
    ----------
    plan
        From :func:`prepare`.
    chunks
        ``{(method, start, stop): arrays}`` from :func:`attribute_chunk`, one for each of
        :meth:`AuditPlan.chunks`.
    previous
        As for :func:`run_audit`.
    progress
        Sees the stages from ``global_importance`` on.
    model
        ``(model, spec)``; None loads it from ``plan.meta["model_path"]``.
    timings
        Stage timings measured elsewhere (the attribution chunks), added to the report's.

    Returns
    -------
    AuditResult
        The same as :func:`run_audit` returns for the plan's inputs.
    """
    prev = load_previous(previous)
    if model is None:
        model = load_model(plan.meta["model_path"])
    stages = Stages(progress)
    stages.timings.update({k: float(v) for k, v in (timings or {}).items()})
    return assess_in(stages, plan, chunks, prev, model)


def assess_in(stages: Stages, plan: AuditPlan,
              chunks: Mapping[tuple[str, int, int], Mapping[str, np.ndarray]],
              prev: AuditResult | None, loaded: tuple[Any, Any]) -> AuditResult:
    """:func:`assess` reporting to ``stages``, with the previous audit already read."""
    from explain._backend import keras
    from explain.findings import FindingInputs, FindingThresholds, run_rules
    from explain.report_schema import validate_report

    ctx = AuditContext.from_plan(plan, chunks, loaded[0], stages)
    if ctx.kind == "text":
        from explain.attributions.tokens import token_model

        # the checks perturb token ids: a string model is measured through its ids model
        ctx.model = token_model(ctx.model).ids_model
    meta, cfg = plan.meta, ctx.config
    kind, regression, methods = ctx.kind, ctx.regression, ctx.methods
    class_names = ctx.class_names
    notes = list(meta["notes"])
    idx, proba, xs, preds, labels = ctx.idx, ctx.proba, ctx.xs, ctx.preds, ctx.labels
    reasons = meta["reasons"]
    attributions = ctx.attributions
    # The quality checks draw from Keras' generators too; seeding here makes them the
    # same wherever this stage runs.
    keras.utils.set_random_seed(cfg.seed)

    # ---- global importance
    stages.start("global_importance")
    importance, class_maps, maps = global_importance(ctx)
    if kind == "tabular" and len(importance.get("items") or []) > 1:
        from explain.audit.permutation import permutation_drops

        drops = permutation_drops(ctx, importance["items"])
        if drops is not None:
            importance["permutation"] = drops

    # ---- explanation quality
    stages.start("quality")
    thresholds = FindingThresholds.from_config(cfg.thresholds)
    quality, agreement = measure_quality(ctx, thresholds.completeness_tolerance)

    # ---- the report so far: the measured sections the finding rules read
    report: dict[str, Any] = {
        "schema_version": "1.0",
        "generated_at": "",
        "title": f"Audit of {meta['name']} on {meta['dataset_name']}",
        "verdict": {"level": "pass", "headline": "-", "top_findings": []},
        "model": meta["model_card"],
        "dataset": meta["dataset"],
        "performance": meta["performance"],
        "global_importance": importance,
        "examples": [],
        "explanation_quality": quality,
        "agreement": agreement,
        "findings": [],
        "drift": None,
        "fairness": None,
        "config": {**cfg.to_dict(), "methods": methods,
                   "method_options": meta["options_for_report"], "notes": notes},
        "environment": _versions(cfg.seed),
        "timings": {},
    }
    for j, row in enumerate(idx):
        gaps = {m: float(a.completeness_gap[j]) for m, a in attributions.items()
                if a.completeness_gap is not None and np.isfinite(a.completeness_gap[j])}
        if regression:
            example = {"label": float(np.asarray(labels[j]).reshape(-1)[0]),
                       "prediction": float(preds[j]), "confidence": None, "correct": None}
        else:
            example = {"label": int(labels[j]), "prediction": int(preds[j]),
                       "confidence": float(proba[row].max()),
                       "correct": bool(int(labels[j]) == int(preds[j]))}
        report["examples"].append({"index": int(row), **example, "reason": reasons[j],
                                   "completeness_gap": gaps})

    # ---- text and sequence sections (before the findings: the shortcut rules read them)
    if kind in ("text", "sequence") and not regression:
        report.update(sequence_sections(ctx, plan))

    # ---- group fairness (before the findings: the fairness rules read it)
    stages.start("fairness")
    report["fairness"] = fairness_section(ctx, importance, thresholds, prev)

    # ---- drift (before the findings: the drift rule reads it)
    stages.start("drift")
    drift_arrays: dict[str, np.ndarray] = {}
    prev_kind = None if prev is None else (prev.report.get("global_importance") or {}).get(
        "kind")
    if prev is not None and prev_kind != kind:
        notes.append(f"drift skipped: the previous audit explained {prev_kind} inputs, this "
                     f"one {kind} inputs")
    elif prev is not None:
        report["drift"] = _drift(prev, importance)
        drift_arrays = {f"drift_class_maps.{m}": a for m, a in prev.class_maps().items()}
    stages.start("findings")
    image_maps = ({m: image_map(a.values) for m, a in attributions.items()}
                  if kind == "image" else None)
    shortcuts = None
    if kind == "image" and not regression:
        shortcuts = _image_shortcuts(ctx, image_maps)
    findings = run_rules(FindingInputs(
        report=report, image_maps=image_maps,
        labels=None if regression else np.asarray(labels),
        predictions=None if regression else np.asarray(preds),
        class_names=None if regression else class_names,
        attributions={m: a.values for m, a in attributions.items()},
        shortcuts=shortcuts), thresholds)
    report["findings"] = findings
    report["verdict"] = _verdict(findings)

    # ---- assemble
    stages.start("assemble")
    arrays: dict[str, np.ndarray] = {"examples_x": xs}
    arrays.update({f"maps.{m}": v for m, v in maps.items()})
    arrays.update({f"class_maps.{m}": v for m, v in class_maps.items()})
    arrays.update(drift_arrays)
    report["generated_at"] = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    report["timings"] = {**meta.get("timings", {}), **stages.finish()}
    report = validate_report(report)
    return AuditResult(report=report, arrays=arrays)



def _image_shortcuts(ctx: AuditContext, image_maps: Mapping[str, np.ndarray]
                     ) -> list[dict[str, Any]]:
    """Shortcut regions tested by ablation on the audit's rows (see explain.image_shortcuts)."""
    from explain.evaluation import predict_proba
    from explain.image_shortcuts import ShortcutSettings, find_shortcuts

    batch = ctx.config.batch_size

    def proba(images: np.ndarray) -> np.ndarray:
        raw = np.asarray(predict_proba(ctx.model, images, batch_size=batch), np.float64)
        raw = raw.reshape(len(raw), -1)
        return np.concatenate([1.0 - raw, raw], axis=1) if raw.shape[1] == 1 else raw

    found, _tested = find_shortcuts(image_maps, np.asarray(ctx.preds), ctx.x,
                                    np.asarray(ctx.pred_all), proba,
                                    ShortcutSettings.from_config(ctx.config.image_shortcuts,
                                                                 seed=ctx.config.seed),
                                    ctx.class_names)
    return found


def _versions(seed: int) -> dict[str, Any]:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    from explain import __version__

    return {
        "xaudit": __version__,
        "python": platform.python_version(),
        "tensorflow": version("tensorflow") or version("tensorflow-cpu"),
        "keras": version("keras"),
        "numpy": np.__version__,
        "shap": version("shap"),
        "scikit-learn": version("scikit-learn"),
        "platform": platform.platform(),
        "seed": int(seed),
    }



def _verdict(findings: list[dict[str, Any]]) -> dict[str, Any]:
    severities = {f["severity"] for f in findings}
    level = "fail" if "critical" in severities else "review" if "warning" in severities \
        else "pass"
    top: list[str] = []
    for f in findings:  # run_rules sorts most severe first
        if f["severity"] != "info" and f["code"] not in top:
            top.append(f["code"])
    top = top[:3]
    if level == "pass":
        headline = ("No finding needs attention." if not findings
                    else "No finding needs attention; see the notes below.")
    else:
        headline = findings[0]["message"]
        alike = sum(1 for f in findings if f["code"] == findings[0]["code"])
        if alike > 1:
            headline += f" ({alike} findings of this kind in all.)"
    return {"level": level, "headline": headline, "top_findings": top}


def load_previous(previous: Any) -> AuditResult | None:
    if previous is None:
        return None
    if isinstance(previous, AuditResult):
        return previous
    if isinstance(previous, Mapping):
        return AuditResult(report=dict(previous))
    if isinstance(previous, (str, os.PathLike)):
        p = Path(previous)
        if p.is_dir():
            return AuditResult.load(p)
        if p.is_file():
            try:
                report = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InputError(f"the previous audit {p.name} is not readable JSON: {exc}"
                                 ) from None
            if not isinstance(report, dict):
                raise InputError(f"the previous audit {p.name} is not a report.json object")
            return AuditResult(report=report)
        raise FileNotFoundError(f"previous audit not found: {p}")
    raise InputTypeError("previous must be an AuditResult, a report dict, or the path of a "
                    f"report.json or saved audit folder, got {type(previous).__name__}")


def _drift(previous: AuditResult, current: dict[str, Any]) -> dict[str, Any]:
    from explain.findings import ndcg

    prev_gi = previous.report.get("global_importance") or {}
    prev_items = prev_gi.get("items") or []
    if not prev_items:
        raise InputError("the previous audit has no global importance to compare with")
    cur_items = current["items"]
    cur = {i["feature"]: float(i["score"]) for i in cur_items}
    prev = {i["feature"]: float(i["score"]) for i in prev_items}
    names = [i["feature"] for i in cur_items] + [f for f in prev if f not in cur]
    items = []
    for name in names:
        a, b = prev.get(name), cur.get(name)
        items.append({"feature": name, "previous_score": a, "score": b,
                      "change": None if a is None or b is None else b - a})
    prev_title = str(previous.report.get("title") or "previous audit")
    prev_at = str(previous.report.get("generated_at") or "")
    digest = hashlib.sha256(json.dumps(to_jsonable(previous.report), sort_keys=True)
                            .encode("utf-8")).hexdigest()[:12]
    return {
        "previous_audit": f"{prev_title} [{digest}]",
        "previous_generated_at": prev_at,
        "ndcg": min(1.0, max(0.0, ndcg(prev_items, cur_items))),
        "items": items,
    }

