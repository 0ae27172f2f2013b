"""POST /explain on text models: instances as strings or token-id lists, one score per
token, the tokens in the answer; strings refused for a model that cannot read them."""

from __future__ import annotations

import numpy as np
import pytest

from explain.datasets import text_vocabulary
from explain.training import build_text_model
from tests.api.conftest import upload

VOCAB = text_vocabulary()


@pytest.fixture
def text_models(client, auth, tmp_path):
    ids = {}
    for arch in ("vectorize", "pool"):
        path = tmp_path / f"{arch}.keras"
        build_text_model(arch, VOCAB, 12, 2).save(path)
        r = upload(client, "models", path, arch, auth)
        assert r.status_code == 201, r.json
        ids[arch] = r.json["id"]
    return ids


def test_strings_and_token_ids(client, auth, text_models):
    texts = ["good film src_wire", "awful plot and a dull cast"]
    r = client.post("/api/v1/explain", headers=auth, json={
        "model_id": text_models["vectorize"], "instances": texts,
        "method": "integrated_gradients"})
    assert r.status_code == 200, r.json
    body = r.json
    assert body["shape"] == [2, 12]
    assert body["tokens"][0][:3] == ["good", "film", "src_wire"]
    assert body["tokens"][0][3] == ""  # padding
    attr = np.asarray(body["attributions"])
    assert np.all(attr[0, 3:] == 0) and np.abs(attr[0, :3]).max() > 0
    assert np.asarray(body["prediction"]).shape == (2, 2)
    # the same texts as token ids give the same scores
    r2 = client.post("/api/v1/explain", headers=auth, json={
        "model_id": text_models["vectorize"], "instances": body["token_ids"],
        "method": "integrated_gradients"})
    assert r2.status_code == 200, r2.json
    np.testing.assert_allclose(np.asarray(r2.json["attributions"]), attr, atol=1e-5)
    r3 = client.post("/api/v1/explain", headers=auth, json={
        "model_id": text_models["pool"], "instances": body["token_ids"], "method": "shap"})
    assert r3.status_code == 200, r3.json
    assert np.asarray(r3.json["attributions"]).shape == (2, 12)


@pytest.mark.parametrize("instances, model, code", [
    (["good film"], "pool", "bad_instances"),
    ([[1] * 12, "good"], "vectorize", "non_numeric"),
    ([[5000] * 12], "pool", "bad_instances"),
    ([[1.5] * 12], "pool", "bad_instances"),
    ([[1] * 7], "pool", "bad_shape"),
])
def test_bad_text_instances_are_422(client, auth, text_models, instances, model, code):
    r = client.post("/api/v1/explain", headers=auth, json={
        "model_id": text_models[model], "instances": instances})
    assert r.status_code == 422, r.json
    assert r.json["error"]["code"] == code


def test_text_options_are_checked(client, auth, text_models):
    r = client.post("/api/v1/explain", headers=auth, json={
        "model_id": text_models["pool"], "instances": [[3] * 12], "method": "shap",
        "options": {"background": 3}})
    assert r.status_code == 422
    r = client.post("/api/v1/explain", headers=auth, json={
        "model_id": text_models["pool"], "instances": [[3] * 12], "method": "shap",
        "options": {"mask_id": 1, "exact_max": 8}})
    assert r.status_code == 200, r.json
