"""Model-agnostic SHAP in /explain takes its background from the model's data, never
from the submitted rows, and refuses (422 no_background) when it has none."""

from __future__ import annotations

import io
import json

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
    assert r.json["background"] == {"source": "request", "rows": 20}
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
    assert r.json["background"] == {"source": "dataset", "dataset_id": d["id"], "rows": 40}
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
    assert r.status_code == 200 and r.json.get("background") is None


# --------------------------------------------------------------- stored with the model


def upload_with_background(client, model_path, background_path, name, headers,
                           filename=None):
    with open(model_path, "rb") as fh, open(background_path, "rb") as bg:
        data = {"file": (io.BytesIO(fh.read()), model_path.name), "name": name,
                "background": (io.BytesIO(bg.read()), filename or background_path.name)}
    return client.post("/api/v1/models", data=data, headers=headers,
                       content_type="multipart/form-data")


BG = np.random.default_rng(7).normal(size=(30, 4)).astype("float32")


@pytest.fixture
def background_npz(tmp_path):
    path = tmp_path / "bg.npz"
    np.savez(path, x=BG, y=np.zeros(len(BG), "int64"))  # labels are dropped
    return path


def test_upload_with_background_is_used_by_shap_on_one_row(app, client, auth, mlp_file,
                                                           background_npz):
    from explain import explain
    from explain._backend import keras
    from worker.tasks import background_from

    r = upload_with_background(client, mlp_file, background_npz, "mlp", auth)
    assert r.status_code == 201, r.json
    model = r.json
    assert model["background"]["rows"] == 30 and len(model["background"]["sha256"]) == 64
    # GET and the listing show it too; a model without one says null.
    assert client.get(f"/api/v1/models/{model['id']}", headers=auth).json["background"]["rows"] == 30
    plain = upload(client, "models", mlp_file, "plain", auth).json
    assert plain["background"] is None
    listed = {m["name"]: m["background"]
              for m in client.get("/api/v1/models", headers=auth).json["items"]}
    assert listed == {"mlp": model["background"], "plain": None}

    r = client.post("/api/v1/explain", headers=auth, json={
        "model_id": model["id"], "instances": ONE_ROW, "method": "shap"})
    assert r.status_code == 200, r.json
    assert r.json["background"] == {"source": "model", "rows": 30}
    attr = np.asarray(r.json["attributions"])
    assert attr.shape == (1, 4) and np.abs(attr).sum() > 1e-3
    want = explain(keras.saving.load_model(mlp_file), np.asarray(ONE_ROW, np.float32),
                   "shap", background=background_from(BG)).values
    assert np.allclose(attr, want, atol=1e-5)

    # The caller's rows come first; the stored sample is not used then.
    caller = np.random.default_rng(4).normal(size=(20, 4)).round(3)
    r2 = client.post("/api/v1/explain", headers=auth, json={
        "model_id": model["id"], "instances": ONE_ROW, "method": "shap",
        "background": caller.tolist()})
    assert r2.status_code == 200 and r2.json["background"] == {"source": "request",
                                                               "rows": 20}
    assert not np.allclose(r2.json["attributions"], attr)


def test_stored_background_comes_before_the_audited_dataset(client, auth, mlp_file,
                                                            background_npz, data_file):
    model = upload_with_background(client, mlp_file, background_npz, "mlp", auth).json
    d = upload(client, "datasets", data_file, "rows", auth).json
    r = client.post("/api/v1/audits", headers=auth, json={
        "model_id": model["id"], "dataset_id": d["id"], "config": {
            "samples": 4, "methods": ["integrated_gradients"],
            "quality": {"faithfulness": False, "randomization": False}}})
    assert client.get(r.json["status_url"], headers=auth).json["status"] == "succeeded"
    r = client.post("/api/v1/explain", headers=auth, json={
        "model_id": model["id"], "instances": ONE_ROW, "method": "shap"})
    assert r.status_code == 200 and r.json["background"]["source"] == "model"


def test_a_csv_background_with_a_header_is_accepted(client, auth, mlp_file, tmp_path):
    path = tmp_path / "bg.csv"
    path.write_text("a,b,c,d\n" + "\n".join(",".join(f"{v:.4f}" for v in row)
                                             for row in BG[:12]) + "\n")
    r = upload_with_background(client, mlp_file, path, "mlp", auth)
    assert r.status_code == 201, r.json
    assert r.json["background"]["rows"] == 12


def _pickle_bomb(marker):
    """An .npz whose x is an object array: loading it with pickle would create marker."""

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    arr = np.empty(1, dtype=object)
    arr[0] = Payload()
    return arr


@pytest.mark.parametrize("case, reason", [
    ("wrong_width", "bad_shape"), ("label_column", "bad_shape"), ("nan", "non_finite"),
    ("inf", "non_finite"), ("too_many_rows", "too_many_rows"), ("pickle", "pickled_data"),
    ("not_data", "bad_format"), ("empty", "empty"),
])
def test_a_bad_background_is_refused_and_nothing_is_stored(app, client, auth, mlp_file,
                                                           tmp_path, case, reason):
    marker = tmp_path / "pwned"
    path = tmp_path / ("bg.csv" if case in ("label_column", "empty") else
                       "bg.txt" if case == "not_data" else "bg.npz")
    if case == "wrong_width":
        np.savez(path, x=np.zeros((10, 5), "float32"))
    elif case == "label_column":
        path.write_text("a,b,c,d,label\n" + "1,2,3,4,0\n" * 5)
    elif case in ("nan", "inf"):
        x = BG.copy()
        x[3, 2] = np.nan if case == "nan" else np.inf
        np.savez(path, x=x)
    elif case == "too_many_rows":
        np.savez(path, x=np.zeros((1001, 4), "float32"))
    elif case == "pickle":
        np.savez(path, x=_pickle_bomb(marker))
    elif case == "not_data":
        path.write_text("hello")
    else:
        path.write_text("a,b,c,d\n")
    before = state(app)
    r = upload_with_background(client, mlp_file, path, "mlp", auth)
    assert r.status_code == 422, r.json
    assert r.json["error"]["code"] == "bad_background", r.json
    assert r.json["error"]["detail"] == {"reason": reason}, r.json
    assert r.json["error"]["message"].startswith("background: ")
    if case == "label_column":
        assert "no label column" in r.json["error"]["message"]
    assert state(app) == before  # no model row, no blob, no temp file
    assert not marker.exists()
    assert client.get("/api/v1/models", headers=auth).json["items"] == []


def test_a_text_model_takes_no_background(app, client, auth, tmp_path):
    from explain._backend import keras

    inp = keras.Input((8,), dtype="int32")
    h = keras.layers.Embedding(20, 4)(inp)
    h = keras.layers.GlobalAveragePooling1D()(h)
    model_path = tmp_path / "text.keras"
    keras.Model(inp, keras.layers.Dense(2, activation="softmax")(h)).save(model_path)
    bg = tmp_path / "bg.npz"
    np.savez(bg, x=np.ones((5, 8), "float32"))
    before = state(app)
    r = upload_with_background(client, model_path, bg, "text", auth)
    assert r.status_code == 422 and r.json["error"]["code"] == "bad_background", r.json
    assert state(app) == before


def test_a_failed_row_insert_removes_the_background_blob(app, client, auth, mlp_file,
                                                         background_npz, monkeypatch):
    from api import services

    def refuse(session, *a, **kw):
        raise RuntimeError("database down")

    before = state(app)
    monkeypatch.setattr(services, "next_version", refuse)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    r = upload_with_background(client, mlp_file, background_npz, "mlp", auth)
    assert r.status_code == 500
    assert state(app) == before


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_0004_upgrades_a_database_with_models(request, tmp_path, backend,
                                                        mlp_file):
    """A database at 0003 holding a model gains the background columns; the model keeps
    working, with no background (SHAP then refuses without one)."""
    import sqlalchemy as sa

    from api import db
    from api.migrate import current, upgrade
    from tests.api.conftest import bearer, make_app, new_key

    url = (f"sqlite:///{tmp_path / 'old.sqlite'}" if backend == "sqlite"
           else request.getfixturevalue("pg_schema_url"))
    engine = db.make_engine(url)
    upgrade(engine, "0003")
    assert "background_key" not in {c["name"] for c in sa.inspect(engine).get_columns("models")}
    # The model as an 0003 server stored it (its blob is stored by the new app below).
    seed_app = make_app(tmp_path, url)
    with seed_app.app_context():
        key = seed_app.extensions["xaudit_blobs"].put_bytes(mlp_file.read_bytes(), ".keras")
    seed_app.extensions["xaudit_db"]["engine"].dispose()
    # make_app upgraded to head: go back to 0003 and write the old row there.
    from alembic import command

    from api.migrate import alembic_config

    with engine.begin() as conn:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
    spec = upload_spec(mlp_file)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (id, name, created_at) "
                             "VALUES ('t1', 'acme', CURRENT_TIMESTAMP)"))
        conn.execute(sa.text(
            "INSERT INTO models (id, tenant_id, name, version, sha256, blob_key, size, spec,"
            " created_at) VALUES ('m1', 't1', 'old', 1, :sha, :key, 1, :spec,"
            " CURRENT_TIMESTAMP)"), {"sha": key[:64], "key": key, "spec": json.dumps(spec)})
    upgrade(engine)
    assert current(engine) == "0004"
    cols = {c["name"]: c for c in sa.inspect(engine).get_columns("models")}
    assert cols["background_key"]["nullable"] and cols["background_rows"]["nullable"]
    with engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT background_key, background_rows FROM models")).all() == [(None, None)]
    engine.dispose()

    app = make_app(tmp_path, url)
    client = app.test_client()
    headers = bearer(new_key(app, "acme"))
    got = client.get("/api/v1/models/m1", headers=headers).json
    assert got["name"] == "old" and got["background"] is None
    r = client.post("/api/v1/explain", headers=headers, json={
        "model_id": "m1", "instances": ONE_ROW, "method": "shap"})
    assert r.status_code == 422 and r.json["error"]["code"] == "no_background"
    r = client.post("/api/v1/explain", headers=headers, json={
        "model_id": "m1", "instances": ONE_ROW, "method": "integrated_gradients"})
    assert r.status_code == 200, r.json
    app.extensions["xaudit_db"]["engine"].dispose()


def upload_spec(model_path):
    from explain.modelio import inspect_model_file

    return inspect_model_file(model_path).to_dict()
