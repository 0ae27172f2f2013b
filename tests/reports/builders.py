"""Hand-built, realistic audit results for the rendering tests.

They follow the contract in ``explain/result.py`` and ``explain/report.schema.json`` the way
the audit pipeline fills it: an image audit (10 classes, a planted-corner shortcut finding,
drift against a previous run) and a tabular audit (binary income classifier, or a
regression variant). Every name the user controls can be overridden, so the escaping tests
can feed hostile strings through every path.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from explain.result import AuditResult

GRID_NAMES = [
    ["top-left corner", "top edge", "top-right corner"],
    ["left edge", "centre", "right edge"],
    ["bottom-left corner", "bottom edge", "bottom-right corner"],
]

CIFAR_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]

INCOME_FEATURES = [
    "age", "education_num", "hours_per_week", "capital_gain", "capital_loss",
    "marital_status", "occupation", "relationship", "race", "sex",
    "native_country", "workclass",
]


def _sha(seed: int) -> str:
    return np.random.default_rng(seed).bytes(32).hex()


def _environment() -> dict[str, Any]:
    return {
        "xaudit": "0.1.0",
        "python": "3.12.3",
        "tensorflow": "2.21.0",
        "keras": "3.13.0",
        "numpy": "2.4.6",
        "shap": "0.48.0",
        "platform": "Linux-6.8-x86_64",
        "seed": 1234,
    }


def _curves(rng: np.random.Generator, points: int = 21) -> dict[str, list[float]]:
    t = np.linspace(0, 1, points)
    return {
        "deletion_curve": (0.92 * np.exp(-5 * t) + 0.08).round(4).tolist(),
        "insertion_curve": (0.1 + 0.85 * (1 - np.exp(-6 * t))).round(4).tolist(),
        "random_deletion_curve": (0.92 - 0.8 * t + rng.normal(0, 0.01, points)).clip(0, 1).round(4).tolist(),
        "random_insertion_curve": (0.1 + 0.8 * t + rng.normal(0, 0.01, points)).clip(0, 1).round(4).tolist(),
    }


def _quality(rng: np.random.Generator, method: str, *, faithful: bool) -> dict[str, Any]:
    checks = [
        {"metric": "deletion_auc", "category": "faithfulness", "score": 0.21 if faithful else 0.47,
         "threshold": 0.4, "higher_is_better": False, "passed": faithful},
        {"metric": "insertion_auc", "category": "faithfulness", "score": 0.78 if faithful else 0.51,
         "threshold": 0.55, "higher_is_better": True, "passed": faithful},
        {"metric": "model_randomisation_similarity", "category": "randomisation", "score": 0.12,
         "threshold": 0.5, "higher_is_better": False, "passed": True},
    ]
    if method in ("integrated_gradients", "shap"):
        checks.append({"metric": "completeness_gap", "category": "axiomatic", "score": 0.004,
                       "threshold": 0.05, "higher_is_better": False, "passed": True})
    checks.append({"metric": "sparseness", "category": "complexity", "score": 0.61,
                   "threshold": None, "higher_is_better": True, "passed": None})
    return {"checks": checks, "passed": faithful, **_curves(rng)}


def _calibration(rng: np.random.Generator) -> dict[str, Any]:
    bins = []
    for i in range(10):
        conf = (i + 0.5) / 10
        count = int(rng.integers(0, 80)) if i < 3 else int(rng.integers(40, 300))
        bins.append({"confidence": round(conf, 3) if count else None,
                     "accuracy": round(max(0.0, conf - 0.08 + rng.normal(0, 0.03)), 3) if count else None,
                     "count": count})
    return {"ece": 0.061, "bins": bins}


def _smooth_image(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.zeros((size, size, 3))
    for _ in range(3):
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
        image += blob[..., None] * rng.uniform(0, 1, 3)
    image[: size // 6, : size // 6] += 0.8  # the planted corner patch
    image += rng.normal(0, 0.04, image.shape)
    return (image / image.max()).clip(0, 1).astype(np.float32)


def image_audit(
    *,
    model_name: str = "cifar10-resnet-small",
    dataset_name: str = "cifar10-test-sample",
    class_names: list[str] | None = None,
    n_examples: int = 12,
    size: int = 64,
    with_drift: bool = True,
    seed: int = 0,
) -> AuditResult:
    """An image classification audit as the pipeline would hand it to the renderer."""
    rng = np.random.default_rng(seed)
    classes = list(class_names) if class_names is not None else list(CIFAR_CLASSES)
    k = len(classes)
    cm = rng.integers(0, 6, size=(k, k))
    np.fill_diagonal(cm, rng.integers(70, 95, size=k))
    support = cm.sum(axis=1)
    precision = np.diag(cm) / cm.sum(axis=0)
    recall = np.diag(cm) / support
    f1 = 2 * precision * recall / (precision + recall)

    region_scores = rng.dirichlet(np.ones(9)).round(4)
    region_scores[0] += 0.3  # the corner draws attention: the shortcut
    region_scores = region_scores / region_scores.sum()
    items = sorted(
        ({"feature": GRID_NAMES[i // 3][i % 3], "score": float(region_scores[i]),
          "cell": [i // 3, i % 3]} for i in range(9)),
        key=lambda it: -it["score"],
    )
    per_class = {
        name: sorted(({"feature": GRID_NAMES[i // 3][i % 3], "score": float(s)}
                      for i, s in enumerate(rng.dirichlet(np.ones(9)).round(4))),
                     key=lambda it: -it["score"])
        for name in classes
    }

    reasons = ["misclassified"] * 4 + ["least_confident"] * 4 + ["stratified"] * (n_examples - 8)
    reasons = reasons[:n_examples]
    # Interleave so the renderer's "misclassified first" ordering has work to do.
    reasons = reasons[::-1]
    examples = []
    for reason in reasons:
        label = int(rng.integers(0, k))
        wrong = reason == "misclassified"
        prediction = (label + 1) % k if wrong else label
        examples.append({
            "index": int(rng.integers(0, 2000)),
            "label": label,
            "prediction": prediction,
            "confidence": float(rng.uniform(0.35, 0.55) if reason == "least_confident" else rng.uniform(0.7, 0.99)),
            "correct": not wrong,
            "reason": reason,
            "completeness_gap": {"integrated_gradients": float(rng.normal(0, 0.01)),
                                 "shap": float(rng.normal(0, 0.002))},
        })

    x = np.stack([_smooth_image(rng, size) for _ in range(n_examples)])
    gray = x.mean(axis=-1)
    yy, xx = np.mgrid[0:size, 0:size] / size
    corner = np.exp(-((yy - 0.05) ** 2 + (xx - 0.05) ** 2) / 0.02)
    cam = np.stack([0.6 * corner + 0.4 * g for g in gray]).astype(np.float32)
    ig = np.stack([(g - g.mean()) * rng.normal(1, 0.3, g.shape) for g in gray]).astype(np.float32)
    shap_maps = np.stack([(g - 0.5) + 0.5 * corner for g in gray]).astype(np.float32)
    class_maps = {m: np.abs(rng.normal(0.2, 0.05, (k, size, size)) + corner).astype(np.float32)
                  for m in ("grad_cam", "integrated_gradients", "shap")}

    report: dict[str, Any] = {
        "schema_version": "1.0",
        "generated_at": "2025-06-01T12:00:00+00:00",
        "title": f"Audit of {model_name} on {dataset_name}",
        "verdict": {
            "level": "fail",
            "headline": "The model relies on a corner patch, not the object: 38 % of attribution sits in the top-left corner.",
            "top_findings": ["spurious_region", "unfaithful_method"],
        },
        "model": {
            "name": model_name,
            "sha256": _sha(1),
            "format": "keras",
            "input_shape": [None, size, size, 3],
            "output_shapes": [[None, k]],
            "task": "classification",
            "final_activation": "softmax",
            "parameter_count": 272_474,
            "input_kind": "image",
            "layers": [
                {"name": "input", "class_name": "InputLayer", "output_shape": [None, size, size, 3], "parameters": 0},
                {"name": "conv2d", "class_name": "Conv2D", "output_shape": [None, size, size, 32], "parameters": 896},
                {"name": "conv2d_1", "class_name": "Conv2D", "output_shape": [None, size // 2, size // 2, 64], "parameters": 18496},
                {"name": "global_average_pooling2d", "class_name": "GlobalAveragePooling2D", "output_shape": [None, 64], "parameters": 0},
                {"name": "dense", "class_name": "Dense", "output_shape": [None, k], "parameters": 650},
            ],
            "gradcam_layers": ["conv2d_1", "conv2d"],
            "training": {"epochs": 12, "optimizer": "adam", "learning_rate": 0.001,
                         "history": {"val_accuracy": [0.61, 0.74, 0.81]},
                         "dataset": dataset_name},
        },
        "dataset": {"name": dataset_name, "sha256": _sha(2), "rows": 2000, "kind": "image",
                    "feature_names": None, "class_names": classes},
        "performance": {
            "accuracy": 0.842,
            "balanced_accuracy": 0.838,
            "per_class": [{"class": c, "precision": float(p), "recall": float(r), "f1": float(f),
                           "support": int(s)} for c, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)],
            "confusion_matrix": cm.tolist(),
            "roc_auc": 0.981,
            "log_loss": 0.512,
            "calibration": _calibration(rng),
        },
        "global_importance": {"method": "grad_cam", "kind": "image", "items": items, "grid": [3, 3],
                              "per_class": per_class},
        "examples": examples,
        "explanation_quality": {
            "grad_cam": _quality(rng, "grad_cam", faithful=True),
            "integrated_gradients": _quality(rng, "integrated_gradients", faithful=True),
            "shap": _quality(rng, "shap", faithful=False),
        },
        "agreement": [
            {"a": "grad_cam", "b": "integrated_gradients", "global_rank_correlation": 0.71, "local_rank_correlation": 0.42},
            {"a": "grad_cam", "b": "shap", "global_rank_correlation": 0.64, "local_rank_correlation": 0.38},
            {"a": "integrated_gradients", "b": "shap", "global_rank_correlation": 0.83, "local_rank_correlation": 0.55},
        ],
        "findings": [
            {"code": "spurious_region", "severity": "critical",
             "message": f"Class {classes[0]} is recognised by the top-left corner: 38 % of its attribution sits there.",
             "evidence": {"class": classes[0], "region": "top-left corner", "share": 0.38,
                          "expected_share": 0.11, "examples": [12, 40, 77],
                          "per_method": [{"method": "grad_cam", "share": 0.41},
                                         {"method": "shap", "share": 0.35}]}},
            {"code": "unfaithful_method", "severity": "warning",
             "message": "SHAP attributions are barely better than a random ranking (deletion AUC 0.47).",
             "evidence": {"method": "shap", "deletion_auc": 0.47, "random_deletion_auc": 0.49}},
            {"code": "calibration_overconfident", "severity": "info",
             "message": "The model is slightly over-confident (ECE 0.061).",
             "evidence": {"ece": 0.061}},
        ],
        "drift": None,
        "config": {"methods": ["grad_cam", "integrated_gradients", "shap"],
                   "integrated_gradients": {"steps": 64, "baseline": "black"},
                   "shap": {"estimator": "partition", "max_evals": 500},
                   "examples": n_examples, "sample_rows": 2000},
        "environment": _environment(),
        "timings": {"load_model": 1.2, "evaluate": 3.4, "attributions": 81.5, "metrics": 22.1,
                    "findings": 0.1, "render": 2.3},
    }
    arrays = {
        "examples_x": x,
        "maps.grad_cam": cam,
        "maps.integrated_gradients": ig,
        "maps.shap": shap_maps,
        **{f"class_maps.{m}": v for m, v in class_maps.items()},
    }
    if with_drift:
        report["drift"] = {
            "previous_audit": "a1b2c3d4",
            "previous_generated_at": "2025-05-01T12:00:00+00:00",
            "ndcg": 0.82,
            "items": [{"feature": it["feature"], "previous_score": round(it["score"] * 0.7, 4),
                       "score": it["score"], "change": round(it["score"] * 0.3, 4)} for it in items],
        }
        arrays["drift_class_maps.grad_cam"] = (class_maps["grad_cam"] * 0.5).astype(np.float32)
    return AuditResult(report=report, arrays=arrays)


def tabular_audit(
    *,
    model_name: str = "income-mlp",
    dataset_name: str = "adult-income-2024",
    feature_names: list[str] | None = None,
    class_names: list[str] | None = None,
    n_examples: int = 10,
    seed: int = 1,
) -> AuditResult:
    """A binary tabular classification audit (no drift)."""
    rng = np.random.default_rng(seed)
    features = list(feature_names) if feature_names is not None else list(INCOME_FEATURES)
    classes = list(class_names) if class_names is not None else ["<=50K", ">50K"]
    f = len(features)
    scores = np.sort(rng.gamma(2.0, 0.05, f))[::-1]
    items = [{"feature": name, "score": float(s)} for name, s in zip(features, scores, strict=True)]
    x = rng.normal(0, 1, (n_examples, f)).astype(np.float32)
    weights = rng.normal(0, 1, f)
    reasons = (["misclassified"] * 3 + ["least_confident"] * 3 + ["stratified"] * n_examples)[:n_examples]
    examples = []
    for i, reason in enumerate(reasons):
        label = int(i % 2)
        examples.append({"index": 100 + i, "label": label,
                         "prediction": 1 - label if reason == "misclassified" else label,
                         "confidence": 0.52 if reason == "least_confident" else 0.83,
                         "correct": reason != "misclassified", "reason": reason,
                         "completeness_gap": {"shap": 1e-6}})
    report: dict[str, Any] = {
        "schema_version": "1.0",
        "generated_at": "2025-06-02T08:30:00Z",
        "title": f"Audit of {model_name}",
        "verdict": {"level": "review", "headline": "Sex ranks third overall; check whether that is acceptable.",
                    "top_findings": ["protected_feature_influence"]},
        "model": {
            "name": model_name, "sha256": _sha(3), "format": "h5", "input_shape": [None, f],
            "output_shapes": [[None, 2]], "task": "classification", "final_activation": "softmax",
            "parameter_count": 4_610, "input_kind": "tabular",
            "layers": [{"name": "dense", "class_name": "Dense"}, {"name": "dense_1", "class_name": "Dense"}],
            "gradcam_layers": [], "training": None,
        },
        "dataset": {"name": dataset_name, "sha256": _sha(4), "rows": 5000, "kind": "tabular",
                    "feature_names": features, "class_names": classes},
        "performance": {
            "accuracy": 0.853, "balanced_accuracy": 0.771,
            "per_class": [{"class": c, "precision": 0.88, "recall": 0.93, "f1": 0.9, "support": 3800 - 2600 * i}
                          for i, c in enumerate(classes)],
            "confusion_matrix": [[3534, 266], [470, 730]], "roc_auc": 0.902, "log_loss": 0.331,
            "calibration": _calibration(rng),
            "threshold_metrics": {"threshold": 0.5, "positive_rate": 0.2},
        },
        "global_importance": {"method": "shap", "kind": "tabular", "items": items, "grid": None,
                              "per_class": {c: items[::1] for c in classes}},
        "examples": examples,
        "explanation_quality": {"shap": _quality(rng, "shap", faithful=True),
                                "integrated_gradients": _quality(rng, "integrated_gradients", faithful=True)},
        "agreement": [{"a": "shap", "b": "integrated_gradients", "global_rank_correlation": 0.9,
                       "local_rank_correlation": None}],
        "findings": [
            {"code": "protected_feature_influence", "severity": "warning",
             "message": f"{features[min(2, f - 1)]} is the third most important feature.",
             "evidence": {"feature": features[min(2, f - 1)], "rank": 3, "score": float(scores[min(2, f - 1)]),
                          "slices": [{"value": classes[0], "positive_rate": 0.11},
                                     {"value": classes[-1], "positive_rate": 0.31}]}},
        ],
        "drift": None,
        "config": {"methods": ["shap", "integrated_gradients"], "shap": {"estimator": "kernel", "nsamples": 200}},
        "environment": _environment(),
        "timings": {"evaluate": 0.4, "attributions": 12.0},
    }
    arrays = {
        "examples_x": x,
        "maps.shap": (x * weights * 0.1).astype(np.float32),
        "maps.integrated_gradients": (x * weights * 0.09 + rng.normal(0, 0.01, x.shape)).astype(np.float32),
    }
    return AuditResult(report=report, arrays=arrays)


def regression_audit() -> AuditResult:
    """The tabular audit turned into a regression model (house prices)."""
    result = tabular_audit(model_name="house-price-gbm-distilled", class_names=["unused"])
    report = copy.deepcopy(result.report)
    rng = np.random.default_rng(5)
    residuals = rng.normal(1.5, 10.0, 4000)
    counts, edges = np.histogram(residuals, bins=30)
    report["model"].update(task="regression", final_activation="linear", output_shapes=[[None, 1]])
    report["dataset"]["class_names"] = None
    report["performance"] = {
        "mae": 8.1, "rmse": 10.2, "r2": 0.87,
        "residuals": {"mean": 1.5, "std": 10.0, "quantiles": {"0.05": -15.0, "0.5": 1.4, "0.95": 18.1},
                      "histogram": {"edges": edges.tolist(), "counts": counts.tolist()}},
    }
    for i, example in enumerate(report["examples"]):
        example.update(label=200.0 + i, prediction=210.5 + 2 * i, confidence=None, correct=None,
                       reason="largest_error" if i < 3 else "stratified")
    report["verdict"] = {"level": "pass", "headline": "No finding needs attention.", "top_findings": []}
    report["findings"] = [{"code": "stable_attributions", "severity": "info",
                           "message": "Attributions are stable under small input noise.", "evidence": {}}]
    return AuditResult(report=report, arrays=result.arrays)
