"""How well a model performs on labelled data: scikit-learn metrics in a JSON-safe dict.

:func:`predict_proba` runs the model once (in batches); :func:`evaluate_model` turns the
predictions and labels into metrics. The audit calls :func:`predict_proba` itself and
passes the result in (``predictions=``), so attributions and metrics see the same numbers
and the model runs once.

Classification (``binary``, ``multiclass``): accuracy, balanced accuracy, per-class
precision/recall/F1/support, confusion matrix, ROC-AUC (binary, or one-vs-rest macro),
log loss, expected calibration error and reliability bins. Multilabel: the same per
label, plus subset accuracy and Hamming loss. Regression: MAE, RMSE, R² and a residual
summary.

Calibration is defined on the top-1 prediction: each example contributes its confidence
``c = max_k p_k`` and whether the predicted class is right. Confidences fall into
``n_bins`` equal-width bins over [0, 1] (bin ``b`` holds ``(b/n, (b+1)/n]``; the first
bin also holds 0), and

    ECE = sum_b (n_b / N) * |accuracy_b - confidence_b|

with ``accuracy_b`` and ``confidence_b`` the mean correctness and mean confidence of the
``n_b`` examples in bin ``b``. Ref. Naeini, Cooper & Hauskrecht, "Obtaining Well
Calibrated Probabilities Using Bayesian Binning", AAAI 2015; Guo et al., "On Calibration
of Modern Neural Networks", ICML 2017.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

from explain.errors import DataError

__all__ = [
    "TASKS",
    "evaluate_model",
    "expected_calibration_error",
    "predict_proba",
    "reliability_bins",
]

TASKS = ("binary", "multiclass", "multilabel", "regression")

RESIDUAL_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


# --------------------------------------------------------------------------- predictions


def predict_proba(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Run a model (or a predict function) over ``x`` in batches.

    Parameters
    ----------
    model
        A Keras model (its ``predict`` is used) or any callable ``f(x_batch) -> array``.
    x
        Inputs ``(N, ...)``.
    batch_size
        Rows per forward pass.

    Returns
    -------
    numpy.ndarray
        float32 ``(N, K)`` (or ``(N,)`` when the model returns one value per row): the
        model's first output, as it comes out (probabilities for a softmax or sigmoid
        head). :func:`evaluate_model` turns logits into probabilities if it sees them.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    x = np.asarray(x)
    if hasattr(model, "predict") and hasattr(model, "layers"):
        out = model.predict(x, batch_size=batch_size, verbose=0)
        if isinstance(out, (list, tuple)):
            out = out[0]
        elif isinstance(out, dict):
            out = next(iter(out.values()))
        return np.asarray(out, dtype=np.float32)
    if not callable(model):
        raise TypeError("model must be a Keras model or a callable returning predictions")
    parts = []
    for start in range(0, x.shape[0], batch_size):
        out = model(x[start:start + batch_size])
        if isinstance(out, (list, tuple)):
            out = out[0]
        parts.append(np.asarray(out, dtype=np.float32))
    if not parts:
        raise DataError("there are no rows to predict", code="empty")
    return np.concatenate(parts, axis=0)


def _to_probabilities(raw: np.ndarray, task: str, notes: list[str]) -> np.ndarray:
    """Class probabilities ``(N, K)`` (or label probabilities for multilabel)."""
    p = raw.astype(np.float64)
    if p.ndim == 1:
        p = p[:, None]
    if task == "multilabel" or (task == "binary" and p.shape[1] == 1):
        if p.min() < 0.0 or p.max() > 1.0:
            notes.append("the model outputs were outside [0, 1]; read them as logits "
                         "and applied a sigmoid")
            p = 1.0 / (1.0 + np.exp(-p))
        if task == "binary":
            p = np.concatenate([1.0 - p, p], axis=1)
        return p
    if p.min() < 0.0 or p.max() > 1.0 or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        notes.append("the model outputs were not probabilities; read them as logits and "
                     "applied a softmax")
        z = p - p.max(axis=1, keepdims=True)
        p = np.exp(z)
    # Renormalise float32 round-off so scikit-learn's probability checks hold.
    return p / p.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- calibration


def reliability_bins(confidence: np.ndarray, correct: np.ndarray,
                     n_bins: int = 10) -> list[dict[str, Any]]:
    """Equal-width reliability bins over [0, 1].

    Written here rather than taken from scikit-learn because
    ``sklearn.calibration.calibration_curve`` bins the probability of the positive class
    and drops empty bins, while the audit needs top-1 confidence per bin with counts,
    empty bins included, to draw a reliability diagram.

    Parameters
    ----------
    confidence
        ``(N,)`` top-1 confidences in [0, 1].
    correct
        ``(N,)`` booleans: was the top-1 prediction right.
    n_bins
        Number of equal-width bins.

    Returns
    -------
    list of dict
        One per bin: ``lower``, ``upper``, ``count``, ``confidence`` (mean) and
        ``accuracy`` (mean); the means are ``None`` for an empty bin.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    confidence = np.asarray(confidence, dtype=np.float64).reshape(-1)
    correct = np.asarray(correct, dtype=np.float64).reshape(-1)
    if confidence.shape != correct.shape:
        raise ValueError("confidence and correct must have the same length")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bin b holds (edges[b], edges[b+1]]; a confidence of exactly 0 goes to the first bin.
    idx = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        sel = idx == b
        count = int(sel.sum())
        bins.append({
            "lower": float(edges[b]),
            "upper": float(edges[b + 1]),
            "count": count,
            "confidence": float(confidence[sel].mean()) if count else None,
            "accuracy": float(correct[sel].mean()) if count else None,
        })
    return bins


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray,
                               n_bins: int = 10) -> float:
    """ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b| over equal-width bins.

    See the module docstring for the definition; ``confidence`` and ``correct`` are as in
    :func:`reliability_bins`.
    """
    bins = reliability_bins(confidence, correct, n_bins)
    total = sum(b["count"] for b in bins)
    if total == 0:
        raise ValueError("no examples to compute the calibration error on")
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"])
                     for b in bins if b["count"]))


# --------------------------------------------------------------------------- evaluation


def evaluate_model(
    model_or_predict_fn: Any,
    x: np.ndarray | None,
    y: np.ndarray,
    task: str,
    class_names: Sequence[str] | None = None,
    batch_size: int = 256,
    *,
    predictions: np.ndarray | None = None,
    n_bins: int = 10,
) -> dict[str, Any]:
    """Performance metrics of a model on labelled data.

    Parameters
    ----------
    model_or_predict_fn
        A Keras model or a callable ``f(x_batch) -> array``; unused when ``predictions``
        is given (pass ``None``).
    x
        Inputs ``(N, ...)``; unused when ``predictions`` is given.
    y
        Labels: class indices ``(N,)`` or one-hot ``(N, K)`` for classification, 0/1
        ``(N, L)`` for multilabel, values ``(N,)`` or ``(N, D)`` for regression.
    task
        ``binary``, ``multiclass``, ``multilabel`` or ``regression``.
    class_names
        Names for the classes (or labels); defaults to ``"0"``, ``"1"``, ...
    batch_size
        Rows per forward pass.
    predictions
        Model outputs already computed with :func:`predict_proba`.
    n_bins
        Reliability bins for the calibration error.

    Returns
    -------
    dict
        JSON-safe (plain floats, ints, lists; ``None`` for a metric that cannot be
        computed, with the reason in ``notes``). Always has ``task``, ``n_samples`` and
        ``notes``; the rest depends on the task (see the module docstring).

    Raises
    ------
    DataError
        ``bad_labels`` if ``y`` is missing or does not fit the predictions.
    ValueError
        For an unknown task.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if y is None:
        raise DataError("evaluating a model needs labels (y)", code="bad_labels")
    if predictions is None:
        if x is None:
            raise ValueError("pass either x or predictions")
        predictions = predict_proba(model_or_predict_fn, x, batch_size=batch_size)
    raw = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(y)
    if raw.shape[0] != y.shape[0]:
        raise DataError(f"{raw.shape[0]} predictions but {y.shape[0]} labels",
                        code="bad_labels")
    if raw.shape[0] == 0:
        raise DataError("there are no rows to evaluate", code="empty")
    notes: list[str] = []
    if task == "regression":
        out = _regression(raw, y)
    elif task == "multilabel":
        out = _multilabel(_to_probabilities(raw, task, notes), y, class_names, n_bins, notes)
    else:
        out = _classification(_to_probabilities(raw, task, notes), y, task, class_names,
                              n_bins, notes)
    return _json_safe({"task": task, "n_samples": int(y.shape[0]), **out, "notes": notes})


def _class_indices(y: np.ndarray, k: int) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    yf = y.astype(np.float64)
    if not np.all(np.isfinite(yf)) or np.any(yf != np.round(yf)):
        raise DataError("class labels must be integers", code="bad_labels")
    yi = yf.astype(np.int64)
    bad = (yi < 0) | (yi >= k)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"row {row} has label {yi[row]}; the model has {k} classes",
                        code="bad_labels")
    return yi


def _names(class_names: Sequence[str] | None, k: int) -> list[str]:
    if class_names is not None and len(class_names) == k:
        return [str(c) for c in class_names]
    return [str(i) for i in range(k)]


def _classification(proba: np.ndarray, y: np.ndarray, task: str,
                    class_names: Sequence[str] | None, n_bins: int,
                    notes: list[str]) -> dict[str, Any]:
    k = proba.shape[1]
    labels = list(range(k))
    y_true = _class_indices(y, k)
    y_pred = proba.argmax(axis=1)
    names = _names(class_names, k)
    present = set(np.unique(y_true).tolist())

    prec, rec, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    # A class with no rows in the data has no recall (or F1) to speak of: it is shown as
    # absent and left out of the macro means, never as a 0.000 that drags them down.
    macro = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=sorted(present), average="macro", zero_division=0)
    predicted = np.bincount(y_pred, minlength=k)
    per_class = [
        {"class": names[i], "precision": prec[i], "recall": rec[i], "f1": f1[i],
         "support": int(support[i])} if support[i] > 0 else
        {"class": names[i], "precision": prec[i] if predicted[i] else None, "recall": None,
         "f1": None, "support": 0, "absent": True}
        for i in range(k)
    ]

    roc_auc = None
    missing = [names[i] for i in labels if i not in present]
    if missing:
        notes.append("ROC-AUC skipped: no examples of class " + ", ".join(
            repr(m) for m in missing) + " in the labels")
    elif k == 2:
        roc_auc = skm.roc_auc_score(y_true, proba[:, 1])
    else:
        roc_auc = skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro",
                                    labels=labels)

    if len(present) < 2 and k >= 2:
        # Balanced accuracy is still defined, but warn: one class says little.
        notes.append("the labels hold a single class; metrics describe that class only")

    confidence = proba.max(axis=1)
    correct = y_pred == y_true
    return {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y_true, y_pred),
        "macro_precision": macro[0],
        "macro_recall": macro[1],
        "macro_f1": macro[2],
        "per_class": per_class,
        "confusion_matrix": {
            "labels": names,
            "matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
            "rows": "true class",
            "columns": "predicted class",
        },
        "roc_auc": roc_auc,
        "roc_auc_average": None if k == 2 else "ovr-macro",
        "log_loss": skm.log_loss(y_true, proba, labels=labels),
        "ece": expected_calibration_error(confidence, correct, n_bins),
        "calibration": {"n_bins": n_bins, "confidence": "top-1",
                        "bins": reliability_bins(confidence, correct, n_bins)},
        "class_names": names,
    }


def _multilabel(proba: np.ndarray, y: np.ndarray, class_names: Sequence[str] | None,
                n_bins: int, notes: list[str]) -> dict[str, Any]:
    if y.ndim != 2 or y.shape != proba.shape:
        raise DataError(f"multilabel targets must have shape {proba.shape}, got {y.shape}",
                        code="bad_labels")
    y_true = y.astype(np.int64)
    if not np.isin(y_true, (0, 1)).all():
        raise DataError("multilabel targets must be 0/1", code="bad_labels")
    y_pred = (proba >= 0.5).astype(np.int64)
    n_labels = proba.shape[1]
    names = _names(class_names, n_labels)
    prec, rec, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, average=None, zero_division=0)
    per_label = []
    for j in range(n_labels):
        auc = None
        if len(np.unique(y_true[:, j])) == 2:
            auc = skm.roc_auc_score(y_true[:, j], proba[:, j])
        else:
            notes.append(f"ROC-AUC of label {names[j]!r} skipped: only one value in the "
                         "labels")
        per_label.append({
            "label": names[j], "precision": prec[j], "recall": rec[j], "f1": f1[j],
            "support": int(support[j]), "roc_auc": auc,
            "log_loss": skm.log_loss(y_true[:, j], proba[:, j], labels=[0, 1]),
        })
    # Calibration of each 0/1 decision: confidence in the decision taken.
    flat_p = proba.reshape(-1)
    confidence = np.maximum(flat_p, 1.0 - flat_p)
    correct = (y_pred == y_true).reshape(-1)
    aucs = [p["roc_auc"] for p in per_label if p["roc_auc"] is not None]
    return {
        "subset_accuracy": skm.accuracy_score(y_true, y_pred),
        "hamming_loss": skm.hamming_loss(y_true, y_pred),
        "micro_f1": skm.f1_score(y_true, y_pred, average="micro", zero_division=0),
        "macro_f1": skm.f1_score(y_true, y_pred, average="macro", zero_division=0),
        "macro_roc_auc": float(np.mean(aucs)) if aucs else None,
        "per_label": per_label,
        "ece": expected_calibration_error(confidence, correct, n_bins),
        "calibration": {"n_bins": n_bins, "confidence": "per-label decision",
                        "bins": reliability_bins(confidence, correct, n_bins)},
        "label_names": names,
    }


def _regression(pred: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    y_true = y.astype(np.float64)
    if not np.all(np.isfinite(y_true)):
        raise DataError("regression targets must be finite numbers", code="bad_labels")
    if y_true.ndim == 1:
        y_true = y_true[:, None]
    if pred.ndim == 1:
        pred = pred[:, None]
    if pred.shape != y_true.shape:
        raise DataError(f"the model predicts {pred.shape[1:]} per row but targets are "
                        f"{y_true.shape[1:]}", code="bad_labels")
    residuals = y_true - pred
    out: dict[str, Any] = {
        "mae": skm.mean_absolute_error(y_true, pred),
        "rmse": skm.root_mean_squared_error(y_true, pred),
        "r2": skm.r2_score(y_true, pred) if y_true.shape[0] >= 2 else None,
        "residuals": {
            "mean": float(residuals.mean()),
            "std": float(residuals.std()),
            "max_abs": float(np.abs(residuals).max()),
            "quantiles": {f"q{int(q * 100):02d}": float(np.quantile(residuals, q))
                          for q in RESIDUAL_QUANTILES},
            "definition": "target - prediction",
        },
    }
    if y_true.shape[1] > 1:
        out["per_output"] = [
            {"output": j,
             "mae": skm.mean_absolute_error(y_true[:, j], pred[:, j]),
             "rmse": skm.root_mean_squared_error(y_true[:, j], pred[:, j]),
             "r2": skm.r2_score(y_true[:, j], pred[:, j])}
            for j in range(y_true.shape[1])
        ]
    return out


def _json_safe(obj: Any) -> Any:
    """Plain Python types only; NaN and Inf become ``None``."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj

