"""POST /api/v1/explain: validation, the worker's computation (run inline), 202 + job."""

from __future__ import annotations

import numpy as np
import pytest

from tests.api.conftest import bearer, make_app, new_key, state, upload


@pytest.fixture
def model_id(client, auth, mlp_file):
    r = upload(client, "models", mlp_file, "mlp", auth)
    assert r.status_code == 201
    return r.json["id"]


def test_explain_round_trip_in_process(app, client, auth, model_id, mlp_file):
    rows = np.random.default_rng(1).normal(size=(3, 4)).round(3).tolist()
    r = client.post("/api/v1/explain", headers=auth, json={
        "model_id": model_id, "instances": rows, "method": "integrated_gradients",
        "options": {"steps": 32}})
    assert r.status_code == 200, r.json
    body = r.json
    assert body["status"] == "succeeded" and body["shape"] == [3, 4]
    attr = np.asarray(body["attributions"])
    assert attr.shape == (3, 4) and np.all(np.isfinite(attr))
    pred = np.asarray(body["prediction"])
    assert pred.shape == (3, 3) and np.allclose(pred.sum(axis=1), 1.0, atol=1e-4)
    assert body["targets"] == np.argmax(pred, axis=1).tolist()
    gap = np.asarray(body["completeness_gap"])
    assert gap.shape == (3,)
    # IG's completeness: attributions sum to f(x) - f(baseline) up to the gap reported.
    from explain._backend import keras

    model = keras.saving.load_model(mlp_file)
    x = np.asarray(rows, dtype="float32")
    f = model.predict(x, verbose=0)[np.arange(3), body["targets"]]
    f0 = model.predict(np.zeros_like(x), verbose=0)[np.arange(3), body["targets"]]
    assert np.allclose(attr.sum(axis=1) - (f - f0), gap, atol=1e-4)
    job = client.get(body["job_url"], headers=auth)
    assert job.status_code == 200 and job.json["attributions"] == body["attributions"]


BAD = [
    ({"instances": [[1, 2, 3]]}, "bad_shape"),
    ({"instances": [1, 2, 3, 4]}, "bad_shape"),
    ({"instances": [[1, 2, 3, 4], [1, 2]]}, "bad_shape"),
    ({"instances": [["a", "b", "c", "d"]]}, "non_numeric"),
    ({"instances": [[1, 2, None, 4]]}, "non_finite"),
    ({"instances": [[1, 2, 3, 4]] * 65}, "too_many_instances"),
    ({"instances": [[1, 2, 3, 4]], "method": "nope"}, "unknown_method"),
    ({"instances": [[1, 2, 3, 4]], "options": {"evil": 1}}, "bad_options"),
    ({"instances": [[1, 2, 3, 4]], "options": {"steps": 10 ** 9}}, "bad_options"),
    ({"instances": [[1, 2, 3, 4]], "target": 7}, "bad_target"),
    ({"instances": [[1, 2, 3, 4]], "target": [0, 1]}, "bad_target"),
    ({"instances": [[1, 2, 3, 4]], "target": "x"}, "bad_target"),
    ({"instances": []}, "validation_error"),
    ({"instances": "1,2,3,4"}, "validation_error"),
]


@pytest.mark.parametrize("payload,code", BAD)
def test_bad_requests_are_422_and_store_nothing(app, client, auth, model_id, payload, code):
    before = state(app)
    r = client.post("/api/v1/explain", headers=auth, json={"model_id": model_id, **payload})
    assert r.status_code == 422, r.json
    assert r.json["error"]["code"] == code
    assert state(app) == before


def test_nan_and_infinity_literals_are_refused(app, client, auth, model_id):
    # Python's JSON parser accepts these non-standard literals: they must not get through.
    for literal in ("NaN", "Infinity", "-Infinity"):
        body = f'{{"model_id": "{model_id}", "instances": [[1, 2, {literal}, 4]]}}'
        r = client.post("/api/v1/explain", headers=auth, data=body,
                        content_type="application/json")
        assert r.status_code == 422 and r.json["error"]["code"] == "non_finite", literal


def test_unknown_and_foreign_models_are_404(app, client, auth, model_id):
    r = client.post("/api/v1/explain", headers=auth,
                    json={"model_id": "0" * 32, "instances": [[1, 2, 3, 4]]})
    assert r.status_code == 404
    other = bearer(new_key(app, "globex"))
    r = client.post("/api/v1/explain", headers=other,
                    json={"model_id": model_id, "instances": [[1, 2, 3, 4]]})
    assert r.status_code == 404 and r.json["error"]["code"] == "not_found"


def test_worker_side_option_errors_are_422(client, auth, model_id):
    # A known option with a bad value is only caught by the attribution engine.
    r = client.post("/api/v1/explain", headers=auth, json={
        "model_id": model_id, "instances": [[1, 2, 3, 4]], "options": {"steps": "many"}})
    assert r.status_code == 422
    assert r.json["error"]["code"] not in ("internal_error", "validation_error")


def test_slow_job_answers_202_with_a_job_url(tmp_path, mlp_file):
    # No eager execution and a broker nobody consumes: the wait times out.
    app = make_app(tmp_path, CELERY_TASK_ALWAYS_EAGER=False, EXPLAIN_TIMEOUT=0.2)
    client = app.test_client()
    headers = bearer(new_key(app, "acme"))
    model_id = upload(client, "models", mlp_file, "mlp", headers).json["id"]
    r = client.post("/api/v1/explain", headers=headers,
                    json={"model_id": model_id, "instances": [[1, 2, 3, 4]]})
    assert r.status_code == 202
    assert r.json["status"] == "queued" and r.headers["Location"] == r.json["job_url"]
    # A worker picking it up later completes the same job row.
    from worker.tasks import explain_job

    with app.app_context():
        assert explain_job.run(r.json["job_id"]) == {"status": "succeeded"}
        # A redelivered message for a finished job does nothing.
        assert explain_job.run(r.json["job_id"]) == {"status": "succeeded", "skipped": True}
    job = client.get(r.json["job_url"], headers=headers)
    assert job.status_code == 200 and job.json["status"] == "succeeded"
    assert np.asarray(job.json["attributions"]).shape == (1, 4)
    other = bearer(new_key(app, "globex"))
    assert client.get(r.json["job_url"], headers=other).status_code == 404
