"""Group fairness: how a model treats groups of people, and which inputs carry the gap.

The data names sensitive attributes that are **not** model inputs
(:attr:`explain.datasets.Dataset.sensitive`). For each attribute this module

1. turns the values into groups (:func:`group_labels`): text and few distinct numbers are
   groups as they are; a continuous attribute (age) is cut into quantile bins, and the
   bins go into the report;
2. measures per-group metrics with Fairlearn's :class:`~fairlearn.metrics.MetricFrame`
   (:func:`group_metrics`): count, selection rate, accuracy, true and false positive
   rates, precision and calibration error for classifiers; mean error and mean absolute
   error for regressors. Across groups it measures the demographic-parity difference and
   ratio (the four-fifths rule), the equalized-odds difference and the equal-opportunity
   difference, each with a bootstrap confidence interval. Groups smaller than the minimum
   count are reported but left out of the gaps, so a handful of rows cannot raise an
   alarm;
3. connects the gap to the attributions (:func:`attribution_by_group`,
   :func:`proxy_candidates`, :func:`ablate_feature`): mean attributions per group, the
   features whose attribution differs most, and proxies — inputs that predict the group
   (a depth-3 decision tree's cross-validated AUC on the audit data, with mutual
   information beside it) *and* carry a material share of the model's attribution.
   Permuting a proxy's column and measuring the gaps again shows how much of the gap it
   carries.

:func:`assess_fairness` runs all of it and returns the ``fairness`` section of
report.json; the finding rules ``group_disparity``, ``proxy_feature`` and
``disparity_drift`` (:mod:`explain.findings`) read that section.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from explain.errors import DataError

__all__ = [
    "DISPARITY_METRICS",
    "FairnessOptions",
    "ablate_feature",
    "assess_fairness",
    "attribution_by_group",
    "check_sensitive_data",
    "disparity_drift",
    "group_labels",
    "group_metrics",
    "proxy_candidates",
]

#: Across-group measures: name → (per-group metrics it reads, "difference" or "ratio",
#: what it means). Classifiers only; regressors use :data:`REGRESSION_DISPARITIES`.
DISPARITY_METRICS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "demographic_parity_difference": (
        ("selection_rate",), "difference",
        "largest gap in how often groups receive the favourable prediction"),
    "demographic_parity_ratio": (
        ("selection_rate",), "ratio",
        "lowest group selection rate over the highest (the four-fifths rule asks >= 0.8)"),
    "equalized_odds_difference": (
        ("tpr", "fpr"), "difference",
        "the larger of the true-positive-rate and false-positive-rate gaps"),
    "equal_opportunity_difference": (
        ("tpr",), "difference",
        "gap in true positive rate: qualified people approved at different rates"),
}
#: A multiclass model with no favourable class is compared on accuracy only.
ACCURACY_DISPARITIES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "accuracy_difference": (("accuracy",), "difference",
                            "largest gap in accuracy between groups"),
}
REGRESSION_DISPARITIES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "mean_error_difference": (
        ("mean_error",), "difference",
        "gap in mean signed error (over- or under-prediction) between groups"),
    "mae_difference": (
        ("mae",), "difference", "gap in mean absolute error between groups"),
}


@dataclass(frozen=True)
class FairnessOptions:
    """How the fairness section is measured (not the thresholds that judge it, which are
    :class:`explain.findings.FindingThresholds`).

    Attributes
    ----------
    bins
        Per attribute, explicit bin edges for a continuous attribute (e.g.
        ``{"age": [30, 45, 60]}``: four groups).
    n_bins
        Quantile bins for a continuous attribute without explicit edges.
    max_categories
        A numeric attribute with at most this many distinct values is categorical.
    positive_class
        The favourable class whose selection rate is compared (default: class 1 of a
        binary model; for a multiclass model, None compares accuracy only).
    n_boot
        Bootstrap replicates of the confidence intervals.
    confidence
        Two-sided level of the intervals.
    proxy_features
        At most this many features (those with the largest attribution) are scored as
        proxies, which bounds the cost on wide tables.
    ablation_repeats
        Permutations averaged when a proxy's column is ablated.
    """

    bins: Mapping[str, Sequence[float]] | None = None
    n_bins: int = 4
    max_categories: int = 10
    positive_class: int | None = None
    n_boot: int = 200
    confidence: float = 0.95
    proxy_features: int = 20
    ablation_repeats: int = 3

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | None) -> FairnessOptions:
        """Options from the audit config's ``fairness`` mapping; unknown keys raise."""
        if not data:
            return cls()
        if not isinstance(data, Mapping):
            raise TypeError(f"config fairness must be a mapping, got {data!r}")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fairness option(s) {sorted(unknown)}; known: "
                             f"{sorted(known)}")
        opts = cls(**dict(data))
        opts.check()
        return opts

    def check(self) -> None:
        def whole(name: str, lo: int, hi: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"config fairness.{name} must be a whole number in "
                                 f"{lo}..{hi}, got {v!r}")

        whole("n_bins", 2, 20)
        whole("max_categories", 2, 100)
        whole("n_boot", 20, 5000)
        whole("proxy_features", 1, 1000)
        whole("ablation_repeats", 1, 20)
        if self.positive_class is not None:
            whole("positive_class", 0, 10_000)
        c = self.confidence
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0.5 <= c < 1.0:
            raise ValueError(f"config fairness.confidence must be in [0.5, 1), got {c!r}")
        if self.bins is not None:
            if not isinstance(self.bins, Mapping):
                raise TypeError("config fairness.bins must map attribute names to edges")
            for k, edges in self.bins.items():
                if (isinstance(edges, str) or not isinstance(edges, Sequence) or not edges
                        or any(isinstance(e, bool) or not isinstance(e, (int, float))
                               for e in edges)
                        or list(edges) != sorted(set(edges))):
                    raise ValueError(f"config fairness.bins.{k} must be increasing numbers, "
                                     f"got {edges!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, Mapping) else v)
                for k, v in self.__dict__.items()}


# --------------------------------------------------------------------------- groups

#: Most groups one attribute may have: beyond this it is an identifier, not a group.
MAX_GROUPS = 50
#: Group labels longer than this are cut (they label report tables).
MAX_GROUP_LABEL = 80


def _fmt(v: float) -> str:
    return f"{v:g}"


def group_labels(values: np.ndarray, name: str, edges: Sequence[float] | None = None,
                 n_bins: int = 4, max_categories: int = 10
                 ) -> tuple[np.ndarray, dict[str, Any]]:
    """Groups of one sensitive attribute.

    Parameters
    ----------
    values
        ``(N,)`` strings or numbers (as :attr:`Dataset.sensitive` holds them).
    name
        The attribute's name, for messages.
    edges
        Inner bin edges for a numeric attribute; None bins a numeric attribute with more
        than ``max_categories`` distinct values at its quantiles.
    n_bins, max_categories
        As in :class:`FairnessOptions`.

    Returns
    -------
    labels, info
        ``(N,)`` string group labels, and ``{"binned": bool, "bins": [...] or None}``
        where a bin is ``{"group", "lower", "upper"}`` (lower inclusive, upper exclusive,
        None for open ends).
    """
    values = np.asarray(values)
    numeric = values.dtype.kind in "iuf"
    if not numeric or (edges is None and len(np.unique(values)) <= max_categories):
        if numeric and values.dtype.kind == "f" and np.all(values == np.round(values)):
            values = values.astype(np.int64)
        labels = values.astype(str)
        if labels.dtype.itemsize // 4 > MAX_GROUP_LABEL:
            labels = np.array([v if len(v) <= MAX_GROUP_LABEL else v[:MAX_GROUP_LABEL - 1]
                               + "…" for v in labels.tolist()])
        return labels, {"binned": False, "bins": None}
    v = values.astype(np.float64)
    if edges is None:
        qs = np.quantile(v, np.linspace(0, 1, n_bins + 1)[1:-1])
        # Round the edges to two significant digits so the report reads "30-45", not
        # "29.75-44.5"; duplicates (a lumpy distribution) collapse into one edge.
        edges = sorted({float(f"{q:.2g}") for q in qs if v.min() < float(f"{q:.2g}") <= v.max()})
    edges = [float(e) for e in edges]
    if not edges:
        return np.full(len(v), f"all {name}"), {"binned": True, "bins": [
            {"group": f"all {name}", "lower": None, "upper": None}]}
    bounds = [None, *edges, None]
    bins, names = [], []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        label = (f"< {_fmt(hi)}" if lo is None else f">= {_fmt(lo)}" if hi is None
                 else f"{_fmt(lo)}-{_fmt(hi)}")
        names.append(label)
        bins.append({"group": label, "lower": lo, "upper": hi})
    idx = np.searchsorted(np.asarray(edges), v, side="right")
    return np.asarray(names)[idx], {"binned": True, "bins": bins}


def sensitive_groups(sensitive: Mapping[str, np.ndarray], n_rows: int, min_group: int,
                     options: FairnessOptions) -> dict[str, tuple[np.ndarray, dict]]:
    """Every attribute's group labels, checked: one label per row, and at least two groups
    with ``min_group`` rows (otherwise no gap can be measured, and the caller is told).

    Raises
    ------
    DataError
        ``bad_sensitive``.
    """
    out = {}
    bins = dict(options.bins or {})
    unknown = set(bins) - set(sensitive)
    if unknown:
        raise DataError(f"config fairness.bins names {sorted(unknown)}, which the data does "
                        f"not hold (sensitive attributes: {', '.join(sensitive) or 'none'})",
                        code="bad_sensitive")
    for name, values in sensitive.items():
        values = np.asarray(values)
        if values.shape != (n_rows,):
            raise DataError(f"sensitive attribute {name!r} has shape {values.shape}; the "
                            f"data has {n_rows} rows", code="bad_sensitive")
        labels, info = group_labels(values, name, bins.get(name), options.n_bins,
                                    options.max_categories)
        groups, counts = np.unique(labels, return_counts=True)
        if len(groups) > MAX_GROUPS:
            raise DataError(
                f"sensitive attribute {name!r} has {len(groups)} distinct values; at most "
                f"{MAX_GROUPS} groups are compared (bin it with config fairness.bins, or "
                "merge rare values)", code="bad_sensitive")
        big = int((counts >= min_group).sum())
        if big < 2:
            shown = ", ".join(f"{g}: {c}" for g, c in zip(groups, counts, strict=True))
            raise DataError(
                f"sensitive attribute {name!r} needs at least two groups of {min_group} or "
                f"more rows to compare (it has {shown}); audit more rows, merge groups, or "
                f"lower the fairness_min_group threshold", code="bad_sensitive")
        out[name] = (labels, info)
    return out


def check_sensitive_data(dataset: Any, sensitive: Sequence[str] | str | None = None,
                         thresholds: Mapping[str, Any] | None = None,
                         fairness: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """The attributes an audit will group by, checked as the audit checks them: the named
    ones exist, and each has two groups with the minimum count (audit config
    ``thresholds.fairness_min_group``). Used before an audit starts, so a bad attribute
    is refused at once.

    Raises
    ------
    DataError
        ``bad_sensitive``.
    """
    from explain.datasets import select_sensitive
    from explain.findings import FindingThresholds

    chosen = dict(select_sensitive(dataset, sensitive).sensitive or {})
    if chosen:
        th = FindingThresholds.from_config(thresholds)
        sensitive_groups(chosen, dataset.n, th.fairness_min_group,
                         FairnessOptions.from_config(fairness))
    return chosen


# --------------------------------------------------------------------------- metrics


def _ece(y_true: np.ndarray, y_pred: np.ndarray, confidence: np.ndarray) -> float:
    from explain.evaluation import expected_calibration_error

    return expected_calibration_error(confidence, y_true == y_pred)


def _rate(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _counts(yt: np.ndarray, yp: np.ndarray, pos: int | None) -> dict[str, np.ndarray]:
    """Per-replicate counts from ``(..., n)`` label and prediction arrays."""
    c = {"n": np.full(yt.shape[:-1], yt.shape[-1], dtype=np.float64),
         "correct": (yt == yp).sum(axis=-1).astype(np.float64)}
    if pos is not None:
        t, p = yt == pos, yp == pos
        c.update(sel=p.sum(axis=-1), tp=(t & p).sum(axis=-1), fp=(~t & p).sum(axis=-1),
                 actual_pos=t.sum(axis=-1), actual_neg=(~t).sum(axis=-1))
    return c


def _rates_from_counts(c: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {"accuracy": _rate(c["correct"], c["n"])}
    if "sel" in c:
        out.update(selection_rate=_rate(c["sel"], c["n"]),
                   tpr=_rate(c["tp"], c["actual_pos"]),
                   fpr=_rate(c["fp"], c["actual_neg"]),
                   precision=_rate(c["tp"], c["sel"]))
    return out


_ALL_DISPARITIES = {**DISPARITY_METRICS, **ACCURACY_DISPARITIES, **REGRESSION_DISPARITIES}


def _combine(metric: str, per_group: Mapping[str, np.ndarray]) -> np.ndarray:
    """The across-group measure from per-group metric arrays ``(..., G)`` (a group whose
    rate is undefined, e.g. no positives for the TPR, is skipped)."""
    reads, how, _ = _ALL_DISPARITIES[metric]
    spans = []
    for m in reads:
        v = per_group[m]
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if how == "ratio":
                hi = np.nanmax(v, axis=-1)
                spans.append(np.where(hi > 0, np.nanmin(v, axis=-1) / np.where(hi > 0, hi, 1),
                                      1.0))
            else:
                spans.append(np.nanmax(v, axis=-1) - np.nanmin(v, axis=-1))
    return np.maximum.reduce(spans) if how == "difference" else spans[0]


def group_metrics(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, *,
                  task: str, min_group: int, confidence: np.ndarray | None = None,
                  positive_class: int | None = None, n_boot: int = 200,
                  level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Per-group metrics (Fairlearn MetricFrame) and across-group gaps with intervals.

    Parameters
    ----------
    y_true, y_pred
        ``(N,)`` class indices, or floats for ``task="regression"``.
    groups
        ``(N,)`` group labels.
    task
        ``binary``, ``multiclass`` or ``regression``.
    min_group
        Groups with fewer rows are reported (``"small": true``) but left out of the gaps.
    confidence
        ``(N,)`` top-1 confidence of classifiers (for the per-group calibration error).
    positive_class
        The favourable class (selection rate, TPR, FPR, precision); None means class 1
        for binary models and "accuracy only" for multiclass ones.
    n_boot, level, seed
        Bootstrap replicates, two-sided interval level, and their seed.

    Returns
    -------
    dict
        ``per_group``: list of ``{group, count, small, <metric>: value, interval_metric,
        interval}`` (``interval``: the percentile interval of the group's selection rate,
        or accuracy / MAE when there is no favourable class);
        ``disparities``: list of ``{metric, kind, value, interval, groups, description}``
        over the groups with at least ``min_group`` rows (``groups`` is the pair the
        point value comes from: highest and lowest); ``positive_class``.

    Notes
    -----
    The point values come from Fairlearn. The intervals are a bootstrap written here
    because Fairlearn's own (``MetricFrame(n_boot=...)``) resamples all rows together,
    so a small group's size changes between replicates and can vanish, and it builds a
    pandas frame per replicate; resampling within each group keeps every group's size
    as observed and needs only counts, ~100x faster.
    """
    from fairlearn.metrics import (
        MetricFrame,
        count,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score, mean_absolute_error, precision_score

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    groups = np.asarray(groups).astype(str)  # labels are text in the report
    regression = task == "regression"
    pos = None
    if not regression:
        y_true, y_pred = y_true.astype(np.int64), y_pred.astype(np.int64)
        pos = positive_class if positive_class is not None else (1 if task == "binary"
                                                                   else None)
    metrics: dict[str, Callable] = {"count": count}
    params: dict[str, dict[str, Any]] = {}
    if regression:
        metrics["mean_error"] = lambda t, p: float(np.mean(np.asarray(p) - np.asarray(t)))
        metrics["mae"] = mean_absolute_error
        metrics["mean_prediction"] = lambda t, p: float(np.mean(p))
    else:
        metrics["accuracy"] = accuracy_score
        if pos is not None:
            # One favourable class against the rest (Fairlearn's rates take two labels).
            def ovr(fn):
                return lambda t, p: fn((np.asarray(t) == pos).astype(int),
                                       (np.asarray(p) == pos).astype(int))

            metrics["selection_rate"] = ovr(lambda t, p: selection_rate(t, p, pos_label=1))
            metrics["tpr"] = ovr(lambda t, p: true_positive_rate(t, p, pos_label=1))
            metrics["fpr"] = ovr(lambda t, p: false_positive_rate(t, p, pos_label=1))
            metrics["precision"] = ovr(lambda t, p: precision_score(t, p,
                                                                    zero_division=np.nan))
        if confidence is not None:
            metrics["ece"] = _ece
            params["ece"] = {"confidence": np.asarray(confidence, dtype=np.float64)}
    with warnings.catch_warnings():
        # A group with no positives makes the TPR 0/0; the report shows it as empty.
        warnings.simplefilter("ignore")
        frame = MetricFrame(metrics=metrics, y_true=y_true, y_pred=y_pred,
                            sensitive_features=groups, sample_params=params or None)
    by_group = frame.by_group
    per_group = []
    for g in by_group.index:
        row = {"group": str(g), "count": int(by_group.loc[g, "count"])}
        row["small"] = row["count"] < min_group
        for m in metrics:
            if m == "count":
                continue
            v = float(by_group.loc[g, m])
            row[m] = None if not np.isfinite(v) else v
        per_group.append(row)

    # Every group's headline rate with its own percentile interval (its own stream, so the
    # gaps' intervals below do not depend on it): a small group shows how wide it is.
    headline = "mae" if regression else "selection_rate" if pos is not None else "accuracy"
    spread = _bootstrap(y_true, y_pred, groups, [r["group"] for r in per_group], pos,
                        regression, n_boot, seed + 7919)
    half = (1.0 - level) / 2
    for j, row in enumerate(per_group):
        reps = spread[headline][:, j]
        reps = reps[np.isfinite(reps)]
        row["interval_metric"] = headline
        row["interval"] = ([float(np.quantile(reps, half)), float(np.quantile(reps, 1 - half))]
                           if len(reps) else None)

    eligible = [r["group"] for r in per_group if not r["small"]]
    table = (REGRESSION_DISPARITIES if regression
             else ACCURACY_DISPARITIES if pos is None else DISPARITY_METRICS)
    disparities = []
    if len(eligible) >= 2:
        point = {m: np.array([by_group.loc[g, m] for g in eligible], dtype=np.float64)
                 for m in metrics if m != "count"}
        boot = _bootstrap(y_true, y_pred, groups, eligible, pos, regression, n_boot, seed)
        alpha = (1.0 - level) / 2
        for name, (reads, how, text) in table.items():
            value = float(_combine(name, point))
            reps = _combine(name, boot)
            reps = reps[np.isfinite(reps)]
            lo, hi = None, None
            if len(reps) and np.isfinite(value):
                # The basic (reverse-percentile) interval, 2θ - q: a largest-minus-smallest
                # statistic is biased upwards (four equal groups of 100 rows already show
                # a selection-rate range of ~0.1), and its replicates more so; reflecting
                # the quantiles around the estimate removes that bias, which the plain
                # percentile interval keeps (it flagged an unrelated age attribute on the
                # clean lending twin).
                q_lo, q_hi = np.quantile(reps, [alpha, 1 - alpha])
                lo, hi = float(2 * value - q_hi), float(2 * value - q_lo)
                if how == "ratio":
                    lo, hi = max(lo, 0.0), min(hi, 1.0)
                else:
                    lo = max(lo, 0.0)
            main = point[reads[0]]
            if how == "difference" and len(reads) > 1:
                main = max((point[m] for m in reads),
                           key=lambda v: np.nanmax(v) - np.nanmin(v))
            hi_g, lo_g = eligible[int(np.nanargmax(main))], eligible[int(np.nanargmin(main))]
            disparities.append({
                "metric": name, "kind": how,
                "value": None if not np.isfinite(value) else value,
                "interval": [lo, hi], "groups": [hi_g, lo_g], "description": text,
            })
    return {"per_group": per_group, "disparities": disparities,
            "eligible_groups": eligible, "positive_class": pos}


def _bootstrap(y_true, y_pred, groups, eligible, pos, regression, n_boot, seed
               ) -> dict[str, np.ndarray]:
    """Per-group metrics ``(n_boot, G)`` over replicates resampled within each group."""
    rng = np.random.default_rng([seed, 12])
    cols: dict[str, list[np.ndarray]] = {}
    for g in eligible:
        idx = np.flatnonzero(groups == g)
        # Replicates in blocks of at most ~4M drawn rows, so memory stays bounded on
        # large audits (200 replicates of a 100k-row group would be 20M indices at once).
        step = max(1, min(n_boot, _BOOT_BLOCK // max(len(idx), 1)))
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, n_boot, step):
            reps = min(step, n_boot - start)
            draw = idx[rng.integers(0, len(idx), size=(reps, len(idx)))]
            yt, yp = y_true[draw], y_pred[draw]
            if regression:
                err = yp.astype(np.float64) - yt.astype(np.float64)
                vals = {"mean_error": err.mean(axis=1), "mae": np.abs(err).mean(axis=1)}
            else:
                vals = _rates_from_counts(_counts(yt, yp, pos))
            for k, v in vals.items():
                parts.setdefault(k, []).append(np.asarray(v, dtype=np.float64))
        for k, v in parts.items():
            cols.setdefault(k, []).append(np.concatenate(v))
    return {k: np.stack(v, axis=1) for k, v in cols.items()}


_BOOT_BLOCK = 4_000_000


def point_disparities(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray,
                      eligible: Sequence[str], task: str, positive_class: int | None
                      ) -> dict[str, float]:
    """The across-group measures without intervals (for ablations: many cheap calls)."""
    regression = task == "regression"
    per: dict[str, list[float]] = {}
    for g in eligible:
        sel = groups == g
        yt, yp = np.asarray(y_true)[sel], np.asarray(y_pred)[sel]
        if regression:
            err = yp.astype(np.float64) - yt.astype(np.float64)
            vals = {"mean_error": err.mean(), "mae": np.abs(err).mean()}
        else:
            vals = _rates_from_counts(_counts(yt[None], yp[None], positive_class))
        for k, v in vals.items():
            per.setdefault(k, []).append(float(np.asarray(v).reshape(-1)[0]))
    arrays = {k: np.asarray(v) for k, v in per.items()}
    table = (REGRESSION_DISPARITIES if regression
             else ACCURACY_DISPARITIES if positive_class is None else DISPARITY_METRICS)
    return {n: float(_combine(n, arrays)) for n in table}


# --------------------------------------------------------------------------- attributions


def attribution_by_group(values: np.ndarray, groups: np.ndarray, feature_names: Sequence[str],
                         eligible: Sequence[str], top: int = 5) -> dict[str, Any]:
    """Mean signed attribution per feature in each group, and the features whose mean
    attribution differs most between the (large enough) groups.

    Parameters
    ----------
    values
        ``(n, F)`` signed attributions of ``n`` rows.
    groups
        ``(n,)`` group labels of those rows.
    """
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    per_group = {}
    means = {}
    for g in sorted(set(groups.tolist())):
        sel = groups == g
        means[g] = values[sel].mean(axis=0)
        per_group[str(g)] = {"rows": int(sel.sum()), "mean": [
            {"feature": str(f), "mean": float(m), "mean_abs": float(a)}
            for f, m, a in zip(feature_names, means[g], np.abs(values[sel]).mean(axis=0),
                               strict=True)]}
    present = [g for g in eligible if g in means]
    diffs = []
    if len(present) >= 2:
        stack = np.stack([means[g] for g in present])
        spread = stack.max(axis=0) - stack.min(axis=0)
        scale = float(np.abs(values).mean(axis=0).sum()) or 1.0
        for j in np.argsort(-spread)[:top]:
            diffs.append({"feature": str(feature_names[j]), "difference": float(spread[j]),
                          "relative": float(spread[j] / scale),
                          "highest": str(present[int(np.argmax(stack[:, j]))]),
                          "lowest": str(present[int(np.argmin(stack[:, j]))])})
    return {"per_group": per_group, "largest_differences": diffs}


def proxy_candidates(x: np.ndarray, groups: np.ndarray, eligible: Sequence[str],
                     feature_names: Sequence[str], shares: Mapping[str, float],
                     max_features: int = 20, seed: int = 0) -> list[dict[str, Any]]:
    """How well each input predicts the group, beside its attribution share.

    Predictiveness is the cross-validated (3-fold) ROC AUC of a depth-3 decision tree that
    sees only that input (one-vs-rest macro average for more than two groups), so a
    non-monotone relation counts too; mutual information (scikit-learn's estimator) is
    reported beside it. Only rows of groups with enough rows are used, and only the
    ``max_features`` inputs with the largest attribution shares are scored.

    Returns
    -------
    list of dict
        ``{feature, auc, mutual_information, attribution_share}``, most predictive first.
    """
    from sklearn.feature_selection import mutual_info_classif
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.tree import DecisionTreeClassifier

    keep = np.isin(groups, list(eligible))
    xs, gs = np.asarray(x, dtype=np.float64)[keep], groups[keep]
    classes = sorted(set(gs.tolist()))
    ranked = sorted(range(len(feature_names)),
                    key=lambda j: -float(shares.get(str(feature_names[j]), 0.0)))[:max_features]
    if len(classes) < 2 or not ranked:
        return []
    folds = min(3, int(min(np.sum(gs == c) for c in classes)))
    if folds < 2:
        return []
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    mi = mutual_info_classif(xs[:, ranked], gs, random_state=seed)
    out = []
    for j, m in zip(ranked, mi, strict=True):
        tree = DecisionTreeClassifier(max_depth=3, min_samples_leaf=5, random_state=seed)
        proba = cross_val_predict(tree, xs[:, [j]], gs, cv=cv, method="predict_proba")
        if len(classes) == 2:
            auc = roc_auc_score(gs == classes[1], proba[:, 1])
        else:
            auc = roc_auc_score(gs, proba, multi_class="ovr", average="macro",
                                labels=classes)
        out.append({"feature": str(feature_names[j]), "auc": float(auc),
                    "mutual_information": float(m),
                    "attribution_share": float(shares.get(str(feature_names[j]), 0.0))})
    out.sort(key=lambda r: -r["auc"])
    return out


def ablate_feature(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, column: int,
                   y_true: np.ndarray, groups: np.ndarray, eligible: Sequence[str], task: str,
                   positive_class: int | None, repeats: int = 3, seed: int = 0
                   ) -> dict[str, float]:
    """The across-group measures after permuting one input column (averaged over
    ``repeats`` permutations): the gap that remains when the model cannot read it.

    ``predict(x)`` returns predicted classes (or regression values) ``(N,)``.
    """
    rng = np.random.default_rng([seed, 13, column])
    runs: list[dict[str, float]] = []
    for _ in range(repeats):
        xp = np.array(x, copy=True)
        xp[:, column] = xp[rng.permutation(len(xp)), column]
        runs.append(point_disparities(y_true, predict(xp), groups, eligible, task,
                                      positive_class))
    return {k: float(np.nanmean([r[k] for r in runs])) for k in runs[0]}


# --------------------------------------------------------------------------- the section


def assess_fairness(
    *,
    sensitive: Mapping[str, np.ndarray],
    x: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    task: str,
    predict: Callable[[np.ndarray], np.ndarray] | None,
    kind: str,
    thresholds: Any,
    options: FairnessOptions | None = None,
    confidence: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    feature_names: Sequence[str] | None = None,
    importance: Sequence[Mapping[str, Any]] | None = None,
    attribution_rows: np.ndarray | None = None,
    attribution_values: np.ndarray | None = None,
    attribution_method: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``fairness`` section of report.json.

    Parameters
    ----------
    sensitive
        Attribute name → ``(N,)`` values, one per row of ``x``.
    x, y_true, y_pred
        Every audited row, its label and the model's prediction (class index or value).
    task
        ``binary``, ``multiclass`` or ``regression``.
    predict
        ``predict(x) → (N,)`` predictions, for the proxy ablation (None skips it).
    kind
        The model's input kind; proxies and attributions by group need ``tabular``.
    thresholds
        :class:`explain.findings.FindingThresholds` (minimum group size, proxy cut-offs).
    confidence
        ``(N,)`` top-1 confidence (classifiers).
    importance
        The global importance items ``{feature, score}`` (tables).
    attribution_rows, attribution_values
        Rows (indices into ``x``) with their signed attributions ``(n, F)``.
    """
    options = options or FairnessOptions()
    min_group = int(thresholds.fairness_min_group)
    if (options.positive_class is not None and task != "regression" and class_names
            and not 0 <= options.positive_class < len(class_names)):
        raise ValueError(f"config fairness.positive_class is {options.positive_class}, but "
                         f"the model has {len(class_names)} classes (0..{len(class_names) - 1})")
    n = len(x)
    labelled = sensitive_groups(sensitive, n, min_group, options)
    total = sum(max(float(i["score"]), 0.0) for i in importance or []) or 1.0
    shares = {str(i["feature"]): max(float(i["score"]), 0.0) / total
              for i in importance or []}
    pos_name = None
    notes: list[str] = []
    if kind != "tabular":
        notes.append("proxy detection and attributions by group need tabular inputs; "
                     "this model's inputs are " + kind)
    attributes = []
    for name, (groups, info) in labelled.items():
        gm = group_metrics(y_true, y_pred, groups, task=task, min_group=min_group,
                           confidence=confidence, positive_class=options.positive_class,
                           n_boot=options.n_boot, level=options.confidence, seed=seed)
        if info["bins"]:  # bins read in their order, not as sorted text ("< 33" last)
            order = {b["group"]: i for i, b in enumerate(info["bins"])}
            gm["per_group"].sort(key=lambda r: order.get(r["group"], len(order)))
        pos = gm["positive_class"]
        if pos is not None and class_names is not None and 0 <= pos < len(class_names):
            pos_name = str(class_names[pos])
        eligible = gm["eligible_groups"]
        entry: dict[str, Any] = {
            "name": name, "binned": info["binned"], "bins": info["bins"],
            "groups": gm["per_group"], "disparities": gm["disparities"],
            "attribution": None, "proxies": [],
        }
        if (kind == "tabular" and feature_names is not None and attribution_rows is not None
                and attribution_values is not None):
            rows = np.asarray(attribution_rows)
            entry["attribution"] = {
                "method": attribution_method, "rows": int(len(rows)),
                **attribution_by_group(attribution_values, groups[rows], feature_names,
                                       eligible)}
        if kind == "tabular" and feature_names is not None and shares:
            cands = proxy_candidates(x.reshape(n, -1), groups, eligible, feature_names,
                                     shares, options.proxy_features, seed)
            base = point_disparities(y_true, y_pred, groups, eligible, task, pos)
            for c in cands:
                c["is_candidate"] = bool(c["auc"] >= thresholds.proxy_min_auc
                                         and c["attribution_share"]
                                         >= thresholds.proxy_min_share)
                c["disparity_with"], c["disparity_without"] = None, None
                if c["is_candidate"] and predict is not None:
                    j = list(map(str, feature_names)).index(c["feature"])
                    c["disparity_with"] = base
                    c["disparity_without"] = ablate_feature(
                        predict, x.reshape(n, -1), j, y_true, groups, eligible, task, pos,
                        options.ablation_repeats, seed)
            entry["proxies"] = cands
        attributes.append(entry)
    return {
        "attributes": attributes,
        "task": task,
        "positive_class": pos_name,
        "min_group": min_group,
        "bootstrap": {"replicates": options.n_boot, "confidence": options.confidence,
                      "resampling": "within each group"},
        "options": options.to_dict(),
        "notes": notes,
        "drift": None,
    }


def disparity_drift(previous: Mapping[str, Any] | None, current: Mapping[str, Any]
                    ) -> list[dict[str, Any]] | None:
    """Per attribute and measure, the gap now against the previous audit's gap.

    Returns None when the previous report has no fairness section.
    """
    if not previous or not previous.get("attributes"):
        return None
    prev = {(a["name"], d["metric"]): d for a in previous["attributes"]
            for d in a.get("disparities") or []}
    out = []
    for a in current.get("attributes") or []:
        for d in a.get("disparities") or []:
            p = prev.get((a["name"], d["metric"]))
            if p is None or p.get("value") is None or d.get("value") is None:
                continue
            out.append({"attribute": a["name"], "metric": d["metric"],
                        "previous": float(p["value"]), "current": float(d["value"]),
                        "change": float(d["value"]) - float(p["value"]),
                        "previous_interval": p.get("interval"),
                        "interval": d.get("interval")})
    return out
