"""Rules that turn an audit's measurements into findings a reviewer can act on.

Each finding is ``{code, severity, message, evidence}`` with severity ``info``, ``warning``
or ``critical``. Rules read the measured sections of report.json (``performance``,
``global_importance``, ``explanation_quality``, ``agreement``, ``drift``, ``fairness``) and, for the
image shortcut rule, the per-example attribution maps. Every threshold lives in
:class:`FindingThresholds`, documented there, and can be overridden from the audit config
(``config["thresholds"]``).

Rules are registered in one table (:data:`RULES`), not an if/elif chain.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from explain.errors import ConfigError, ConfigTypeError

SEVERITIES = ("info", "warning", "critical")
ALL_CLASSES = -1
_SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class FindingThresholds:
    """The thresholds behind every rule.

    Attributes
    ----------
    shortcut_grid
        The image is cut into ``grid × grid`` cells; candidate regions are windows of
        ``shortcut_window × shortcut_window`` cells (with the defaults, 1/16 of the image).
    shortcut_min_mass
        A region is a shortcut when, averaged over the examples of a class (or of all
        examples), it holds at least this share of the attribution mass ...
    shortcut_min_lift
        ... and that share is at least this many times its share of the image area ...
    shortcut_min_consistency
        ... and it is the top region for at least this share of those examples.
        Measured on the ``shapes`` models (seeds 0-4, 24 examples, IG, Grad-CAM and SHAP):
        on the watermarked models the planted corner is the best border window of every
        class in every method, holding 0.20-0.51 of the mass (mostly above 0.30); on the
        clean twins the best border window holds at most 0.23, with consistency below
        0.5. The planted corner is named for 1-3 classes per seed, never a wrong one.
    shortcut_min_examples
        Classes with fewer explained examples than this are not judged on their own.
    shortcut_border_cells
        Candidate regions must reach into the outer ring of this many grid cells (corners,
        edges, borders: where watermarks, tags and frames sit); 0 judges every window.
        Without it the rule flags the object itself: on the clean ``shapes`` twins
        (objects near the middle) the central window holds 0.30-0.33 of the mass for a
        whole class, consistently, in Grad-CAM and IG alike, the same as a planted corner
        watermark (0.24-0.45). A shortcut in the middle of the image cannot be told
        from the object by where it is, so this rule does not try.
    dominant_feature_share
        One tabular feature carrying at least this share of the total global importance ...
    dominant_feature_min_ratio
        ... and at least this many times the importance of the runner-up. Measured on
        ``tabular_leaky`` (11 features, mean |IG| over 200 rows, seeds 0-4): the leaked
        column holds 0.36-0.51 of the importance at 2.7-5.6× the runner-up; on the clean
        twins the top feature holds 0.18-0.25 at 1.05-1.45×. A share of one half alone
        missed most leaks: a model that leans on a leak still spreads importance over
        the honest features it learned too.
    dominant_feature_behaviour_ratio
        Or, backed by what the model does: the top feature leads the runner-up by at least
        this ratio in attribution ...
    dominant_feature_permutation_lead
        ... and shuffling it costs the model at least this many times what shuffling any
        other of the top features costs ...
    dominant_feature_min_permutation_drop
        ... and at least this much accuracy (or R²). Measured on ``bench/truthfulness.py``
        tables (12-64 features, leak rates 0.75-0.95): leaks hold 0.23-0.34 of the
        importance at 1.8-7.6× the runner-up, and shuffling them costs 0.16-0.46 accuracy,
        2.6× or more the next feature; the clean twins' top features lead by 1.0-1.43×
        and cost 0.07-0.19, at most 1.3× the next. With 64 features a leak's share stays
        below 0.3 (0.29) however much the model leans on it.
    dominant_feature_min_alone
        Or, by how much of the model's output the top feature explains on its own (η², the
        share of the output's variance explained by the feature's quantile bins; see
        :func:`explain.audit.permutation.correlation_ratio`): at least this share, with a
        permutation drop of at least ``dominant_feature_min_permutation_drop`` that is
        the largest of the measured features. A leaked label is a near-deterministic
        function of the target, so the model's output is almost a function of it.
        Measured on the ``bench/truthfulness.py`` tables (the 10 settings with the
        benchmark's seeds and again with seeds + 1000, 40 models, η² over the 360 test
        rows): the leaks explain 0.63-0.94 of the output (0.74 for the sigmoid leak at
        rate 0.85 that leads by only 1.15× in attribution and 1.8× in permutation drop,
        which the two rules above miss); on the clean twins no feature explains more
        than 0.49 and the top feature by attribution at most 0.45. The threshold sits
        between the two (0.55).
    completeness_tolerance
        Largest acceptable completeness gap (IG, SHAP): mean ``|gap|`` over mean
        ``|f(x) - f(baseline)|`` of the explained examples.
    disagreement_max_correlation
        Methods whose global-importance rank correlation is below this disagree.
    weak_class_recall_drop
        A class is weak when its recall is below the mean recall by at least this much ...
    weak_class_min_support
        ... and it has at least this many examples.
    poor_calibration_ece
        Expected calibration error above this is poor calibration.
    drift_min_ndcg
        nDCG of global importance against the previous audit below this is drift.
    fairness_min_group
        Groups of a sensitive attribute with fewer rows are reported but never judged:
        their rates are too noisy (a group of 10 has a selection-rate interval about
        ±0.3 wide). An attribute needs two groups this large to be audited at all.
    disparity_max_difference
        A difference measure (demographic parity, equalized odds, equal opportunity,
        accuracy) is a ``group_disparity`` when the **lower end** of its bootstrap
        interval reaches this: the gap is larger than this with confidence, so a small
        group's noise does not raise an alarm ...
    disparity_min_ratio
        ... and the demographic-parity ratio is one when the **upper end** of its
        interval is below this (the four-fifths rule). Measured on the ``lending``
        twins (``python bench/fairness.py --seeds 0,1,2,3,4,5,6,7``, 600 test rows,
        95 % basic-bootstrap intervals): on the biased models the lower ends reach
        0.18-0.30 (demographic parity) and 0.24-0.58 (equalized odds) for ``group``; on
        the clean twins no lower end of any gap passes 0.02 for ``group`` and 0.06 for
        the unrelated, binned ``age``. The ratio's upper end is 0.50-0.66 on the biased
        models and at least 0.85 on the clean ones.
    disparity_max_relative_error
        Regression: a gap in mean error or MAE between groups is a disparity when the
        lower end of its interval reaches this share of the overall MAE.
    proxy_min_auc
        A model input is a proxy of a sensitive attribute when a small classifier that
        sees only that input predicts the group with at least this ROC AUC ...
    proxy_min_share
        ... and the input carries at least this share of the model's global importance.
        Measured on the ``lending`` twins (seeds 0-7): ``district_index`` predicts the
        group with AUC 0.95-0.97 on the biased twins and 0.43-0.55 on the clean ones
        (every other input: at most 0.56); it holds 0.07-0.13 of the importance of the
        biased models (seven inputs: an even share would be 0.14). Permuting it brings
        the demographic-parity difference from 0.25-0.36 down to 0.01-0.11.
    disparity_drift_min_change
        A scheduled audit reports ``disparity_drift`` when a gap moved by at least this
        much since the previous audit and the two intervals do not overlap.
    token_min_mass_share
        Text models: a token is a shortcut for a class when it holds at least this share of
        the class's positive attribution mass (IG, explained examples predicted as the
        class) ...
    token_min_ablation_drop
        ... and masking it (mask id) changes at least this share of the predictions of the
        class's rows that hold it. Measured on ``text_leaky`` (IG, 64 test examples, seed
        0, architectures pool, LSTM, GRU, Conv1D): the planted token holds 0.70-0.82 of the
        positive class's mass and its ablation changes 0.37-0.62 of the predictions; on the
        clean twins the top token of a class holds at most 0.19 (ablation 0-0.33).
    span_min_mass_share
        Sequence models: the best span of ``T / 20`` steps holds at least this share of a
        class's positive attribution mass (uniform: 0.05) ...
    span_min_ablation_drop
        ... and replacing it by each row's mean outside it changes at least this share of
        the class's predictions. Measured on ``sequence_spike`` (IG, 64 test examples,
        seed 0, Conv1D and LSTM): the planted span [5, 10) holds 0.40-0.79 of the spiked
        class's mass, ablation 0.74-1.0; on the clean twins the best span holds at most
        0.19, ablation at most 0.09.
    """

    shortcut_grid: int = 8
    shortcut_window: int = 2
    shortcut_min_mass: float = 0.30
    shortcut_min_lift: float = 3.0
    shortcut_min_consistency: float = 0.5
    shortcut_min_examples: int = 3
    shortcut_border_cells: int = 1
    dominant_feature_share: float = 0.3
    dominant_feature_min_ratio: float = 2.0
    dominant_feature_behaviour_ratio: float = 1.6
    dominant_feature_permutation_lead: float = 2.0
    dominant_feature_min_permutation_drop: float = 0.05
    dominant_feature_min_alone: float = 0.55
    completeness_tolerance: float = 0.05
    disagreement_max_correlation: float = 0.3
    weak_class_recall_drop: float = 0.25
    weak_class_min_support: int = 5
    poor_calibration_ece: float = 0.10
    drift_min_ndcg: float = 0.9
    fairness_min_group: int = 30
    disparity_max_difference: float = 0.10
    disparity_min_ratio: float = 0.8
    disparity_max_relative_error: float = 0.25
    proxy_min_auc: float = 0.75
    proxy_min_share: float = 0.05
    disparity_drift_min_change: float = 0.05
    token_min_mass_share: float = 0.4
    token_min_ablation_drop: float = 0.2
    span_min_mass_share: float = 0.3
    span_min_ablation_drop: float = 0.2

    @classmethod
    def from_config(cls, overrides: Mapping[str, Any] | None) -> FindingThresholds:
        """Defaults with ``overrides`` applied; unknown names raise ValueError."""
        if not overrides:
            return cls()
        known = {f.name: f.type for f in fields(cls)}
        unknown = set(overrides) - set(known)
        if unknown:
            raise ConfigError(f"unknown finding threshold(s) {sorted(unknown)}; known: {sorted(known)}")
        values = {}
        for k, v in overrides.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigTypeError(f"threshold {k} must be a number, got {v!r}")
            values[k] = int(v) if known[k] in ("int", int) else float(v)
        return cls(**values)


@dataclass
class Finding:
    code: str
    severity: str
    message: str
    evidence: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "message": self.message,
                "evidence": self.evidence}


@dataclass
class FindingInputs:
    """What the rules read.

    Attributes
    ----------
    report
        The measured sections of report.json (``performance``, ``global_importance``,
        ``explanation_quality``, ``agreement``, ``drift``, ``dataset``, ``model``).
    image_maps
        For image audits: method → per-example non-negative maps ``(n, H, W)``.
    labels, predictions
        int ``(n,)`` for the explained examples (labels may be None).
    class_names
        Names for class indices, for messages.
    shortcuts
        Image shortcuts already tested by ablation
        (:func:`explain.image_shortcuts.find_shortcuts`);
        when given, the ``shortcut_region`` rule reports these instead of judging the maps
        by where their mass sits alone.
    attributions
        Method → the raw per-example attributions ``(n, ...)`` (any input kind), for the
        rules that judge the attributions themselves (``explanation_failed``).
    """

    report: Mapping[str, Any]
    image_maps: Mapping[str, np.ndarray] | None = None
    labels: np.ndarray | None = None
    predictions: np.ndarray | None = None
    class_names: Sequence[str] | None = None
    attributions: Mapping[str, np.ndarray] | None = None
    shortcuts: Sequence[Mapping[str, Any]] | None = None


Rule = Callable[[FindingInputs, FindingThresholds], list[Finding]]
RULES: dict[str, Rule] = {}


class FindingRuleError(RuntimeError):
    """A finding rule failed on the audit's measurements: a bug, not the user's input.

    Raised in place of whatever the rule raised (a ``TypeError`` from a missing value, say)
    so that a service does not report the failure as the caller's invalid input.
    """


def rule(code: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        RULES[code] = fn
        return fn

    return deco


def run_rules(inputs: FindingInputs, thresholds: FindingThresholds | None = None
              ) -> list[dict[str, Any]]:
    """All findings, most severe first, as JSON-safe dicts."""
    th = thresholds or FindingThresholds()
    found: list[Finding] = []
    for code, fn in RULES.items():
        try:
            found.extend(fn(inputs, th))
        except Exception as exc:
            raise FindingRuleError(f"finding rule {code} failed: {type(exc).__name__}: {exc}"
                                   ) from exc
    found.sort(key=lambda f: -_SEVERITY_RANK[f.severity])
    return [f.to_dict() for f in found]


# ----------------------------------------------------------------------------- regions


def region_name(y0: float, y1: float, x0: float, x1: float) -> str:
    """A human name for a box given in fractions of the image height and width."""
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else "middle"
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "center"
    if row == "middle" and col == "center":
        return "center"
    if row == "middle":
        return f"{col} edge"
    if col == "center":
        return f"{row} edge"
    return f"{row}-{col} corner"


def window_masses(maps: np.ndarray, grid: int, window: int) -> tuple[np.ndarray, list[tuple]]:
    """Share of each example's attribution mass in every window of ``window×window`` cells.

    Returns ``(n, n_windows)`` shares and, per window, its box in pixels
    ``(y0, y1, x0, x1)``.
    """
    n, h, w = maps.shape
    ys = np.linspace(0, h, grid + 1).round().astype(int)
    xs = np.linspace(0, w, grid + 1).round().astype(int)
    cells = np.zeros((n, grid, grid))
    for i in range(grid):
        for j in range(grid):
            cells[:, i, j] = maps[:, ys[i]:ys[i + 1], xs[j]:xs[j + 1]].sum(axis=(1, 2))
    total = cells.sum(axis=(1, 2))
    total = np.where(total > 0, total, 1.0)
    shares, boxes = [], []
    for i in range(grid - window + 1):
        for j in range(grid - window + 1):
            shares.append(cells[:, i:i + window, j:j + window].sum(axis=(1, 2)) / total)
            boxes.append((int(ys[i]), int(ys[i + window]), int(xs[j]), int(xs[j + window])))
    return np.stack(shares, axis=1), boxes


def _class_label(inputs: FindingInputs, k: int) -> str:
    names = inputs.class_names
    return str(names[k]) if names is not None and 0 <= k < len(names) else str(k)


def detect_shortcut_regions(maps: np.ndarray, groups: np.ndarray, th: FindingThresholds
                            ) -> list[dict[str, Any]]:
    """Regions that hold a concentrated, consistent share of attribution mass per group.

    Parameters
    ----------
    maps
        Non-negative maps ``(n, H, W)``.
    groups
        int ``(n,)``: the class each example is judged with (its predicted class).
    """
    n, h, w = maps.shape
    shares, boxes = window_masses(np.abs(maps), th.shortcut_grid, th.shortcut_window)
    area = (th.shortcut_window / th.shortcut_grid) ** 2
    candidate = _border_windows(th)
    hits = []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        if len(idx) < th.shortcut_min_examples:
            continue
        mean_share = shares[idx].mean(axis=0)
        best = int(np.argmax(np.where(candidate, mean_share, -1.0)))
        top = np.argmax(shares[idx], axis=1)
        y0, y1, x0, x1 = boxes[best]
        # Neighbouring windows overlap: an example whose top window overlaps the best
        # one is attending to the same place.
        consistent = np.mean([_overlaps(boxes[t], boxes[best]) for t in top])
        mass = float(mean_share[best])
        if (mass >= th.shortcut_min_mass and mass / area >= th.shortcut_min_lift
                and consistent >= th.shortcut_min_consistency):
            hits.append({
                "group": int(g),
                "region": region_name(y0 / h, y1 / h, x0 / w, x1 / w),
                "box": {"y0": y0, "y1": y1, "x0": x0, "x1": x1},
                "mass_share": round(mass, 4),
                "area_share": round(area, 4),
                "consistency": round(float(consistent), 4),
                "examples": len(idx),
            })
    return hits


def _border_windows(th: FindingThresholds) -> np.ndarray:
    """Per window of :func:`window_masses` (same order): does it reach the border ring?"""
    g, k, b = th.shortcut_grid, th.shortcut_window, th.shortcut_border_cells
    starts = range(g - k + 1)
    if b <= 0:
        return np.ones(len(starts) ** 2, dtype=bool)
    return np.array([i < b or i + k > g - b or j < b or j + k > g - b
                     for i in starts for j in starts])


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def _tested_shortcut_findings(hits: Sequence[Mapping[str, Any]]) -> list[Finding]:
    per_region: dict[str, list[Mapping[str, Any]]] = {}
    for hit in hits:
        per_region.setdefault(hit["region"], []).append(hit)
    out = []
    for region, group in per_region.items():
        best = max(group, key=lambda h: h["ablation_drop"])
        classes = sorted(str(h["class"]) for h in group)
        out.append(Finding(
            code="shortcut_region", severity="critical",
            message=(
                f"The model relies on a small region ({region}) for "
                f"class{'es' if len(classes) > 1 else ''} "
                f"{', '.join(repr(c) for c in classes)}: it holds {best['mass_share']:.0%} "
                f"of the attribution mass in {best['area_share']:.0%} of the image, in "
                f"{best['consistency']:.0%} of the examples, and filling it with its "
                f"surroundings lowers the class's probability by {best['ablation_drop']:.2f} "
                f"on average, against {best['random_region_drop']:.2f} for random regions "
                f"of the same shape and {best['other_classes_drop']:.2f} for the other "
                f"classes' images. This looks like a shortcut (a watermark, tag or band) "
                f"rather than the object itself."),
            evidence={
                "region": region, "box": best["box"], "shape": best["shape"],
                "classes": classes, "methods": sorted({m for h in group for m in h["methods"]}),
                "mass_share": best["mass_share"], "area_share": best["area_share"],
                "consistency": best["consistency"], "ablation_drop": best["ablation_drop"],
                "random_region_drop": best["random_region_drop"],
                "other_classes_drop": best["other_classes_drop"],
                "flip_rate": best["flip_rate"],
                "per_class": {str(h["class"]): {k: v for k, v in h.items()
                                                if k not in ("group", "passed", "class")}
                              for h in group},
            },
        ))
    return out


@rule("shortcut_region")
def _shortcut_region(inputs: FindingInputs, th: FindingThresholds) -> list[Finding]:
    if inputs.shortcuts is not None:
        return _tested_shortcut_findings(inputs.shortcuts)
    if not inputs.image_maps or inputs.predictions is None:
        return []
    per_region: dict[str, dict[str, Any]] = {}
    preds = np.asarray(inputs.predictions)
    for method, maps in inputs.image_maps.items():
        maps = np.asarray(maps)
        # Per predicted class, then all examples together (a border or tag every class uses).
        hits = detect_shortcut_regions(maps, preds, th)
        hits += [{**h, "group": ALL_CLASSES}
                 for h in detect_shortcut_regions(maps, np.zeros(len(maps), int), th)]
        for hit in hits:
            entry = per_region.setdefault(hit["region"], {"classes": {}, "methods": set()})
            entry["methods"].add(method)
            cls = ("all classes" if hit["group"] == ALL_CLASSES
                   else _class_label(inputs, hit["group"]))
            prev = entry["classes"].get(cls)
            if prev is None or hit["mass_share"] > prev["mass_share"]:
                entry["classes"][cls] = {**hit, "method": method}
    n_methods = len(inputs.image_maps)
    out = []
    for region, entry in per_region.items():
        # One method alone can be noisy; ask that at least half of the methods agree.
        if len(entry["methods"]) * 2 < n_methods:
            continue
        classes = sorted(entry["classes"])
        best = max(entry["classes"].values(), key=lambda e: e["mass_share"])
        out.append(Finding(
            code="shortcut_region",
            severity="critical",
            message=(
                f"The model relies on a small region in the {region} of the image for "
                f"class{'es' if len(classes) > 1 else ''} {', '.join(repr(c) for c in classes)}: "
                f"{best['mass_share']:.0%} of the attribution mass sits in "
                f"{best['area_share']:.0%} of the image. This looks like a shortcut "
                f"(a watermark, tag or border) rather than the object itself."
            ),
            evidence={
                "region": region,
                "box": best["box"],
                "classes": classes,
                "methods": sorted(entry["methods"]),
                "per_class": {c: {k: v for k, v in e.items() if k != "group"}
                              for c, e in entry["classes"].items()},
            },
        ))
    return out


@rule("dominant_feature")
def _dominant_feature(inputs: FindingInputs, th: FindingThresholds) -> list[Finding]:
    gi = inputs.report.get("global_importance") or {}
    if gi.get("kind") != "tabular":
        return []
    items = gi.get("items") or []
    total = sum(max(float(i["score"]), 0.0) for i in items)
    if total <= 0 or len(items) < 2:
        return []
    top, runner = items[0], items[1]
    share = float(top["score"]) / total
    ratio = float(top["score"]) / max(float(runner["score"]), 1e-12)
    perm = gi.get("permutation") or {}
    drop = next((p for p in perm.get("items") or [] if p["feature"] == top["feature"]), None)
    others = [float(p["drop"]) for p in perm.get("items") or []
              if p["feature"] != top["feature"]]
    by_attribution = (share >= th.dominant_feature_share
                      and ratio >= th.dominant_feature_min_ratio)
    uses_it = (drop is not None and others
               and float(drop["drop"]) >= th.dominant_feature_min_permutation_drop)
    by_behaviour = (uses_it
                    and ratio >= th.dominant_feature_behaviour_ratio
                    and float(drop["drop"]) >= th.dominant_feature_permutation_lead
                    * max(max(others), 0.0))
    alone = None if drop is None or drop.get("alone") is None else float(drop["alone"])
    by_alone = (uses_it and alone is not None
                and alone >= th.dominant_feature_min_alone
                and float(drop["drop"]) >= max(others))
    if not (by_attribution or by_behaviour or by_alone):
        return []
    evidence = {"feature": top["feature"], "share": round(share, 4),
                "ratio_to_runner_up": round(ratio, 4), "method": gi.get("method"),
                "runner_up": runner["feature"], "top": items[:5],
                "judged_by": ("attribution" if by_attribution else "permutation"
                              if by_behaviour else "output_alone")}
    behaviour = ""
    if drop is not None:
        metric = "R²" if perm.get("metric") == "r2" else "accuracy"
        evidence.update({"permutation_metric": perm.get("metric"),
                         "permutation_baseline": perm.get("baseline"),
                         "permutation_drop": round(float(drop["drop"]), 4)})
        behaviour = (f" Shuffling it drops the model's {metric} by {float(drop['drop']):.2f} "
                     f"(from {float(perm['baseline']):.2f}).")
        if alone is not None:
            evidence["output_explained_alone"] = round(alone, 4)
            behaviour += (f" On its own it explains {alone:.0%} of the variance of the "
                          f"model's output.")
    return [Finding(
        code="dominant_feature",
        severity="critical" if share >= 0.5 or ratio >= 4.0 else "warning",
        message=(
            f"One feature, {top['feature']!r}, carries {share:.0%} of the model's global "
            f"importance ({ratio:.1f}× the next, {runner['feature']!r}).{behaviour} Check "
            f"that it is not a leak of the label or a proxy the model should not use."
        ),
        evidence=evidence,
    )]


def _quality_checks(inputs: FindingInputs, metric_prefix: str):
    for method, q in (inputs.report.get("explanation_quality") or {}).items():
        for check in q.get("checks") or []:
            if str(check.get("metric", "")).startswith(metric_prefix):
                yield method, check


@rule("explanation_failed_sanity")
def _failed_sanity(inputs: FindingInputs, th: FindingThresholds) -> list[Finding]:
    out = []
    for method, check in _quality_checks(inputs, "randomization"):
        if check.get("passed") is False:
            out.append(Finding(
                code="explanation_failed_sanity", severity="warning",
                message=(f"{method} explanations barely change when the model's weights are "
                         f"randomized (similarity {check['score']:.2f}, threshold "
                         f"{check['threshold']}): they describe the input more than the model "
                         f"and should not be trusted."),
                evidence={"method": method, **check},
            ))
    return out


@rule("unfaithful_explanation")
def _unfaithful(inputs: FindingInputs, th: FindingThresholds) -> list[Finding]:
    out = []
    for method, check in _quality_checks(inputs, "deletion"):
        if check.get("passed") is False:
            out.append(Finding(
                code="unfaithful_explanation", severity="warning",
                message=(f"Removing the inputs {method} ranks most important lowers the "
                         f"model's score no faster than removing inputs at random: its "
                         f"ranking is not faithful to the model."),
                evidence={"method": method, **check},
            ))
    return out


@rule("incomplete_attribution")
def _incomplete(inputs: FindingInputs, th: FindingThresholds) -> list[Finding]:
    out = []
    for method, check in _quality_checks(inputs, "completeness"):
        if check.get("passed") is False:
            out.append(Finding(
                code="incomplete_attribution", severity="warning",
                message=(f"{method} attributions do not add up to the change in the model's "
                         f"output (relative gap {check['score']:.1%}, tolerance "
                         f"{check['threshold']:.0%}); use more integration steps or samples."),
                evidence={"method": method, **check},
            ))
    return out


@rule("methods_disagree")
def _disagree(inputs: FindingInputs, th: FindingThresholds) -> list[Finding]:
    out = []
    for pair in inputs.report.get("agreement") or []:
        corr = pair.get("global_rank_correlation")
        if corr is not None and corr < th.disagreement_max_correlation:
            out.append(Finding(
                code="methods_disagree", severity="info",
                message=(f"{pair['a']} and {pair['b']} disagree on what matters (rank "
                         f"correlation {corr:.2f}); read single-method explanations with care."),
                evidence={**pair, "threshold": th.disagreement_max_correlation},
            ))
    return out


@rule("weak_class")
def _weak_class(inputs: FindingInputs, th: FindingThresholds) -> list[Finding]:
    per_class = (inputs.report.get("performance") or {}).get("per_class") or []
    recalls = [float(c["recall"]) for c in per_class if c.get("recall") is not None]
    if len(recalls) < 2:
        return []
    mean = float(np.mean(recalls))
    out = []
    for c in per_class:
        r = c.get("recall")
        if r is None or int(c.get("support", 0)) < th.weak_class_min_support:
            continue
        if mean - float(r) >= th.weak_class_recall_drop:
            out.append(Finding(
                code="weak_class", severity="warning",
                message=(f"Class {c['class']!r} is recognised far less often than the others "
                         f"(recall {float(r):.0%} against a mean of {mean:.0%})."),
                evidence={"class": c["class"], "recall": float(r), "mean_recall": mean,
                          "support": int(c.get("support", 0))},
            ))
    return out


@rule("poor_calibration")
def _poor_calibration(inputs: FindingInputs, th: FindingThresholds) -> list[Finding]:
    cal = (inputs.report.get("performance") or {}).get("calibration") or {}
    ece = cal.get("ece")
    if ece is None or float(ece) <= th.poor_calibration_ece:
        return []
    return [Finding(
        code="poor_calibration", severity="warning",
        message=(f"The model's confidence does not match how often it is right (expected "
                 f"calibration error {float(ece):.1%}); do not read its scores as "
                 f"probabilities without recalibration."),
        evidence={"ece": float(ece), "threshold": th.poor_calibration_ece},
    )]


@rule("attribution_drift")
def _drift(inputs: FindingInputs, th: FindingThresholds) -> list[Finding]:
    drift = inputs.report.get("drift")
    if not drift or drift.get("ndcg") is None:
        return []
    ndcg = float(drift["ndcg"])
    if ndcg >= th.drift_min_ndcg:
        return []
    movers = sorted(drift.get("items") or [], key=lambda i: -_drift_size(i))[:5]
    return [Finding(
        code="attribution_drift", severity="warning",
        message=(f"What the model relies on has changed since the previous audit (nDCG of "
                 f"global importance {ndcg:.2f}, below {th.drift_min_ndcg})."),
        evidence={"ndcg": ndcg, "threshold": th.drift_min_ndcg,
                  "previous_audit": drift.get("previous_audit"), "largest_changes": movers},
    )]


def _drift_size(item: Mapping[str, Any]) -> float:
    """How much one drift item moved; a feature present in only one audit moved by its
    whole score (its ``change`` is None)."""
    change = item.get("change")
    if change is not None:
        return abs(float(change))
    scores = [item.get("score"), item.get("previous_score")]
    return max((abs(float(v)) for v in scores if v is not None), default=0.0)


# ----------------------------------------------------------------------------- fairness
# These rules read report["fairness"] (explain/fairness.py measures it). Thresholds were
# set from the bundled lending twins (bench/fairness.py, seeds 0-4): see FindingThresholds.

_DISPARITY_TEXT = {
    "demographic_parity_difference": "gap in approval (selection) rate",
    "demographic_parity_ratio": "ratio of the lowest to the highest selection rate",
    "equalized_odds_difference": "gap in error rates (equalized odds)",
    "equal_opportunity_difference": "gap in true positive rate (equal opportunity)",
    "accuracy_difference": "gap in accuracy",
    "mean_error_difference": "gap in mean signed error",
    "mae_difference": "gap in mean absolute error",
}


def disparity_verdict(d: Mapping[str, Any], th: FindingThresholds,
                      error_scale: float | None = None) -> tuple[bool, float]:
    """Whether one measured gap is a disparity, and the threshold it was judged against.

    A difference counts when the lower end of its interval reaches the threshold (the
    gap is that large with confidence); the demographic-parity ratio when the upper end
    of its interval is below the four-fifths threshold. Regression gaps are judged
    against a share of the overall mean absolute error (``error_scale``).
    """
    lo, hi = (list(d.get("interval") or [None, None]) + [None, None])[:2]
    if d.get("kind") == "ratio":
        return hi is not None and float(hi) < th.disparity_min_ratio, th.disparity_min_ratio
    if d.get("metric") in ("mean_error_difference", "mae_difference"):
        if not error_scale:
            return False, float("nan")
        limit = th.disparity_max_relative_error * float(error_scale)
        return lo is not None and float(lo) >= limit, limit
    limit = th.disparity_max_difference
    return lo is not None and float(lo) >= limit, limit


def _fairness_attributes(inputs: FindingInputs):
    section = inputs.report.get("fairness") or {}
    for attr in section.get("attributes") or []:
        yield section, attr


#: The order in which gaps headline a ``group_disparity`` finding (the others that also
#: cross their threshold are listed in its evidence).
_DISPARITY_ORDER = ("demographic_parity_difference", "equalized_odds_difference",
                    "equal_opportunity_difference", "demographic_parity_ratio",
                    "accuracy_difference", "mean_error_difference", "mae_difference")


def _gap_sentence(d: Mapping[str, Any], limit: float, pos: str | None) -> str:
    lo, hi = d["interval"]
    a, b = (list(d.get("groups") or []) + ["?", "?"])[:2]
    text = _DISPARITY_TEXT.get(d["metric"], d["metric"].replace("_", " "))
    ratio = d.get("kind") == "ratio"
    return (f"the {text} between {a!r} and {b!r} is {float(d['value']):.2f} (95% interval "
            f"{float(lo):.2f}-{float(hi):.2f}), "
            + (f"below the four-fifths threshold {limit:.2f}" if ratio
               else f"above the threshold {limit:.2f}")
            + (f" (favourable outcome: {pos!r})" if pos and "parity" in d["metric"] else ""))


@rule("group_disparity")
def _group_disparity(inputs: FindingInputs, th: FindingThresholds) -> list[Finding]:
    """One finding per sensitive attribute whose gaps cross their thresholds, headed by
    the first of :data:`_DISPARITY_ORDER`; every crossing gap is in the evidence."""
    out = []
    for section, attr in _fairness_attributes(inputs):
        small = [g["group"] for g in attr.get("groups") or [] if g.get("small")]
        crossing = []
        for d in attr.get("disparities") or []:
            flagged, limit = disparity_verdict(d, th, section.get("error_scale"))
            if flagged and d.get("value") is not None:
                lo, hi = (float(v) for v in d["interval"])
                ratio = d.get("kind") == "ratio"
                severe = hi < limit - 0.2 if ratio else lo >= 2 * limit
                crossing.append(({**d, "interval": [lo, hi]}, limit, severe))
        if not crossing:
            continue
        crossing.sort(key=lambda c: _DISPARITY_ORDER.index(c[0]["metric"])
                      if c[0]["metric"] in _DISPARITY_ORDER else len(_DISPARITY_ORDER))
        head, limit, _ = crossing[0]
        pos = section.get("positive_class")
        others = [c[0]["metric"].replace("_", " ") for c in crossing[1:]]
        out.append(Finding(
            code="group_disparity",
            severity="critical" if any(c[2] for c in crossing) else "warning",
            message=(f"The model treats {attr['name']!r} groups differently: "
                     + _gap_sentence(head, limit, pos) + "."
                     + (f" Also beyond their thresholds: {', '.join(others)}."
                        if others else "")),
            evidence={"attribute": attr["name"], "metric": head["metric"],
                      "groups": list(head.get("groups") or []),
                      "value": float(head["value"]), "interval": head["interval"],
                      "threshold": limit, "kind": head.get("kind"),
                      "flagged": [{"metric": d["metric"], "groups": d.get("groups"),
                                   "value": float(d["value"]), "interval": d["interval"],
                                   "threshold": lim} for d, lim, _ in crossing],
                      "small_groups_not_judged": small,
                      "min_group": section.get("min_group")},
        ))
    return out


#: The gap a proxy's ablation is reported on, in order of preference.
_HEADLINE_GAPS = ("demographic_parity_difference", "equalized_odds_difference",
                  "accuracy_difference", "mean_error_difference")


@rule("proxy_feature")
def _proxy_feature(inputs: FindingInputs, th: FindingThresholds) -> list[Finding]:
    out = []
    for section, attr in _fairness_attributes(inputs):
        flagged = {d["metric"] for d in attr.get("disparities") or []
                   if disparity_verdict(d, th, section.get("error_scale"))[0]}
        for p in attr.get("proxies") or []:
            if (float(p.get("auc", 0)) < th.proxy_min_auc
                    or float(p.get("attribution_share", 0)) < th.proxy_min_share):
                continue
            with_, without = p.get("disparity_with") or {}, p.get("disparity_without") or {}
            metric = next((m for m in _HEADLINE_GAPS if m in with_), None)
            carried = None
            gap_text = ""
            if metric is not None and with_.get(metric):
                carried = 1.0 - float(without[metric]) / float(with_[metric])
                gap_text = (f" Permuting it changes the {metric.replace('_', ' ')} from "
                            f"{float(with_[metric]):.2f} to {float(without[metric]):.2f}"
                            f" ({max(carried, 0.0):.0%} of the gap goes with it).")
            out.append(Finding(
                code="proxy_feature",
                severity="critical" if flagged and (carried or 0) >= 0.5 else "warning",
                message=(
                    f"Input {p['feature']!r} stands in for the sensitive attribute "
                    f"{attr['name']!r}: it alone predicts the group with AUC "
                    f"{float(p['auc']):.2f}, and it carries "
                    f"{float(p['attribution_share']):.0%} of the model's attribution."
                    + gap_text
                ),
                evidence={"feature": p["feature"], "attribute": attr["name"],
                          "auc": float(p["auc"]),
                          "mutual_information": p.get("mutual_information"),
                          "attribution_share": float(p["attribution_share"]),
                          "disparity_with": with_ or None,
                          "disparity_without": without or None,
                          "headline_metric": metric, "share_of_gap_carried": carried,
                          "disparities_flagged": sorted(flagged),
                          "thresholds": {"proxy_min_auc": th.proxy_min_auc,
                                         "proxy_min_share": th.proxy_min_share}},
            ))
    return out


@rule("disparity_drift")
def _disparity_drift(inputs: FindingInputs, th: FindingThresholds) -> list[Finding]:
    """One finding per sensitive attribute whose gaps moved since the previous audit by
    at least the threshold, beyond the noise (the two intervals do not overlap)."""
    section = inputs.report.get("fairness") or {}
    moved: dict[str, list[dict[str, Any]]] = {}
    for item in section.get("drift") or []:
        change = float(item["change"])
        if abs(change) < th.disparity_drift_min_change:
            continue
        a = item.get("previous_interval") or [None, None]
        b = item.get("interval") or [None, None]
        if None not in (*a, *b) and float(a[0]) <= float(b[1]) and float(b[0]) <= float(a[1]):
            continue  # the intervals overlap: the move is within the noise
        moved.setdefault(item["attribute"], []).append(item)
    out = []
    for attribute, items in moved.items():
        text = "; ".join(f"{i['metric'].replace('_', ' ')} {float(i['previous']):.2f} → "
                         f"{float(i['current']):.2f}" for i in items)
        out.append(Finding(
            code="disparity_drift", severity="warning",
            message=(f"The gaps between {attribute!r} groups moved since the previous "
                     f"audit: {text}."),
            evidence={"attribute": attribute, "metric": items[0]["metric"],
                      "changes": items, "threshold": th.disparity_drift_min_change,
                      "previous_audit": section.get("drift_previous_audit")},
        ))
    return out


def ndcg(previous: Sequence[Mapping[str, Any]], current: Sequence[Mapping[str, Any]],
         k: int | None = None) -> float:
    """nDCG of the current importance ranking, with the previous scores as relevance.

    1.0 means the current audit ranks features exactly as the previous one did.
    Uses scikit-learn's ``ndcg_score``.
    """
    from sklearn.metrics import ndcg_score

    names = [i["feature"] for i in previous]
    prev = {i["feature"]: max(float(i["score"]), 0.0) for i in previous}
    cur = {i["feature"]: max(float(i["score"]), 0.0) for i in current}
    common = [n for n in names if n in cur]
    if len(common) < 2:
        return 1.0 if common else 0.0
    rel = np.array([[prev[n] for n in common]])
    score = np.array([[cur[n] for n in common]])
    return float(ndcg_score(rel, score, k=k))


# ------------------------------------------------------------------ degenerate explanations


def degenerate_examples(values: np.ndarray, rel_tol: float = 1e-6) -> np.ndarray:
    """Per example: is its attribution zero or constant everywhere?

    ``values`` is ``(n, ...)``. An example is degenerate when the spread of its values
    (max - min) is at most ``rel_tol`` times the largest magnitude over all examples (or
    exactly zero everywhere): such a map ranks nothing and explains nothing.
    """
    v = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    if v.size == 0:
        return np.ones(len(v), dtype=bool)
    v = np.where(np.isfinite(v), v, 0.0)
    spread = v.max(axis=1) - v.min(axis=1)
    scale = float(np.abs(v).max())
    return spread <= rel_tol * scale if scale > 0 else np.ones(len(v), dtype=bool)


@rule("explanation_failed")
def _explanation_failed(inputs: FindingInputs, th: FindingThresholds) -> list[Finding]:
    source = inputs.attributions or inputs.image_maps or {}
    out = []
    for method, values in source.items():
        values = np.asarray(values)
        if len(values) == 0:
            continue
        flat = degenerate_examples(values)
        if not flat.all():
            continue
        zero = bool(np.all(np.nan_to_num(values) == 0))
        out.append(Finding(
            code="explanation_failed", severity="critical",
            message=(f"{method} produced {'all-zero' if zero else 'constant'} attributions "
                     f"for every one of the {len(values)} explained examples: it explains "
                     f"nothing about this model, and its checks and rankings are void. "
                     f"Typical causes: a saturated output, a baseline equal to the inputs, "
                     f"or a background drawn from the rows being explained."),
            evidence={"method": method, "examples": int(len(values)),
                      "degenerate_examples": int(flat.sum()), "all_zero": zero},
        ))
    return out


# ----------------------------------------------------------------------------- text, sequences


@rule("shortcut_token")
def _shortcut_token(inputs: FindingInputs, th: FindingThresholds) -> list[Finding]:
    """One token carries an outsized share of a class's attribution mass, and masking it
    changes the class's predictions (both measured in ``report["text"]["candidates"]``)."""
    section = inputs.report.get("text") or {}
    found = []
    for cand in section.get("candidates") or []:
        drop = cand.get("ablation_drop")
        if (cand["mass_share"] < th.token_min_mass_share or drop is None
                or drop < th.token_min_ablation_drop):
            continue
        label = _class_label(inputs, int(cand["class"]))
        found.append(Finding(
            code="shortcut_token", severity="critical",
            message=(f"The token {cand['token']!r} carries {cand['mass_share']:.0%} of the "
                     f"attribution towards class {label}, and masking it changes "
                     f"{drop:.0%} of that class's predictions on the rows that hold it: the "
                     f"model may decide by this token rather than by the text (check for a "
                     f"tag, source marker or label leak)."),
            evidence={"token": cand["token"], "token_id": int(cand["token_id"]),
                      "class": label, "class_index": int(cand["class"]),
                      "mass_share": float(cand["mass_share"]),
                      "ablation_drop": float(drop),
                      "frequency": float(cand.get("frequency", 0.0)),
                      "ablation_rows": int(cand.get("ablation_rows", 0))}))
    return found


@rule("shortcut_span")
def _shortcut_span(inputs: FindingInputs, th: FindingThresholds) -> list[Finding]:
    """One time span carries an outsized share of a class's attribution mass, and
    replacing it changes the class's predictions (``report["sequence"]["candidates"]``)."""
    section = inputs.report.get("sequence") or {}
    found = []
    for cand in section.get("candidates") or []:
        drop = cand.get("ablation_drop")
        if (cand["mass_share"] < th.span_min_mass_share or drop is None
                or drop < th.span_min_ablation_drop):
            continue
        label = _class_label(inputs, int(cand["class"]))
        a, b = (int(v) for v in cand["span"])
        found.append(Finding(
            code="shortcut_span", severity="critical",
            message=(f"Steps [{a}, {b}) carry {cand['mass_share']:.0%} of the attribution "
                     f"towards class {label}, and replacing them changes {drop:.0%} of that "
                     f"class's predictions: the model may decide by what happens in this "
                     f"span (an artefact such as a start-up spike) rather than by the "
                     f"signal."),
            evidence={"span": [a, b], "class": label, "class_index": int(cand["class"]),
                      "mass_share": float(cand["mass_share"]),
                      "ablation_drop": float(drop),
                      "ablation_rows": int(cand.get("ablation_rows", 0))}))
    return found
