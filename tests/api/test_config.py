"""One configuration: every setting the service reads is declared in api/config.py, and the
intake policy comes from the app's configuration (so create_app's test config sets it)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.api.conftest import bearer, make_app, new_key, upload

ROOT = Path(__file__).resolve().parents[2]
#: Set by Flask, apiflask or api.config.resolve rather than declared as defaults.
DERIVED = {"BLOB_DIR", "BROKER_DIR", "TESTING", "HTTP_ERROR_SCHEMA", "VALIDATION_ERROR_SCHEMA",
           "SECURITY_SCHEMES", "INFO"}


def test_every_setting_read_is_declared():
    from api.config import POLICY_KEYS, defaults

    declared = set(defaults())
    pattern = re.compile(r"""config(?:\[|\.get\(|\.setdefault\()\s*["']([A-Z][A-Z0-9_]+)["']""")
    read: dict[str, str] = {}
    for pkg in ("api", "worker"):
        for f in (ROOT / pkg).rglob("*.py"):
            for name in pattern.findall(f.read_text(encoding="utf-8")):
                read.setdefault(name, str(f.relative_to(ROOT)))
    missing = {k: v for k, v in read.items() if k not in declared | DERIVED}
    assert missing == {}
    assert set(POLICY_KEYS) <= declared
    assert {"WEBHOOK_ALLOWED_HOSTS", "PUBLIC_URL", "MAX_MODEL_BYTES",
            "ALLOW_SAVEDMODEL"} <= declared


def test_intake_policy_comes_from_the_app_config(tmp_path, mlp_file, monkeypatch):
    # The process environment says nothing; the test config sets a tiny model size cap.
    monkeypatch.delenv("XAUDIT_MAX_MODEL_BYTES", raising=False)
    app = make_app(tmp_path, MAX_MODEL_BYTES=1000)
    client = app.test_client()
    headers = bearer(new_key(app, "acme"))
    r = upload(client, "models", mlp_file, "mlp", headers)
    assert r.status_code in (413, 422), r.json
    assert r.json["error"]["code"] == "file_too_large"
    assert "1,000" in r.json["error"]["message"]
    app.extensions["xaudit_db"]["engine"].dispose()


def test_policy_settings_also_come_from_xaudit_variables(tmp_path, monkeypatch):
    from api.config import intake_policy, policy_environ

    monkeypatch.setenv("XAUDIT_MAX_MODEL_BYTES", "2048")
    monkeypatch.setenv("XAUDIT_ALLOW_SAVEDMODEL", "true")
    app = make_app(tmp_path)
    env = policy_environ(app.config)
    assert env["XAUDIT_MAX_MODEL_BYTES"] == "2048"
    policy = intake_policy(app.config)
    assert policy.max_file_bytes == 2048 and policy.allow_savedmodel is True
    app.extensions["xaudit_db"]["engine"].dispose()


def test_worker_memory_from_the_app_config_refuses_a_model(tmp_path, mlp_file, monkeypatch):
    # The budget comes from create_app's config, not the process environment: with a
    # worker memory of a few kilobytes even the small test MLP cannot be run.
    monkeypatch.delenv("XAUDIT_WORKER_MEMORY", raising=False)
    app = make_app(tmp_path, WORKER_MEMORY=4096)
    client = app.test_client()
    headers = bearer(new_key(app, "acme"))
    r = upload(client, "models", mlp_file, "mlp", headers)
    assert r.status_code == 422, r.json
    assert r.json["error"]["code"] == "model_too_large"
    app.extensions["xaudit_db"]["engine"].dispose()
    # The same model is accepted under the default budget.
    app = make_app(tmp_path / "default")
    client = app.test_client()
    r = upload(client, "models", mlp_file, "mlp", bearer(new_key(app, "acme")))
    assert r.status_code == 201, r.json
    app.extensions["xaudit_db"]["engine"].dispose()


def test_watchdog_memory_limit_follows_the_app_config(monkeypatch):
    from worker.watchdog import memory_limit

    monkeypatch.delenv("XAUDIT_WORKER_MEMORY", raising=False)
    assert memory_limit({"WORKER_MEMORY": 123_456_789}) == 123_456_789
    assert memory_limit({"WORKER_MEMORY": None}) > 123_456_789


def test_audit_arrays_over_the_configured_worker_memory_are_refused(tmp_path, mlp_file,
                                                                      data_file):
    # Many deletion/insertion points: the audit's curve block (4 orders x 1001 points x
    # 4 features x 10 bytes per row, ~160 KB) is over a 300 KB worker's batch share, while
    # the model itself fits. (No audit is run under this budget: the watchdog would stop
    # this process; the sizes that fit are checked in tests/explain/test_budget.py.)
    app = make_app(tmp_path, WORKER_MEMORY=300_000)
    client = app.test_client()
    headers = bearer(new_key(app, "acme"))
    mid = upload(client, "models", mlp_file, "mlp", headers).json["id"]
    ds = upload(client, "datasets", data_file, "rows", headers).json["id"]
    r = client.post("/api/v1/audits", headers=headers, json={
        "model_id": mid, "dataset_id": ds,
        "config": {"samples": 4, "faithfulness_steps": 1000,
                   "methods": ["integrated_gradients"]}})
    assert r.status_code == 422, r.json
    assert r.json["error"]["code"] == "over_budget"
    assert "faithfulness" in r.json["error"]["message"]
    app.extensions["xaudit_db"]["engine"].dispose()
