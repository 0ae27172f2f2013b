"""Fanned-out audits with real processes: two Celery workers on Redis share one audit's
attribution chunks (a chord), and the report is the one the in-process pipeline makes."""

from __future__ import annotations

import contextlib
import json
import sqlite3

import numpy as np
import pytest
import requests

from tests.worker.conftest import BIN, base_env, create_key, free_port, wait_for, wait_healthy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Enough chunks (32 examples × 2 methods, 8 a chunk) that each takes a moment, so two
#: idle workers both get some.
CONFIG = {"samples": 32, "seed": 5, "methods": ["integrated_gradients", "shap"],
          "ig_steps": 128, "shap_samples": 2048,
          "method_options": {"shap": {"estimator": "kernel"}}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from tests.models import mlp_classifier

    base = tmp_path_factory.mktemp("fanout-files")
    rng = np.random.default_rng(1)
    mlp_classifier(n_features=12, n_classes=3).save(base / "mlp.keras")
    np.savez(base / "rows.npz", x=rng.normal(size=(120, 12)).astype("float32"),
             y=rng.integers(0, 3, size=120))
    return base


def _upload(base, headers, kind, path, name):
    with open(path, "rb") as fh:
        r = requests.post(f"{base}/api/v1/{kind}", headers=headers,
                          files={"file": (path.name, fh)}, data={"name": name}, timeout=120)
    assert r.status_code == 201, r.text
    return r.json()


def _volatile_free(report: dict) -> dict:
    out = json.loads(json.dumps(report))
    out.pop("generated_at")
    out.pop("timings")
    return out


def test_two_workers_share_the_chunks_and_the_report_equals_run_audit(tmp_path, procs,
                                                                       redis_db, files):
    data_dir = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = base_env(data_dir, XAUDIT_REDIS_URL=redis_db, XAUDIT_AUDIT_FANOUT="true")
    key = create_key(data_dir, "acme", env)
    workers = [_worker(procs, env, f"fan{i}") for i in (1, 2)]
    procs.start("api", [str(BIN / "xaudit"), "serve", "--port", str(port),
                        "--no-embedded-worker", "--no-beat"], env)
    wait_healthy(base, procs)

    # Both workers must be consuming before the audit is sent, or one may take it all.
    def both_ready():
        for proc, _log in procs.procs:
            if proc in workers and proc.poll() is not None:
                pytest.fail(f"a worker exited early\n{procs.logs()}")
        return all(" ready." in log.read_text(errors="replace")
                   for proc, log in procs.procs if proc in workers)
    wait_for(both_ready, 300, what=f"both workers to be ready\n{procs.logs()}")

    headers = {"Authorization": f"Bearer {key}"}
    model = _upload(base, headers, "models", files / "mlp.keras", "mlp")
    data = _upload(base, headers, "datasets", files / "rows.npz", "rows")
    r = requests.post(f"{base}/api/v1/audits", headers=headers, timeout=120,
                      json={"model_id": model["id"], "dataset_id": data["id"],
                            "config": CONFIG})
    assert r.status_code == 202, r.text
    status_url = base + r.json()["status_url"]

    def finished():
        a = requests.get(status_url, headers=headers, timeout=10).json()
        return a if a["status"] in ("succeeded", "failed") else None
    audit = wait_for(finished, 900, step=1.0, what=f"the audit\n{procs.logs()}")
    assert audit["status"] == "succeeded", (audit, procs.logs())
    assert audit["progress"] == 1.0

    chunks = audit["timings"]["attribution_chunks"]
    assert sorted((c["method"], c["start"]) for c in chunks) == sorted(
        (m, s) for m in CONFIG["methods"] for s in range(0, 32, 8))
    assert len({(c["worker"], c["pid"]) for c in chunks}) == 2, chunks

    report = requests.get(base + audit["report_json_url"], headers=headers,
                          timeout=30).json()
    assert len(list((data_dir / "blobs").glob("??/*.html"))) == 1

    # The same audit in this process, on the very files the workers read.
    from explain.audit import run_audit
    from explain.datasets import load_data_file

    with contextlib.closing(sqlite3.connect(data_dir / "xaudit.sqlite", timeout=30)) as conn:
        (model_key,) = conn.execute("SELECT blob_key FROM models").fetchone()
        data_key, label = conn.execute("SELECT blob_key, label FROM datasets").fetchone()
    blob = data_dir / "blobs"
    expected = run_audit(blob / model_key[:2] / model_key,
                         load_data_file(blob / data_key[:2] / data_key, label=label),
                         CONFIG, model_name="mlp", dataset_name="rows")
    assert _volatile_free(report) == _volatile_free(expected.report)


def _row(data_dir, audit_id: str) -> dict:
    with contextlib.closing(sqlite3.connect(data_dir / "xaudit.sqlite", timeout=30)) as conn:
        conn.row_factory = sqlite3.Row
        return dict(conn.execute("SELECT status, progress, stage, attempts FROM audits "
                                 "WHERE id = ?", (audit_id,)).fetchone())


def _worker(procs, env, name):
    return procs.start(name, [
        str(BIN / "celery"), "-A", "worker.celery_app", "worker",
        "-Q", "attributions,default", "--pool", "solo", "-c", "1", "-n", f"{name}@%h",
        "--without-gossip", "--without-mingle", "--loglevel", "INFO"], env)


def test_worker_killed_during_the_chunks_gets_the_whole_chord_run_again_once(
        tmp_path, procs, redis_db, files):
    """SIGKILL while chunks run: the beat sees the heartbeat stop and requeues the audit;
    a new worker prepares it again and runs a new chord. Chunks left from the dead attempt
    do nothing; one report, one success."""
    import os
    import signal
    import time

    from explain.audit import stage_span

    data_dir = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stale_after = 4
    env = base_env(data_dir, XAUDIT_REDIS_URL=redis_db, XAUDIT_AUDIT_FANOUT="true",
                   XAUDIT_AUDIT_STALE_AFTER=str(stale_after), XAUDIT_BEAT_INTERVAL="1")
    key = create_key(data_dir, "acme", env)
    first = _worker(procs, env, "doomed")
    procs.start("api", [str(BIN / "xaudit"), "serve", "--port", str(port),
                        "--no-embedded-worker", "--no-beat"], env)
    procs.start("beat", [str(BIN / "xaudit"), "beat", "--interval", "1"], env)
    wait_healthy(base, procs)
    headers = {"Authorization": f"Bearer {key}"}
    model = _upload(base, headers, "models", files / "mlp.keras", "mlp")
    data = _upload(base, headers, "datasets", files / "rows.npz", "rows")
    config = {**CONFIG, "shap_samples": 8192}  # chunks of seconds: time to be killed in
    r = requests.post(f"{base}/api/v1/audits", headers=headers, timeout=120,
                      json={"model_id": model["id"], "dataset_id": data["id"],
                            "config": config})
    assert r.status_code == 202, r.text
    audit_id = r.json()["id"]

    lo = stage_span("attributions")[0]

    def some_chunks_done():
        row = _row(data_dir, audit_id)
        return (row["status"] == "running" and row["stage"] == "attributions"
                and row["progress"] > lo + 1e-6 and row)
    wait_for(some_chunks_done, 600, step=0.1, what=f"chunks to run\n{procs.logs()}")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert _row(data_dir, audit_id)["status"] == "running"  # nobody has noticed yet

    _worker(procs, env, "heir")

    def finished():
        a = requests.get(f"{base}/api/v1/audits/{audit_id}", headers=headers,
                         timeout=10).json()
        return a if a["status"] in ("succeeded", "failed") else None
    audit = wait_for(finished, 900, step=0.5, what=f"the audit\n{procs.logs()}")
    assert audit["status"] == "succeeded", (audit, procs.logs())
    assert _row(data_dir, audit_id)["attempts"] == 2
    assert {c["worker"].split("@")[0] for c in audit["timings"]["attribution_chunks"]} == \
        {"heir"}
    assert len(list((data_dir / "blobs").glob("??/*.html"))) == 1

    # Several beat rounds later nothing has run it again.
    time.sleep(3 * stale_after)
    again = requests.get(f"{base}/api/v1/audits/{audit_id}", headers=headers,
                         timeout=10).json()
    assert again["finished_at"] == audit["finished_at"]
    assert _row(data_dir, audit_id)["attempts"] == 2
    assert len(list((data_dir / "blobs").glob("??/*.html"))) == 1


# --------------------------------------------------------------------------- one chunk, no broker

from tests.api.conftest import (  # noqa: E402, F401 - fixtures
    bearer,
    data_file,
    make_app,
    mlp_file,
    new_key,
    upload,
)


@pytest.fixture
def running_audit(tmp_path, mlp_file, data_file):  # noqa: F811
    import sqlalchemy as sa

    from api import db

    app = make_app(tmp_path, CELERY_TASK_ALWAYS_EAGER=False, AUDIT_STALE_AFTER=60)
    client = app.test_client()
    headers = bearer(new_key(app, "acme"))
    upload(client, "models", mlp_file, "mlp", headers)
    upload(client, "datasets", data_file, "rows", headers)
    m = client.get("/api/v1/models", headers=headers).json["items"][0]
    d = client.get("/api/v1/datasets", headers=headers).json["items"][0]
    audit_id = client.post("/api/v1/audits", headers=headers,
                           json={"model_id": m["id"], "dataset_id": d["id"]}).json["id"]
    with app.app_context(), db.engine().begin() as conn:
        conn.execute(sa.update(db.Audit).where(db.Audit.id == audit_id)
                     .values(status="running", heartbeat_at=db.utcnow(), attempts=2))
    yield app, client, headers, audit_id
    app.extensions["xaudit_db"]["engine"].dispose()


def test_a_chunk_of_a_replaced_attempt_does_nothing(running_audit):
    from worker.tasks import audit_chunk

    app, client, headers, audit_id = running_audit
    with app.app_context():
        got = audit_chunk.apply(args=[audit_id, 1, "0" * 64 + ".npz",
                                      "integrated_gradients", 0, 8, 2]).get()
    assert got["skipped"] is True
    assert client.get(f"/api/v1/audits/{audit_id}", headers=headers).json["status"] == \
        "running"


def test_a_failed_chunk_fails_the_audit_naming_the_chunk(running_audit):
    from worker.tasks import audit_chunk

    app, client, headers, audit_id = running_audit
    with app.app_context():
        res = audit_chunk.apply(args=[audit_id, 2, "0" * 64 + ".npz",  # no such plan
                                      "integrated_gradients", 8, 16, 2])
    assert res.failed()
    got = client.get(f"/api/v1/audits/{audit_id}", headers=headers).json
    assert got["status"] == "failed", got
    assert got["error"]["code"] == "attribution_failed"
    assert "integrated_gradients rows 8-16" in got["error"]["message"]
    assert "0000" not in got["error"]["message"]  # no server paths in what users see
