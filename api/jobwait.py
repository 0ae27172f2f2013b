"""Waking a ``POST /explain`` request when the worker has finished its job.

Celery's Redis result backend waits on one pub/sub connection per process; the request
threads of a threaded server share it, and it is not safe to share (results are lost
and requests sit until their timeout). So explain tasks are sent without a Celery
result: the worker pushes onto a short-lived Redis list named after the job once the
job row is committed, and the waiting request pops it with ``BLPOP`` on its own pooled
connection. A push that comes before the pop stays in the list, so nothing is missed.
Without Redis (the embedded broker) the request polls the job row instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("xaudit.api")

KEY = "xaudit:explain-done:{}"
#: Seconds a wake-up waits for its request (which may have answered 202 already).
TTL = 120

_clients: dict[str, Any] = {}
_lock = threading.Lock()


def redis_url(config: Mapping[str, Any]) -> str | None:
    url = str(config.get("CELERY_BROKER_URL") or "")
    return url if url.startswith(("redis://", "rediss://")) else None


def _client(url: str):
    with _lock:
        client = _clients.get(url)
        if client is None:
            import redis

            client = redis.Redis.from_url(url, socket_connect_timeout=5,
                                          health_check_interval=30)
            _clients[url] = client
        return client


def notify_done(config: Mapping[str, Any], job_id: str) -> None:
    """Wake the request waiting for ``job_id`` (worker side; best effort)."""
    url = redis_url(config)
    if url is None:
        return
    try:
        key = KEY.format(job_id)
        with _client(url).pipeline(transaction=False) as pipe:
            pipe.rpush(key, 1).expire(key, TTL).execute()
    except Exception:
        log.warning("could not signal the end of explain job %s", job_id, exc_info=True)


def wait_done(config: Mapping[str, Any], job_id: str, timeout: float,
              is_done: Callable[[], bool]) -> bool:
    """Wait until ``is_done()`` or ``timeout`` seconds; return whether it is done."""
    if is_done():
        return True
    deadline = time.monotonic() + timeout
    url = redis_url(config)
    if url is not None:
        try:
            _client(url).blpop([KEY.format(job_id)], timeout=max(0.01, timeout))
        except Exception:
            log.warning("waiting on Redis for explain job %s failed; polling the database",
                        job_id, exc_info=True)
    interval = 0.005
    while True:
        if is_done():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(interval, left))
        interval = min(0.1, interval * 1.5)


RESEND_KEY = "xaudit:explain-resent:{}"


def claim_resend(config: Mapping[str, Any], job_id: str, every: float) -> bool:
    """True at most once per ``every`` seconds per job, across all API processes.

    A Redis broker keeps nothing on disk here, so a restart loses queued explain messages;
    the job row then stays queued. Polling the job re-sends its task, throttled through a
    Redis key so many polling clients do not flood the queue (a duplicate message is
    harmless: the worker skips finished jobs). Without Redis the broker is durable and
    nothing is re-sent.
    """
    url = redis_url(config)
    if url is None:
        return False
    try:
        return bool(_client(url).set(RESEND_KEY.format(job_id), 1, nx=True,
                                     ex=max(int(every), 1)))
    except Exception:
        log.warning("could not throttle the re-send of explain job %s", job_id, exc_info=True)
        return False
