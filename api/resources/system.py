"""Service endpoints outside ``/api/v1``: health, metrics and the API docs page."""

from __future__ import annotations

import logging

from apiflask import APIBlueprint
from flask import current_app, render_template
from sqlalchemy import text

from api import db, metrics

log = logging.getLogger("xaudit.api")

bp = APIBlueprint("system", __name__, tag="Service")

HTTP_METHODS = ("get", "post", "put", "patch", "delete")


@bp.get("/healthz")
@bp.doc(summary="Liveness: the database and the broker answer",
        responses={200: "healthy", 503: "a dependency is down"})
def healthz():
    checks: dict[str, str] = {}
    try:
        db.session().execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        log.warning("health: database down: %s", exc)
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        celery = current_app.extensions["celery"]
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0,
                                   timeout=3)
        checks["broker"] = "ok"
    except Exception as exc:
        log.warning("health: broker down: %s", exc)
        checks["broker"] = f"error: {type(exc).__name__}"
    cfg = current_app.config
    if cfg.get("CELERY_TASK_ALWAYS_EAGER"):
        checks["worker"] = "ok"  # tasks run inside the API process
    else:
        try:
            from api.liveness import live_workers

            n = live_workers(cfg)
            checks["worker"] = "ok" if n else "error: no live worker"
        except Exception as exc:
            checks["worker"] = f"error: {type(exc).__name__}"
        if not cfg.get("HEALTHZ_REQUIRE_WORKER", True) and checks["worker"] != "ok":
            checks["worker"] = "unchecked"
    healthy = all(v in ("ok", "unchecked") for v in checks.values())
    return {"status": "ok" if healthy else "unhealthy", **checks}, 200 if healthy else 503


@bp.get("/metrics")
@bp.doc(summary="Prometheus metrics", hide=True)
def prometheus_metrics():
    return metrics.render()


@bp.get("/docs")
@bp.doc(hide=True)
def docs():
    """A server-rendered list of the API's operations, built from the OpenAPI spec.

    No JavaScript and nothing from a CDN: the page obeys the same CSP as every other.
    """
    spec = current_app.spec
    operations = []
    for path, item in spec.get("paths", {}).items():
        for method in HTTP_METHODS:
            op = item.get(method)
            if op is None:
                continue
            body = op.get("requestBody", {}).get("content", {})
            operations.append({
                "method": method.upper(),
                "path": path,
                "summary": op.get("summary", ""),
                "description": op.get("description", ""),
                "tags": op.get("tags", []),
                "auth": bool(op.get("security")),
                "body": [
                    {"type": ctype, "fields": _fields(spec, media.get("schema", {}))}
                    for ctype, media in body.items()
                ],
                "params": [
                    {"name": p.get("name"), "in": p.get("in"), "required": p.get("required")}
                    for p in op.get("parameters", [])
                ],
                "responses": sorted((code, r.get("description", ""))
                                    for code, r in op.get("responses", {}).items()),
            })
    return render_template("docs.html", spec=spec, operations=operations)


def _fields(spec: dict, schema: dict) -> list[dict]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec.get("components", {}).get("schemas", {}).get(name, {})
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema.get("properties", {}).items():
        out.append({"name": name, "type": prop.get("type", prop.get("format", "")),
                    "required": name in required,
                    "description": prop.get("description", "")})
    return out
