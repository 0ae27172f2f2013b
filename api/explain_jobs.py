"""Explain jobs are claimed before they are computed, beat while they run, and recovered
when their worker is gone; each step one compare-and-set on the job row.

- :func:`claim_explain`: ``queued`` → ``running`` (or a ``running`` job whose heartbeat
  stopped). Only the worker whose UPDATE changed the row computes; a duplicate message
  (a re-send, a redelivery) finds the job running and does nothing, so a job never runs
  twice at once.
- :class:`Heartbeat`: refreshes ``heartbeat_at`` from a thread while the job computes.
- :func:`recover_explain`: called when a job is polled and by the beat. A ``queued`` job
  older than ``resend_after`` is sent again at most once per period (``resent_at``, so
  many polling clients and API processes send it once); a ``running`` job whose heartbeat
  is older than ``stale_after`` goes back to ``queued`` and is sent again, or fails with
  ``worker_lost`` after ``max_attempts``. This works the same with the embedded broker and
  with Redis: the database row, not the broker, says what is still to do.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update

from api import db
from api.queue import send_task

log = logging.getLogger("xaudit.worker")

#: A running explain job whose heartbeat is older than this (seconds) lost its worker.
DEFAULT_STALE_AFTER = 30.0
MAX_ATTEMPTS = 3


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=db.utcnow().tzinfo)


def claim_explain(job_id: str, stale_after: float = DEFAULT_STALE_AFTER) -> tuple[str, int]:
    """(outcome, attempt): ``("claimed", n)`` when this worker now holds the job, else the
    job's status (``running`` held by a live worker, ``succeeded``, ``failed``,
    ``missing``)."""
    now = db.utcnow()
    stale = now - timedelta(seconds=stale_after)
    with db.engine().begin() as conn:
        res = conn.execute(
            update(db.ExplainJob)
            .where(db.ExplainJob.id == job_id,
                   or_(db.ExplainJob.status == "queued",
                       (db.ExplainJob.status == "running")
                       & or_(db.ExplainJob.heartbeat_at.is_(None),
                             db.ExplainJob.heartbeat_at < stale)))
            .values(status="running", heartbeat_at=now, attempts=db.ExplainJob.attempts + 1,
                    started_at=func.coalesce(db.ExplainJob.started_at, now)))
        if res.rowcount == 1:
            attempt = conn.execute(select(db.ExplainJob.attempts)
                                   .where(db.ExplainJob.id == job_id)).scalar_one()
            return "claimed", int(attempt)
        status = conn.execute(select(db.ExplainJob.status)
                              .where(db.ExplainJob.id == job_id)).scalar_one_or_none()
    return (status or "missing"), 0


def finish_explain(job_id: str, attempt: int, **values: Any) -> bool:
    """Finish a claimed job (``status``, ``result``, ``error``...) if this attempt still
    holds it; False when it was taken over or finished elsewhere."""
    with db.engine().begin() as conn:
        res = conn.execute(
            update(db.ExplainJob)
            .where(db.ExplainJob.id == job_id, db.ExplainJob.status == "running",
                   db.ExplainJob.attempts == attempt)
            .values(finished_at=db.utcnow(), **values))
    return res.rowcount == 1


def fail_running(kind: str, row_id: str, code: str, message: str) -> bool:
    """Fail a running audit or explain job (the watchdog, before it ends the process)."""
    table = db.Audit if kind == "audit" else db.ExplainJob
    with db.engine().begin() as conn:
        res = conn.execute(
            update(table).where(table.id == row_id, table.status.in_(("running", "queued")))
            .values(status="failed", error_code=code, error=message[:2000],
                    finished_at=db.utcnow()))
    return res.rowcount == 1


class Heartbeat:
    """Calls ``beat()`` (one compare-and-set that refreshes a claimed row's
    ``heartbeat_at``) every ``every`` seconds from a thread, in the app's context, while
    the work runs; audits and explain jobs both use it."""

    def __init__(self, beat: Callable[[], Any], every: float, name: str):
        from flask import current_app

        self.app = current_app._get_current_object()
        self.beat, self.every, self.name = beat, every, name
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"heartbeat-{name}")

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                with self.app.app_context():
                    self.beat()
            except Exception:
                log.warning("%s: heartbeat write failed", self.name, exc_info=True)


def explain_heartbeat(job_id: str, attempt: int, every: float) -> Heartbeat:
    """A heartbeat for the explain job this attempt holds."""
    t = db.ExplainJob

    def beat() -> None:
        with db.engine().begin() as conn:
            conn.execute(update(t).where(t.id == job_id, t.status == "running",
                                         t.attempts == attempt)
                         .values(heartbeat_at=db.utcnow()))

    return Heartbeat(beat, max(0.2, every), f"explain {job_id}")


def recover_explain(job: db.ExplainJob, *, resend_after: float, stale_after: float,
                    max_attempts: int = MAX_ATTEMPTS,
                    now: datetime | None = None) -> str | None:
    """Decide, with one compare-and-set, whether this caller re-sends ``job``.

    Returns ``"resend"`` (the caller sends its task now), ``"failed"`` (it lost its worker
    ``max_attempts`` times) or None (nothing to do, or another process acted).
    """
    now = _utc(now) or db.utcnow()
    t = db.ExplainJob
    with db.engine().begin() as conn:
        if job.status == "queued":
            last = _utc(job.resent_at) or _utc(job.created_at)
            if last is None or (now - last).total_seconds() < resend_after:
                return None
            same = t.resent_at.is_(None) if job.resent_at is None else t.resent_at == \
                job.resent_at
            res = conn.execute(update(t).where(t.id == job.id, t.status == "queued", same)
                               .values(resent_at=now))
            return "resend" if res.rowcount == 1 else None
        if job.status == "running":
            beat = _utc(job.heartbeat_at) or _utc(job.started_at)
            if beat is None or (now - beat).total_seconds() < stale_after:
                return None
            give_up = int(job.attempts or 0) >= max_attempts
            values = ({"status": "failed", "error_code": "worker_lost", "finished_at": now,
                       "error": f"the worker computing this job stopped {job.attempts} "
                                "times"}
                      if give_up else {"status": "queued", "resent_at": now})
            same = t.heartbeat_at.is_(None) if job.heartbeat_at is None else \
                t.heartbeat_at == job.heartbeat_at
            res = conn.execute(update(t).where(t.id == job.id, t.status == "running", same)
                               .values(**values))
            if res.rowcount != 1:
                return None
            return "failed" if give_up else "resend"
    return None


def resend_period(cfg) -> float:
    """Seconds a queued job waits before it is sent again: ``EXPLAIN_RESEND_AFTER``, by
    default twice the API's wait (``EXPLAIN_TIMEOUT``)."""
    return float(cfg.get("EXPLAIN_RESEND_AFTER") or 2 * float(cfg["EXPLAIN_TIMEOUT"]))


def send_explain(celery_app, job_id: str) -> bool:
    try:
        send_task(celery_app, "xaudit.explain", [job_id], task_id=f"explain-{job_id}",
                  ignore_result=True)
        return True
    except Exception as exc:
        log.warning("could not send explain job %s: %s", job_id, exc)
        return False


def sweep_explain_jobs(app, now: datetime | None = None, limit: int = 100) -> list[str]:
    """The beat's round over unfinished explain jobs: re-send or fail the lost ones."""
    cfg = app.config
    resend_after = resend_period(cfg)
    stale_after = float(cfg.get("EXPLAIN_STALE_AFTER", DEFAULT_STALE_AFTER))
    now = _utc(now) or db.utcnow()
    horizon = now - timedelta(seconds=min(resend_after, stale_after))
    touched = []
    with app.app_context():
        session = db.session()
        rows = session.scalars(
            select(db.ExplainJob).where(
                db.ExplainJob.status.in_(("queued", "running")),
                func.coalesce(db.ExplainJob.heartbeat_at, db.ExplainJob.resent_at,
                              db.ExplainJob.created_at) < horizon)
            .order_by(db.ExplainJob.created_at).limit(limit)).all()
        for job in rows:
            action = recover_explain(job, resend_after=resend_after, stale_after=stale_after,
                                     now=now)
            if action == "resend" and send_explain(app.extensions["celery"], job.id):
                touched.append(job.id)
            elif action == "failed":
                from api.jobwait import notify_done

                notify_done(cfg, job.id)
                touched.append(job.id)
    return touched
