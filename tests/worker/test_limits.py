"""Limits that fire and work that is never duplicated: the watchdog's time and memory
limits in a real process, explain-job claims and recovery, one run per schedule at a
time, heartbeat-based requeue of audits whose worker is gone."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest

from tests.api.conftest import (  # noqa: F401 - fixtures
    bearer,
    data_file,
    make_app,
    mlp_file,
    new_key,
    upload,
)
from tests.worker.conftest import ROOT, base_env

# ----------------------------------------------------------------------------- watchdog

_WATCHDOG_SCRIPT = textwrap.dedent("""
    import sys, time
    from api import create_app, db
    from worker import watchdog
    from api import explain_jobs as claims
    from celery.exceptions import SoftTimeLimitExceeded

    mode = sys.argv[1]
    app = create_app({"DATA_DIR": sys.argv[2], "CELERY_BROKER_URL": "memory://",
                      "CELERY_RESULT_BACKEND": "cache+memory://"})
    with app.app_context():
        s = db.session()
        t = db.Tenant(name="acme"); s.add(t); s.flush()
        m = db.ModelRow(tenant_id=t.id, name="m", version=1, blob_key="k", sha256="0" * 64,
                        size=1, spec={})
        s.add(m); s.flush()
        job = db.ExplainJob(tenant_id=t.id, model_id=m.id, status="queued", request={})
        s.add(job); s.commit()
        outcome, attempt = claims.claim_explain(job.id)
        print("JOB", job.id, outcome, flush=True)
        if mode == "soft":
            try:
                with watchdog.guard("explain", job.id, soft=0.5, hard=60):
                    while True:
                        sum(range(1000))
            except SoftTimeLimitExceeded:
                print("SOFT", flush=True)
        elif mode == "hard":
            with watchdog.guard("explain", job.id, soft=0.3, hard=1.0):
                time.sleep(60)  # native code: the soft limit cannot interrupt it
        elif mode == "memory":
            hog = []
            with watchdog.guard("explain", job.id, soft=60, hard=60):
                while True:
                    hog.append(bytearray(20 * 1024 * 1024))
                    time.sleep(0.02)
        print("ALIVE", flush=True)
""")


def _run_watchdog(tmp_path, mode: str, **env: str):
    out = subprocess.run([sys.executable, "-c", _WATCHDOG_SCRIPT, mode, str(tmp_path / "var")],
                         cwd=ROOT, env=base_env(tmp_path / "var", **env), capture_output=True,
                         text=True, timeout=300)
    job_id = next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("JOB"))
    return out, job_id


def _job(tmp_path, job_id):
    app = make_app(tmp_path)
    from api import db

    with app.app_context():
        job = db.session().get(db.ExplainJob, job_id)
        row = (job.status, job.error_code, job.error)
    app.extensions["xaudit_db"]["engine"].dispose()
    return row


def test_soft_time_limit_interrupts_python_code(tmp_path):
    out, _ = _run_watchdog(tmp_path, "soft")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "SOFT" in out.stdout and "ALIVE" in out.stdout


def test_hard_time_limit_fails_the_job_and_ends_the_process(tmp_path):
    out, job_id = _run_watchdog(tmp_path, "hard")
    assert out.returncode == 75, (out.returncode, out.stderr[-2000:])
    assert "ALIVE" not in out.stdout
    status, code, message = _job(tmp_path, job_id)
    assert (status, code) == ("failed", "time_limit") and "1 s" in message


def test_memory_limit_fails_the_job_and_ends_the_process(tmp_path):
    out, job_id = _run_watchdog(tmp_path, "memory", XAUDIT_WORKER_MEMORY=str(600 * 2**20))
    assert out.returncode == 75, (out.returncode, out.stderr[-2000:])
    status, code, message = _job(tmp_path, job_id)
    assert (status, code) == ("failed", "memory_limit")
    assert "XAUDIT_WORKER_MEMORY" in message


# ----------------------------------------------------------------------------- explain claims


@pytest.fixture
def stack(tmp_path, mlp_file):  # noqa: F811
    app = make_app(tmp_path, CELERY_TASK_ALWAYS_EAGER=False, EXPLAIN_TIMEOUT=0.1)
    client = app.test_client()
    headers = bearer(new_key(app, "acme"))
    model_id = upload(client, "models", mlp_file, "mlp", headers).json["id"]
    yield app, client, headers, model_id
    app.extensions["xaudit_db"]["engine"].dispose()


def _queued_job(client, headers, model_id):
    r = client.post("/api/v1/explain", headers=headers,
                    json={"model_id": model_id, "instances": [[1, 2, 3, 4]]})
    assert r.status_code == 202
    return r.json["job_id"], r.json["job_url"]


def test_a_claimed_job_is_running_and_never_computed_twice(stack):
    from api import db
    from api import explain_jobs as claims
    from worker.tasks import explain_job

    app, client, headers, model_id = stack
    job_id, url = _queued_job(client, headers, model_id)
    with app.app_context():
        assert claims.claim_explain(job_id)[0] == "claimed"
        # A second message (re-send, redelivery, second worker) finds it running.
        assert claims.claim_explain(job_id)[0] == "running"
        assert explain_job.run(job_id) == {"status": "running", "skipped": True}
        job = db.session().get(db.ExplainJob, job_id)
        assert job.status == "running" and job.started_at is not None
        # Polled long after: a running job with a live heartbeat is not re-sent.
        assert claims.recover_explain(job, resend_after=0, stale_after=30) is None
    assert client.get(url, headers=headers).json["status"] == "running"


def test_a_job_whose_worker_died_is_sent_again_then_failed(stack):
    from api import db
    from api import explain_jobs as claims
    from worker.tasks import explain_job

    app, client, headers, model_id = stack
    job_id, url = _queued_job(client, headers, model_id)
    with app.app_context():
        session = db.session()
        for attempt in range(1, claims.MAX_ATTEMPTS + 1):
            assert claims.claim_explain(job_id) == ("claimed", attempt)
            job = session.get(db.ExplainJob, job_id)
            session.refresh(job)
            later = job.heartbeat_at + timedelta(seconds=31)
            action = claims.recover_explain(job, resend_after=0, stale_after=30, now=later)
            if attempt < claims.MAX_ATTEMPTS:
                assert action == "resend"
                session.refresh(job)
                assert job.status == "queued"
            else:
                assert action == "failed"
                session.refresh(job)
                assert (job.status, job.error_code) == ("failed", "worker_lost")
        # A late message for the failed job computes nothing.
        assert explain_job.run(job_id)["skipped"] is True


def test_queued_jobs_are_resent_once_per_period_without_redis(stack):
    """The embedded broker (no Redis) used to never re-send a lost job."""
    from api import db
    from api import explain_jobs as claims

    app, client, headers, model_id = stack
    job_id, _ = _queued_job(client, headers, model_id)
    with app.app_context():
        session = db.session()
        job = session.get(db.ExplainJob, job_id)
        now = job.created_at + timedelta(seconds=5)
        assert claims.recover_explain(job, resend_after=1, stale_after=30, now=now) == "resend"
        # The same snapshot seen by another API process: the row moved on, nothing sent.
        assert claims.recover_explain(job, resend_after=1, stale_after=30, now=now) is None
        session.refresh(job)
        assert claims.recover_explain(job, resend_after=1, stale_after=30, now=now) is None
        assert claims.recover_explain(job, resend_after=1, stale_after=30,
                                      now=now + timedelta(seconds=2)) == "resend"
        # The beat's sweep over all lost jobs does the same.
        sent = claims.sweep_explain_jobs(app, now=now + timedelta(seconds=60))
        assert job_id in sent


# ----------------------------------------------------------------------------- schedules/audits


def test_a_schedule_does_not_enqueue_while_its_previous_run_waits(
        tmp_path, mlp_file, data_file):  # noqa: F811
    from api import db
    from worker.beat import dispatch_due

    app = make_app(tmp_path, CELERY_TASK_ALWAYS_EAGER=False)
    client = app.test_client()
    headers = bearer(new_key(app, "acme"))
    upload(client, "models", mlp_file, "mlp", headers)
    upload(client, "datasets", data_file, "rows", headers)
    r = client.post("/api/v1/schedules", headers=headers, json={
        "cron": "* * * * *", "model_name": "mlp", "dataset_name": "rows"})
    assert r.status_code == 201
    with app.app_context():
        now = db.utcnow()
        first = dispatch_due(app, now=now + timedelta(minutes=2))
        assert len(first) == 1
        # Nobody consumes the queue: the next due times start nothing more.
        for minutes in (3, 4, 5):
            assert dispatch_due(app, now=now + timedelta(minutes=minutes)) == []
        session = db.session()
        audit = session.get(db.Audit, first[0])
        audit.status, audit.finished_at = "failed", db.utcnow()
        session.commit()
        assert len(dispatch_due(app, now=now + timedelta(minutes=6))) == 1
    app.extensions["xaudit_db"]["engine"].dispose()


def test_a_running_audit_without_heartbeat_is_requeued_within_a_minute(
        tmp_path, mlp_file, data_file):  # noqa: F811
    from api import db
    from worker.beat import reap_stale

    app = make_app(tmp_path, CELERY_TASK_ALWAYS_EAGER=False)
    client = app.test_client()
    headers = bearer(new_key(app, "acme"))
    m = upload(client, "models", mlp_file, "mlp", headers).json["id"]
    d = upload(client, "datasets", data_file, "rows", headers).json["id"]
    with app.app_context():
        session = db.session()
        tenant = session.get(db.ModelRow, m).tenant_id
        now = db.utcnow()
        audit = db.Audit(tenant_id=tenant, model_id=m, dataset_id=d, status="running",
                         progress=0.3, stage="attributing", config={}, timings={},
                         attempts=1, heartbeat_at=now)
        session.add(audit)
        session.commit()
        assert reap_stale(app, now=now + timedelta(seconds=30)) == []
        assert reap_stale(app, now=now + timedelta(seconds=61)) == [audit.id]
        session.refresh(audit)
        assert audit.status == "queued"
    app.extensions["xaudit_db"]["engine"].dispose()


def test_audit_batches_are_sized_from_the_models_cost(monkeypatch):
    from explain.budget import ModelCost
    from worker.tasks import sized_audit_config

    cost = ModelCost(input_shape=(2000, 2000, 3), params=150,
                     activation_elements=28_000_000, forward_flops=10**9).to_dict()
    monkeypatch.setenv("XAUDIT_WORKER_MEMORY", str(8 * 2**30))
    sized = sized_audit_config({"cost": cost}, {"samples": 2})
    # 4 GiB of batch memory over ~450 MB per example: a handful of rows, not 256.
    assert 1 <= sized["batch_size"] <= 16 and sized["samples"] == 2
    # Under 8 GiB the audit's own arrays (44 curve rows of 48 MB) leave room for one row
    # (the API refuses such an audit up front); 40 GiB keeps the 2 asked for.
    assert sized_audit_config({"cost": cost}, {"samples": 2, "batch_size": 2}) == {
        "samples": 2, "batch_size": 1}
    monkeypatch.setenv("XAUDIT_WORKER_MEMORY", str(40 * 2**30))
    assert sized_audit_config({"cost": cost}, {"samples": 2, "batch_size": 2}) == {
        "samples": 2, "batch_size": 2}
    assert sized_audit_config({}, {"samples": 2}) == {"samples": 2}


def test_schedules_respect_the_tenants_queue_cap(tmp_path, mlp_file, data_file):  # noqa: F811
    from api import db
    from worker.beat import dispatch_due

    app = make_app(tmp_path, CELERY_TASK_ALWAYS_EAGER=False, MAX_QUEUED_AUDITS=2)
    client = app.test_client()
    headers = bearer(new_key(app, "acme"))
    upload(client, "models", mlp_file, "mlp", headers)
    upload(client, "datasets", data_file, "rows", headers)
    for _ in range(4):
        assert client.post("/api/v1/schedules", headers=headers, json={
            "cron": "* * * * *", "model_name": "mlp",
            "dataset_name": "rows"}).status_code == 201
    with app.app_context():
        started = dispatch_due(app, now=db.utcnow() + timedelta(minutes=2))
    assert len(started) == 2  # four schedules due, the tenant may have two waiting
    app.extensions["xaudit_db"]["engine"].dispose()
