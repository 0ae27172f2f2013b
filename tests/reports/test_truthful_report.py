"""Report polish: every critical finding in the summary, the training section as tables
and a learning curve, labels never cut off, absent classes shown and left out of means."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest

from explain.evaluation import evaluate_model
from explain.findings import FindingInputs, run_rules
from reports import figures, render_html
from tests.reports.builders import tabular_audit


def _critical(i: int) -> dict:
    return {"code": "shortcut_region", "severity": "critical",
            "message": f"shortcut number {i}", "evidence": {"region": f"r{i}"}}


def test_every_critical_finding_is_in_the_summary_with_its_own_anchor():
    result = tabular_audit()
    result.report["findings"] = [_critical(i) for i in range(3)] + [
        {"code": "weak_class", "severity": "warning", "message": "weak one", "evidence": {}}]
    result.report["verdict"] = {"level": "fail", "headline": "shortcut number 0",
                                "top_findings": ["shortcut_region", "weak_class"]}
    html = render_html(result)
    summary = html[html.index('id="summary"'):html.index('id="model"')]
    for i in range(3):
        assert f"shortcut number {i}" in summary
    assert "weak one" in summary
    links = re.findall(r'href="#(finding-[a-z0-9_-]+)"', summary)
    assert len(links) == len(set(links)) == 4
    for anchor in links:
        assert html.count(f'id="{anchor}"') == 1


def test_training_section_is_tables_and_a_learning_curve():
    result = tabular_audit()
    result.report["model"]["training"] = {
        "task": "multiclass",
        "training": {"epochs_run": 3, "best_epoch": 2, "history": {
            "loss": [1.0, 0.6, 0.4], "val_loss": [1.1, 0.7, 0.6],
            "accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.45, 0.6, 0.7]}},
        "validation": {"accuracy": 0.7, "confusion_matrix": {
            "labels": ["a", "b"], "matrix": [[58, 2], [1, 59]]}},
        "test": {"accuracy": 0.68},
    }
    html = render_html(result)
    model = html[html.index('id="model"'):html.index('id="performance"')]
    assert "Learning curves" in model and "data:image/png;base64," in model
    assert "Confusion matrix, validation split" in model
    assert "58 2 1 59" not in re.sub(r"<[^>]+>", " ", model).replace("  ", " ")
    assert re.search(r"<td class=\"num\">58</td><td class=\"num\">2</td>", model)
    assert "Metrics at the end of training" in model


def test_long_labels_are_not_cut_off():
    items = [{"feature": f"a_really_long_feature_name_number_{i}_" * 3, "score": 1.0 / (i + 1)}
             for i in range(15)]
    uri = figures.importance_figure(items)
    assert uri.startswith("data:image/png;base64,")
    # The guard used when saving: nothing reaches outside the canvas.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.barh(range(3), [1, 2, 3])
    ax.set_yticks(range(3), ["x" * 60] * 3)
    assert figures.clipped_texts(fig)  # the check sees a label cut off ...
    for fn, args in ((figures.importance_figure, (items,)),
                     (figures.learning_curve_figure, ({"loss": [1, 0.5],
                                                       "val_loss": [1.2, 0.8]},))):
        assert fn(*args)  # ... and the report's figures are saved with the guard


def test_absent_classes_are_marked_and_left_out_of_means():
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    proba = np.tile([[0.8, 0.1, 0.1]], (8, 1))
    proba[y == 1] = [0.1, 0.8, 0.1]
    m = evaluate_model(None, None, y, "multiclass", ["a", "b", "c"], predictions=proba)
    absent = [c for c in m["per_class"] if c.get("absent")]
    assert [c["class"] for c in absent] == ["c"] and absent[0]["recall"] is None
    assert m["macro_recall"] == pytest.approx(1.0) and m["macro_f1"] == pytest.approx(1.0)
    report = {"performance": {"per_class": copy.deepcopy(m["per_class"])}}
    found = run_rules(FindingInputs(report=report))
    assert not [f for f in found if f["code"] == "weak_class"]
    result = tabular_audit()
    result.report["performance"]["per_class"] = [
        {k: v for k, v in c.items()} for c in m["per_class"]]
    html = render_html(result)
    assert "absent from the data" in html
