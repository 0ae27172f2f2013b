"""Scheduled audits: the compare-and-set claim, which versions a run audits, two
dispatcher processes racing, and end to end with real processes (API server, Celery
worker on Redis, two `xaudit beat` processes, PostgreSQL): a schedule fires, the second
run carries drift against the first, and a signed webhook reaches a local HTTP server.

Runs are made due by moving ``next_run_at`` into the past (or by dispatching at a later
``now``); nothing waits for a wall-clock minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.api.conftest import (  # noqa: F401 - fixtures
    bearer,
    data_file,
    make_app,
    mlp_file,
    new_key,
    pg_schema_url,
    upload,
)
from tests.worker.conftest import (
    BIN,
    ROOT,
    base_env,
    create_key,
    free_port,
    wait_for,
    wait_healthy,
)

SCHEDULES = "/api/v1/schedules"


def _dispose(app) -> None:
    app.extensions["xaudit_db"]["engine"].dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request):
    return "" if request.param == "sqlite" else request.getfixturevalue("pg_schema_url")


@pytest.fixture
def service(tmp_path, db_url, mlp_file, data_file):  # noqa: F811
    """An app whose tasks go to an in-memory broker (queued, not run)."""
    app = make_app(tmp_path, db_url, CELERY_TASK_ALWAYS_EAGER=False)
    client = app.test_client()
    headers = bearer(new_key(app, "acme"))
    assert upload(client, "models", mlp_file, "mlp", headers).status_code == 201
    assert upload(client, "datasets", data_file, "rows", headers).status_code == 201
    yield app, client, headers
    _dispose(app)


def _schedule(client, headers, **over):
    body = {"cron": "*/10 * * * *", "model_name": "mlp", "dataset_name": "rows", **over}
    r = client.post(SCHEDULES, headers=headers, json=body)
    assert r.status_code == 201, r.json
    return r.json


def _audits_of(app, schedule_id):
    import sqlalchemy as sa

    from api import db

    with app.app_context():
        return db.session().scalars(
            sa.select(db.Audit).where(db.Audit.schedule_id == schedule_id)
            .order_by(db.Audit.created_at)).all()


# --------------------------------------------------------------------------- the claim


def test_claim_is_a_compare_and_set(service):
    from api import db
    from worker.beat import claim_run

    app, client, headers = service
    sid = _schedule(client, headers)["id"]
    with app.app_context():
        session = db.session()
        seen = session.get(db.Schedule, sid).next_run_at
        now = db.as_utc(seen) + timedelta(seconds=1)
        later = now + timedelta(minutes=10)
        # Two processes read the same next_run_at; only the first UPDATE matches it.
        assert claim_run(session, sid, seen, later, now) is True
        assert claim_run(session, sid, seen, later, now) is False
        session.expire_all()
        row = session.get(db.Schedule, sid)
        assert db.as_utc(row.next_run_at) == later and db.as_utc(row.last_run_at) == now
        # The next run is claimable with the value now stored.
        assert claim_run(session, sid, row.next_run_at, later + timedelta(minutes=10), later)
        # A disabled schedule cannot be claimed even with the right value.
        row = session.get(db.Schedule, sid)
        row.enabled = False
        session.commit()
        assert not claim_run(session, sid, row.next_run_at, later, now)


def test_a_run_audits_the_latest_versions_against_the_last_success(service, tmp_path):
    import sqlalchemy as sa

    from api import db
    from worker.beat import dispatch_due

    app, client, headers = service
    sched = _schedule(client, headers)
    first_due = db.utcnow() + timedelta(minutes=11)
    [a1] = dispatch_due(app, now=first_due)
    # Newer versions of both names arrive; the first run succeeded, a later one failed.
    rng = np.random.default_rng(1)
    newer = tmp_path / "rows2.npz"
    np.savez(newer, x=rng.normal(size=(30, 4)).astype("float32"), y=rng.integers(0, 3, 30))
    d2 = upload(client, "datasets", newer, "rows", headers).json
    from tests.models import mlp_classifier

    m2_path = tmp_path / "mlp2.keras"
    mlp_classifier(n_features=4, n_classes=3, s=5).save(m2_path)
    m2 = upload(client, "models", m2_path, "mlp", headers).json
    assert (m2["version"], d2["version"]) == (2, 2)
    with app.app_context(), db.engine().begin() as conn:
        conn.execute(sa.update(db.Audit).where(db.Audit.id == a1).values(
            status="succeeded", finished_at=first_due + timedelta(minutes=1)))
    [a2] = dispatch_due(app, now=first_due + timedelta(minutes=10))
    with app.app_context(), db.engine().begin() as conn:
        conn.execute(sa.update(db.Audit).where(db.Audit.id == a2).values(
            status="failed", finished_at=first_due + timedelta(minutes=11)))
    [a3] = dispatch_due(app, now=first_due + timedelta(minutes=20))

    got = {a.id: a for a in _audits_of(app, sched["id"])}
    assert set(got) == {a1, a2, a3}
    assert got[a1].previous_audit_id is None
    assert got[a2].previous_audit_id == a1
    assert got[a3].previous_audit_id == a1  # the failed run is skipped
    assert (got[a3].model_id, got[a3].dataset_id) == (m2["id"], d2["id"])
    assert got[a3].config == {} and got[a3].status == "queued"
    assert got[a3].tenant_id == got[a1].tenant_id


def test_nothing_runs_for_a_deleted_disabled_or_orphaned_schedule(service):
    import sqlalchemy as sa

    from api import db
    from worker.beat import dispatch_due

    app, client, headers = service
    gone = _schedule(client, headers)["id"]
    off = _schedule(client, headers, enabled=False)["id"]
    orphan = _schedule(client, headers)["id"]
    assert client.delete(f"{SCHEDULES}/{gone}", headers=headers).status_code == 204
    with app.app_context(), db.engine().begin() as conn:
        # The model it names was renamed away: the run is skipped, not retried each round.
        conn.execute(sa.update(db.Schedule).where(db.Schedule.id == orphan)
                     .values(model_name="renamed"))
    later = db.utcnow() + timedelta(minutes=11)
    assert dispatch_due(app, now=later) == []
    for sid in (gone, off, orphan):
        assert _audits_of(app, sid) == []
    got = client.get(f"{SCHEDULES}/{orphan}", headers=headers).json
    assert got["next_run_at"] > later.isoformat()
    assert client.get(f"{SCHEDULES}/{off}", headers=headers).json["last_run_at"] is None


# --------------------------------------------------------------------------- racing processes


def _race_main() -> None:
    """One dispatcher process of the race test (run with ``python -c``)."""
    from datetime import datetime

    from worker.beat import dispatch_due

    cfg = json.loads(os.environ["RACE_CONFIG"])
    # 30 schedules of one tenant all due: above the tenant's queue cap on purpose, the
    # race is about claims, not caps.
    app = make_app(Path(cfg["data_dir"]), cfg["db_url"], CELERY_TASK_ALWAYS_EAGER=False,
                   AUTO_MIGRATE=False, MAX_QUEUED_AUDITS=1000)
    go = Path(cfg["go"])
    Path(cfg["ready"]).write_text("ready")
    deadline = time.monotonic() + 120
    while not go.exists():
        if time.monotonic() > deadline:
            raise SystemExit("never told to go")
        time.sleep(0.001)
    now = datetime.fromisoformat(cfg["now"])
    started: list[str] = []
    for _round in range(3):  # later rounds find nothing: every run was claimed
        started += dispatch_due(app, now=now, limit=1000)
    print(json.dumps(started))


@pytest.mark.integration
def test_two_dispatcher_processes_start_each_run_once(service, tmp_path, db_url):
    from api import db

    app, client, headers = service
    ids = [_schedule(client, headers)["id"] for _ in range(30)]
    now = (db.utcnow() + timedelta(minutes=11)).isoformat()
    children = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        for i in range(2):
            cfg = {"data_dir": str(tmp_path), "db_url": db_url, "now": now,
                   "ready": str(tmp_path / f"ready{i}"), "go": str(tmp_path / "go")}
            children.append(subprocess.Popen(
                [sys.executable, "-c",
                 "from tests.worker.test_schedules import _race_main; _race_main()"],
                cwd=ROOT, env={**env, "RACE_CONFIG": json.dumps(cfg)},
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        wait_for(lambda: all((tmp_path / f"ready{i}").exists() for i in range(2)), 120,
                 step=0.05, what="both dispatchers to start")
        (tmp_path / "go").write_text("go")  # both start dispatching at once
        outs = []
        for child in children:
            out, err = child.communicate(timeout=180)
            assert child.returncode == 0, err[-3000:]
            outs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
    started = outs[0] + outs[1]
    assert len(started) == len(set(started)) == len(ids)
    per_schedule = {sid: len(_audits_of(app, sid)) for sid in ids}
    assert set(per_schedule.values()) == {1}, per_schedule


# --------------------------------------------------------------------------- end to end


class _Hooks:
    """A local webhook receiver: records every delivery; answers the first one 503 so
    the retry path runs."""

    def __init__(self, fail_first: bool = True):
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server naming
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hooks.lock:
                    hooks.received.append((dict(self.headers.items()), raw))
                    first = len(hooks.received) == 1
                self.send_response(503 if first and fail_first else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/xaudit"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def for_audit(self, audit_id: str):
        with self.lock:
            return [(h, b) for h, b in self.received
                    if h.get("X-Xaudit-Delivery") == audit_id]


def test_a_failed_run_sends_the_critical_webhook(tmp_path, mlp_file, data_file):  # noqa: F811
    """In one process (tasks run eagerly): a run whose dataset file is now unreadable
    fails, and a ``webhook_on: critical`` schedule is told, with a valid signature."""
    import sqlalchemy as sa

    from api import db
    from worker.beat import dispatch_due
    from worker.webhooks import verify_signature

    # The receiver listens on 127.0.0.1: a private address, allowed by the operator here.
    app = make_app(tmp_path, WEBHOOK_ALLOW_PRIVATE=True)
    try:
        client = app.test_client()
        headers = bearer(new_key(app, "acme"))
        upload(client, "models", mlp_file, "mlp", headers)
        data = upload(client, "datasets", data_file, "rows", headers).json
        with _Hooks(fail_first=False) as hooks:
            s = _schedule(client, headers, webhook_url=hooks.url, webhook_on="critical")
            with app.app_context():
                key = db.session().scalar(sa.select(db.DatasetRow.blob_key)
                                          .where(db.DatasetRow.id == data["id"]))
                path = app.extensions["xaudit_blobs"].path(key)
            path.chmod(0o600)
            path.write_bytes(b"not a data file")
            [audit_id] = dispatch_due(app, now=db.utcnow() + timedelta(minutes=11))
            audit = client.get(f"/api/v1/audits/{audit_id}", headers=headers).json
            assert audit["status"] == "failed", audit
            [(hdrs, raw)] = hooks.for_audit(audit_id)
            assert verify_signature(s["webhook_secret"], hdrs, raw)
            hook = json.loads(raw)
            assert hook["status"] == "failed" and hook["report_url"] is None
            assert hook["error"]["code"] == audit["error"]["code"]
            assert hook["schedule_id"] == s["id"] and hdrs["X-Xaudit-Event"] == "audit.failed"
    finally:
        _dispose(app)


def _mlp_relying_on(feature: int, path: Path) -> Path:
    """A 4-feature MLP whose output depends (almost) only on ``feature``."""
    from tests.models import mlp_classifier

    model = mlp_classifier(n_features=4, n_classes=3, s=0)
    dense = model.layers[1]
    kernel, bias = dense.get_weights()
    scale = np.full((4, 1), 0.01, dtype="float32")
    scale[feature] = 3.0
    dense.set_weights([kernel * scale, bias])
    model.save(path)
    return path


def _upload(base, headers, kind, path, name):
    with open(path, "rb") as fh:
        r = requests.post(f"{base}/api/v1/{kind}", headers=headers,
                          files={"file": (path.name, fh)}, data={"name": name}, timeout=120)
    assert r.status_code == 201, r.text
    return r.json()


def _force_due(db_url: str, schedule_id: str) -> None:
    """Move the schedule's next run into the past, as if its cron time had come."""
    import sqlalchemy as sa

    from api import db

    engine = db.make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.update(db.Schedule).where(db.Schedule.id == schedule_id)
                         .values(next_run_at=db.utcnow() - timedelta(minutes=1)))
    finally:
        engine.dispose()


@pytest.mark.integration
@pytest.mark.slow
def test_schedule_fires_and_second_run_carries_drift_and_signed_webhook(
        tmp_path, procs, redis_db, pg_schema_url):  # noqa: F811
    from worker.webhooks import verify_signature

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = base_env(tmp_path / "data", XAUDIT_REDIS_URL=redis_db,
                   XAUDIT_DATABASE_URL=pg_schema_url, XAUDIT_PUBLIC_URL=base,
                   XAUDIT_WEBHOOK_ALLOW_PRIVATE="true")
    key = create_key(tmp_path / "data", "acme", env)
    procs.start("worker", [str(BIN / "celery"), "-A", "worker.celery_app", "worker",
                           "-Q", "attributions,default", "--pool", "solo", "-c", "1",
                           "-n", "sched@%h", "--without-gossip", "--without-mingle",
                           "--loglevel", "INFO"], env)
    procs.start("api", [str(BIN / "xaudit"), "serve", "--port", str(port),
                        "--no-embedded-worker", "--no-beat"], env)
    # Two beat processes on one database: each run must still start exactly one audit.
    for name in ("beat1", "beat2"):
        procs.start(name, [str(BIN / "xaudit"), "beat", "--interval", "0.5"], env)
    wait_healthy(base, procs)
    headers = {"Authorization": f"Bearer {key}"}

    rng = np.random.default_rng(0)
    rows = tmp_path / "rows.npz"
    np.savez(rows, x=rng.normal(size=(60, 4)).astype("float32"), y=rng.integers(0, 3, 60))
    v1 = _upload(base, headers, "models", _mlp_relying_on(0, tmp_path / "v1.keras"), "mlp")
    _upload(base, headers, "datasets", rows, "rows")

    with _Hooks() as hooks:
        # A yearly cron: it never fires by itself during the test, so every run below is
        # one the test made due, and the audit count is exact.
        r = requests.post(f"{base}{SCHEDULES}", headers=headers, timeout=60, json={
            "cron": "0 0 1 1 *", "model_name": "mlp", "dataset_name": "rows",
            "config": {"methods": ["integrated_gradients", "saliency"]},
            "webhook_url": hooks.url, "webhook_on": "completion"})
        assert r.status_code == 201, r.text
        sched, secret = r.json(), r.json()["webhook_secret"]

        def audits():
            items = requests.get(f"{base}/api/v1/audits", headers=headers,
                                 timeout=10).json()["items"]
            return sorted((a for a in items if a["schedule_id"] == sched["id"]),
                          key=lambda a: a["created_at"])

        def finished(n):
            def check():
                got = audits()
                if len(got) >= n and all(a["status"] in ("succeeded", "failed") for a in got):
                    return got
                return None
            return check

        _force_due(pg_schema_url, sched["id"])
        [first] = wait_for(finished(1), 900, step=1.0, what="the first scheduled audit")
        assert first["status"] == "succeeded", (first, procs.logs())
        assert first["model_id"] == v1["id"] and first["previous_audit_id"] is None

        # The first delivery was answered 503; the retry carries the same signed body.
        deliveries = wait_for(lambda: (lambda d: d if len(d) >= 2 else None)(
            hooks.for_audit(first["id"])), 120, what="the webhook retry")
        for hdrs, raw in deliveries:
            assert verify_signature(secret, hdrs, raw), hdrs
            assert not verify_signature("whsec_wrong", hdrs, raw)
        assert deliveries[0][1] == deliveries[1][1]
        hook = json.loads(deliveries[1][1])
        assert hook["audit_id"] == first["id"] and hook["status"] == "succeeded"
        assert hook["schedule_id"] == sched["id"] and hook["drift"] is None
        assert hook["findings"]["total"] == sum(hook["findings"]["by_severity"].values())
        report_url = hook["report_url"]
        assert report_url == f"{base}/api/v1/audits/{first['id']}/report"
        assert requests.get(report_url, headers=headers, timeout=30).status_code == 200

        # A retrained model (v2) now relies on another feature; the schedule fires again.
        v2 = _upload(base, headers, "models", _mlp_relying_on(3, tmp_path / "v2.keras"), "mlp")
        assert v2["version"] == 2
        _force_due(pg_schema_url, sched["id"])
        runs = wait_for(finished(2), 900, step=1.0, what="the second scheduled audit")
        assert len(runs) == 2, runs  # two beats, two forced runs: two audits
        second = runs[1]
        assert second["status"] == "succeeded", (second, procs.logs())
        assert second["model_id"] == v2["id"]
        assert second["previous_audit_id"] == first["id"]

        report1 = requests.get(base + first["report_json_url"], headers=headers,
                               timeout=30).json()
        report2 = requests.get(base + second["report_json_url"], headers=headers,
                               timeout=30).json()
        assert report1["drift"] is None
        drift = report2["drift"]
        assert drift is not None and f"audit {first['id']}" in drift["previous_audit"]
        assert report2["model"]["sha256"] == v2["sha256"]
        top1 = report1["global_importance"]["items"][0]["feature"]
        top2 = report2["global_importance"]["items"][0]["feature"]
        assert top1 != top2
        assert drift["ndcg"] < 0.9, drift
        codes = [f["code"] for f in report2["findings"]]
        assert "attribution_drift" in codes, codes

        [(hdrs, raw)] = wait_for(lambda: hooks.for_audit(second["id"]), 120,
                                 what="the second webhook")
        assert verify_signature(secret, hdrs, raw)
        hook2 = json.loads(raw)
        assert hook2["drift"] == {"ndcg": drift["ndcg"], "previous_audit_id": first["id"]}
        severities = [f["severity"] for f in report2["findings"]]
        assert hook2["findings"]["total"] == len(severities)
        assert hook2["findings"]["by_severity"] == {
            s: severities.count(s) for s in ("critical", "warning", "info")}

    left = requests.get(f"{base}{SCHEDULES}/{sched['id']}", headers=headers, timeout=10).json()
    assert left["next_run_at"].startswith(f"{int(left['last_run_at'][:4]) + 1}-01-01T00:00")
    assert len(audits()) == 2
