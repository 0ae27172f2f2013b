"""Celery tasks: the entry points only. Messages carry row ids; inputs and results live
in the database and the blob store, and every task can run twice (redelivery) without a
second effect. What a task does lives in HTTP-free modules:

- :mod:`worker.audit_runner` runs a claimed audit (one task, or fanned out);
- :mod:`worker.fanout` prepares, attributes in chunks and merges a fanned-out audit;
- :mod:`worker.explain_runner` computes an /explain job;
- :mod:`worker.audit_state` is the worker's side of :mod:`api.lifecycle` (claim, progress,
  heartbeat, fail, succeed) and :mod:`worker.storage` the blobs, models and datasets.

A task here decides only what Celery must know: whether to retry (transient errors of
the database or broker, :mod:`worker.transient`) and what to answer.

Adding a task: decorate it with ``@shared_task(name="xaudit.<name>")``, add its queue to
:data:`api.queue.ROUTES`, and use :func:`api.db.session` inside (tasks run in the Flask
app context). The API sends tasks by these names; they never change.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from flask import current_app

from api.lifecycle import AuditStatus
from explain.audit.plan import npz_bytes  # noqa: F401 - re-exported (stored arrays' bytes)
from worker import (
    audit_runner,
    audit_state,
    explain_runner,
    fanout,
    webhooks,  # noqa: F401 - registers xaudit.webhook with the app
)
from worker.audit_runner import sized_audit_config  # noqa: F401 - re-exported
from worker.explain_runner import background_from  # noqa: F401 - re-exported
from worker.transient import MAX_TRANSIENT_RETRIES, TRANSIENT, backoff

log = logging.getLogger("xaudit.worker")


@shared_task(name="xaudit.explain", bind=True, max_retries=3)
def explain_job(self, job_id: str) -> dict[str, Any]:
    """Compute the attributions of one explain job and store them on its row."""
    try:
        return explain_runner.run_explain_job(job_id)
    except TRANSIENT as exc:
        if self.request.retries >= self.max_retries:
            raise
        raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc


@shared_task(name="xaudit.audit", bind=True, max_retries=MAX_TRANSIENT_RETRIES)
def run_audit_task(self, audit_id: str) -> dict[str, Any]:
    """Run one audit: load and validate → evaluate → attribute → assess → render → store.

    Idempotent: an audit that already succeeded or failed is left alone; a re-run writes
    the same content-addressed blobs and the row is finished by one compare-and-set, so
    there is never a second report.
    """
    try:
        claimed = audit_state.claim(audit_id)
        if claimed == AuditStatus.RUNNING:
            # Another worker holds it and is alive; look again once it could be stale.
            raise self.retry(countdown=audit_state.heartbeat_stale_after(current_app.config),
                             max_retries=None)
        if claimed != "claimed":
            log.info("audit %s is %s; nothing to do", audit_id, claimed)
            return {"status": claimed, "skipped": True}
        return audit_runner.run_claimed(audit_id)
    except TRANSIENT as exc:
        audit_state.release(audit_id)
        if self.request.retries >= self.max_retries:
            audit_state.fail_transient(audit_id, exc)
            return {"status": AuditStatus.FAILED.value}
        raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc


@shared_task(name="xaudit.audit_chunk", bind=True, max_retries=MAX_TRANSIENT_RETRIES)
def audit_chunk(self, audit_id: str, attempt: int, plan_key: str, method: str, start: int,
                stop: int, total: int) -> dict[str, Any]:
    """Attribute examples ``start:stop`` of a prepared audit with ``method``
    (:func:`worker.fanout.run_chunk`). A failure fails the audit with the chunk named,
    and is raised so the chord does not assess."""
    where = fanout.chunk_where(method, start, stop, self.request.hostname)
    try:
        return fanout.run_chunk(audit_id, attempt, plan_key, method, start, stop, total,
                                where)
    except TRANSIENT as exc:
        if self.request.retries >= self.max_retries:
            audit_state.fail_transient(audit_id, exc)
            raise
        raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc


@shared_task(name="xaudit.audit_chunk_failed")
def audit_chunk_failed(audit_id: str, attempt: int) -> None:
    """The chord's error callback: a chunk (or the chord) failed without saying why."""
    fanout.chunk_failed(audit_id, attempt)


@shared_task(name="xaudit.audit_assess", bind=True, max_retries=MAX_TRANSIENT_RETRIES)
def audit_assess(self, results: list[dict[str, Any]], audit_id: str, attempt: int,
                 plan_key: str, prepare_timings: dict[str, float]) -> dict[str, Any]:
    """The chord's callback: assess the chunks, render, store and finish the audit."""
    try:
        return fanout.assess_chunks(results, audit_id, attempt, plan_key, prepare_timings)
    except TRANSIENT as exc:
        if self.request.retries >= self.max_retries:
            audit_state.fail_transient(audit_id, exc)
            return {"status": AuditStatus.FAILED.value}
        raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc


@shared_task(name="xaudit.dispatch_schedules")
def dispatch_schedules() -> list[str]:
    """Start the audits of every due schedule (see :func:`worker.beat.dispatch_due`)."""
    from worker.beat import dispatch_due

    return dispatch_due(current_app._get_current_object())


@shared_task(name="xaudit.reap_stale_audits")
def reap_stale_audits() -> list[str]:
    """Requeue or fail audits whose worker vanished (see :func:`worker.beat.reap_stale`)."""
    from worker.beat import reap_stale

    return reap_stale(current_app._get_current_object())
