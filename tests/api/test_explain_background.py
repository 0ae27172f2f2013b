"""Model-agnostic SHAP in /explain takes its background from the model's data, never
from the submitted rows, and refuses (422 no_background) when it has none."""

from __future__ import annotations

import numpy as np
import pytest

from tests.api.conftest import state, upload


@pytest.fixture
def model_id(client, auth, mlp_file):
    r = upload(client, "models", mlp_file, "mlp", auth)
    assert r.status_code == 201
    return r.json["id"]


ONE_ROW = [[0.5, -1.0, 2.0, 0.3]]


def test_shap_without_any_background_is_refused(app, client, auth, model_id):
    before = state(app)
    r = client.post("/api/v1/explain", headers=auth, json={
        "model_id": model_id, "instances": ONE_ROW, "method": "shap"})
    assert r.status_code == 422, r.json
    assert r.json["error"]["code"] == "no_background"
    assert "background" in r.json["error"]["message"]
    assert state(app) == before


def test_a_number_as_background_is_refused(app, client, auth, model_id):
    r = client.post("/api/v1/explain", headers=auth, json={
        "model_id": model_id, "instances": ONE_ROW, "method": "shap",
        "options": {"background": 1}})
    assert r.status_code == 422 and r.json["error"]["code"] == "bad_options"


def test_background_rows_of_the_wrong_shape_are_refused(client, auth, model_id):
    r = client.post("/api/v1/explain", headers=auth, json={
        "model_id": model_id, "instances": ONE_ROW, "method": "shap",
        "background": [[1.0, 2.0]]})
    assert r.status_code == 422 and r.json["error"]["code"] == "bad_shape"


def test_callers_background_gives_nonzero_values_for_one_row(client, auth, model_id,
                                                             mlp_file):
    from explain import explain
    from explain._backend import keras

    bg = np.random.default_rng(4).normal(size=(20, 4)).round(3)
    r = client.post("/api/v1/explain", headers=auth, json={
        "model_id": model_id, "instances": ONE_ROW, "method": "shap",
        "background": bg.tolist()})
    assert r.status_code == 200, r.json
    attr = np.asarray(r.json["attributions"])
    assert attr.shape == (1, 4) and np.abs(attr).sum() > 1e-3
    model = keras.saving.load_model(mlp_file)
    want = explain(model, np.asarray(ONE_ROW, np.float32), "shap",
                   background=bg.astype(np.float32)).values
    assert np.allclose(attr, want, atol=1e-5)
    # Options can carry the rows too.
    r2 = client.post("/api/v1/explain", headers=auth, json={
        "model_id": model_id, "instances": ONE_ROW, "method": "shap",
        "options": {"background": bg.tolist()}})
    assert r2.status_code == 200 and np.allclose(r2.json["attributions"], attr)


def test_latest_audited_dataset_is_the_background(client, auth, model_id, data_file,
                                                  mlp_file):
    from explain import explain
    from explain._backend import keras

    d = upload(client, "datasets", data_file, "rows", auth).json
    r = client.post("/api/v1/audits", headers=auth, json={
        "model_id": model_id, "dataset_id": d["id"], "config": {
            "samples": 4, "methods": ["integrated_gradients"],
            "quality": {"faithfulness": False, "randomization": False}}})
    assert r.status_code == 202, r.json
    assert client.get(r.json["status_url"], headers=auth).json["status"] == "succeeded"
    r = client.post("/api/v1/explain", headers=auth, json={
        "model_id": model_id, "instances": ONE_ROW, "method": "shap"})
    assert r.status_code == 200, r.json
    attr = np.asarray(r.json["attributions"])
    assert np.abs(attr).sum() > 1e-3
    x = np.load(data_file)["x"].astype(np.float32)
    take = np.sort(np.random.default_rng(0).choice(len(x), 40 if len(x) < 50 else 50,
                                                   replace=False))
    model = keras.saving.load_model(mlp_file)
    want = explain(model, np.asarray(ONE_ROW, np.float32), "shap", background=x[take]).values
    assert np.allclose(attr, want, atol=1e-5)


def test_gradient_methods_need_no_background(client, auth, model_id):
    r = client.post("/api/v1/explain", headers=auth, json={
        "model_id": model_id, "instances": ONE_ROW, "method": "integrated_gradients"})
    assert r.status_code == 200
