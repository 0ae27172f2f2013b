"""Faults with real processes: a worker killed mid-audit, Redis restarted with audits
queued, the API restarted, a worker that never comes back.

Each test runs its own API server (``xaudit serve`` without the embedded worker), Celery
worker and beat subprocesses on the test session's own redis-server (which the tests stop
and start; never a Redis of the user's) and a SQLite database in its own data folder.
The heartbeat staleness is a few seconds so the beat notices a dead worker quickly; the
test reads the audit rows (attempts included) straight from the SQLite file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from tests import redis_server
from tests.worker.conftest import BIN, base_env, create_key, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STALE_AFTER = 4  # seconds without a heartbeat before the beat calls a worker dead

#: An audit long enough (tens of seconds) to be killed in the middle: kernel SHAP on 24
#: features with many coalitions is one long step with no progress report inside.
LONG_AUDIT = {"samples": 64, "methods": ["integrated_gradients", "shap", "smoothgrad"],
              "shap_samples": 4096, "ig_steps": 256,
              "method_options": {"shap": {"estimator": "kernel"}}}


# --------------------------------------------------------------------------- helpers


def _redis_client():
    return redis_server.current().client()


def _redis_up() -> bool:
    return redis_server.current().up()


def _start_redis() -> None:
    redis_server.current().start()


@pytest.fixture
def redis14(redis_url):
    """The session's own Redis (flushed); a test may stop it, it is started again."""
    yield redis_url
    if not _redis_up():
        _start_redis()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from tests.models import mlp_classifier

    base = tmp_path_factory.mktemp("fault-files")
    rng = np.random.default_rng(0)
    mlp_classifier(n_features=4, n_classes=3).save(base / "small.keras")
    np.savez(base / "small.npz", x=rng.normal(size=(60, 4)).astype("float32"),
             y=rng.integers(0, 3, size=60))
    mlp_classifier(n_features=24, n_classes=3).save(base / "wide.keras")
    np.savez(base / "wide.npz", x=rng.normal(size=(300, 24)).astype("float32"),
             y=rng.integers(0, 3, size=300))
    return base


class Stack:
    """One test's service: API, workers and beat as subprocesses sharing a data folder."""

    def __init__(self, tmp_path: Path, procs, **env: str):
        self.data_dir = tmp_path / "data"
        self.procs = procs
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = base_env(self.data_dir, XAUDIT_REDIS_URL=redis_server.current().url(),
                            XAUDIT_AUDIT_STALE_AFTER=str(STALE_AFTER),
                            XAUDIT_BEAT_INTERVAL="1", **env)
        self.headers = {"Authorization": f"Bearer {create_key(self.data_dir, 'acme', self.env)}"}
        self.n_workers = 0
        self.killed: set[int] = set()

    # processes
    def start_api(self):
        self.api = self.procs.start(f"api-{self.port}-{len(self.procs.procs)}", [
            str(BIN / "xaudit"), "serve", "--port", str(self.port),
            "--no-embedded-worker", "--no-beat"], self.env)
        self.wait_healthy()
        return self.api

    def wait_healthy(self, timeout: float = 240) -> None:
        # Not conftest's wait_healthy: processes this test killed on purpose have exited.
        def healthy():
            if self.api.poll() is not None:
                pytest.fail(f"the API exited early\n{self.procs.logs()}")
            with contextlib.suppress(requests.RequestException):
                return requests.get(f"{self.base}/healthz", timeout=5).status_code == 200
            return False
        wait_for(healthy, timeout, what=f"the API to be healthy\n{self.procs.logs()}")

    def start_worker(self):
        self.n_workers += 1
        name = f"worker{self.n_workers}"
        return self.procs.start(name, [
            str(BIN / "celery"), "-A", "worker.celery_app", "worker",
            "-Q", "attributions,default", "--pool", "solo", "-c", "1",
            "-n", f"{name}@%h", "--without-gossip", "--without-mingle",
            "--loglevel", "INFO"], self.env)

    def start_beat(self):
        return self.procs.start("beat", [str(BIN / "xaudit"), "beat", "--interval", "1"],
                                self.env)

    def kill(self, proc) -> None:
        """SIGKILL the process group: no shutdown handler runs, as when a machine dies."""
        self.killed.add(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    # API calls
    def upload(self, kind: str, path: Path, name: str) -> dict:
        with open(path, "rb") as fh:
            r = requests.post(f"{self.base}/api/v1/{kind}", headers=self.headers,
                              files={"file": (path.name, fh)}, data={"name": name},
                              timeout=120)
        assert r.status_code == 201, r.text
        return r.json()

    def start_audit(self, model: dict, data: dict, config: dict | None = None) -> str:
        r = requests.post(f"{self.base}/api/v1/audits", headers=self.headers, timeout=60,
                          json={"model_id": model["id"], "dataset_id": data["id"],
                                "config": config or {}})
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def get(self, path: str) -> dict:
        r = requests.get(f"{self.base}{path}", headers=self.headers, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    # the database, read directly (attempts and heartbeat are not part of the API)
    def row(self, audit_id: str) -> dict:
        with contextlib.closing(sqlite3.connect(self.data_dir / "xaudit.sqlite",
                                                timeout=30)) as conn:
            conn.row_factory = sqlite3.Row
            got = conn.execute("SELECT status, progress, stage, attempts, error, error_code "
                               "FROM audits WHERE id = ?", (audit_id,)).fetchone()
        return dict(got)

    def wait_running(self, audit_id: str, attempt: int, timeout: float = 600) -> dict:
        """Until the given attempt is past loading the model (progress > 0)."""
        def mid_audit():
            self.check_alive()
            r = self.row(audit_id)
            return r if (r["status"] == "running" and r["attempts"] == attempt
                         and r["stage"] != "loading" and r["progress"] > 0) else None
        return wait_for(mid_audit, timeout, step=0.1,
                        what=f"attempt {attempt} of the audit to be running\n"
                             f"{self.procs.logs()}")

    def check_alive(self) -> None:
        """Fail at once (with the logs) when a process exits that no test step killed."""
        for proc, log in self.procs.procs:
            if proc.pid not in self.killed and proc.poll() is not None:
                pytest.fail(f"{log.stem} exited unexpectedly\n{self.procs.logs()}")

    def wait_done(self, audit_id: str, timeout: float = 900) -> dict:
        def done():
            self.check_alive()
            a = self.get(f"/api/v1/audits/{audit_id}")
            return a if a["status"] in ("succeeded", "failed") else None
        return wait_for(done, timeout, step=0.5,
                        what=f"audit {audit_id} to finish\n{self.procs.logs()}")

    def report_blobs(self) -> list[Path]:
        return sorted((self.data_dir / "blobs").glob("??/*.html"))


# --------------------------------------------------------------------------- tests


def test_worker_killed_mid_audit_is_finished_once_by_a_new_worker(tmp_path, procs, redis14,
                                                                   files):
    """SIGKILL during the attribution stage: the beat sees the heartbeat stop and requeues
    the audit; a new worker runs it to the end. One report, one success."""
    stack = Stack(tmp_path, procs)
    stack.start_api()
    model = stack.upload("models", files / "wide.keras", "wide")
    data = stack.upload("datasets", files / "wide.npz", "wide")
    first = stack.start_worker()
    stack.start_beat()
    audit_id = stack.start_audit(model, data, LONG_AUDIT)

    before = stack.wait_running(audit_id, attempt=1)
    stack.kill(first)
    assert stack.row(audit_id)["status"] == "running"  # nobody has noticed yet
    assert stack.report_blobs() == []

    stack.start_worker()
    audit = stack.wait_done(audit_id)
    assert audit["status"] == "succeeded", (audit, stack.procs.logs())
    row = stack.row(audit_id)
    assert row["attempts"] == 2, row
    assert audit["progress"] == 1.0 and before["progress"] < 1.0
    assert len(stack.report_blobs()) == 1
    html = requests.get(stack.base + audit["report_url"], headers=stack.headers, timeout=30)
    assert html.status_code == 200 and "text/html" in html.headers["Content-Type"]
    report = stack.get(audit["report_json_url"])
    assert report["model"]["sha256"] == model["sha256"]

    # Several beat rounds later nothing has run it again.
    time.sleep(3 * STALE_AFTER)
    again = stack.get(f"/api/v1/audits/{audit_id}")
    assert again["finished_at"] == audit["finished_at"] and again["status"] == "succeeded"
    assert stack.row(audit_id)["attempts"] == 2 and len(stack.report_blobs()) == 1


def test_redis_restart_loses_queued_messages_and_every_audit_still_finishes(
        tmp_path, procs, redis14, files):
    """Redis here keeps nothing on disk, so a restart drops the queued messages. The
    database still says the audits are queued; the beat sends them again."""
    stack = Stack(tmp_path, procs)
    stack.start_api()
    model = stack.upload("models", files / "small.keras", "small")
    data = stack.upload("datasets", files / "small.npz", "small")
    ids = [stack.start_audit(model, data, {"seed": i}) for i in range(3)]
    client = _redis_client()
    assert client.llen("attributions") == 3  # no worker yet: the messages wait in Redis

    try:
        with contextlib.suppress(Exception):  # the server closes the connection
            client.shutdown(nosave=True)
        wait_for(lambda: not _redis_up(), 30, step=0.2, what="Redis to stop")
        # The API stays up while the broker is gone (health says so, it does not crash).
        assert requests.get(f"{stack.base}/healthz", timeout=30).status_code != 200
    finally:
        _start_redis()
    assert client.llen("attributions") == 0  # the messages are gone
    assert all(stack.get(f"/api/v1/audits/{i}")["status"] == "queued" for i in ids)

    stack.start_worker()
    stack.start_beat()
    for audit_id in ids:
        audit = stack.wait_done(audit_id)
        assert audit["status"] == "succeeded", (audit, stack.procs.logs())
    assert len(stack.report_blobs()) == 3
    stack.wait_healthy(timeout=60)


def test_api_restart_loses_nothing(tmp_path, procs, redis14, files):
    """Kill the API server hard and start it again on the same port and data folder:
    models, datasets and audits are all there, and an audit queued before the restart
    is finished by a worker started after it."""
    stack = Stack(tmp_path, procs)
    api = stack.start_api()
    model = stack.upload("models", files / "small.keras", "small")
    model_v2 = stack.upload("models", files / "small.keras", "small")
    data = stack.upload("datasets", files / "small.npz", "small")
    audit_id = stack.start_audit(model, data)

    stack.kill(api)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{stack.base}/healthz", timeout=5)
    stack.start_api()

    models = stack.get("/api/v1/models")["items"]
    assert {(m["id"], m["version"]) for m in models} == {(model["id"], 1),
                                                         (model_v2["id"], 2)}
    assert [d["id"] for d in stack.get("/api/v1/datasets")["items"]] == [data["id"]]
    assert stack.get(f"/api/v1/audits/{audit_id}")["status"] == "queued"
    assert stack.get(f"/api/v1/models/{model['id']}")["sha256"] == model["sha256"]

    stack.start_worker()
    audit = stack.wait_done(audit_id)
    assert audit["status"] == "succeeded", (audit, stack.procs.logs())
    # And the restarted API takes new work.
    later = stack.start_audit(model_v2, data)
    assert stack.wait_done(later)["status"] == "succeeded"


def test_audit_whose_workers_keep_dying_is_failed_with_a_reason(tmp_path, procs, redis14,
                                                                 files):
    """The first dead worker gets the audit requeued (stage "requeued"); when the second
    one dies too (AUDIT_MAX_ATTEMPTS=2) the beat fails it as worker_lost instead of
    leaving it "running" forever."""
    stack = Stack(tmp_path, procs, XAUDIT_AUDIT_MAX_ATTEMPTS="2")
    stack.start_api()
    model = stack.upload("models", files / "wide.keras", "wide")
    data = stack.upload("datasets", files / "wide.npz", "wide")
    stack.start_beat()
    worker = stack.start_worker()
    audit_id = stack.start_audit(model, data, LONG_AUDIT)

    stack.wait_running(audit_id, attempt=1)
    stack.kill(worker)
    requeued = wait_for(
        lambda: (a := stack.get(f"/api/v1/audits/{audit_id}"))["status"] == "queued" and a,
        120, step=0.25, what="the beat to requeue the audit")
    assert requeued["stage"] == "requeued" and requeued["error"] is None

    worker = stack.start_worker()
    stack.wait_running(audit_id, attempt=2)
    stack.kill(worker)  # for good: no worker runs from here on

    audit = stack.wait_done(audit_id, timeout=120)
    assert audit["status"] == "failed", audit
    assert audit["error"]["code"] == "worker_lost"
    assert "stopped 2 times" in audit["error"]["message"]
    assert stack.row(audit_id)["attempts"] == 2
    assert stack.report_blobs() == []
