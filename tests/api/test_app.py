"""The app shell: OpenAPI, docs page, error shape, CSP, health, metrics, auth coverage."""

from __future__ import annotations

import io
import re

from tests.api.conftest import bearer, make_app, new_key


def test_openapi_is_served_and_valid(client):
    from jsonschema_rs import validator_for  # noqa: F401 - presence only

    r = client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json
    assert spec["openapi"].startswith("3.")
    for path in ("/api/v1/models", "/api/v1/datasets", "/api/v1/audits",
                 "/api/v1/audits/{audit_id}/report", "/api/v1/explain",
                 "/api/v1/explain/jobs/{job_id}", "/api/v1/schedules", "/healthz"):
        assert path in spec["paths"], path
    explain_body = spec["paths"]["/api/v1/explain"]["post"]["requestBody"]
    schema_ref = explain_body["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][schema_ref.rsplit("/", 1)[-1]]
    assert {"model_id", "instances"} <= set(schema["required"])
    assert spec["components"]["securitySchemes"]["BearerAuth"]["scheme"] == "bearer"
    # Every /api/v1 operation declares the bearer requirement.
    for path, item in spec["paths"].items():
        if path.startswith("/api/v1"):
            for op in item.values():
                assert op.get("security"), path
    # The spec validates against the OpenAPI 3.1 meta-schema (schemathesis' loader checks it).
    import schemathesis

    loaded = schemathesis.openapi.from_dict(spec)
    assert len(list(loaded.get_all_operations())) >= 12


def test_docs_page_is_local_and_has_csp(client):
    r = client.get("/docs")
    assert r.status_code == 200 and r.mimetype == "text/html"
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'none'" in csp
    html = r.get_data(as_text=True)
    # Nothing loaded from the network: no src/href to another origin, no script tags.
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html)
    assert "<script" not in html.lower()
    assert "/api/v1/explain" in html and "POST" in html


def test_errors_are_json_for_404_405_413(tmp_path):
    app = make_app(tmp_path, MAX_CONTENT_LENGTH=1000)
    client = app.test_client()
    headers = bearer(new_key(app, "acme"))
    r = client.get("/no/such/page")
    assert r.status_code == 404 and r.json["error"]["code"] == "not_found"
    r = client.delete("/healthz")
    assert r.status_code == 405 and r.json["error"]["code"] == "method_not_allowed"
    r = client.post("/api/v1/models", data={"file": (io.BytesIO(b"x" * 5000), "m.keras"),
                                            "name": "m"},
                    headers=headers, content_type="multipart/form-data")
    assert r.status_code == 413 and r.json["error"]["code"] == "too_large"


def test_health_checks_database_and_broker(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    # Eager tasks run in the API process: the worker is the API itself.
    assert r.json == {"status": "ok", "database": "ok", "broker": "ok", "worker": "ok"}


def test_health_reports_a_dead_broker(tmp_path):
    app = make_app(tmp_path, CELERY_BROKER_URL="redis://127.0.0.1:1/0")
    r = app.test_client().get("/healthz")
    assert r.status_code == 503
    assert r.json["database"] == "ok" and r.json["broker"].startswith("error")


def test_metrics_count_requests_and_audits(client, auth):
    client.get("/api/v1/models", headers=auth)
    client.get("/api/v1/models", headers=auth)
    body = client.get("/metrics").get_data(as_text=True)
    m = re.search(r'xaudit_http_requests_total\{endpoint="models.list_models",method="GET",'
                  r'status="200"\} (\S+)', body)
    assert m and float(m.group(1)) == 2.0
    assert 'xaudit_http_request_seconds_bucket{endpoint="models.list_models"' in body
    assert 'xaudit_audits{status="queued"} 0.0' in body


def test_metrics_read_queue_depth_from_redis(tmp_path, redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    client.rpush("attributions", b"m1", b"m2", b"m3")
    app = make_app(tmp_path, CELERY_BROKER_URL=redis_url)
    body = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'xaudit_queue_depth{queue="attributions"} 3.0' in body
    assert 'xaudit_queue_depth{queue="default"} 0.0' in body


def test_every_api_route_requires_a_key(app, client):
    rules = [r for r in app.url_map.iter_rules() if r.rule.startswith("/api/v1")]
    assert len(rules) >= 12
    for rule in rules:
        url = re.sub(r"<[^>]+>", "abc", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            r = client.open(url, method=method)
            assert r.status_code == 401, (method, url)
            assert r.json["error"]["code"] == "unauthorized"


def test_config_from_prefixed_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("XAUDIT_EXPLAIN_MAX_INSTANCES", "7")
    monkeypatch.setenv("XAUDIT_DATA_DIR", str(tmp_path / "envdata"))
    from api import create_app

    app = create_app({"CELERY_BROKER_URL": "memory://",
                      "CELERY_RESULT_BACKEND": "cache+memory://"})
    assert app.config["EXPLAIN_MAX_INSTANCES"] == 7
    assert app.config["DATABASE_URL"].endswith("envdata/xaudit.sqlite")
    assert (tmp_path / "envdata" / "xaudit.sqlite").exists()


def test_validation_and_bad_json_errors_are_json(client, auth):
    r = client.post("/api/v1/audits", data="{not json", headers=auth,
                    content_type="application/json")
    assert r.status_code in (400, 422) and "code" in r.json["error"]
    r = client.post("/api/v1/audits", json={"model_id": 5}, headers=auth)
    assert r.status_code == 422
    assert r.json["error"]["code"] == "validation_error"
    assert "model_id" in r.json["error"]["message"]
    r = client.post("/api/v1/audits", json={"model_id": "a", "dataset_id": "b", "evil": 1},
                    headers=auth)
    assert r.status_code == 422 and "evil" in r.json["error"]["message"]
