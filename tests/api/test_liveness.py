"""Worker liveness in /healthz: a worker's heartbeat (file without Redis, a Redis key with
a TTL with it) makes the service healthy; none makes it 503 (the service used to answer
"ok" while its only worker was dead)."""

from __future__ import annotations

import os
import time

from tests.api.conftest import make_app


def _health(app):
    r = app.test_client().get("/healthz")
    return r.status_code, r.json


def test_embedded_health_follows_the_workers_heartbeat_file(tmp_path):
    from api.liveness import LIVENESS_TTL, beat_liveness, live_workers

    app = make_app(tmp_path, CELERY_TASK_ALWAYS_EAGER=False)
    status, body = _health(app)
    assert status == 503 and body["worker"].startswith("error")
    beat_liveness(app.config, "w1")
    assert live_workers(app.config) == 1
    status, body = _health(app)
    assert status == 200 and body["worker"] == "ok"
    # A worker that stopped beating (killed, OOM) no longer counts.
    stale = time.time() - LIVENESS_TTL - 1
    os.utime(tmp_path / "var" / "workers" / "w1", (stale, stale))
    assert _health(app)[0] == 503
    # An operator may run the API without requiring a worker.
    app.config["HEALTHZ_REQUIRE_WORKER"] = False
    status, body = _health(app)
    assert status == 200 and body["worker"] == "unchecked"
    app.extensions["xaudit_db"]["engine"].dispose()


def test_redis_health_follows_the_workers_heartbeat_key(tmp_path, redis_url):
    import redis

    from api.liveness import beat_liveness, live_workers

    app = make_app(tmp_path, CELERY_TASK_ALWAYS_EAGER=False, REDIS_URL=redis_url,
                   CELERY_BROKER_URL=redis_url, CELERY_RESULT_BACKEND=redis_url)
    assert _health(app)[0] == 503
    beat_liveness(app.config, "w1")
    assert live_workers(app.config) == 1 and _health(app)[0] == 200
    client = redis.Redis.from_url(redis_url)
    assert 0 < client.ttl("xaudit:worker:w1") <= 30
    client.delete("xaudit:worker:w1")  # what the TTL does when the worker dies
    assert _health(app)[0] == 503
    app.extensions["xaudit_db"]["engine"].dispose()
