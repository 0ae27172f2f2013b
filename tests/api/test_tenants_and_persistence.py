"""Tenants and keys; persistence on SQLite and PostgreSQL (each test in its own schema)."""

from __future__ import annotations

import sqlalchemy as sa

from tests.api.conftest import bearer, make_app, new_key, upload


def test_keys_are_stored_hashed_and_bad_keys_are_401(app, client, key):
    from api import db

    with app.app_context():
        stored = db.session().scalars(sa.select(db.ApiKey.token_sha256)).all()
    assert key not in stored and len(stored) == 1 and len(stored[0]) == 64
    assert client.get("/api/v1/models", headers=bearer(key)).status_code == 200
    for headers in ({}, bearer(key + "x"), bearer("xa_" + "A" * 43),
                    {"Authorization": f"Basic {key}"}, bearer("")):
        r = client.get("/api/v1/models", headers=headers)
        assert r.status_code == 401 and r.json["error"]["code"] == "unauthorized"


def _populate(client, headers, mlp_file, data_file):
    m = upload(client, "models", mlp_file, "mlp", headers).json
    d = upload(client, "datasets", data_file, "rows", headers).json
    s = client.post("/api/v1/schedules", headers=headers, json={
        "cron": "0 3 * * *", "model_name": "mlp", "dataset_name": "rows"}).json
    return m, d, s


def test_tenants_see_only_their_own_resources(tmp_path, mlp_file, data_file):
    from api import db

    app = make_app(tmp_path, CELERY_TASK_ALWAYS_EAGER=False)
    client = app.test_client()
    a, b = bearer(new_key(app, "acme")), bearer(new_key(app, "globex"))
    m, d, s = _populate(client, a, mlp_file, data_file)
    r = client.post("/api/v1/audits", headers=a, json={"model_id": m["id"],
                                                       "dataset_id": d["id"]})
    assert r.status_code == 202
    audit = r.json
    for url in (f"/api/v1/models/{m['id']}", f"/api/v1/datasets/{d['id']}",
                f"/api/v1/audits/{audit['id']}", f"/api/v1/audits/{audit['id']}/report",
                f"/api/v1/audits/{audit['id']}/report.json",
                f"/api/v1/schedules/{s['id']}"):
        assert client.get(url, headers=a).status_code in (200, 409), url
        r = client.get(url, headers=b)
        assert r.status_code == 404 and r.json["error"]["code"] == "not_found", url
    assert client.delete(f"/api/v1/schedules/{s['id']}", headers=b).status_code == 404
    # B cannot start an audit on A's model, nor list A's things.
    r = client.post("/api/v1/audits", headers=b, json={"model_id": m["id"],
                                                       "dataset_id": d["id"]})
    assert r.status_code == 404
    for kind in ("models", "datasets", "audits", "schedules"):
        assert client.get(f"/api/v1/{kind}", headers=b).json["items"] == []
        assert len(client.get(f"/api/v1/{kind}", headers=a).json["items"]) == 1
    with app.app_context():
        assert db.session().get(db.Schedule, s["id"]) is not None


def test_persistence_round_trip(any_db_app, mlp_file, data_file):
    """Uploads, audits and schedules survive a new app on the same database."""
    from alembic.script import ScriptDirectory

    from api import db
    from api.migrate import alembic_config, current, upgrade

    def head_revision() -> str:
        url = str(app.extensions["xaudit_db"]["engine"].url)
        return ScriptDirectory.from_config(alembic_config(url)).get_current_head()

    app = any_db_app
    app.config["CELERY_TASK_ALWAYS_EAGER"] = False
    client = app.test_client()
    headers = bearer(new_key(app, "acme"))
    m, d, s = _populate(client, headers, mlp_file, data_file)
    assert upload(client, "models", mlp_file, "mlp", headers).json["version"] == 2
    audit = client.post("/api/v1/audits", headers=headers,
                        json={"model_id": m["id"], "dataset_id": d["id"],
                              "config": {"methods": ["saliency"]}}).json
    assert audit["status"] in ("queued", "failed")
    engine = app.extensions["xaudit_db"]["engine"]
    assert current(engine) == head_revision()
    upgrade(engine)  # idempotent
    assert current(engine) == head_revision()

    again = make_app_like(app)
    c2 = again.test_client()
    got = c2.get(f"/api/v1/audits/{audit['id']}", headers=headers).json
    assert got["model_id"] == m["id"] and got["config"] == {"methods": ["saliency"]}
    assert [x["version"] for x in c2.get("/api/v1/models", headers=headers).json["items"]] \
        == [2, 1]
    sched = c2.get(f"/api/v1/schedules/{s['id']}", headers=headers).json
    assert sched["cron"] == "0 3 * * *" and sched["next_run_at"] > sched["created_at"]
    assert c2.delete(f"/api/v1/schedules/{s['id']}", headers=headers).status_code == 204
    assert c2.get(f"/api/v1/schedules/{s['id']}", headers=headers).status_code == 404
    # Unique (tenant, name, version) holds in the database itself.
    with again.app_context():
        row = db.session().get(db.ModelRow, m["id"])
        dup = db.ModelRow(tenant_id=row.tenant_id, name=row.name, version=row.version,
                          sha256=row.sha256, blob_key=row.blob_key, size=row.size, spec={})
        session = db.session()
        session.add(dup)
        try:
            session.commit()
            raised = False
        except sa.exc.IntegrityError:
            session.rollback()
            raised = True
    assert raised
    again.extensions["xaudit_db"]["engine"].dispose()


def make_app_like(app):
    from api import create_app

    keys = ("TESTING", "DATA_DIR", "DATABASE_URL", "CELERY_BROKER_URL",
            "CELERY_RESULT_BACKEND")
    return create_app({k: app.config[k] for k in keys})


def test_schedule_validation(client, auth):
    for cron in ("not a cron", "* * * * * *", "61 * * * *", ""):
        r = client.post("/api/v1/schedules", headers=auth, json={
            "cron": cron, "model_name": "m", "dataset_name": "d"})
        assert r.status_code == 422, cron
    r = client.post("/api/v1/schedules", headers=auth, json={
        "cron": "*/5 * * * *", "model_name": "<b>", "dataset_name": "d"})
    assert r.status_code == 422
    r = client.post("/api/v1/schedules", headers=auth, json={
        "cron": "*/5 * * * *", "model_name": "m", "dataset_name": "d",
        "config": {"methods": ["bogus"]}})
    assert r.status_code == 422 and r.json["error"]["code"] == "unknown_method"


def test_audit_request_validation(app, client, auth, mlp_file, data_file, tmp_path):
    import numpy as np

    m = upload(client, "models", mlp_file, "mlp", auth).json
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((5, 7), "float32"), y=np.zeros(5, "int64"))
    dw = upload(client, "datasets", wrong, "wrong", auth).json
    r = client.post("/api/v1/audits", headers=auth,
                    json={"model_id": m["id"], "dataset_id": dw["id"]})
    assert r.status_code == 422 and r.json["error"]["code"] != "internal_error"
    r = client.post("/api/v1/audits", headers=auth,
                    json={"model_id": m["id"], "dataset_id": "f" * 32})
    assert r.status_code == 404
    d = upload(client, "datasets", data_file, "rows", auth).json
    r = client.post("/api/v1/audits", headers=auth, json={
        "model_id": m["id"], "dataset_id": d["id"], "previous_audit_id": "e" * 32})
    assert r.status_code == 404
    r = client.post("/api/v1/audits", headers=auth, json={
        "model_id": m["id"], "dataset_id": d["id"], "config": {"methods": "saliency"}})
    assert r.status_code == 422 and r.json["error"]["code"] == "bad_config"
    with app.app_context():
        from api import db

        assert db.session().scalar(sa.select(sa.func.count()).select_from(db.Audit)) == 0
