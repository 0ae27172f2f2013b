"""The audit pipeline: load → validate → evaluate → choose examples → attribute → assess →
findings → drift → :class:`~explain.result.AuditResult`.

::

    from explain.audit import run_audit
    result = run_audit("model.keras", "test.npz", {"samples": 24, "seed": 0})
    result.report["findings"]          # what a reviewer should worry about
    result.save("audit/")              # report.json + arrays.npz

The pipeline is three functions that a service can run in different processes:
:func:`prepare` (load, validate, evaluate, choose the examples, fix every method's
options) makes a serialisable :class:`AuditPlan`; :func:`attribute_chunk` attributes one
chunk of examples with one method (:meth:`AuditPlan.chunks` lists them; each chunk seeds
itself, so chunks can run anywhere, in any order); :func:`assess` turns the plan and the
chunks into the result. :func:`run_audit` runs all three in this process and gives the
same result.

Every stage reports to an optional ``progress(stage, fraction)`` callback, where
``fraction`` is the share of the whole audit done so far (0 → 1) and ``stage`` one of
:data:`STAGES`. The audit is deterministic for a given ``seed`` (everything except the
``generated_at`` timestamp and the ``timings`` section).

What the report contains, and how each part is measured
-------------------------------------------------------
performance
    :func:`explain.evaluation.evaluate_model` on **every** row given, so the numbers
    describe the whole sample, not the few examples explained one by one.
examples
    ``samples`` rows explained one by one, chosen (seeded) to show the reviewer the
    model's weak spots first: the most confident mistakes (a quarter of the budget), then
    the least confident predictions (an eighth), then rows drawn evenly from each class
    (regression: the largest errors, then rows drawn across the range of predictions).
    Every attribution explains the model's **predicted** class (output 0 for a single
    sigmoid unit or a regression head).
global_importance
    Tables: mean ``|attribution|`` per feature over up to ``global_rows`` rows, with a
    cheap method (Integrated Gradients when configured; its baseline is the mean row of
    the data, so "importance" means "moves the output away from the average row").
    Images: the share of attribution mass in each cell of a 4×4 grid, averaged over the
    explained examples, for the first configured method in the order Grad-CAM, IG, SHAP.
explanation_quality
    Per method, a list of checks ``{metric, category, score, threshold, higher_is_better,
    passed}``:

    - ``completeness_gap`` (IG, SHAP): ``mean |sum(attr) - (f(x) - f(baseline))|``
      divided by ``mean |f(x) - f(baseline)|`` over the examples, against the
      ``completeness_tolerance`` of the finding thresholds (5 %). The per-example
      relative gaps (mean and max) are kept beside it.
    - ``deletion_auc`` / ``insertion_auc``: the causal-fidelity AUCs
      (:class:`~explain.metrics.Deletion`), where the *threshold* is the AUC of random
      feature orders on the same examples: a method passes when it beats chance.
      Removed features take the mean row (tables) or mean image (images) of the data.
    - ``randomization_similarity`` (gradient methods): the
      :class:`~explain.metrics.ModelParameterRandomization` score on a small subset,
      randomizing the top ``randomization_layers`` layers one by one and then all.
    - ``max_sensitivity`` (only when ``quality["stability"]``; gradient methods).
agreement
    For each pair of methods: the mean per-example Spearman correlation of their maps
    (``local_rank_correlation``) and the Spearman correlation of their global importance
    (``global_rank_correlation``; images: of the 8×8 region shares, since pixel-level
    ranks of a smooth Grad-CAM map and a speckled gradient map are not comparable).
findings
    :func:`explain.findings.run_rules`; the image shortcut rule reads every method's
    per-example maps reduced to ``(n, H, W)`` non-negative importance, grouped by
    predicted class.
drift
    Against a previous audit: nDCG of the global importance and per-feature changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import platform
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from explain.errors import DataError
from explain.result import AuditResult, to_jsonable

__all__ = [
    "CHUNK_ROWS",
    "DEFAULT_METHODS",
    "QUALITY_CHECKS",
    "STAGES",
    "AuditConfig",
    "AuditPlan",
    "assess",
    "attribute_chunk",
    "choose_examples",
    "prepare",
    "run_audit",
    "stage_span",
]

#: Pipeline stages in order, with the share of a typical audit's time each takes (used to
#: turn progress within a stage into progress of the whole audit).
STAGES: tuple[tuple[str, float], ...] = (
    ("load_model", 0.04),
    ("load_data", 0.02),
    ("evaluate", 0.04),
    ("select_examples", 0.01),
    ("attributions", 0.40),
    ("global_importance", 0.06),
    ("quality", 0.38),
    ("drift", 0.01),
    ("findings", 0.02),
    ("assemble", 0.02),
)
_STAGE_NAMES = tuple(name for name, _ in STAGES)

#: Methods run when the config names none, by input kind.
DEFAULT_METHODS: dict[str, tuple[str, ...]] = {
    "image": ("integrated_gradients", "grad_cam", "shap"),
    "tabular": ("integrated_gradients", "shap"),
}

#: Quality checks that can be switched on or off (``config["quality"]``) and their defaults.
QUALITY_CHECKS: dict[str, bool] = {
    "completeness": True,
    "faithfulness": True,
    "randomization": True,
    "agreement": True,
    "stability": False,
}

#: Image grids: the region grid of global importance, and the finer one of agreement.
IMAGE_IMPORTANCE_GRID = (4, 4)
IMAGE_AGREEMENT_GRID = (8, 8)

#: Coalitions per image for SHAP's kernel estimator when the config does not say.
IMAGE_SHAP_SAMPLES = 512

#: A training sidecar larger than this is not a sidecar; it is left out of the report.
MAX_SIDECAR_BYTES = 1_000_000

Progress = Callable[[str, float], None]


def stage_span(stage: str) -> tuple[float, float]:
    """``(start, end)`` of ``stage`` on the 0 → 1 scale of the progress callback."""
    start = 0.0
    for name, weight in STAGES:
        if name == stage:
            return start, min(1.0, start + weight)
        start += weight
    raise ValueError(f"unknown audit stage {stage!r}; stages: {', '.join(_STAGE_NAMES)}")


# --------------------------------------------------------------------------- configuration


def _int_option(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"config {name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise ValueError(f"config {name} must be at least {minimum}{upper}, got {value}")
    return int(value)


@dataclass(frozen=True)
class AuditConfig:
    """What an audit computes and how hard it tries.

    Attributes
    ----------
    methods
        Attribution methods (names from :data:`explain.METHODS`); None picks
        :data:`DEFAULT_METHODS` for the input kind (dropping Grad-CAM for an image model
        without a spatial layer).
    samples
        Examples explained one by one (and on which quality is measured).
    background
        Background rows of tabular SHAP, drawn from the audited data. Image SHAP masks
        regions with the data's mean colour instead (one background image), which keeps
        its cost independent of this number.
    ig_steps
        Integration steps of Integrated Gradients.
    shap_samples
        Coalitions per row for SHAP's kernel and permutation estimators. None: 512 for
        images (their 64 grid regions), the method's default (``2M + 2048`` for M
        players) for tables.
    global_rows
        Rows the global importance of tables is computed on (with a gradient method).
    sanity_rows
        Examples the randomization (and stability) checks run on.
    randomization_layers
        Top layers randomized one by one before the final all-layer step.
    faithfulness_steps
        Points of the deletion and insertion curves.
    batch_size
        Rows per forward pass (SHAP uses 16× this: its rows are tiny perturbations).
    seed
        Seeds the choice of examples, backgrounds, random orders and weight shuffles.
    thresholds
        Overrides of :class:`explain.findings.FindingThresholds`.
    quality
        Switches of the quality checks (see :data:`QUALITY_CHECKS`).
    method_options
        Per-method option overrides, e.g. ``{"shap": {"estimator": "permutation"}}``.
    """

    methods: tuple[str, ...] | None = None
    samples: int = 24
    background: int = 50
    ig_steps: int = 32
    shap_samples: int | None = None
    global_rows: int = 200
    sanity_rows: int = 8
    randomization_layers: int = 3
    faithfulness_steps: int = 10
    batch_size: int = 256
    seed: int = 0
    thresholds: dict[str, float] = field(default_factory=dict)
    quality: dict[str, bool] = field(default_factory=lambda: dict(QUALITY_CHECKS))
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from explain.attributions.registry import METHODS
        from explain.findings import FindingThresholds

        if self.methods is not None:
            methods = self.methods
            if isinstance(methods, str) or not isinstance(methods, Sequence):
                raise TypeError(f"config methods must be a list of method names, got {methods!r}")
            if not methods:
                raise ValueError("config methods is empty; name at least one method")
            unknown = [m for m in methods if m not in METHODS]
            if unknown:
                raise ValueError(f"unknown method(s) {unknown}; known methods: "
                                 f"{', '.join(METHODS)}")
            if len(set(methods)) != len(methods):
                raise ValueError(f"config methods lists a method twice: {list(methods)}")
            object.__setattr__(self, "methods", tuple(str(m) for m in methods))
        _int_option("samples", self.samples, 2, 10_000)
        _int_option("background", self.background, 1, 10_000)
        _int_option("ig_steps", self.ig_steps, 2, 4096)
        if self.shap_samples is not None:
            _int_option("shap_samples", self.shap_samples, 16, 1_000_000)
        _int_option("global_rows", self.global_rows, 1, 1_000_000)
        _int_option("sanity_rows", self.sanity_rows, 2, 10_000)
        _int_option("randomization_layers", self.randomization_layers, 0, 1000)
        _int_option("faithfulness_steps", self.faithfulness_steps, 2, 1000)
        _int_option("batch_size", self.batch_size, 1, 1_000_000)
        _int_option("seed", self.seed, 0, 2**32 - 1)
        if not isinstance(self.thresholds, Mapping):
            raise TypeError(f"config thresholds must be a mapping, got {self.thresholds!r}")
        FindingThresholds.from_config(self.thresholds)  # raises on unknown names / types
        if not isinstance(self.quality, Mapping):
            raise TypeError(f"config quality must be a mapping, got {self.quality!r}")
        unknown = set(self.quality) - set(QUALITY_CHECKS)
        if unknown:
            raise ValueError(f"unknown quality check(s) {sorted(unknown)}; known: "
                             f"{sorted(QUALITY_CHECKS)}")
        for k, v in self.quality.items():
            if not isinstance(v, bool):
                raise TypeError(f"config quality.{k} must be true or false, got {v!r}")
        object.__setattr__(self, "quality", {**QUALITY_CHECKS, **dict(self.quality)})
        if not isinstance(self.method_options, Mapping):
            raise TypeError("config method_options must map method names to options")
        for name, opts in self.method_options.items():
            if name not in METHODS:
                raise ValueError(f"method_options names unknown method {name!r}")
            if not isinstance(opts, Mapping):
                raise TypeError(f"method_options.{name} must be a mapping of options")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AuditConfig:
        """A config from a JSON-like mapping (an API request, a CLI's options).

        Raises
        ------
        ValueError
            For an unknown key or an out-of-range value.
        TypeError
            For a value of the wrong type.
        """
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise TypeError(f"the audit config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown audit config key(s) {sorted(unknown)}; known: "
                             f"{sorted(known)}")
        values = dict(data)
        if values.get("methods") is not None and isinstance(values["methods"], list):
            values["methods"] = tuple(values["methods"])
        for key in ("thresholds", "quality", "method_options"):
            if values.get(key) is None:
                values.pop(key, None)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON types (what report.json records under ``config``)."""
        out = dataclasses.asdict(self)
        out["methods"] = None if self.methods is None else list(self.methods)
        return to_jsonable(out)


# --------------------------------------------------------------------------- progress


class _Stages:
    """Calls the progress callback and times each stage."""

    def __init__(self, callback: Progress | None):
        self.callback = callback
        self.timings: dict[str, float] = {}
        self.stage: str | None = None
        self.t0 = 0.0

    def start(self, stage: str) -> None:
        self._close()
        self.stage, self.t0 = stage, time.perf_counter()
        self.step(0.0)

    def step(self, within: float) -> None:
        if self.callback is None or self.stage is None:
            return
        lo, hi = stage_span(self.stage)
        self.callback(self.stage, lo + (hi - lo) * min(1.0, max(0.0, float(within))))

    def finish(self) -> dict[str, float]:
        if self.stage is not None:
            self.step(1.0)
        self._close()
        return self.timings

    def _close(self) -> None:
        if self.stage is not None:
            self.timings[self.stage] = round(time.perf_counter() - self.t0, 4)
            self.stage = None


# --------------------------------------------------------------------------- example choice


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


# --------------------------------------------------------------------------- helpers


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


def _read_sidecar(model_path: Path) -> dict[str, Any] | None:
    """The training sidecar next to the model (``M.keras.json`` or ``M.json``), if any."""
    for candidate in (model_path.with_name(model_path.name + ".json"),
                      model_path.with_suffix(".json")):
        if candidate == model_path or not candidate.is_file():
            continue
        if candidate.stat().st_size > MAX_SIDECAR_BYTES:
            return None
        try:
            data = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            # A sidecar is a courtesy; an unreadable one must not fail the audit.
            return None
        return to_jsonable(data) if isinstance(data, dict) else None
    return None


def _model_card(spec: Any, name: str, sidecar: dict[str, Any] | None) -> dict[str, Any]:
    task = "regression" if spec.task == "regression" else "classification"
    return {
        "name": name,
        "sha256": spec.sha256,
        "format": spec.format,
        "input_shape": [None, *spec.input_shape],
        "output_shapes": [list(h.shape) for h in spec.outputs],
        "task": task,
        "task_detail": spec.task,
        "final_activation": spec.final_activation,
        "parameter_count": int(spec.n_params),
        "input_kind": spec.input_kind,
        "keras_version": spec.keras_version,
        "file_size": int(spec.file_size),
        "layers": [{"name": layer.name, "class_name": layer.class_name,
                    "output_shape": _shape_or_none(layer.output_shape),
                    "parameters": int(layer.params)} for layer in spec.layers],
        "gradcam_layers": list(spec.gradcam_layers),
        "training": sidecar,
    }


def _shape_or_none(shape: Any) -> list | None:
    # Layers with several outputs have a list of shapes; the schema wants one shape.
    if not isinstance(shape, list) or any(isinstance(d, list) for d in shape):
        return None
    return shape


def _load_data(data: Any, seed: int) -> Any:
    from explain.datasets import Dataset, load_any

    if isinstance(data, Dataset):
        return data
    if isinstance(data, (str, os.PathLike)):
        return load_any(data, seed=seed)
    raise TypeError("data must be a Dataset, a path to a data file or a bundled data set "
                    f"name, got {type(data).__name__}")


def _performance(metrics: dict[str, Any]) -> dict[str, Any]:
    """evaluate_model's metrics in the layout of report.json."""
    perf = dict(metrics)
    # The class names are the data set's (report["dataset"]); an empty notes list says
    # nothing.
    perf.pop("class_names", None)
    if not perf.get("notes"):
        perf.pop("notes", None)
    cm = perf.get("confusion_matrix")
    if isinstance(cm, dict):
        perf["confusion_matrix"] = cm["matrix"]
    if "ece" in perf:
        cal = dict(perf.get("calibration") or {})
        perf["calibration"] = {"ece": perf.pop("ece"), **cal}
    return perf


def _method_options(method: str, cfg: AuditConfig, kind: str, data_x: np.ndarray,
                    rng: np.random.Generator) -> dict[str, Any]:
    opts: dict[str, Any] = {"batch_size": cfg.batch_size}
    if method == "integrated_gradients":
        opts["steps"] = cfg.ig_steps
        if kind == "tabular":
            # Zero is rarely a neutral row for raw tabular features (an age of 0, an
            # income of 0); the mean row is.
            opts["baseline"] = data_x.mean(axis=0).astype(np.float32)
    elif method == "shap":
        opts["seed"] = cfg.seed
        # SHAP's forward passes are on tiny perturbed copies; large batches are cheap.
        opts["batch_size"] = cfg.batch_size * 16
        if cfg.shap_samples is not None:
            opts["samples"] = cfg.shap_samples
        elif kind == "image":
            # 64 regions: the estimator's default (2M + 2048 coalitions a row) costs 29 s
            # for 24 images of 32×32 on two cores; 512 cost 7.8 s and name the same
            # regions (see bench/audit.py).
            opts["samples"] = IMAGE_SHAP_SAMPLES
        if kind == "tabular":
            rows = min(cfg.background, len(data_x))
            opts["background"] = data_x[np.sort(rng.choice(len(data_x), rows, replace=False))]
    elif method in ("smoothgrad",):
        opts["seed"] = cfg.seed
    opts.update(cfg.method_options.get(method, {}))
    return opts


def _image_map(values: np.ndarray) -> np.ndarray:
    from explain.metrics import reduce_to_map

    return np.abs(reduce_to_map(values, "image")).astype(np.float32)


def _check(metric: str, category: str, score: Any, threshold: Any, higher_is_better: bool,
           passed: Any) -> dict[str, Any]:
    def num(v: Any) -> float | None:
        if v is None:
            return None
        f = float(v)
        return f if math.isfinite(f) else None

    score, threshold = num(score), num(threshold)
    return {"metric": metric, "category": category, "score": score, "threshold": threshold,
            "higher_is_better": bool(higher_is_better),
            "passed": None if passed is None or score is None else bool(passed)}


def _spread_rows(n: int, k: int) -> np.ndarray:
    """``min(k, n)`` row indices spread evenly over ``range(n)``."""
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(np.int64))


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


def _load_previous(previous: Any) -> AuditResult | None:
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
                raise ValueError(f"the previous audit {p.name} is not readable JSON: {exc}"
                                 ) from None
            if not isinstance(report, dict):
                raise ValueError(f"the previous audit {p.name} is not a report.json object")
            return AuditResult(report=report)
        raise FileNotFoundError(f"previous audit not found: {p}")
    raise TypeError("previous must be an AuditResult, a report dict, or the path of a "
                    f"report.json or saved audit folder, got {type(previous).__name__}")


def _drift(previous: AuditResult, current: dict[str, Any]) -> dict[str, Any]:
    from explain.findings import ndcg

    prev_gi = previous.report.get("global_importance") or {}
    prev_items = prev_gi.get("items") or []
    if not prev_items:
        raise ValueError("the previous audit has no global importance to compare with")
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


# --------------------------------------------------------------------------- the pipeline


#: Examples per attribution chunk: the unit of work a worker takes from the `attributions`
#: queue. The in-process pipeline cuts the same chunks, so a fanned-out audit and
#: :func:`run_audit` compute the very same numbers for a seed.
CHUNK_ROWS = 8

#: Arrays of one attribution chunk (``values`` and ``targets`` always; the others for
#: methods that report them).
CHUNK_FIELDS = ("values", "targets", "scores", "baseline_scores", "completeness_gap")


@dataclass
class AuditPlan:
    """Everything the attribution and assessment stages need, made by :func:`prepare`.

    A plan holds no model and no callable: it is JSON (:attr:`meta`) plus named arrays,
    so it can be written to a file (:meth:`to_bytes`, an ``.npz`` read with
    ``allow_pickle=False``) and picked up by another process.

    Attributes
    ----------
    meta
        JSON: the config, the model's path and card, the data set section, performance,
        the methods and their scalar options, notes, the reasons examples were chosen,
        and the preparation stages' timings.
    arrays
        ``x``, ``y`` (every row), ``idx`` (the explained rows), ``pred_all``, ``proba``
        (classifiers), ``global_rows`` (tables with a gradient method), and array
        options as ``option.<method>.<name>`` (baselines, SHAP backgrounds).
    """

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def config(self) -> AuditConfig:
        return AuditConfig.from_dict(self.meta["config"])

    @property
    def methods(self) -> list[str]:
        return list(self.meta["methods"])

    @property
    def n_examples(self) -> int:
        return int(len(self.arrays["idx"]))

    def options(self, method: str) -> dict[str, Any]:
        """The options ``method`` runs with, arrays included."""
        opts = dict(self.meta["options"][method])
        prefix = f"option.{method}."
        opts.update({k[len(prefix):]: v for k, v in self.arrays.items()
                     if k.startswith(prefix)})
        return opts

    def chunks(self) -> list[tuple[str, int, int]]:
        """``(method, start, stop)`` of every attribution chunk, in a fixed order."""
        n = self.n_examples
        return [(m, s, min(n, s + CHUNK_ROWS)) for m in self.methods
                for s in range(0, n, CHUNK_ROWS)]

    def to_bytes(self) -> bytes:
        """The plan as ``.npz`` bytes that depend only on its content."""
        payload = dict(self.arrays)
        text = json.dumps(to_jsonable(self.meta), sort_keys=True, allow_nan=False)
        payload["plan.json"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        return npz_bytes(payload)

    @classmethod
    def from_bytes(cls, data: bytes) -> AuditPlan:
        arrays = npz_load(data)
        meta = json.loads(arrays.pop("plan.json").tobytes().decode("utf-8"))
        return cls(meta=meta, arrays=arrays)


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Arrays as ``.npz`` bytes that depend only on the arrays (fixed zip timestamps and
    member order), so the same content always makes the same content-addressed blob."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.save(member, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def npz_load(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of :func:`npz_bytes` output (never unpickling anything)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _chunk_seed(seed: int, method: str, start: int) -> int:
    """A seed of its own for each chunk, from the audit's seed, the method and the first
    row: chunks then draw independent noise wherever and in whichever order they run."""
    digest = hashlib.sha256(f"{int(seed)}:{method}:{int(start)}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _load_model(model_path: str | os.PathLike) -> tuple[Any, Any]:
    from explain.modelio import load_model_safely

    return load_model_safely(Path(os.fspath(model_path)))


def run_audit(
    model_path: str | os.PathLike,
    data: Any,
    config: AuditConfig | Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    previous: Any = None,
    model_name: str | None = None,
    dataset_name: str | None = None,
) -> AuditResult:
    """Audit a Keras model on labelled data.

    The same as :func:`prepare`, :func:`attribute_chunk` on every chunk of
    :meth:`AuditPlan.chunks`, then :func:`assess`, in this process.

    Parameters
    ----------
    model_path
        A ``.keras`` or ``.h5`` file; it is checked by
        :func:`explain.modelio.load_model_safely` before Keras reads it.
    data
        A :class:`~explain.datasets.Dataset`, the path of a data file (``.npz``, ``.npy``,
        ``.csv``) or a bundled data set name. Labels are required.
    config
        An :class:`AuditConfig` or a mapping for :meth:`AuditConfig.from_dict`.
    progress
        ``progress(stage, fraction)``: called as each stage of :data:`STAGES` starts,
        while it runs, and as it ends; ``fraction`` is the share of the audit done. An
        exception raised by the callback stops the audit.
    previous
        A previous audit (:class:`~explain.result.AuditResult`, a report dict, or the
        path of a report.json or saved result folder) to measure drift against.
    model_name, dataset_name
        Display names (default: the model file's stem; the data set's own name).

    Returns
    -------
    AuditResult
        ``report`` validated against ``reports/report.schema.json``, and the arrays the
        report's figures are drawn from.

    Raises
    ------
    explain.errors.ModelIntakeError
        The model file was refused.
    explain.errors.DataError
        The data does not fit the model, has no labels, or holds non-finite values.
    ValueError, TypeError
        A bad config or an unsupported model (several inputs, a sequence model).
    """
    stages = _Stages(progress)
    # Read now, so a missing previous report fails before the expensive stages.
    prev = _load_previous(previous)
    plan, loaded = _prepare(model_path, data, config, stages, model_name, dataset_name,
                            None)
    stages.start("attributions")
    chunks = {}
    todo = plan.chunks()
    for i, (m, start, stop) in enumerate(todo):
        chunks[(m, start, stop)] = attribute_chunk(plan, m, start, stop, model=loaded)
        stages.step((i + 1) / len(todo))
    return _assess(plan, chunks, prev, loaded, stages)


def prepare(
    model_path: str | os.PathLike,
    data: Any,
    config: AuditConfig | Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    model_name: str | None = None,
    dataset_name: str | None = None,
    model: tuple[Any, Any] | None = None,
) -> AuditPlan:
    """Load and validate the model and the data, evaluate, choose the examples and fix
    every method's options: the stages up to the attributions.

    Parameters
    ----------
    model_path, data, config, progress, model_name, dataset_name
        As for :func:`run_audit` (``progress`` sees the stages up to ``select_examples``).
    model
        ``(model, spec)`` already loaded from ``model_path`` (a worker's cache); None loads
        it with :func:`explain.modelio.load_model_safely`.

    Returns
    -------
    AuditPlan
        Serialisable; its :meth:`~AuditPlan.chunks` are the attribution work.

    Raises
    ------
    explain.errors.ModelIntakeError, explain.errors.DataError, ValueError, TypeError
        As for :func:`run_audit`.
    """
    stages = _Stages(progress)
    plan, _ = _prepare(model_path, data, config, stages, model_name, dataset_name, model)
    plan.meta["timings"] = {**plan.meta["timings"], **stages.finish()}
    return plan


def _prepare(model_path, data, config, stages: _Stages, model_name, dataset_name,
             loaded) -> tuple[AuditPlan, tuple[Any, Any]]:
    from explain._backend import keras
    from explain.attributions.registry import method_info
    from explain.evaluation import evaluate_model, predict_proba

    cfg = config if isinstance(config, AuditConfig) else AuditConfig.from_dict(config)
    model_path = Path(os.fspath(model_path))

    # ---- load the model (checked before Keras sees it)
    stages.start("load_model")
    if loaded is None:
        loaded = _load_model(model_path)
    model, spec = loaded
    if spec.input_kind not in ("image", "tabular"):
        raise ValueError(f"xaudit audits image and tabular models; this model's input is "
                         f"{spec.input_kind} with shape {spec.input_shape}")
    if spec.task not in ("binary", "multiclass", "regression"):
        raise ValueError(f"xaudit audits classifiers (softmax, or one sigmoid unit) and "
                         f"regressors; this model's head is {spec.task} "
                         f"({spec.final_activation})")
    sidecar = _read_sidecar(model_path)
    name = model_name or model_path.stem

    # ---- the data
    stages.start("load_data")
    from explain.datasets import validate_for_model

    dataset = validate_for_model(_load_data(data, cfg.seed), spec)
    if dataset.y is None:
        raise DataError("the audit needs labelled data to measure performance; pass labels "
                        "(array y in an .npz, or --label COLUMN for a .csv)",
                        code="bad_labels")
    kind = spec.input_kind
    x, y = dataset.x, dataset.y
    regression = spec.task == "regression"

    methods = list(cfg.methods) if cfg.methods is not None else list(DEFAULT_METHODS[kind])
    notes: list[str] = []
    for m in list(methods):
        info = method_info(m)
        if info.output == "spatial" and (kind != "image" or not spec.gradcam_layers):
            if cfg.methods is None:
                methods.remove(m)
                notes.append(f"{m} skipped: the model has no spatial (convolutional) layer")
            else:
                raise ValueError(f"{m} needs an image model with a convolutional layer; "
                                 f"this model has none")

    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    # ---- performance on every row
    stages.start("evaluate")
    raw = predict_proba(model, x, batch_size=cfg.batch_size)
    class_names = dataset.class_names
    if not regression:
        width = 2 if raw.ndim == 1 or raw.shape[1] == 1 else raw.shape[1]
        if class_names is None or len(class_names) != width:
            side = (sidecar or {}).get("class_names")
            class_names = ([str(c) for c in side] if isinstance(side, list)
                           and len(side) == width else [str(i) for i in range(width)])
    metrics = evaluate_model(None, None, y, spec.task, class_names, predictions=raw)
    performance = _performance(metrics)
    if regression:
        proba = None
        pred_all = raw.reshape(len(raw), -1)[:, 0].astype(np.float64)
    else:
        proba = raw.reshape(len(raw), -1).astype(np.float64)
        if proba.shape[1] == 1:
            proba = np.concatenate([1.0 - proba, proba], axis=1)
        pred_all = proba.argmax(axis=1)

    # ---- which rows to explain, and how (the draws keep this order: examples, method
    # options, global rows, so one seed always makes the same plan)
    stages.start("select_examples")
    idx, reasons = choose_examples(raw if regression else proba, y, cfg.samples, rng,
                                   regression=regression)
    options = {m: _method_options(m, cfg, kind, x, rng) for m in methods}
    arrays: dict[str, np.ndarray] = {"x": x, "y": np.asarray(y), "idx": idx,
                                     "pred_all": pred_all}
    if proba is not None:
        arrays["proba"] = proba
    if kind == "tabular" and method_is_cheap(_global_method(methods)):
        arrays["global_rows"] = np.sort(rng.choice(len(x), min(cfg.global_rows, len(x)),
                                                   replace=False))
    scalar_options: dict[str, dict[str, Any]] = {}
    for m, opts in options.items():
        scalar_options[m] = {}
        for k, v in opts.items():
            if isinstance(v, np.ndarray):
                arrays[f"option.{m}.{k}"] = v
            else:
                scalar_options[m][k] = v
    meta = {
        "config": cfg.to_dict(),
        "model_path": str(model_path),
        "name": name,
        "dataset_name": dataset_name or dataset.name,
        "kind": kind,
        "regression": regression,
        "methods": methods,
        "options": scalar_options,
        "options_for_report": {m: _options_for_report(o) for m, o in options.items()},
        "notes": notes,
        "reasons": list(reasons),
        "class_names": None if regression else list(class_names),
        "feature_names": dataset.feature_names,
        "model_card": _model_card(spec, name, sidecar),
        "dataset": {
            "name": dataset_name or dataset.name,
            "sha256": dataset.sha256,
            "rows": dataset.n,
            "kind": kind,
            "feature_names": dataset.feature_names if kind == "tabular" else None,
            "class_names": None if regression else list(class_names),
            "meta": to_jsonable({k: v for k, v in dataset.meta.items() if k != "per_row"}),
        },
        "performance": performance,
        "timings": {},
    }
    return AuditPlan(meta=to_jsonable(meta), arrays=arrays), loaded


def attribute_chunk(plan: AuditPlan, method: str, start: int, stop: int,
                    model: tuple[Any, Any] | None = None) -> dict[str, np.ndarray]:
    """Attribute the explained examples ``start:stop`` with ``method``.

    Depends only on the plan, the method and the rows (each chunk seeds itself), so a
    chunk gives the same arrays in any process, in any order, however often it runs.

    Parameters
    ----------
    plan
        From :func:`prepare`.
    method
        One of ``plan.methods``.
    start, stop
        Positions among the explained examples (as in :meth:`AuditPlan.chunks`).
    model
        ``(model, spec)`` of ``plan.meta["model_path"]``; None loads it.

    Returns
    -------
    dict
        The arrays of :data:`CHUNK_FIELDS` the method reports.
    """
    from explain._backend import keras
    from explain.attributions.registry import explain as attribute_full

    if method not in plan.methods:
        raise ValueError(f"method {method!r} is not part of this audit ({plan.methods})")
    n = plan.n_examples
    if not 0 <= int(start) < int(stop) <= n:
        raise ValueError(f"chunk {start}:{stop} is outside the {n} explained examples")
    if model is None:
        model = _load_model(plan.meta["model_path"])
    cfg_seed = int(plan.meta["config"]["seed"])
    opts = plan.options(method)
    if "seed" in opts:
        opts["seed"] = _chunk_seed(int(opts["seed"]), method, start)
    keras.utils.set_random_seed(_chunk_seed(cfg_seed, method, start))
    rows = plan.arrays["idx"][int(start):int(stop)]
    a = attribute_full(model[0], plan.arrays["x"][rows], method, **opts)
    out = {"values": np.asarray(a.values), "targets": np.asarray(a.targets)}
    for key in CHUNK_FIELDS[2:]:
        value = getattr(a, key)
        if value is not None:
            out[key] = np.asarray(value)
    return out


def _merge_chunks(plan: AuditPlan, chunks: Mapping[tuple[str, int, int],
                                                   Mapping[str, np.ndarray]]) -> dict:
    from explain.attributions.base import Attribution

    expected = plan.chunks()
    missing = [c for c in expected if tuple(c) not in chunks]
    if missing:
        raise ValueError(f"attribution chunks missing: {missing}")
    out = {}
    for m in plan.methods:
        parts = [chunks[c] for c in expected if c[0] == m]

        def joined(key: str, parts=parts) -> np.ndarray | None:
            if any(key not in p for p in parts):
                return None
            return np.concatenate([np.asarray(p[key]) for p in parts], axis=0)

        out[m] = Attribution(values=joined("values"), method=m, targets=joined("targets"),
                             scores=joined("scores"),
                             baseline_scores=joined("baseline_scores"),
                             completeness_gap=joined("completeness_gap"),
                             options=plan.options(m))
    return out


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
    prev = _load_previous(previous)
    if model is None:
        model = _load_model(plan.meta["model_path"])
    stages = _Stages(progress)
    stages.timings.update({k: float(v) for k, v in (timings or {}).items()})
    return _assess(plan, chunks, prev, model, stages)


def _assess(plan: AuditPlan, chunks, prev: AuditResult | None, loaded,
            stages: _Stages) -> AuditResult:
    from explain._backend import keras
    from explain.findings import FindingInputs, FindingThresholds, run_rules
    from reports.schema import validate_report

    meta, arr = plan.meta, plan.arrays
    cfg = plan.config
    model = loaded[0]
    kind, regression, methods = meta["kind"], bool(meta["regression"]), plan.methods
    class_names = meta["class_names"]
    notes = list(meta["notes"])
    x, y, idx, pred_all = arr["x"], arr["y"], arr["idx"], arr["pred_all"]
    proba = arr.get("proba")
    xs, preds, labels = x[idx], pred_all[idx], y[idx]
    options = {m: plan.options(m) for m in methods}
    reasons = meta["reasons"]
    attributions = _merge_chunks(plan, chunks)
    targets = attributions[methods[0]].targets
    # The quality checks draw from Keras' generators too; seeding here makes them the
    # same wherever this stage runs.
    keras.utils.set_random_seed(cfg.seed)

    # ---- global importance
    stages.start("global_importance")
    global_importance, class_maps, maps = _global_importance(
        kind, methods, attributions, options, model, x, idx, pred_all, preds, class_names,
        meta["feature_names"], regression, arr.get("global_rows"))

    # ---- explanation quality
    stages.start("quality")
    thresholds = FindingThresholds.from_config(cfg.thresholds)
    quality, agreement = _quality(model, kind, methods, attributions, options, xs, targets,
                                  x, cfg, stages, thresholds.completeness_tolerance)

    # ---- the report so far: the measured sections the finding rules read
    report: dict[str, Any] = {
        "schema_version": "1.0",
        "generated_at": "",
        "title": f"Audit of {meta['name']} on {meta['dataset_name']}",
        "verdict": {"level": "pass", "headline": "-", "top_findings": []},
        "model": meta["model_card"],
        "dataset": meta["dataset"],
        "performance": meta["performance"],
        "global_importance": global_importance,
        "examples": [],
        "explanation_quality": quality,
        "agreement": agreement,
        "findings": [],
        "drift": None,
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

    # ---- drift (before the findings: the drift rule reads it)
    stages.start("drift")
    drift_arrays: dict[str, np.ndarray] = {}
    prev_kind = None if prev is None else (prev.report.get("global_importance") or {}).get(
        "kind")
    if prev is not None and prev_kind != kind:
        notes.append(f"drift skipped: the previous audit explained {prev_kind} inputs, this "
                     f"one {kind} inputs")
    elif prev is not None:
        report["drift"] = _drift(prev, global_importance)
        drift_arrays = {f"drift_class_maps.{m}": a for m, a in prev.class_maps().items()}
    stages.start("findings")
    image_maps = ({m: _image_map(a.values) for m, a in attributions.items()}
                  if kind == "image" else None)
    findings = run_rules(FindingInputs(
        report=report, image_maps=image_maps,
        labels=None if regression else np.asarray(labels),
        predictions=None if regression else np.asarray(preds),
        class_names=None if regression else class_names), thresholds)
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


def _options_for_report(opts: Mapping[str, Any]) -> dict[str, Any]:
    """Method options as JSON: arrays (baselines, backgrounds) by shape, not by value."""
    out = {}
    for k, v in opts.items():
        if isinstance(v, np.ndarray):
            out[k] = f"array {list(v.shape)}"
        else:
            out[k] = to_jsonable(v) if not callable(v) else repr(v)
    return out


def _global_importance(kind, methods, attributions, options, model, x, idx, pred_all, preds,
                       class_names, feature_names, regression, global_rows):
    """The global importance section, the per-class maps and the per-example maps."""
    from explain.attributions.registry import explain as attribute_full
    from explain.metrics import global_importance, region_importance

    maps: dict[str, np.ndarray] = {}
    class_maps: dict[str, np.ndarray] = {}
    if kind == "tabular":
        for m, a in attributions.items():
            maps[m] = a.values.reshape(len(a.values), -1).astype(np.float32)
        method = _global_method(methods)
        if global_rows is not None:
            rows = global_rows
            values = attribute_full(model, x[rows], method, **options[method]).values
            groups = pred_all[rows]
        else:
            rows, values, groups = idx, attributions[method].values, preds
        items = global_importance(values, feature_names)
        section = {"method": method, "kind": "tabular", "items": items, "grid": None}
        if not regression:
            section["per_class"] = {
                class_names[c]: global_importance(values[groups == c], feature_names)
                for c in range(len(class_names)) if np.any(groups == c)
            }
        return section, class_maps, maps

    for m, a in attributions.items():
        maps[m] = _image_map(a.values)
    method = next((m for m in ("grad_cam", "integrated_gradients", "shap") if m in methods),
                  methods[0])
    grid = (min(IMAGE_IMPORTANCE_GRID[0], x.shape[1]), min(IMAGE_IMPORTANCE_GRID[1], x.shape[2]))

    def ranked(sel: np.ndarray) -> list[dict[str, Any]]:
        regions, _ = region_importance(maps[method][sel], grid)
        return [{"feature": r["feature"], "score": r["score"], "cell": [r["row"], r["col"]]}
                for r in regions]

    section = {"method": method, "kind": "image", "items": ranked(np.arange(len(idx))),
               "grid": list(grid)}
    if not regression:
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


def method_is_cheap(method: str) -> bool:
    """Methods cheap enough to run on ``global_rows`` rows: the gradient ones."""
    from explain.attributions.registry import method_info

    return method_info(method).gradient_based and method != "shap"


def _global_method(methods: Sequence[str]) -> str:
    for m in ("integrated_gradients", "smoothgrad", "saliency"):
        if m in methods:
            return m
    return methods[0]


def _quality(model, kind, methods, attributions, options, xs, targets, x_all, cfg, stages,
             tolerance):
    """Per-method checks and pairwise agreement."""
    from explain.attributions.registry import method_info
    from explain.metrics import (
        CompletenessGap,
        Deletion,
        Insertion,
        MaxSensitivity,
        ModelParameterRandomization,
        agreement,
        region_importance,
    )
    from explain.metrics.base import safe_spearman

    q = cfg.quality
    quality: dict[str, dict[str, Any]] = {}
    sanity_idx = _spread_rows(len(xs), cfg.sanity_rows)
    reference = x_all if len(x_all) <= 2000 else x_all[_spread_rows(len(x_all), 2000)]
    jobs = len(methods) * 3 + (1 if q["agreement"] else 0)
    done = 0
    for m in methods:
        info = method_info(m)
        a = attributions[m]
        checks: list[dict[str, Any]] = []
        entry: dict[str, Any] = {"checks": checks}
        if q["completeness"] and info.completeness and a.completeness_gap is not None:
            r = CompletenessGap().detailed(a)
            # Judged on mean |gap| / mean |f(x) - f(baseline)|, not on per-example ratios:
            # an example whose output barely moves from the baseline turns a negligible
            # gap into a huge ratio (measured on a ReLU MLP: |gap| 0.004 on a move of
            # 0.003 is 130 %, and two such rows of 24 lift the mean ratio to 13 %).
            delta = np.abs(np.asarray(a.scores, np.float64)
                           - np.asarray(a.baseline_scores, np.float64))
            gap = float(np.abs(a.completeness_gap).mean()) / max(float(delta.mean()), 1e-3)
            checks.append(_check("completeness_gap", "axiomatic", gap, tolerance, False,
                                 gap < tolerance))
            entry["completeness"] = {"mean_relative_gap": r.detail["mean_relative_gap"],
                                     "max_relative_gap": r.detail["max_relative_gap"],
                                     "examples_over_tolerance": r.detail["n_over_tolerance"]}
        done += 1
        stages.step(done / jobs)
        if q["faithfulness"]:
            common = dict(steps=cfg.faithfulness_steps, baseline="mean", reference=reference,
                          random_orders=3, seed=cfg.seed, batch_size=cfg.batch_size)
            for cls, key in ((Deletion, "deletion"), (Insertion, "insertion")):
                r = cls(model, xs, targets, **common).detailed(a.values)
                d = r.detail
                # The bar to clear is chance: the same curve for random feature orders.
                checks.append(_check(f"{key}_auc", "faithfulness", r.score,
                                     d["mean_random_auc"], key == "insertion", r.passed))
                entry[f"{key}_curve"] = [float(v) for v in d["curve"]]
                entry[f"random_{key}_curve"] = [float(v) for v in d["random_curve"]]
                entry[f"{key}_gain"] = {
                    "normalized_gain": to_jsonable(d["normalized_gain"]),
                    "better_than_random_fraction": d["better_than_random_fraction"],
                    "wilcoxon_p": d["wilcoxon_p"],
                }
        done += 1
        stages.step(done / jobs)
        sub_opts = {k: v for k, v in options[m].items()}
        if q["randomization"] and info.gradient_based and m != "shap":
            r = ModelParameterRandomization(
                model, xs[sanity_idx], targets[sanity_idx], method=m,
                method_options=sub_opts, max_layers=cfg.randomization_layers,
                seed=cfg.seed).detailed(None)
            checks.append(_check("randomization_similarity", "randomisation", r.score,
                                 r.threshold, False, r.passed))
            entry["randomization_curve"] = to_jsonable(r.detail["curve"])
        if q["stability"] and info.gradient_based and m != "shap":
            radius = 0.05 * float(np.std(x_all)) or 0.05
            r = MaxSensitivity(model, xs[sanity_idx], targets[sanity_idx], method=m,
                               method_options=sub_opts, radius=radius, samples=5,
                               seed=cfg.seed).detailed(None)
            checks.append(_check("max_sensitivity", "robustness", r.score, r.threshold,
                                 False, r.passed))
        done += 1
        stages.step(done / jobs)
        gated = [c["passed"] for c in checks if c["passed"] is not None]
        entry["passed"] = all(gated) if gated else None
        quality[m] = entry

    pairs: list[dict[str, Any]] = []
    if q["agreement"] and len(methods) > 1:
        grids = {}
        if kind == "image":
            grid = (min(IMAGE_AGREEMENT_GRID[0], xs.shape[1]),
                    min(IMAGE_AGREEMENT_GRID[1], xs.shape[2]))
            grids = {m: region_importance(_image_map(a.values), grid)[1].ravel()
                     for m, a in attributions.items()}
        for i, ma in enumerate(methods):
            for mb in methods[i + 1:]:
                r = agreement(attributions[ma].values, attributions[mb].values,
                              input_kind=kind)
                glob = (safe_spearman(grids[ma], grids[mb]) if kind == "image"
                        else r.detail["global_spearman"])
                pairs.append({"a": ma, "b": mb,
                              "global_rank_correlation": _clip_corr(glob),
                              "local_rank_correlation": _clip_corr(r.score)})
        done += 1
        stages.step(1.0)
    return quality, pairs


def _clip_corr(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return min(1.0, max(-1.0, f)) if math.isfinite(f) else None
