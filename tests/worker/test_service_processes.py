"""End to end with real processes: API server + Celery worker on Redis; the embedded
default (`xaudit serve` alone, no Redis)."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from tests.worker.conftest import BIN, base_env, create_key, free_port, wait_for, wait_healthy

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory):
    from tests.models import mlp_classifier

    path = tmp_path_factory.mktemp("m") / "mlp.keras"
    mlp_classifier(n_features=4, n_classes=3).save(path)
    return path


@pytest.fixture(scope="module")
def rows_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("d") / "rows.npz"
    np.savez(path, x=rng.normal(size=(60, 4)).astype("float32"),
             y=rng.integers(0, 3, size=60))
    return path


def _upload(base, headers, kind, path, name):
    with open(path, "rb") as fh:
        r = requests.post(f"{base}/api/v1/{kind}", headers=headers,
                          files={"file": (path.name, fh)}, data={"name": name}, timeout=120)
    assert r.status_code == 201, r.text
    return r.json()


def _explain_round_trip(base, headers, model_id):
    rows = np.random.default_rng(3).normal(size=(5, 4)).round(4).tolist()
    r = requests.post(f"{base}/api/v1/explain", headers=headers, timeout=180, json={
        "model_id": model_id, "instances": rows, "method": "integrated_gradients",
        "options": {"steps": 24}})
    assert r.status_code in (200, 202), r.text
    body = r.json()
    if r.status_code == 202:  # a cold worker may still be importing TensorFlow
        def done():
            j = requests.get(base + body["job_url"], headers=headers, timeout=10).json()
            return j if j["status"] in ("succeeded", "failed") else None
        body = wait_for(done, 300, what="the explain job")
    assert body["status"] == "succeeded", body
    attr = np.asarray(body["attributions"])
    assert attr.shape == (5, 4) and np.all(np.isfinite(attr))
    assert np.asarray(body["prediction"]).shape == (5, 3)
    gap = np.asarray(body["completeness_gap"], dtype=float)
    assert gap.shape == (5,) and np.all(np.isfinite(gap))
    # A second request is served by the warm worker (cached model) with the same answer.
    r2 = requests.post(f"{base}/api/v1/explain", headers=headers, timeout=180, json={
        "model_id": model_id, "instances": rows, "method": "integrated_gradients",
        "options": {"steps": 24}})
    assert r2.status_code == 200, r2.text
    assert np.allclose(np.asarray(r2.json()["attributions"]), attr, atol=1e-5)
    return body


def test_explain_round_trip_with_redis_and_a_real_worker(tmp_path, procs, redis_db, mlp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = base_env(tmp_path / "data", XAUDIT_REDIS_URL=redis_db,
                   XAUDIT_EXPLAIN_TIMEOUT="120")
    key = create_key(tmp_path / "data", "acme", env)
    procs.start("worker", [str(BIN / "celery"), "-A", "worker.celery_app", "worker",
                           "-Q", "attributions,default", "--pool", "solo", "-c", "1",
                           "-n", "it@%h", "--without-gossip", "--without-mingle",
                           "--loglevel", "INFO"], env)
    procs.start("api", [str(BIN / "xaudit"), "serve", "--port", str(port),
                        "--no-embedded-worker", "--no-beat"], env)
    wait_healthy(base, procs)
    headers = {"Authorization": f"Bearer {key}"}
    model = _upload(base, headers, "models", mlp_path, "mlp")
    _explain_round_trip(base, headers, model["id"])
    metrics = requests.get(f"{base}/metrics", timeout=10).text
    assert 'xaudit_queue_depth{queue="attributions"} 0.0' in metrics
    assert 'endpoint="explain.explain"' in metrics


def test_audit_end_to_end_with_redis(tmp_path, procs, redis_db, mlp_path, rows_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = base_env(tmp_path / "data", XAUDIT_REDIS_URL=redis_db)
    key = create_key(tmp_path / "data", "acme", env)
    procs.start("worker", [str(BIN / "celery"), "-A", "worker.celery_app", "worker",
                           "-Q", "attributions,default", "--pool", "solo", "-c", "1",
                           "-n", "it@%h", "--without-gossip", "--without-mingle"], env)
    procs.start("api", [str(BIN / "xaudit"), "serve", "--port", str(port),
                        "--no-embedded-worker", "--no-beat"], env)
    wait_healthy(base, procs)
    headers = {"Authorization": f"Bearer {key}"}
    model = _upload(base, headers, "models", mlp_path, "mlp")
    data = _upload(base, headers, "datasets", rows_path, "rows")
    r = requests.post(f"{base}/api/v1/audits", headers=headers, timeout=120,
                      json={"model_id": model["id"], "dataset_id": data["id"]})
    assert r.status_code == 202, r.text
    status_url = base + r.json()["status_url"]
    seen = []

    def finished():
        a = requests.get(status_url, headers=headers, timeout=10).json()
        seen.append((a["status"], a["progress"], a["stage"]))
        return a if a["status"] in ("succeeded", "failed") else None

    audit = wait_for(finished, 900, step=1.0, what="the audit")
    assert audit["status"] == "succeeded", (audit, procs.logs())
    assert audit["progress"] == 1.0 and audit["timings"].get("total", 0) > 0
    progresses = [p for s, p, _ in seen if s == "running"]
    assert progresses == sorted(progresses)
    html = requests.get(base + audit["report_url"], headers=headers, timeout=30)
    assert html.status_code == 200 and "text/html" in html.headers["Content-Type"]
    assert "default-src 'none'" in html.headers["Content-Security-Policy"]
    report = requests.get(base + audit["report_json_url"], headers=headers, timeout=30).json()
    assert "schema_version" in report and report["model"]["sha256"] == model["sha256"]

    # A redelivered message for the finished audit changes nothing (one report).
    from celery import Celery

    client = Celery(broker=redis_db, backend=redis_db)
    client.conf.task_serializer = "json"
    res = client.send_task("xaudit.audit", args=[audit["id"]], queue="attributions")
    assert res.get(timeout=120)["status"] == "succeeded"
    again = requests.get(status_url, headers=headers, timeout=10).json()
    assert again["finished_at"] == audit["finished_at"]
    assert again["report_url"] == audit["report_url"]


def test_embedded_default_needs_no_redis(tmp_path, procs, mlp_path):
    """`xaudit serve` with nothing configured: SQLite, local blobs, file broker, worker."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "data"
    env = base_env(data_dir, XAUDIT_EXPLAIN_TIMEOUT="120")
    key = create_key(data_dir, "solo", env)
    procs.start("serve", [str(BIN / "xaudit"), "serve", "--port", str(port)], env)
    wait_healthy(base, procs)
    headers = {"Authorization": f"Bearer {key}"}
    model = _upload(base, headers, "models", mlp_path, "mlp")
    _explain_round_trip(base, headers, model["id"])
    assert (data_dir / "xaudit.sqlite").exists()
    assert (data_dir / "broker" / "queue").is_dir()
    assert any((data_dir / "blobs").glob("??/*.keras"))
