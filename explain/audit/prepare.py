"""Preparation: load and check the model and the data, evaluate on every row, choose the
examples and fix every method's options; the result is an :class:`AuditPlan`."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from explain.audit.config import DEFAULT_METHODS, AuditConfig
from explain.audit.examples import choose_examples
from explain.audit.importance import global_method, method_is_cheap
from explain.audit.plan import AuditPlan
from explain.audit.stages import Progress, Stages
from explain.errors import ConfigError, DataError, UnsupportedModelError
from explain.result import to_jsonable

#: A training sidecar larger than this is not a sidecar; it is left out of the report.
MAX_SIDECAR_BYTES = 1_000_000


def load_model(model_path: str | os.PathLike) -> tuple[Any, Any]:
    from explain.modelio import load_model_safely

    return load_model_safely(Path(os.fspath(model_path)))



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
    stages = Stages(progress)
    plan, _ = prepare_in(stages, model_path, data, config, model_name=model_name,
                         dataset_name=dataset_name, loaded=model)
    plan.meta["timings"] = {**plan.meta["timings"], **stages.finish()}
    return plan


def prepare_in(stages: Stages, model_path: str | os.PathLike, data: Any,
               config: AuditConfig | Mapping[str, Any] | None, *, model_name: str | None,
               dataset_name: str | None, loaded: tuple[Any, Any] | None
               ) -> tuple[AuditPlan, tuple[Any, Any]]:
    """:func:`prepare` reporting to ``stages``; also returns the loaded ``(model, spec)``."""
    from explain._backend import keras
    from explain.attributions.registry import method_info
    from explain.evaluation import evaluate_model, predict_proba

    cfg = config if isinstance(config, AuditConfig) else AuditConfig.from_dict(config)
    model_path = Path(os.fspath(model_path))

    # ---- load the model (checked before Keras sees it)
    stages.start("load_model")
    if loaded is None:
        loaded = load_model(model_path)
    model, spec = loaded
    if getattr(spec, "unsupported", None):
        raise UnsupportedModelError(f"xaudit cannot audit this model: {spec.unsupported}")
    if spec.input_kind not in ("image", "tabular", "text", "sequence"):
        raise UnsupportedModelError(f"xaudit audits image, tabular, text and sequence "
                                    f"models; this model's input is {spec.input_kind} with "
                                    f"shape {spec.input_shape}")
    tokens = None
    if spec.input_kind == "text":
        from explain.attributions.tokens import token_model

        tokens = token_model(model)
    if spec.task not in ("binary", "multiclass", "regression"):
        raise UnsupportedModelError(f"xaudit audits classifiers (softmax, or one sigmoid unit) "
                                    f"and regressors; this model's head is {spec.task} "
                                    f"({spec.final_activation})")
    sidecar = _read_sidecar(model_path)
    name = model_name or model_path.stem

    # ---- the data
    stages.start("load_data")
    from explain.datasets import validate_for_model

    raw_data = _load_data(data, cfg.seed, cfg.sensitive)
    if tokens is not None:
        from explain.datasets import tokenize_for_model

        # raw texts become the model's token ids; a string model is evaluated from its ids
        raw_data = tokenize_for_model(raw_data, model)
    elif getattr(raw_data, "texts", None) is not None:
        raise DataError("the data holds texts but the model is not a text model",
                        code="bad_data")
    dataset = validate_for_model(raw_data, spec)
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
        if info.output == "spatial" and kind in ("text", "sequence"):
            from explain.attributions.sequences import time_layer_names

            if kind == "sequence" or not time_layer_names(tokens.ids_model):
                why = ("the model has no Conv1D or recurrent layer with a time axis"
                       if kind == "text" else "its (T,) maps do not compare with the (T, F) "
                       "attributions of the other methods")
                if cfg.methods is not None and kind == "text":
                    raise ValueError(f"{m} needs a Conv1D or recurrent layer with a time "
                                     "axis; this model has none")
                methods.remove(m)
                notes.append(f"{m} skipped: {why}")
            continue
        if info.output == "spatial" and (kind != "image" or not spec.gradcam_layers):
            if cfg.methods is None:
                methods.remove(m)
                notes.append(f"{m} skipped: the model has no spatial (convolutional) layer")
            else:
                raise ConfigError(f"{m} needs an image model with a convolutional layer; "
                                 f"this model has none")

    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    # ---- performance on every row
    stages.start("evaluate")
    scorer = model if tokens is None else tokens.ids_model
    raw = predict_proba(scorer, x, batch_size=cfg.batch_size)
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
    from explain.attributions.registry import AuditInputs

    inputs = AuditInputs(config=cfg, kind=kind, x=x, rng=rng)
    options = {m: method_info(m).options_for_audit(inputs) for m in methods}
    arrays: dict[str, np.ndarray] = {"x": x, "y": np.asarray(y), "idx": idx,
                                     "pred_all": pred_all}
    if proba is not None:
        arrays["proba"] = proba
    if tokens is not None:
        vocab = tokens.vocabulary() or dataset.vocabulary
        if vocab is not None:
            arrays["vocabulary"] = np.array(vocab, dtype=str)
    sensitive = _sensitive_arrays(dataset, cfg, None if regression else len(class_names))
    arrays.update({f"sensitive.{k}": v for k, v in sensitive.items()})
    if kind == "tabular" and method_is_cheap(global_method(methods, kind)):
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
        "sensitive": list(sensitive),
        "timings": {},
    }
    return AuditPlan(meta=to_jsonable(meta), arrays=arrays), loaded


def _sensitive_arrays(dataset: Any, cfg: AuditConfig,
                      n_classes: int | None) -> dict[str, np.ndarray]:
    """The data's sensitive attributes, checked now (two groups large enough to compare,
    a favourable class the model has) so that a bad attribute or option fails the audit
    before its expensive stages."""
    from explain.fairness import check_sensitive_data

    if not dataset.sensitive:
        return {}
    positive = (cfg.fairness or {}).get("positive_class")
    if positive is not None and n_classes is not None and not 0 <= positive < n_classes:
        raise ValueError(f"config fairness.positive_class is {positive}, but the model has "
                         f"{n_classes} classes (0..{n_classes - 1})")
    return check_sensitive_data(dataset, None, cfg.thresholds, cfg.fairness)


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


def _load_data(data: Any, seed: int, sensitive: Any = None) -> Any:
    from explain.datasets import Dataset, load_any, select_sensitive

    if isinstance(data, Dataset):
        return select_sensitive(data, sensitive)
    if isinstance(data, (str, os.PathLike)):
        return load_any(data, seed=seed, sensitive=sensitive)
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


def _options_for_report(opts: Mapping[str, Any]) -> dict[str, Any]:
    """Method options as JSON: arrays (baselines, backgrounds) by shape, not by value."""
    out = {}
    for k, v in opts.items():
        if isinstance(v, np.ndarray):
            out[k] = f"array {list(v.shape)}"
        else:
            out[k] = to_jsonable(v) if not callable(v) else repr(v)
    return out

