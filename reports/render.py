"""Render an :class:`~explain.result.AuditResult` as one self-contained HTML file, or as JSON.

The HTML loads nothing: CSS is inline, figures are PNG data URIs, there is no script, and a
Content-Security-Policy in the head forbids anything else. Templates are rendered with
autoescaping on, so every string that came from a user (model, data set, feature and class
names, finding evidence) reaches the page as text, never as markup.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined

from explain.result import AuditResult
from reports import figures
from reports.schema import SCHEMA_VERSION, validate_report

__all__ = ["DEFAULT_MAX_EXAMPLES", "CSP", "render_html", "render_json"]

#: Examples drawn one by one in the HTML (all of them stay in report.json).
DEFAULT_MAX_EXAMPLES = 8

#: The policy in the report's <meta> tag; the API sends the same as a response header.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

# Misclassified examples are the ones a reviewer needs first.
_REASON_ORDER = {"misclassified": 0, "largest_error": 0, "least_confident": 1, "stratified": 2}
_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
_REASON_TEXT = {
    "misclassified": "misclassified",
    "largest_error": "largest error",
    "least_confident": "least confident",
    "stratified": "sampled per class",
}
_PERFORMANCE_TABLES = {"per_class", "confusion_matrix", "calibration", "residuals"}


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("reports", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = format_number
    env.filters["method"] = figures.method_title
    env.filters["humanize"] = _humanize
    env.filters["timestamp"] = _timestamp
    env.filters["columns"] = _columns
    env.tests["mapping_list"] = _is_mapping_list
    env.globals["CSP"] = CSP
    return env


def render_json(result: AuditResult, *, validate: bool = True) -> str:
    """Return the report.json text of an audit.

    Parameters
    ----------
    result
        The audit result.
    validate
        Check the report against the schema first (raises on any problem).

    Returns
    -------
    str
        Indented JSON.

    Raises
    ------
    ValueError
        If ``validate`` and the report does not follow the schema.
    """
    if validate:
        validate_report(result.report)
    return result.to_json()


def render_html(
    result: AuditResult, *, max_examples: int = DEFAULT_MAX_EXAMPLES, validate: bool = True
) -> str:
    """Return the audit as one self-contained HTML document.

    Parameters
    ----------
    result
        The audit result: the report plus the arrays the figures need.
    max_examples
        How many examples the "local explanations" section draws, misclassified first.
        Every example stays in report.json.
    validate
        Check the report against the schema first (raises on any problem).

    Returns
    -------
    str
        The HTML document (UTF-8 text, no external references).

    Raises
    ------
    ValueError
        If the report does not follow the schema or the arrays do not match it.
    """
    if max_examples < 0:
        raise ValueError(f"max_examples must be >= 0, got {max_examples}")
    report = validate_report(result.report) if validate else result.report
    _check_arrays(report, result)
    template = _environment().get_template("report.html.j2")
    return template.render(**_context(report, result, max_examples))


# -- the view the template reads ---------------------------------------------------------------


def format_number(value: Any, digits: int = 4) -> str:
    """Format a report value for a table cell: ints with separators, floats to 4 digits."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return "—"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.{digits - 1}e}"
        # Scores in [-1, 1] (accuracy, correlations) keep fixed decimals so 1.0 reads "1.000".
        return f"{value:.{digits}g}" if abs(value) > 1 else f"{value:.{digits - 1}f}"
    return str(value)


def _timestamp(value: str) -> str:
    # Reviewers read "2025-06-01 12:00 UTC" faster than an ISO string; keep odd input as is.
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        return moment.strftime("%Y-%m-%d %H:%M")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _humanize(key: str) -> str:
    return str(key).replace("_", " ")


def _is_mapping_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, Mapping) for item in value)
        and all(
            isinstance(v, (str, int, float, bool, type(None)))
            for item in value
            for v in item.values()
        )
    )


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    # Union of the rows' keys in first-seen order, so ragged evidence still lines up.
    return list(dict.fromkeys(key for row in rows for key in row))


def _check_arrays(report: Mapping[str, Any], result: AuditResult) -> None:
    n = len(report["examples"])
    problems = []
    x = result.examples_x
    if x is not None and x.shape[0] != n:
        problems.append(f"examples_x has {x.shape[0]} rows for {n} examples")
    for method, maps in result.maps().items():
        if maps.shape[0] != n:
            problems.append(f"maps.{method} has {maps.shape[0]} rows for {n} examples")
    class_names = report["dataset"]["class_names"]
    for method, maps in result.class_maps().items():
        if maps.ndim != 3:
            problems.append(f"class_maps.{method} must be (K, H, W), got {maps.shape}")
        elif class_names is not None and maps.shape[0] != len(class_names):
            problems.append(
                f"class_maps.{method} has {maps.shape[0]} maps for {len(class_names)} classes"
            )
    if problems:
        raise ValueError("arrays do not match the report: " + "; ".join(problems))


def _label_text(value: Any, class_names: Sequence[str] | None) -> str:
    if (
        class_names is not None
        and isinstance(value, int)
        and not isinstance(value, bool)
        and 0 <= value < len(class_names)
    ):
        return str(class_names[value])
    if isinstance(value, float):
        return format_number(value)
    return "—" if value is None else str(value)


def _context(report: dict[str, Any], result: AuditResult, max_examples: int) -> dict[str, Any]:
    dataset = report["dataset"]
    class_names = dataset["class_names"]
    findings = sorted(report["findings"], key=lambda f: _SEVERITY_ORDER[f["severity"]])
    findings = _with_anchors(findings)
    by_code: dict[str, dict[str, Any]] = {}
    for f in findings:
        by_code.setdefault(f["code"], f)
    severity_counts = {
        level: sum(1 for f in findings if f["severity"] == level)
        for level in ("critical", "warning", "info")
    }
    sections = [
        ("summary", "Summary"),
        ("model", "Model"),
        ("performance", "Performance"),
        ("global-importance", "Global importance"),
        ("local", "Local explanations"),
        ("quality", "Explanation quality"),
    ]
    if report.get("text"):
        sections.append(("text", "Tokens"))
    if report.get("sequence"):
        sections.append(("sequence", "Time and channels"))
    if report.get("fairness"):
        sections.append(("fairness", "Group fairness"))
    sections += [
        ("findings", "Findings"),
    ]
    if report["drift"] is not None:
        sections.append(("drift", "Drift"))
    sections.append(("reproducibility", "Reproducibility"))
    return {
        "report": report,
        "schema_version": SCHEMA_VERSION,
        "sections": sections,
        "top_findings": _top_findings(findings, by_code, report["verdict"]["top_findings"]),
        "findings": findings,
        "severity_counts": severity_counts,
        "headline_stats": _headline_stats(report),
        "training": _training_view(report),
        "performance": _performance_view(report),
        "importance": _importance_view(report, result),
        "examples": _examples_view(report, result, max_examples),
        "quality": _quality_view(report),
        "drift": _drift_view(report, result),
        "fairness": _fairness_view(report),
        "text": _text_view(report),
        "sequence": _sequence_view(report),
        "class_names": class_names,
        "scales": {kind: figures.colour_scale(kind) for kind in ("unsigned", "signed")},
    }


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _training_view(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """The model's training metadata as tables and a learning curve, not a raw dump."""
    t = report["model"].get("training")
    if not isinstance(t, Mapping) or not t:
        return None
    inner = t.get("training") if isinstance(t.get("training"), Mapping) else {}
    history = inner.get("history", t.get("history"))
    figure = (figures.learning_curve_figure(history) if isinstance(history, Mapping)
              else None)
    facts = [(k, v) for k, v in t.items() if _scalar(v)]
    groups, more = [], {}
    for key, value in t.items():
        if key in ("validation", "test", "history") or _scalar(value):
            continue
        if isinstance(value, Mapping):
            rows = [(k, v) for k, v in value.items() if _scalar(v)]
            rest = {k: v for k, v in value.items() if not _scalar(v) and k != "history"}
            if rows:
                groups.append((key, rows))
            if rest:
                more[key] = rest
        else:
            more[key] = value
    splits = [(name, t[name]) for name in ("validation", "test")
              if isinstance(t.get(name), Mapping)]
    metric_names: list[str] = []
    for _, m in splits:
        metric_names += [k for k, v in m.items() if isinstance(v, (int, float))
                         and not isinstance(v, bool) and k not in metric_names]
    metrics = {"columns": [name for name, _ in splits],
               "rows": [(k, [m.get(k) for _, m in splits]) for k in metric_names]}
    confusion = []
    for name, m in splits:
        cm = m.get("confusion_matrix")
        if isinstance(cm, Mapping) and isinstance(cm.get("matrix"), list):
            confusion.append((name, list(cm.get("labels") or range(len(cm["matrix"]))),
                              cm["matrix"]))
        elif isinstance(cm, list):
            confusion.append((name, list(range(len(cm))), cm))
        rest = {k: v for k, v in m.items() if not _scalar(v)
                and k not in ("confusion_matrix", "calibration", "class_names")}
        if rest:
            more[name] = rest
    return {"facts": facts, "groups": groups, "metrics": metrics if metric_names else None,
            "confusion": confusion, "figure": figure, "more": more}


def _with_anchors(findings: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each finding with a unique page anchor (the first of a code keeps ``finding-CODE``)."""
    seen: dict[str, int] = {}
    out = []
    for f in findings:
        k = seen.get(f["code"], 0)
        seen[f["code"]] = k + 1
        out.append({**f, "anchor": f"finding-{f['code']}" + (f"-{k + 1}" if k else "")})
    return out


def _top_findings(findings: list[dict[str, Any]], by_code: Mapping[str, dict[str, Any]],
                  codes: Sequence[str]) -> list[dict[str, Any]]:
    """"Read these first": every critical finding, then the first finding of each other
    code the verdict names."""
    top = [f for f in findings if f["severity"] == "critical"]
    top += [by_code[c] for c in codes if c in by_code and by_code[c]["severity"] != "critical"]
    return top


def _headline_stats(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    perf = report["performance"]
    stats = []
    if "accuracy" in perf:
        stats.append(("accuracy", format_number(perf["accuracy"])))
        if perf.get("balanced_accuracy") is not None:
            stats.append(("balanced accuracy", format_number(perf["balanced_accuracy"])))
    else:
        stats.append(("R²", format_number(perf.get("r2"))))
        stats.append(("RMSE", format_number(perf.get("rmse"))))
    stats.append(("rows audited", format_number(report["dataset"]["rows"])))
    methods = report["explanation_quality"]
    trusted = sum(1 for entry in methods.values() if entry["passed"])
    stats.append(("methods passing quality checks", f"{trusted} of {len(methods)}"))
    stats.append(("findings", format_number(len(report["findings"]))))
    return stats


def _performance_view(report: Mapping[str, Any]) -> dict[str, Any]:
    perf = report["performance"]
    class_names = report["dataset"]["class_names"]
    scalars = [
        (key, value)
        for key, value in perf.items()
        if key not in _PERFORMANCE_TABLES and not isinstance(value, (dict, list))
    ]
    extra = {
        key: value
        for key, value in perf.items()
        if key not in _PERFORMANCE_TABLES and isinstance(value, (dict, list))
    }
    view: dict[str, Any] = {
        "scalars": scalars,
        "extra": extra,
        "per_class": perf.get("per_class"),
        "confusion_figure": None,
        "reliability_figure": None,
        "residual_figure": None,
        "residual_stats": None,
        "calibration": perf.get("calibration"),
    }
    matrix = perf.get("confusion_matrix")
    if matrix:
        names = class_names or [str(i) for i in range(len(matrix))]
        view["confusion_figure"] = figures.confusion_matrix_figure(matrix, names)
    calibration = perf.get("calibration")
    if calibration and calibration.get("bins"):
        view["reliability_figure"] = figures.reliability_figure(
            calibration["bins"], calibration.get("ece")
        )
    residuals = perf.get("residuals")
    if residuals:
        view["residual_figure"] = figures.residual_figure(residuals)
        view["residual_stats"] = {k: v for k, v in residuals.items() if k != "histogram"}
    return view


def _importance_view(report: Mapping[str, Any], result: AuditResult) -> dict[str, Any]:
    importance = report["global_importance"]
    class_names = report["dataset"]["class_names"]
    view: dict[str, Any] = {
        "bars_figure": None,
        "grid_figure": None,
        "class_maps": [],
        "top": 15,
    }
    if importance["items"]:
        view["bars_figure"] = figures.importance_figure(
            importance["items"], top=view["top"],
            xlabel=f"mean |{figures.method_title(importance['method'])}| attribution",
        )
    if importance["kind"] == "image" and importance["grid"] and importance["items"]:
        view["grid_figure"] = figures.region_grid_figure(importance["items"], importance["grid"])
    for method, maps in result.class_maps().items():
        view["class_maps"].append((method, figures.class_map_panels(maps, class_names)))
    return view


def _examples_view(
    report: Mapping[str, Any], result: AuditResult, max_examples: int
) -> dict[str, Any]:
    examples = report["examples"]
    class_names = report["dataset"]["class_names"]
    feature_names = report["dataset"]["feature_names"]
    order = sorted(range(len(examples)), key=lambda i: _REASON_ORDER[examples[i]["reason"]])
    shown = order[:max_examples]
    maps = result.maps()
    x = result.examples_x
    kind = report["dataset"]["kind"]
    image = kind == "image"
    text_examples = (report.get("text") or {}).get("examples") or []
    rows = []
    for i in shown:
        example = examples[i]
        figure, panels, tokens = None, [], []
        if kind == "text" and i < len(text_examples):
            # padding is not among the tokens; the template escapes each token
            shown_tokens = text_examples[i]
            tokens = [(m, figures.token_spans(shown_tokens["tokens"],
                                              shown_tokens["positions"], a[i]))
                      for m, a in maps.items()]
        elif kind == "sequence" and x is not None:
            figure = figures.sequence_example_figure(x[i], {m: a[i] for m, a in maps.items()})
        elif image and x is not None:
            panels = figures.image_panels(x[i], {m: a[i] for m, a in maps.items()})
        elif not image and maps:
            n_features = next(iter(maps.values())).shape[1]
            names = feature_names or [f"x{j}" for j in range(n_features)]
            figure = figures.tabular_example_figure(
                {m: a[i] for m, a in maps.items()}, names, None if x is None else x[i]
            )
        rows.append(
            {
                "example": example,
                "label": _label_text(example["label"], class_names),
                "prediction": _label_text(example["prediction"], class_names),
                "reason": _REASON_TEXT[example["reason"]],
                "figure": figure,
                "panels": panels,
                "tokens": tokens,
            }
        )
    return {"rows": rows, "total": len(examples), "methods": list(maps)}


def _text_view(report: Mapping[str, Any]) -> dict[str, Any] | None:
    text = report.get("text")
    if not text:
        return None
    class_names = report["dataset"]["class_names"]
    classes = [{"name": _label_text(c["class"], class_names), "examples": c["examples"],
                "top_tokens": c["top_tokens"]} for c in text.get("classes") or []]
    candidates = [{**c, "class_name": _label_text(c["class"], class_names)}
                  for c in text.get("candidates") or []]
    return {"method": text.get("method"), "rows": text.get("rows"), "classes": classes,
            "candidates": candidates, "vocabulary_known": text.get("vocabulary_known")}


def _sequence_view(report: Mapping[str, Any]) -> dict[str, Any] | None:
    seq = report.get("sequence")
    if not seq:
        return None
    class_names = report["dataset"]["class_names"]
    per_class = {_label_text(c["class"], class_names): c["over_time"]
                 for c in seq.get("classes") or []}
    channels = [{"feature": f"channel {j}", "score": float(v)}
                for j, v in enumerate(seq.get("per_channel") or [])]
    return {
        "method": seq.get("method"), "rows": seq.get("rows"), "window": seq.get("window"),
        "time_figure": figures.time_importance_figure(seq.get("over_time") or [], per_class),
        "channel_figure": figures.importance_figure(
            sorted(channels, key=lambda c: -c["score"]), top=16,
            xlabel="mean |attribution| summed over time") if channels else None,
        "candidates": [{**c, "class_name": _label_text(c["class"], class_names)}
                       for c in seq.get("candidates") or []],
    }


def _quality_view(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    view = []
    for method, entry in report["explanation_quality"].items():
        view.append(
            {
                "method": method,
                "entry": entry,
                "figure": figures.quality_curves_figure(entry),
            }
        )
    return view


#: Per-group columns of the fairness table, in order (those a section has).
_GROUP_COLUMNS = ("count", "selection_rate", "accuracy", "tpr", "fpr", "precision", "ece",
                  "mean_error", "mae", "mean_prediction")


def _fairness_view(report: Mapping[str, Any]) -> dict[str, Any] | None:
    section = report.get("fairness")
    if not section:
        return None
    from explain.findings import FindingThresholds, disparity_verdict

    try:
        th = FindingThresholds.from_config((report.get("config") or {}).get("thresholds"))
    except (TypeError, ValueError):
        th = FindingThresholds()
    attributes = []
    for attr in section["attributes"]:
        groups = attr["groups"]
        columns = [c for c in _GROUP_COLUMNS if any(c in g for g in groups)]
        gaps = []
        for d in attr["disparities"]:
            flagged, limit = disparity_verdict(d, th, section.get("error_scale"))
            gaps.append({**d, "flagged": flagged, "threshold": limit})
        limit = next((g["threshold"] for g in gaps if g["kind"] == "difference"
                      and g["metric"] not in ("mean_error_difference", "mae_difference")),
                     None)
        proxies = [p for p in attr.get("proxies") or []
                   if p.get("is_candidate") or p["auc"] >= th.proxy_min_auc][:5]
        attributes.append({
            "attr": attr, "columns": columns, "gaps": gaps, "proxies": proxies,
            "all_proxies": (attr.get("proxies") or [])[:10],
            "figure": figures.disparity_figure(attr["disparities"], limit, attr["name"]),
            "differences": ((attr.get("attribution") or {}).get("largest_differences")
                            or []),
        })
    return {"section": section, "attributes": attributes, "thresholds": th}


def _drift_view(report: Mapping[str, Any], result: AuditResult) -> dict[str, Any] | None:
    drift = report["drift"]
    if drift is None:
        return None
    maps_panels = []
    previous = result.drift_arrays()
    for method, maps in result.class_maps().items():
        old = previous.get(f"class_maps.{method}")
        if old is not None and old.ndim == 3:
            before, now = figures.drift_map_panels(old, maps, report["dataset"]["class_names"])
            maps_panels.append((method, before, now))
    return {
        "figure": figures.drift_figure(drift["items"]) if drift["items"] else None,
        "items": sorted(drift["items"], key=lambda it: -abs(it["change"] or 0.0)),
        "maps": maps_panels,
    }
