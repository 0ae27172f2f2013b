"""Abuse resistance of the API: bounded JSON, strict numbers, data bombs, work budgets,
per-tenant caps. Each case used to answer 500, blow up memory or queue unbounded work."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from tests.api.conftest import make_app, state, upload
from tests.hostile import declared_model, set_input_shape, wide_dense


@pytest.fixture
def model_id(client, auth, mlp_file):
    r = upload(client, "models", mlp_file, "mlp", auth)
    assert r.status_code == 201
    return r.json["id"]


def _post_raw(client, auth, path, body: str):
    return client.post(path, data=body, headers={**auth, "Content-Type": "application/json"})


# --------------------------------------------------------------------------- JSON parser


@pytest.mark.parametrize("body", [
    "[" * 1000 + "]" * 1000,
    '{"model_id": "x", "instances": ' + "[" * 5000 + "]" * 5000 + "}",
    '{"model_id": "x", "instances": [[' + "9" * 5000 + "]]}",
    '{"model_id": "x", "instances": [[1, 2, 3, 4]',
])
def test_hostile_json_bodies_are_400_bad_json(client, auth, body):
    r = _post_raw(client, auth, "/api/v1/explain", body)
    assert r.status_code == 400, (r.status_code, r.json)
    assert r.json["error"]["code"] == "bad_json"


def test_deep_but_bounded_json_still_parses(client, auth, model_id):
    r = client.post("/api/v1/explain", headers=auth, json={
        "model_id": model_id, "instances": [[0.1, 0.2, 0.3, 0.4]], "method": "saliency"})
    assert r.status_code == 200, r.json


# --------------------------------------------------------------------------- strict numbers


@pytest.mark.parametrize("patch, code", [
    ({"instances": [["1", "2", "3", "4"]]}, "non_numeric"),
    ({"instances": [[True, 2, 3, 4]]}, "non_numeric"),
    ({"options": {"logits": "yes"}}, "bad_options"),
    ({"options": {"logits": 1}}, "bad_options"),
    ({"options": {"steps": "12"}}, "bad_options"),
    ({"options": {"steps": True}}, "bad_options"),
    ({"options": {"steps": 12.5}}, "bad_options"),
    ({"options": {"seed": 2**70}}, "bad_options"),
    ({"options": {"seed": 2**64}}, "bad_options"),
    ({"options": {"steps": -3}}, "bad_options"),
])
def test_numbers_must_be_json_numbers_in_range(client, auth, model_id, patch, code):
    body = {"model_id": model_id, "instances": [[0.1, 0.2, 0.3, 0.4]],
            "method": "integrated_gradients", **patch}
    r = client.post("/api/v1/explain", headers=auth, json=body)
    assert r.status_code == 422, (r.status_code, r.json)
    assert r.json["error"]["code"] == code


@pytest.mark.parametrize("config", [{"samples": "10"}, {"seed": 2**70}, {"ig_steps": True},
                                    {"samples": 10**30}])
def test_audit_config_numbers_are_strict(client, auth, model_id, data_file, config):
    ds = upload(client, "datasets", data_file, "rows", auth).json["id"]
    r = client.post("/api/v1/audits", headers=auth, json={
        "model_id": model_id, "dataset_id": ds, "config": config})
    assert r.status_code == 422, (r.status_code, r.json)
    assert r.json["error"]["code"] == "bad_config"


# --------------------------------------------------------------------------- data bombs


def _npy_header_only(shape, dtype="<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_npy_header_declaring_a_huge_shape_is_refused(app, client, auth, tmp_path):
    path = tmp_path / "huge.npy"
    path.write_bytes(_npy_header_only((10**12, 10)) + b"\0" * 64)
    before = state(app)
    r = upload(client, "datasets", path, "huge", auth)
    assert r.status_code in (413, 422), (r.status_code, r.json)
    assert r.json["error"]["code"] in ("data_too_large", "bad_format")
    assert state(app) == before


def test_npy_header_larger_than_its_data_is_refused(client, auth, tmp_path):
    path = tmp_path / "short.npy"
    path.write_bytes(_npy_header_only((1000, 10)) + b"\0" * 80)
    r = upload(client, "datasets", path, "short", auth)
    assert r.status_code == 422 and r.json["error"]["code"] == "bad_format"


@pytest.mark.parametrize("member", ["x", "y"])
def test_npz_decompression_bomb_is_refused_in_any_member(app, client, auth, tmp_path,
                                                         monkeypatch, member):
    monkeypatch.setitem(app.config, "MAX_DATA_BYTES", 8 * 1024 * 1024)
    path = tmp_path / "bomb.npz"
    arrays = {"x": np.zeros((10, 4), "float32"), "y": np.zeros(10, "int64")}
    arrays[member] = np.zeros((4 * 1024 * 1024,), "float32")  # 16 MiB of zeros
    np.savez_compressed(path, **arrays)
    assert path.stat().st_size < 200_000
    r = upload(client, "datasets", path, "bomb", auth)
    assert r.status_code == 413, (r.status_code, r.json)
    assert r.json["error"]["code"] == "data_too_large"
    assert "XAUDIT_MAX_DATA_" in r.json["error"]["message"]


def test_npz_member_whose_header_lies_about_its_shape_is_refused(client, auth, tmp_path):
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", _npy_header_only((10**12, 10), "<f4") + b"\0" * 40)
    r = upload(client, "datasets", path, "liar", auth)
    assert r.status_code in (413, 422) and r.json["error"]["code"] in (
        "data_too_large", "bad_format")


def test_zero_feature_dataset_is_refused(client, auth, tmp_path):
    path = tmp_path / "empty.npz"
    np.savez(path, x=np.zeros((10, 0), "float32"), y=np.zeros(10, "int64"))
    r = upload(client, "datasets", path, "nofeat", auth)
    assert r.status_code == 422 and r.json["error"]["code"] == "empty"


# --------------------------------------------------------------------------- work budget


def test_over_budget_explain_is_refused_naming_cost_and_limit(app, client, auth, model_id,
                                                              monkeypatch):
    body = {"model_id": model_id, "instances": [[0.1, 0.2, 0.3, 0.4]] * 64,
            "method": "integrated_gradients",
            "options": {"steps": 4096, "baseline": "uniform", "baseline_samples": 4096}}
    r = client.post("/api/v1/explain", headers=auth, json=body)
    assert r.status_code == 422, r.json
    err = r.json["error"]
    assert err["code"] == "over_budget"
    assert "floating-point operations" in err["message"] and "limit" in err["message"]
    # A smaller budget refuses a request that the default lets through.
    small = {"model_id": model_id, "instances": [[0.1, 0.2, 0.3, 0.4]] * 8,
             "method": "integrated_gradients", "options": {"steps": 64}}
    assert client.post("/api/v1/explain", headers=auth, json=small).status_code == 200
    monkeypatch.setitem(app.config, "EXPLAIN_MAX_FLOPS", 1000)
    r = client.post("/api/v1/explain", headers=auth, json=small)
    assert r.status_code == 422 and r.json["error"]["code"] == "over_budget"
    assert "1e+03" in r.json["error"]["message"]


def test_over_budget_audit_is_refused_and_a_normal_one_runs(app, client, auth, model_id,
                                                            data_file, monkeypatch):
    ds = upload(client, "datasets", data_file, "rows", auth).json["id"]
    monkeypatch.setitem(app.config, "AUDIT_MAX_FLOPS", 1e6)
    r = client.post("/api/v1/audits", headers=auth, json={
        "model_id": model_id, "dataset_id": ds, "config": {"samples": 10000,
                                                           "ig_steps": 4096}})
    assert r.status_code == 422 and r.json["error"]["code"] == "over_budget", r.json
    monkeypatch.setitem(app.config, "AUDIT_MAX_FLOPS", None)
    r = client.post("/api/v1/audits", headers=auth, json={
        "model_id": model_id, "dataset_id": ds,
        "config": {"samples": 4, "methods": ["integrated_gradients"], "global_rows": 8,
                   "sanity_rows": 2}})
    assert r.status_code == 202, r.json
    done = client.get(r.json["status_url"], headers=auth).json
    assert done["status"] == "succeeded", done


def test_huge_models_are_refused_at_upload_with_model_too_large(app, client, auth, tmp_path,
                                                                mlp_file):
    def huge_input(cfg):
        set_input_shape(cfg, (50000, 50000, 3))

    before = state(app)
    for name, edit in (("huge", huge_input), ("wide", wide_dense(20000))):
        data = {"file": (io.BytesIO(declared_model(edit)), "m.keras"),
                "name": name}
        r = client.post("/api/v1/models", data=data, headers=auth,
                        content_type="multipart/form-data")
        assert r.status_code == 422, (name, r.status_code, r.json)
        assert r.json["error"]["code"] == "model_too_large"
    assert state(app) == before
    # A normal model is still accepted afterwards.
    assert upload(client, "models", mlp_file, "fine", auth).status_code == 201


# --------------------------------------------------------------------------- tenant caps


def test_queued_work_per_tenant_is_capped_with_retry_after(tmp_path, mlp_file, data_file):
    from api import db
    from tests.api.conftest import bearer, new_key

    app = make_app(tmp_path, MAX_QUEUED_AUDITS=2)
    client = app.test_client()
    auth = bearer(new_key(app, "acme"))
    other = bearer(new_key(app, "other"))
    mid = upload(client, "models", mlp_file, "mlp", auth).json["id"]
    ds = upload(client, "datasets", data_file, "rows", auth).json["id"]
    with app.app_context():
        session = db.session()
        for _ in range(2):
            session.add(db.Audit(tenant_id=_tenant_of(session, mid), model_id=mid, dataset_id=ds, status="queued",
                                 progress=0.0, stage="queued", config={}, timings={}))
        session.commit()
    r = client.post("/api/v1/audits", headers=auth, json={"model_id": mid, "dataset_id": ds})
    assert r.status_code == 429, r.json
    assert r.json["error"]["code"] == "too_many_requests"
    assert int(r.headers["Retry-After"]) > 0
    # Another tenant is not held back by acme's queue.
    omid = upload(client, "models", mlp_file, "mlp", other).json["id"]
    ods = upload(client, "datasets", data_file, "rows", other).json["id"]
    r = client.post("/api/v1/audits", headers=other, json={
        "model_id": omid, "dataset_id": ods,
        "config": {"samples": 4, "methods": ["saliency"], "global_rows": 8,
                   "sanity_rows": 2}})
    assert r.status_code == 202, r.json
    app.extensions["xaudit_db"]["engine"].dispose()


def _tenant_of(session, model_id):
    from api import db

    return session.get(db.ModelRow, model_id).tenant_id


def test_schedules_per_tenant_are_capped(tmp_path, mlp_file, data_file):
    from tests.api.conftest import bearer, new_key

    app = make_app(tmp_path, MAX_SCHEDULES=2)
    client = app.test_client()
    auth = bearer(new_key(app, "acme"))
    upload(client, "models", mlp_file, "mlp", auth)
    upload(client, "datasets", data_file, "rows", auth)
    body = {"cron": "* * * * *", "model_name": "mlp", "dataset_name": "rows"}
    for _ in range(2):
        assert client.post("/api/v1/schedules", headers=auth, json=body).status_code == 201
    r = client.post("/api/v1/schedules", headers=auth, json=body)
    assert r.status_code == 429 and "Retry-After" in r.headers
    app.extensions["xaudit_db"]["engine"].dispose()
