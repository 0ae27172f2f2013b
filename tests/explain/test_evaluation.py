"""Performance metrics: each number checked against scikit-learn, ECE against a hand sum."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from explain.errors import DataError
from explain.evaluation import (
    evaluate_model,
    expected_calibration_error,
    predict_proba,
    reliability_bins,
)
from tests import models

# Ten rows, three classes, every class present; rows chosen so the top-1 confidences land
# in three bins (see test_ece_by_hand).
Y3 = np.array([0, 0, 1, 2, 1, 1, 2, 0, 2, 1])
P3 = np.array([
    [0.95, 0.03, 0.02],  # right, conf 0.95
    [0.95, 0.02, 0.03],  # right
    [0.03, 0.95, 0.02],  # right
    [0.95, 0.03, 0.02],  # wrong (true 2)
    [0.20, 0.65, 0.15],  # right, conf 0.65
    [0.15, 0.65, 0.20],  # right
    [0.30, 0.25, 0.45],  # right, conf 0.45
    [0.25, 0.45, 0.30],  # wrong (true 0)
    [0.45, 0.30, 0.25],  # wrong (true 2)
    [0.30, 0.25, 0.45],  # wrong (true 1)
])


def test_multiclass_matches_scikit_learn():
    r = evaluate_model(None, None, Y3, "multiclass", class_names=["a", "b", "c"],
                       predictions=P3)
    pred = P3.argmax(1)
    assert r["n_samples"] == 10 and r["task"] == "multiclass"
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(Y3, pred))
    assert r["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(Y3, pred))
    assert r["macro_f1"] == pytest.approx(skm.f1_score(Y3, pred, average="macro"))
    prec = skm.precision_score(Y3, pred, average=None, zero_division=0)
    rec = skm.recall_score(Y3, pred, average=None)
    f1 = skm.f1_score(Y3, pred, average=None)
    for i, row in enumerate(r["per_class"]):
        assert row["class"] == "abc"[i]
        assert row["precision"] == pytest.approx(prec[i])
        assert row["recall"] == pytest.approx(rec[i])
        assert row["f1"] == pytest.approx(f1[i])
        assert row["support"] == list(Y3).count(i)
    assert r["confusion_matrix"]["matrix"] == skm.confusion_matrix(Y3, pred).tolist()
    assert r["confusion_matrix"]["labels"] == ["a", "b", "c"]
    assert r["roc_auc"] == pytest.approx(
        skm.roc_auc_score(Y3, P3, multi_class="ovr", average="macro"))
    assert r["log_loss"] == pytest.approx(skm.log_loss(Y3, P3))
    assert r["notes"] == []
    json.dumps(r)  # fails on any numpy scalar left behind


def test_ece_by_hand():
    # Bins (width 0.1): (0.9, 1.0] holds 4 rows at 0.95 with 3 right: |0.75 - 0.95| = 0.20
    #                   (0.6, 0.7] holds 2 rows at 0.65, both right: |1.00 - 0.65| = 0.35
    #                   (0.4, 0.5] holds 4 rows at 0.45 with 1 right: |0.25 - 0.45| = 0.20
    # ECE = 0.4 * 0.20 + 0.2 * 0.35 + 0.4 * 0.20 = 0.23
    r = evaluate_model(None, None, Y3, "multiclass", predictions=P3)
    assert r["ece"] == pytest.approx(0.23)
    bins = r["calibration"]["bins"]
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 4, 0, 2, 0, 0, 4]
    assert bins[9]["confidence"] == pytest.approx(0.95) and bins[9]["accuracy"] == 0.75
    assert bins[6]["accuracy"] == 1.0 and bins[4]["accuracy"] == 0.25
    assert bins[0]["confidence"] is None and bins[0]["lower"] == 0.0
    conf = P3.max(1)
    assert expected_calibration_error(conf, P3.argmax(1) == Y3) == pytest.approx(0.23)
    # Five bins merge (0.4, 0.5] into (0.4, 0.6] and (0.6, 0.7] into (0.6, 0.8]: same sum.
    assert expected_calibration_error(conf, P3.argmax(1) == Y3, n_bins=5) == \
        pytest.approx(0.23)


def test_reliability_bin_edges():
    bins = reliability_bins(np.array([0.0, 0.1, 0.1000001, 1.0]),
                            np.array([True, False, True, True]), n_bins=10)
    assert bins[0]["count"] == 2  # 0 and 0.1 belong to the first bin (0, 0.1]
    assert bins[1]["count"] == 1 and bins[9]["count"] == 1
    assert expected_calibration_error(np.ones(4), np.ones(4, bool)) == 0.0
    with pytest.raises(ValueError):
        reliability_bins(np.ones(3), np.ones(2, bool))


def test_binary_sigmoid_head_and_missing_class():
    y = np.array([0, 1, 1, 0, 1, 0])
    p = np.array([0.2, 0.7, 0.4, 0.1, 0.9, 0.6])
    r = evaluate_model(None, None, y, "binary", predictions=p[:, None])
    pred = (p >= 0.5).astype(int)
    assert r["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert r["log_loss"] == pytest.approx(skm.log_loss(y, p))
    assert r["confusion_matrix"]["matrix"] == skm.confusion_matrix(y, pred).tolist()
    # A class absent from the labels: AUC skipped with the reason, the rest still there.
    r = evaluate_model(None, None, np.array([0, 0, 1, 1]), "multiclass",
                       class_names=["x", "y", "z"], predictions=P3[:4])
    assert r["roc_auc"] is None
    assert any("ROC-AUC skipped" in n and "'z'" in n for n in r["notes"])
    assert r["per_class"][2]["support"] == 0
    assert r["log_loss"] == pytest.approx(skm.log_loss([0, 0, 1, 1], P3[:4], labels=[0, 1, 2]))


def test_logits_are_turned_into_probabilities():
    logits = np.log(P3) + 3.0  # softmax(log p + c) = p
    r = evaluate_model(None, None, Y3, "multiclass", predictions=logits)
    ref = evaluate_model(None, None, Y3, "multiclass", predictions=P3)
    assert r["log_loss"] == pytest.approx(ref["log_loss"])
    assert r["ece"] == pytest.approx(ref["ece"])
    assert any("softmax" in n for n in r["notes"])


def test_one_hot_labels_and_bad_labels():
    r = evaluate_model(None, None, np.eye(3)[Y3], "multiclass", predictions=P3)
    assert r["accuracy"] == pytest.approx(0.6)  # rows 0, 1, 2, 4, 5, 6 are right
    with pytest.raises(DataError) as e:
        evaluate_model(None, None, np.array([0, 3]), "multiclass", predictions=P3[:2])
    assert e.value.code == "bad_labels" and "row 1" in str(e.value)
    with pytest.raises(DataError):
        evaluate_model(None, None, None, "multiclass", predictions=P3)
    with pytest.raises(DataError):
        evaluate_model(None, None, Y3[:5], "multiclass", predictions=P3)
    with pytest.raises(ValueError):
        evaluate_model(None, None, Y3, "ranking", predictions=P3)


def test_multilabel_matches_scikit_learn():
    y = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1], [1, 0, 0]])
    p = np.array([[0.9, 0.2, 0.6], [0.3, 0.8, 0.4], [0.6, 0.4, 0.2], [0.1, 0.3, 0.7],
                  [0.4, 0.1, 0.1]])
    pred = (p >= 0.5).astype(int)
    r = evaluate_model(None, None, y, "multilabel", class_names=["l0", "l1", "l2"],
                       predictions=p)
    assert r["subset_accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert r["hamming_loss"] == pytest.approx(skm.hamming_loss(y, pred))
    assert r["micro_f1"] == pytest.approx(skm.f1_score(y, pred, average="micro"))
    assert r["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    for j, row in enumerate(r["per_label"]):
        assert row["label"] == f"l{j}"
        assert row["f1"] == pytest.approx(skm.f1_score(y[:, j], pred[:, j]))
        assert row["roc_auc"] == pytest.approx(skm.roc_auc_score(y[:, j], p[:, j]))
        assert row["log_loss"] == pytest.approx(skm.log_loss(y[:, j], p[:, j]))
    conf = np.maximum(p, 1 - p).ravel()
    assert r["ece"] == pytest.approx(expected_calibration_error(conf, (pred == y).ravel()))
    json.dumps(r)


def test_regression_matches_scikit_learn():
    y = np.array([3.0, -0.5, 2.0, 7.0, 4.2])
    p = np.array([2.5, 0.0, 2.0, 8.0, 3.9])
    r = evaluate_model(None, None, y, "regression", predictions=p[:, None])
    assert r["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert r["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)))
    assert r["r2"] == pytest.approx(skm.r2_score(y, p))
    res = y - p
    assert r["residuals"]["mean"] == pytest.approx(res.mean())
    assert r["residuals"]["std"] == pytest.approx(res.std())
    assert r["residuals"]["quantiles"]["q50"] == pytest.approx(np.median(res))
    assert r["residuals"]["quantiles"]["q05"] == pytest.approx(np.quantile(res, 0.05))
    assert r["residuals"]["max_abs"] == pytest.approx(1.0)
    two = evaluate_model(None, None, np.stack([y, 2 * y], 1), "regression",
                         predictions=np.stack([p, 2 * p], 1))
    assert two["per_output"][1]["mae"] == pytest.approx(2 * r["mae"])


def test_predict_proba_batches_and_matches_keras_predict():
    model = models.mlp_classifier(n_features=8, n_classes=3)
    x = np.random.default_rng(0).normal(size=(37, 8)).astype("float32")
    full = predict_proba(model, x)
    np.testing.assert_allclose(full, model.predict(x, verbose=0), rtol=1e-6)
    calls = []

    def fn(batch):
        calls.append(len(batch))
        return model(batch).numpy()

    np.testing.assert_allclose(predict_proba(fn, x, batch_size=10), full, atol=1e-6)
    assert calls == [10, 10, 10, 7]
    r = evaluate_model(model, x, np.arange(37) % 3, "multiclass", batch_size=8)
    ref = evaluate_model(None, None, np.arange(37) % 3, "multiclass", predictions=full)
    assert r["log_loss"] == pytest.approx(ref["log_loss"], rel=1e-5)
    with pytest.raises(TypeError):
        predict_proba(42, x)
