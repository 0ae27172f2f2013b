"""Worker pieces on a real database, without a broker: the model cache, stored arrays,
schedule dispatch with compare-and-set, and recovery of abandoned audits."""

from __future__ import annotations

import io
from datetime import timedelta

import numpy as np
import pytest

from tests.api.conftest import (  # noqa: F401 - fixtures
    bearer,
    data_file,
    make_app,
    mlp_file,
    new_key,
    upload,
)


def test_model_cache_is_a_bounded_lru():
    from worker.cache import ModelCache

    cache = ModelCache(2)
    loads = []
    for key in ("a", "b", "a", "c", "b"):
        cache.get(key, lambda k=key: loads.append(k) or k.upper())
    # "b" was evicted by "c" (least recently used after "a" was touched), then reloaded.
    assert loads == ["a", "b", "c", "b"] and len(cache) == 2 and "a" not in cache
    with pytest.raises(ValueError):
        ModelCache(0)


def test_stored_arrays_are_byte_identical_across_runs():
    from worker.tasks import npz_bytes

    arrays = {"maps.saliency": np.arange(6, dtype="float32").reshape(2, 3),
              "examples_x": np.ones((2, 3))}
    first = npz_bytes(arrays)
    assert npz_bytes(dict(reversed(list(arrays.items())))) == first
    with np.load(io.BytesIO(first), allow_pickle=False) as npz:
        assert np.array_equal(npz["maps.saliency"], arrays["maps.saliency"])


@pytest.fixture
def service(tmp_path, mlp_file, data_file):  # noqa: F811
    app = make_app(tmp_path, CELERY_TASK_ALWAYS_EAGER=False, AUDIT_STALE_AFTER=60)
    client = app.test_client()
    headers = bearer(new_key(app, "acme"))
    upload(client, "models", mlp_file, "mlp", headers)
    upload(client, "datasets", data_file, "rows", headers)
    yield app, client, headers
    app.extensions["xaudit_db"]["engine"].dispose()


def test_due_schedule_starts_exactly_one_audit(service):
    from api import db
    from worker.beat import dispatch_due

    app, client, headers = service
    s = client.post("/api/v1/schedules", headers=headers, json={
        "cron": "*/10 * * * *", "model_name": "mlp", "dataset_name": "rows"}).json
    later = db.utcnow() + timedelta(minutes=11)
    started = dispatch_due(app, now=later)
    assert len(started) == 1
    assert dispatch_due(app, now=later) == []  # the run was claimed: no duplicate
    audit = client.get(f"/api/v1/audits/{started[0]}", headers=headers).json
    assert audit["schedule_id"] == s["id"] and audit["status"] == "queued"
    nxt = client.get(f"/api/v1/schedules/{s['id']}", headers=headers).json["next_run_at"]
    assert nxt > later.isoformat()


def test_abandoned_audit_is_requeued_then_failed(service):
    import sqlalchemy as sa

    from api import db
    from worker.beat import MAX_ATTEMPTS, reap_stale

    app, client, headers = service
    m = client.get("/api/v1/models", headers=headers).json["items"][0]
    d = client.get("/api/v1/datasets", headers=headers).json["items"][0]
    audit_id = client.post("/api/v1/audits", headers=headers,
                           json={"model_id": m["id"], "dataset_id": d["id"]}).json["id"]
    old = db.utcnow() - timedelta(minutes=5)
    with app.app_context(), db.engine().begin() as conn:
        conn.execute(sa.update(db.Audit).where(db.Audit.id == audit_id)
                     .values(status="running", heartbeat_at=old, attempts=1))
    assert reap_stale(app) == [audit_id]
    assert client.get(f"/api/v1/audits/{audit_id}", headers=headers).json["status"] == "queued"
    with app.app_context(), db.engine().begin() as conn:
        conn.execute(sa.update(db.Audit).where(db.Audit.id == audit_id)
                     .values(status="running", heartbeat_at=old, attempts=MAX_ATTEMPTS))
    assert reap_stale(app) == [audit_id]
    got = client.get(f"/api/v1/audits/{audit_id}", headers=headers).json
    assert got["status"] == "failed" and got["error"]["code"] == "worker_lost"


def test_redelivered_audit_task_leaves_a_finished_audit_alone(service):
    import sqlalchemy as sa

    from api import db
    from worker.tasks import run_audit_task

    app, client, headers = service
    m = client.get("/api/v1/models", headers=headers).json["items"][0]
    d = client.get("/api/v1/datasets", headers=headers).json["items"][0]
    audit_id = client.post("/api/v1/audits", headers=headers,
                           json={"model_id": m["id"], "dataset_id": d["id"]}).json["id"]
    with app.app_context():
        with db.engine().begin() as conn:
            conn.execute(sa.update(db.Audit).where(db.Audit.id == audit_id)
                         .values(status="succeeded", report_html_key="a" * 64 + ".html"))
        result = run_audit_task.apply(args=[audit_id]).get()
    assert result == {"status": "succeeded", "skipped": True}
    got = client.get(f"/api/v1/audits/{audit_id}", headers=headers).json
    assert got["status"] == "succeeded" and got["started_at"] is None
