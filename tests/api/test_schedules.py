"""``/api/v1/schedules``: validation (cron, names, config, webhook URL), the one-time
webhook secret, tenant isolation, and the pure helpers (cron, signatures, host list)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from tests.api.conftest import bearer, new_key, upload

URL = "/api/v1/schedules"


@pytest.fixture
def tenant(app, client, auth, mlp_file, data_file):
    upload(client, "models", mlp_file, "mlp", auth)
    upload(client, "datasets", data_file, "rows", auth)
    return auth


def body(**over):
    base = {"cron": "0 3 * * *", "model_name": "mlp", "dataset_name": "rows"}
    base.update(over)
    return base


def test_create_get_list_delete(client, tenant):
    before = datetime.now(timezone.utc)
    r = client.post(URL, headers=tenant, json=body(cron="  15   3 * *  mon-fri "))
    assert r.status_code == 201, r.json
    s = r.json
    assert s["cron"] == "15 3 * * mon-fri"
    nxt = datetime.fromisoformat(s["next_run_at"])
    # The first weekday 03:15 UTC after now.
    assert nxt > before and (nxt.hour, nxt.minute) == (3, 15) and nxt.weekday() < 5
    assert nxt - before <= timedelta(days=3, minutes=1)
    assert s["webhook_url"] is None and s["webhook_secret"] is None
    got = client.get(f"{URL}/{s['id']}", headers=tenant).json
    assert got["next_run_at"] == s["next_run_at"] and "webhook_secret" not in got
    assert [i["id"] for i in client.get(URL, headers=tenant).json["items"]] == [s["id"]]
    assert client.delete(f"{URL}/{s['id']}", headers=tenant).status_code == 204
    assert client.get(f"{URL}/{s['id']}", headers=tenant).status_code == 404
    assert client.get(URL, headers=tenant).json["items"] == []


@pytest.mark.parametrize("cron, hint", [
    ("* * * * * *", "five fields"),        # a seconds field: sub-minute runs
    ("*/5 * * *", "five fields"),
    ("@hourly", "five fields"),
    ("0 0 1 1 * 2030", "five fields"),
    ("61 * * * *", "not a valid cron"),
    ("*/0 * * * *", "not a valid cron"),
    ("0 24 * * *", "not a valid cron"),
    ("H * * * *", "numbers"),
    ("0 0 1 1 #1", "numbers"),
    ("? * * * *", "numbers"),
    ("0 0 30 2 *", "never fires"),         # February 30th
    ("0 0 31 4 *", "never fires"),         # April 31st
])
def test_bad_cron_is_422_with_a_reason(client, tenant, cron, hint):
    r = client.post(URL, headers=tenant, json=body(cron=cron))
    assert r.status_code == 422, (cron, r.json)
    assert r.json["error"]["code"] == "bad_cron"
    assert hint in r.json["error"]["message"]


@pytest.mark.parametrize("cron", ["* * * * *", "0 0 29 2 *", "0 0 L * *", "0 9 * jan,jul sun"])
def test_unusual_but_meaningful_cron_is_accepted(client, tenant, cron):
    r = client.post(URL, headers=tenant, json=body(cron=cron))
    assert r.status_code == 201, r.json


def test_unknown_names_are_404(client, tenant):
    r = client.post(URL, headers=tenant, json=body(model_name="nope"))
    assert r.status_code == 404 and r.json["error"]["code"] == "model_not_found"
    r = client.post(URL, headers=tenant, json=body(dataset_name="nope"))
    assert r.status_code == 404 and r.json["error"]["code"] == "dataset_not_found"
    r = client.post(URL, headers=tenant, json=body(model_name="../etc"))
    assert r.status_code == 422


@pytest.mark.parametrize("config, code", [
    ({"methods": ["no_such_method"]}, "unknown_method"),
    ({"methods": "saliency"}, "bad_config"),
    ({"ig_steps": 1}, "bad_config"),          # valid JSON, refused by the pipeline
    ({"bogus_option": 3}, "bad_config"),
    ({"thresholds": {"drift_min_ndcg": "high"}}, "bad_config"),
])
def test_bad_config_is_422(client, tenant, config, code):
    r = client.post(URL, headers=tenant, json=body(config=config))
    assert r.status_code == 422, r.json
    assert r.json["error"]["code"] == code


def test_data_that_cannot_fit_the_model_is_refused(client, tenant, tmp_path):
    wrong = tmp_path / "wide.npz"
    np.savez(wrong, x=np.zeros((8, 7), "float32"), y=np.zeros(8, "int64"))
    upload(client, "datasets", wrong, "wide", tenant)
    r = client.post(URL, headers=tenant, json=body(dataset_name="wide"))
    assert 400 <= r.status_code < 500 and r.status_code != 404, r.json


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "ftp://example.com/x", "gopher://example.com", "javascript:alert(1)",
    "example.com/hook", "http://", "https://user:pw@example.com/hook", "http://example.com:99999/",
])
def test_webhook_url_must_be_plain_http(client, tenant, url):
    r = client.post(URL, headers=tenant, json=body(webhook_url=url))
    assert r.status_code == 422, (url, r.json)
    assert r.json["error"]["code"] == "bad_webhook_url"


def test_webhook_secret_is_shown_once(client, tenant):
    r = client.post(URL, headers=tenant, json=body(webhook_url="https://hooks.example.com/x",
                                                    webhook_on="critical"))
    assert r.status_code == 201, r.json
    secret = r.json["webhook_secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert r.json["webhook_on"] == "critical"
    listed = client.get(URL, headers=tenant).json["items"][0]
    one = client.get(f"{URL}/{r.json['id']}", headers=tenant).json
    for shown in (listed, one):
        assert secret not in json.dumps(shown) and shown["webhook_on"] == "critical"
    second = client.post(URL, headers=tenant, json=body(webhook_url="https://a.example/x"))
    assert second.json["webhook_secret"] != secret
    r = client.post(URL, headers=tenant, json=body(webhook_url="https://a.example/x",
                                                    webhook_on="sometimes"))
    assert r.status_code == 422


def test_operator_can_restrict_webhook_hosts(tmp_path, mlp_file, data_file):
    from tests.api.conftest import make_app

    app = make_app(tmp_path, WEBHOOK_ALLOWED_HOSTS="hooks.example.com, *.corp.example")
    try:
        client = app.test_client()
        headers = bearer(new_key(app, "acme"))
        upload(client, "models", mlp_file, "mlp", headers)
        upload(client, "datasets", data_file, "rows", headers)
        for url, ok in [("https://hooks.example.com/a", True),
                        ("https://ci.corp.example/a", True),
                        ("https://HOOKS.example.com./a", True),
                        ("https://evil.example.com/a", False),
                        ("http://127.0.0.1:8080/a", False),
                        ("https://corp.example.evil.net/a", False)]:
            r = client.post(URL, headers=headers, json=body(webhook_url=url))
            assert (r.status_code == 201) is ok, (url, r.json)
            if not ok:
                assert r.json["error"]["code"] == "webhook_host_not_allowed"
    finally:
        app.extensions["xaudit_db"]["engine"].dispose()


def test_other_tenants_schedules_are_404(app, client, tenant, mlp_file, data_file):
    s = client.post(URL, headers=tenant, json=body()).json
    other = bearer(new_key(app, "globex"))
    assert client.get(f"{URL}/{s['id']}", headers=other).status_code == 404
    assert client.delete(f"{URL}/{s['id']}", headers=other).status_code == 404
    assert client.get(URL, headers=other).json["items"] == []
    # Names are per tenant: globex has no model called "mlp" until it uploads one.
    r = client.post(URL, headers=other, json=body())
    assert r.status_code == 404 and r.json["error"]["code"] == "model_not_found"
    assert client.get(f"{URL}/{s['id']}", headers=tenant).status_code == 200
    assert client.get(URL).status_code == 401


def test_schedules_are_in_the_openapi_spec(client):
    spec = client.get("/openapi.json").json
    post = spec["paths"]["/api/v1/schedules"]["post"]
    assert {"201", "404", "422"} <= set(post["responses"])
    schema = json.dumps(spec["components"]["schemas"])
    assert "webhook_secret" in schema and "webhook_on" in schema


# --------------------------------------------------------------------------- pure helpers


def test_next_run_is_strictly_after_and_in_utc():
    from api.resources.schedules import next_run

    at = datetime(2030, 5, 6, 12, 0, tzinfo=timezone.utc)
    assert next_run("0 * * * *", at) == datetime(2030, 5, 6, 13, 0, tzinfo=timezone.utc)
    assert next_run("* * * * *", at) == at + timedelta(minutes=1)
    naive = datetime(2030, 5, 6, 12, 0)  # how SQLite hands datetimes back
    assert next_run("30 12 * * *", naive) == datetime(2030, 5, 6, 12, 30, tzinfo=timezone.utc)


def test_signature_verification_rejects_tampering_and_replays():
    from worker.webhooks import (
        SIGNATURE_HEADER,
        TIMESTAMP_HEADER,
        signature,
        verify_signature,
    )

    secret, raw, ts = "whsec_abc", b'{"audit_id":"1","status":"succeeded"}', 1_900_000_000
    headers = {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: signature(secret, ts, raw)}
    assert headers[SIGNATURE_HEADER].startswith("sha256=")
    assert len(headers[SIGNATURE_HEADER]) == len("sha256=") + 64
    assert verify_signature(secret, headers, raw, now=ts + 10)
    assert not verify_signature("whsec_other", headers, raw, now=ts)
    assert not verify_signature(secret, headers, raw.replace(b"succeeded", b"failed"), now=ts)
    # A captured delivery replayed an hour later, or with a fresh timestamp, fails.
    assert not verify_signature(secret, headers, raw, now=ts + 3600)
    assert not verify_signature(secret, {**headers, TIMESTAMP_HEADER: str(ts + 3600)}, raw,
                                now=ts + 3600)
    assert not verify_signature(secret, {SIGNATURE_HEADER: headers[SIGNATURE_HEADER]}, raw)


def test_should_notify_follows_webhook_on():
    from worker.webhooks import should_notify

    critical = {"findings": [{"code": "x", "severity": "critical"}]}
    mild = {"findings": [{"code": "y", "severity": "warning"}]}
    assert should_notify("completion", "succeeded", mild)
    assert should_notify("completion", "failed", None)
    assert not should_notify("completion", "running", None)
    assert should_notify("critical", "succeeded", critical)
    assert not should_notify("critical", "succeeded", mild)
    assert should_notify("critical", "failed", None)
