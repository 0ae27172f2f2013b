"""`xaudit serve` (embedded) under failure: /healthz reports worker liveness, a worker
that dies is started again, a job over its time limit fails promptly and the next job
succeeds, and `kill -9` of serve takes every child with it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.proctree import children, cmdline
from tests.worker.conftest import BIN, base_env, create_key, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _workers(serve_pid: int) -> dict[str, int]:
    out = {}
    for child in children(serve_pid):
        cmd = cmdline(child)
        if "celery" in cmd:
            out["explain" if "explain@" in cmd else "audit"] = child
    return out


def _health(base: str) -> requests.Response | None:
    try:
        return requests.get(f"{base}/healthz", timeout=5)
    except requests.RequestException:
        return None


def test_serve_supervises_its_workers_and_dies_with_its_children(tmp_path, procs):
    from tests.models import mlp_classifier

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "data"
    env = base_env(data_dir, XAUDIT_HEALTHZ_REQUIRE_WORKER="true",
                   XAUDIT_EXPLAIN_TIMEOUT="60", XAUDIT_EXPLAIN_SOFT_TIME_LIMIT="10",
                   XAUDIT_EXPLAIN_TIME_LIMIT="20", XAUDIT_EXPLAIN_MAX_FLOPS="1e15")
    key = create_key(data_dir, "acme", env)
    serve = procs.start("serve", [str(BIN / "xaudit"), "serve", "--port", str(port)], env)
    # Healthy only once a worker beats (the API alone is not enough any more).
    wait_for(lambda: (r := _health(base)) is not None and r.status_code == 200, 300,
             what="a healthy service with a live worker")
    assert _health(base).json()["worker"] == "ok"
    def both():
        found = _workers(serve.pid)
        return found if len(found) == 2 else None

    workers = wait_for(both, 60, what="two embedded workers (audits and the /explain lane)")

    headers = {"Authorization": f"Bearer {key}"}
    path = tmp_path / "mlp.keras"
    mlp_classifier(n_features=4, n_classes=3).save(path)
    with open(path, "rb") as fh:
        model = requests.post(f"{base}/api/v1/models", headers=headers, timeout=120,
                              files={"file": ("mlp.keras", fh)}, data={"name": "mlp"}).json()

    def explain(options, rows=1):
        r = requests.post(f"{base}/api/v1/explain", headers=headers, timeout=120, json={
            "model_id": model["id"], "instances": [[0.1, 0.2, 0.3, 0.4]] * rows,
            "method": "integrated_gradients", "options": options})
        body = r.json()
        if r.status_code == 202:
            def done():
                j = requests.get(base + body["job_url"], headers=headers, timeout=10).json()
                return j if j["status"] in ("succeeded", "failed") else None
            return 200, wait_for(done, 120, what="the explain job")
        return r.status_code, body

    status, body = explain({"steps": 8})
    assert status == 200 and body["status"] == "succeeded", body

    # A job over its time limit fails with time_limit, quickly; the next one succeeds.
    t0 = time.monotonic()
    status, body = explain({"steps": 4096, "baseline": "uniform", "baseline_samples": 4096},
                           rows=64)
    assert body.get("error", {}).get("code") == "time_limit", body
    assert time.monotonic() - t0 < 60
    wait_for(lambda: (r := _health(base)) is not None and r.status_code == 200, 120,
             what="the worker back after the time limit")
    status, body = explain({"steps": 8})
    assert body["status"] == "succeeded", body

    # The soft limit interrupts between batches; when a batch is stuck in native code the
    # hard limit ends the /explain worker and serve starts a new one. Either way the audit
    # lane was never touched.
    workers = wait_for(both, 60, what="both workers running")

    # A worker killed outright is started again by serve.
    os.kill(workers["explain"], signal.SIGKILL)
    wait_for(lambda: _workers(serve.pid).get("explain") not in (None, workers["explain"]),
             60, what="serve to start the /explain worker again")
    status, body = explain({"steps": 8})
    assert body["status"] == "succeeded", body

    # kill -9 of serve: its children die with it (no orphaned worker keeps running).
    kids = children(serve.pid)
    assert kids
    os.kill(serve.pid, signal.SIGKILL)
    wait_for(lambda: not any(_alive(c) for c in kids) or None, 30,
             what="serve's children to exit after kill -9")
    assert np.all([not _alive(c) for c in kids])
