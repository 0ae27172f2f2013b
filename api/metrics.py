"""Prometheus metrics: requests by endpoint, audits by status, queue depth.

Each app has its own registry (several apps can live in one test process). Under gunicorn
with several worker processes, set ``PROMETHEUS_MULTIPROC_DIR`` and the request metrics of
all processes are aggregated; the database and queue gauges are read at scrape time.
"""

from __future__ import annotations

import logging
import os
import time

from flask import Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

log = logging.getLogger("xaudit.metrics")

QUEUES = ("attributions", "default")


class _StateCollector:
    """Gauges read at scrape time from the database (audits) and the broker (queues)."""

    def __init__(self, app: Flask):
        self.app = app

    def collect(self):
        from api import db
        from api.lifecycle import AuditStatus

        audits = GaugeMetricFamily("xaudit_audits", "Audits by status", labels=["status"])
        try:
            with self.app.app_context():
                rows = dict(db.session().execute(
                    select(db.Audit.status, func.count()).group_by(db.Audit.status)).all())
            for status in (s.value for s in AuditStatus):
                audits.add_metric([status], float(rows.get(status, 0)))
        except Exception:  # a scrape must not fail because the database is down
            log.warning("could not read audit counts", exc_info=True)
        yield audits

        depth = queue_depths(self.app)
        if depth is not None:
            q = GaugeMetricFamily("xaudit_queue_depth", "Messages waiting per Celery queue",
                                  labels=["queue"])
            for name, n in depth.items():
                q.add_metric([name], float(n))
            yield q


def queue_depths(app: Flask) -> dict[str, int] | None:
    """Messages waiting in each queue when Redis is the broker, else None."""
    url = app.config["CELERY_BROKER_URL"]
    if not url.startswith(("redis://", "rediss://")):
        return None
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        out = {}
        for name in QUEUES:
            # Celery's Redis transport keeps one list per queue, plus one per priority
            # step ("name\x06\x16N") when priorities are used.
            keys = [name] + [f"{name}\x06\x16{p}" for p in (1, 2, 3, 4, 5, 6, 7, 8, 9)]
            out[name] = int(sum(client.llen(k) for k in keys))
        return out
    except Exception:
        log.warning("could not read queue depth", exc_info=True)
        return None


def init_app(app: Flask) -> None:
    registry = CollectorRegistry()
    requests = Counter("xaudit_http_requests", "HTTP requests",
                       ["method", "endpoint", "status"], registry=registry)
    latency = Histogram("xaudit_http_request_seconds", "HTTP request latency",
                        ["method", "endpoint"], registry=registry,
                        buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
    state = CollectorRegistry(auto_describe=False)
    state.register(_StateCollector(app))
    app.extensions["xaudit_metrics"] = (registry, state)

    @app.before_request
    def _start_timer():
        g.xaudit_t0 = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        t0 = g.pop("xaudit_t0", None)
        # The endpoint name, not the URL: ids would make the label set unbounded.
        endpoint = request.endpoint or "unmatched"
        requests.labels(request.method, endpoint, str(response.status_code)).inc()
        if t0 is not None:
            latency.labels(request.method, endpoint).observe(time.perf_counter() - t0)
        return response


def render() -> Response:
    registry, state = current_app.extensions["xaudit_metrics"]
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        # Request metrics are file-backed per process in this mode: merge them all.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    body = generate_latest(registry) + generate_latest(state)
    return Response(body, mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                    headers={"Content-Type": CONTENT_TYPE_LATEST})
