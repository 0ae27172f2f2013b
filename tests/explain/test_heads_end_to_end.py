"""Every head the audit accepts works end to end: binary (softmax 2 and a single
sigmoid), multiclass and regression, for tables and images, through the CLI, the API and
the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from explain._backend import keras
from explain.cli import main
from reports import validate_report

HEADS = ["softmax2", "sigmoid", "multiclass", "regression"]
KINDS = ["table", "image"]


def _model(kind: str, head: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    width, act = {"softmax2": (2, "softmax"), "sigmoid": (1, "sigmoid"),
                  "multiclass": (3, "softmax"), "regression": (1, None)}[head]
    if kind == "table":
        inp = keras.Input((6,))
        h = keras.layers.Dense(8, activation="tanh")(inp)
    else:
        inp = keras.Input((16, 16, 3))
        h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="last_conv")(inp)
        h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, keras.layers.Dense(width, activation=act)(h))


def _data(kind: str, head: str, model: keras.Model, n: int = 36):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(n, 6)) if kind == "table"
         else rng.random((n, 16, 16, 3))).astype(np.float32)
    out = model.predict(x, verbose=0)
    if head == "regression":
        y = out[:, 0] + rng.normal(0, 0.05, n).astype(np.float32)
    elif head == "sigmoid":
        y = (out[:, 0] > np.median(out[:, 0])).astype(np.int64)
    else:
        y = np.arange(n) % out.shape[1]
    return x, y


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("heads")
    out = {}
    for kind in KINDS:
        for head in HEADS:
            model = _model(kind, head)
            path = folder / f"{kind}_{head}.keras"
            model.save(path)
            x, y = _data(kind, head, model)
            data = folder / f"{kind}_{head}.npz"
            np.savez(data, x=x, y=y)
            out[kind, head] = (path, data)
    return out


FAST = ["--samples", "6", "--methods", "integrated_gradients", "--quiet"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("head", HEADS)
def test_cli_audit_and_report_for_every_head(cases, kind, head, tmp_path):
    path, data = cases[kind, head]
    html, js = tmp_path / "r.html", tmp_path / "r.json"
    r = CliRunner().invoke(main, ["audit", str(path), "--data", str(data), "--out",
                                  str(html), "--json", str(js), *FAST])
    assert r.exit_code == 0, r.output + r.stderr
    assert "Traceback" not in r.output + r.stderr
    report = validate_report(json.loads(js.read_text()))
    assert (report["model"]["task"] == "regression") == (head == "regression")
    if head == "regression":
        assert "r2" in report["performance"] or "mae" in report["performance"]
    else:
        assert report["performance"]["accuracy"] is not None
        assert len(report["dataset"]["class_names"] or []) == (3 if head == "multiclass"
                                                               else 2)
    text = html.read_text()
    assert "Global importance" in text and "Findings" in text


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("head", HEADS)
def test_api_audit_and_report_for_every_head(cases, kind, head, tmp_path):
    from tests.api.conftest import bearer, make_app, new_key, upload

    path, data = cases[kind, head]
    app = make_app(tmp_path)
    try:
        client = app.test_client()
        auth = bearer(new_key(app, "acme"))
        m = upload(client, "models", path, "m", auth)
        assert m.status_code == 201, m.json
        d = upload(client, "datasets", data, "d", auth)
        assert d.status_code == 201, d.json
        r = client.post("/api/v1/audits", headers=auth, json={
            "model_id": m.json["id"], "dataset_id": d.json["id"], "config": {
                "samples": 6, "methods": ["integrated_gradients"]}})
        assert r.status_code == 202, r.json
        got = client.get(r.json["status_url"], headers=auth).json
        assert got["status"] == "succeeded", got
        html = client.get(f"/api/v1/audits/{r.json['id']}/report", headers=auth)
        assert html.status_code == 200 and b"Global importance" in html.data
        js = client.get(f"/api/v1/audits/{r.json['id']}/report.json", headers=auth)
        assert js.status_code == 200
        validate_report(js.json)
    finally:
        app.extensions["xaudit_db"]["engine"].dispose()
