"""The real audit pipeline's output, rendered: the end-to-end check of the contract.

It calls the pipeline the way the worker calls it:
``run_audit(model_path, data, config, model_name=..., dataset_name=...)`` returning an
:class:`~explain.result.AuditResult`.
"""

from __future__ import annotations

import pytest

from explain.result import AuditResult
from tests.reports.html_checks import parse

pytestmark = pytest.mark.slow


def test_pipeline_result_validates_renders_and_round_trips(tmp_path):
    from explain.audit import run_audit
    from explain.datasets import load_data_file
    from reports import render_html, render_json, validate_report
    from tests import models

    # A tiny classifier on random tabular data: fast, and enough to exercise every stage.
    model = models.mlp_classifier(n_features=6, n_classes=3)
    model_path = tmp_path / "model.keras"
    model.save(model_path)
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype("float32")
    y = model.predict(x, verbose=0).argmax(axis=1)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    data = load_data_file(tmp_path / "data.npz")

    result = run_audit(str(model_path), data, {}, model_name="tiny <mlp>",
                       dataset_name="random & rows")
    assert isinstance(result, AuditResult)
    validate_report(result.report)

    html = render_html(result)
    doc = parse(html)
    for section in ("summary", "model", "performance", "global-importance", "local",
                    "quality", "findings", "reproducibility"):
        assert section in doc.ids
    assert "tiny <mlp>" in doc.visible_text and "<mlp>" not in html
    assert render_json(result) == result.to_json()

    result.save(tmp_path / "saved")
    assert render_html(AuditResult.load(tmp_path / "saved")) == html
