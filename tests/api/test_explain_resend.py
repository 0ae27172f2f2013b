"""An explain job whose message the broker lost is sent again when it is polled.

No wall-clock window: the resend period is ten minutes, and the job's age is moved past
it by rewriting its creation time, so the test means the same on a loaded machine."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from tests.api.conftest import bearer, make_app, new_key, upload

PERIOD = 600.0


@pytest.fixture
def redis_client(redis_url):
    import redis

    return redis.Redis.from_url(redis_url)


def test_lost_explain_message_is_sent_again_once_per_period(tmp_path, redis_url, redis_client,
                                                            mlp_file, caplog):
    # A real Redis broker and no worker: the request times out and answers 202.
    app = make_app(tmp_path, CELERY_BROKER_URL=redis_url, CELERY_RESULT_BACKEND=redis_url,
                   CELERY_TASK_ALWAYS_EAGER=False, EXPLAIN_TIMEOUT=0.2,
                   EXPLAIN_RESEND_AFTER=PERIOD)
    client = app.test_client()
    headers = bearer(new_key(app, "acme"))
    model_id = upload(client, "models", mlp_file, "mlp", headers).json["id"]
    r = client.post("/api/v1/explain", headers=headers, json={
        "model_id": model_id, "instances": [[0.1, 0.2, 0.3, 0.4]],
        "method": "saliency"})
    assert r.status_code == 202, r.json
    # An answer of 202 is the normal course of a long job: nothing is logged as a failure.
    assert not [rec for rec in caplog.records
                if rec.levelno >= logging.WARNING or rec.exc_info], caplog.text
    job_url = r.json["job_url"]
    assert redis_client.llen("attributions") == 1

    # A fresh job is not re-sent: its message may simply be waiting for a worker.
    redis_client.delete("attributions")  # the broker lost the message
    assert client.get(job_url, headers=headers).json["status"] == "queued"
    assert redis_client.llen("attributions") == 0

    # Once it has waited well past the request timeout, a poll sends it again ...
    from api import db

    with app.app_context():
        session = db.session()
        job = session.get(db.ExplainJob, r.json["job_id"])
        job.created_at = job.created_at - timedelta(seconds=2 * PERIOD)
        session.commit()
    assert client.get(job_url, headers=headers).json["status"] == "queued"
    assert redis_client.llen("attributions") == 1
    # ... and polling again within the period does not flood the queue.
    for _ in range(3):
        client.get(job_url, headers=headers)
    assert redis_client.llen("attributions") == 1
    app.extensions["xaudit_db"]["engine"].dispose()
