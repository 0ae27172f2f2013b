"""The worker's side of an audit's lifecycle, shared by the single-task run
(:mod:`worker.audit_runner`) and the fanned-out one (:mod:`worker.fanout`).

:mod:`api.lifecycle` owns the statuses and the compare-and-set transitions; here they are
combined with what only a worker does: claim and give back, the progress callback, the
heartbeat thread, failing with the error classifier, and the webhook sent by whichever
run actually finished the row.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from flask import current_app

from api import db, lifecycle
from api.lifecycle import AuditStatus
from worker import webhooks
from worker.transient import TRANSIENT

log = logging.getLogger("xaudit.worker")

PROGRESS_EVERY = 0.5  # seconds between progress writes, stage changes excepted


class AuditSuperseded(Exception):
    """The audit row is no longer ours (finished or reclaimed elsewhere): stop quietly."""


def heartbeat_stale_after(cfg) -> float:
    """Seconds without a heartbeat after which a running audit's worker counts as gone:
    ``AUDIT_HEARTBEAT_STALE`` (a minute; the heartbeat is a thread beating every quarter
    of it). Fanned-out audits keep ``AUDIT_STALE_AFTER``: their row does not beat while
    its chunks wait in the queue."""
    if bool(cfg.get("AUDIT_FANOUT")):
        return float(cfg["AUDIT_STALE_AFTER"])
    return float(cfg.get("AUDIT_HEARTBEAT_STALE") or cfg["AUDIT_STALE_AFTER"])


def claim(audit_id: str) -> str:
    """Mark the audit running if it is queued or abandoned; return what happened:
    ``"claimed"``, ``"missing"`` or the status it has."""
    if lifecycle.claim(audit_id, heartbeat_stale_after(current_app.config)):
        return "claimed"
    status = lifecycle.status_of(audit_id)
    return "missing" if status is None else status.value


def release(audit_id: str) -> None:
    """Give a running audit back to the queue before a retry (best effort)."""
    try:
        lifecycle.release(audit_id)
    except Exception:
        log.warning("could not release audit %s", audit_id, exc_info=True)


def finish_failed(audit_id: str, code: str, message: str) -> None:
    """Fail the audit with ``code``; the run that changed the row sends the webhook."""
    if lifecycle.fail(audit_id, code, message):
        # Only the run that changed the row notifies, so one failure sends one webhook.
        webhooks.notify(audit_id)


def fail_with(audit_id: str, exc: BaseException, step: str = "", prefix: str = "",
              default_code: str = "invalid_input",
              internal_code: str = lifecycle.INTERNAL) -> None:
    """Fail the audit for ``exc``: the user's error with its message, anything else as
    ``internal_code`` (logged with its traceback; see :func:`api.lifecycle.classify`)."""
    code, message = lifecycle.classify(exc, default_code=default_code, step=step,
                                       context=f"audit {audit_id}",
                                       internal_code=internal_code)
    finish_failed(audit_id, code, prefix + message)


def finish_succeeded(audit_id: str, attempt: int | None, timings: dict[str, Any],
                     keys: tuple[str, str, str | None]) -> dict[str, Any]:
    """The one end of a successful audit, for the single-task and the fan-out path."""
    html_key, json_key, arrays_key = keys
    if not lifecycle.succeed(audit_id, attempt=attempt, timings=timings, html_key=html_key,
                             json_key=json_key, arrays_key=arrays_key):
        log.info("audit %s was finished by another run; keeping its report", audit_id)
        return {"status": "superseded"}
    webhooks.notify(audit_id)
    return {"status": AuditStatus.SUCCEEDED.value}


def holds(audit_id: str, attempt: int) -> bool:
    """Whether the audit is still running under ``attempt`` (else a task of it stops)."""
    session = db.session()
    session.expire_all()  # another process may have changed the row since we last read it
    audit = session.get(db.Audit, audit_id)
    return (audit is not None and audit.status == AuditStatus.RUNNING
            and int(audit.attempts) == attempt)


def guarded(audit_id: str, step: str, work):
    """Run ``work()``; on failure finish the audit failed with a reason and return None.
    Transient errors are raised for the task to retry."""
    try:
        return work()
    except AuditSuperseded:
        log.info("audit %s was taken over elsewhere; stopping", audit_id)
    except SoftTimeLimitExceeded:
        finish_failed(audit_id, "time_limit", f"the audit exceeded its time limit ({step})")
    except TRANSIENT:
        raise
    except Exception as exc:
        fail_with(audit_id, exc, step)
    return None


class Progress:
    """The pipeline's progress callback: writes stage, progress and heartbeat to the row,
    and raises :class:`AuditSuperseded` once the row is no longer this run's."""

    def __init__(self, audit_id: str):
        self.audit_id = audit_id
        self.stage: str | None = None
        self.stage_t0 = time.monotonic()
        self.t0 = time.monotonic()
        self.last_write = 0.0
        self.timings: dict[str, float] = {}

    def __call__(self, stage: str, fraction: float) -> None:
        now = time.monotonic()
        changed = stage != self.stage
        if changed and self.stage is not None:
            self.timings[self.stage] = round(now - self.stage_t0, 3)
        if changed:
            self.stage, self.stage_t0 = str(stage)[:64], now
        if not changed and now - self.last_write < PROGRESS_EVERY:
            return
        self.last_write = now
        fraction = float(min(1.0, max(0.0, fraction)))
        if not lifecycle.progress(self.audit_id, self.stage, fraction, self.timings):
            raise AuditSuperseded(self.audit_id)

    def finish(self) -> dict[str, float]:
        """Seconds per stage, and ``total``."""
        if self.stage is not None:
            self.timings[self.stage] = round(time.monotonic() - self.stage_t0, 3)
        self.timings["total"] = round(time.monotonic() - self.t0, 3)
        return self.timings


def audit_heartbeat(audit_id: str, attempt: int):
    """Refreshes a claimed audit's heartbeat from a thread while it runs.

    Progress reports come only between steps, and one step (SHAP on large images, say)
    can outlast ``AUDIT_STALE_AFTER``; without this a live worker would look dead and
    its audit be started again. Only the run that holds the claim (same attempt) beats.
    """
    from api.explain_jobs import Heartbeat

    stale = heartbeat_stale_after(current_app.config)
    return Heartbeat(lambda: lifecycle.heartbeat(audit_id, attempt),
                     min(60.0, max(0.5, stale / 4)), f"audit {audit_id}")


def fail_transient(audit_id: str, exc: BaseException) -> None:
    """Fail the audit after its task ran out of retries on a transient error."""
    finish_failed(audit_id, "transient_error",
                  f"the database or broker kept failing: {type(exc).__name__}")
