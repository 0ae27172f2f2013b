"""Fanned-out audits: plan, chunks, merge.

With ``AUDIT_FANOUT`` (and Redis for results) an audit is a chain: ``xaudit.audit`` claims
the row and runs :func:`explain.audit.prepare`, storing the plan as a content-addressed
blob; a chord of ``xaudit.audit_chunk`` tasks (one per method and chunk of examples, on
the ``attributions`` queue) each store their arrays as a content-addressed blob; its
callback ``xaudit.audit_assess`` assesses, renders and finishes the row with the same
conditional update as the single-task path. Messages carry ids and blob keys. Every task
checks that the row is still running under the attempt that sent it, so the work of an
attempt the stale sweeper has replaced stops at its next task and never writes a report.

Known gap (why the fan-out is off by default): a chunk waiting in the queue behind other
work writes no heartbeat, so a busy worker pool can make a live fanned-out audit look
abandoned after ``AUDIT_STALE_AFTER``; the sweeper then starts it again (a wasted
attempt, and after ``AUDIT_MAX_ATTEMPTS`` a worker_lost failure). Chunks need a liveness
of their own (leases of started chunks) before the fan-out can be the default.

The chord is built from the tasks registered under their names (``xaudit.audit_chunk``,
``xaudit.audit_assess``, ``xaudit.audit_chunk_failed``; :mod:`worker.tasks`), so this
module does not import the task module that calls it.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from flask import current_app

from api import db, lifecycle
from api.lifecycle import AuditStatus
from explain.audit.plan import npz_bytes
from worker import storage
from worker.audit_state import (
    AuditSuperseded,
    Progress,
    audit_heartbeat,
    fail_with,
    finish_failed,
    finish_succeeded,
    guarded,
    holds,
)
from worker.transient import TRANSIENT

log = logging.getLogger("xaudit.worker")

CHUNK_TASK = "xaudit.audit_chunk"
ASSESS_TASK = "xaudit.audit_assess"
CHUNK_FAILED_TASK = "xaudit.audit_chunk_failed"


def fanout_enabled() -> bool:
    """Whether audits fan out: asked for, and a result backend with native chords."""
    cfg = current_app.config
    backend = str(cfg.get("CELERY_RESULT_BACKEND") or "")
    # The database result backend would finish a chord by polling (celery.chord_unlock
    # re-queued every second) and the embedded mode runs one worker anyway: there the
    # single-task path does the same work with fewer moving parts.
    return bool(cfg.get("AUDIT_FANOUT")) and backend.startswith(("redis://", "rediss://"))


def start_fanout(audit_id: str, audit: db.Audit, model_row: db.ModelRow,
                 dataset_row: db.DatasetRow, progress: Progress) -> dict[str, Any]:
    """Prepare the audit and send its chord of attribution chunks."""
    from celery import chord

    from explain.audit import prepare, stage_span

    attempt = int(audit.attempts or 1)

    def work():
        progress("loading", 0.0)
        data = storage.load_dataset(dataset_row, audit.config)
        plan = prepare(str(storage.blobs().path(model_row.blob_key)), data,
                       dict(audit.config or {}), progress=progress,
                       model_name=model_row.name, dataset_name=dataset_row.name,
                       model=storage.load_model_row(model_row))
        return plan, storage.blobs().put_bytes(plan.to_bytes(), ".npz")

    got = guarded(audit_id, "prepare", work)
    if got is None:
        return {"status": AuditStatus.FAILED.value}
    plan, plan_key = got
    chunks = plan.chunks()
    try:
        progress("attributions", stage_span("attributions")[0])
    except AuditSuperseded:
        return {"status": "superseded"}
    # The chunks' timings are added by the callback; "total" there is the assessment's.
    timings = {k: v for k, v in progress.finish().items() if k != "total"}
    tasks = current_app.extensions["celery"].tasks
    header = [tasks[CHUNK_TASK].si(audit_id, attempt, plan_key, m, start, stop, len(chunks))
              for m, start, stop in chunks]
    body = tasks[ASSESS_TASK].s(audit_id, attempt, plan_key, timings).on_error(
        tasks[CHUNK_FAILED_TASK].si(audit_id, attempt))
    chord(header)(body)
    return {"status": "fanned_out", "chunks": len(chunks)}


def _advance(audit_id: str, attempt: int, share: float) -> None:
    """One more chunk done: move progress by its share of the attribution stage."""
    from explain.audit import stage_span

    lifecycle.advance(audit_id, attempt, share, stage_span("attributions")[1])


def run_chunk(audit_id: str, attempt: int, plan_key: str, method: str, start: int,
              stop: int, total: int, where: dict[str, Any]) -> dict[str, Any]:
    """Attribute examples ``start:stop`` of a prepared audit with ``method``.

    Stores the arrays as a blob named by their content (a redelivered chunk stores the
    same blob) and returns its key with ``where`` it ran. A failure fails the audit with
    the chunk named, and is raised so the chord does not assess; a transient error is
    raised for the task to retry.
    """
    from explain.audit import AuditPlan, attribute_chunk, stage_span

    if not holds(audit_id, attempt):
        return {**where, "skipped": True}
    t0 = time.monotonic()
    try:
        _advance(audit_id, attempt, 0.0)  # alive from the start, not one beat period later
        with audit_heartbeat(audit_id, attempt):
            plan = AuditPlan.from_bytes(storage.blobs().read_bytes(plan_key))
            audit = db.session().get(db.Audit, audit_id)
            loaded = storage.load_model_row(db.session().get(db.ModelRow, audit.model_id))
            arrays = attribute_chunk(plan, method, int(start), int(stop), model=loaded)
            key = storage.blobs().put_bytes(npz_bytes(arrays), ".npz")
    except TRANSIENT:
        raise
    except SoftTimeLimitExceeded:
        finish_failed(audit_id, "time_limit", f"attribution chunk {method} rows "
                      f"{start}-{stop} exceeded the audit's time limit")
        raise
    except Exception as exc:
        # Not the user's doing: the detail (paths, internals) stays in the worker log.
        fail_with(audit_id, exc,
                  prefix=f"attribution chunk {method} rows {start}-{stop} failed: ",
                  default_code="attribution_failed", internal_code="attribution_failed")
        raise
    lo, hi = stage_span("attributions")
    _advance(audit_id, attempt, (hi - lo) / max(1, int(total)))
    return {**where, "key": key, "seconds": round(time.monotonic() - t0, 3)}


def chunk_where(method: str, start: int, stop: int, hostname: str | None) -> dict[str, Any]:
    """Which chunk ran where (the report's timings list them)."""
    return {"method": method, "start": int(start), "stop": int(stop),
            "worker": hostname, "pid": os.getpid()}


def chunk_failed(audit_id: str, attempt: int) -> None:
    """The chord's error callback: a chunk (or the chord) failed without saying why."""
    # A chunk that failed in its own code has already failed the row with its reason;
    # this covers the rest (a chunk killed at its hard time limit, a lost result).
    finish_failed(audit_id, "attribution_failed",
                  f"an attribution chunk of attempt {attempt} failed; see the worker log")


def assess_chunks(results: list[dict[str, Any]], audit_id: str, attempt: int,
                  plan_key: str, prepare_timings: dict[str, float]) -> dict[str, Any]:
    """Merge the chunks' arrays, assess, render, store and finish the audit."""
    from explain.audit import AuditPlan, assess, npz_load

    if not holds(audit_id, attempt):
        return {"status": "superseded"}
    if any(r.get("skipped") for r in results):
        # Chunks of this attempt never skip while it holds the row; a skip means the row
        # changed hands meanwhile.
        return {"status": "superseded"}
    session = db.session()
    audit = session.get(db.Audit, audit_id)
    model_row = session.get(db.ModelRow, audit.model_id)
    progress = Progress(audit_id)
    chunk_log = [{k: r[k] for k in ("method", "start", "stop", "worker", "pid", "seconds")}
                 for r in results]

    def work():
        store = storage.blobs()
        plan = AuditPlan.from_bytes(store.read_bytes(plan_key))
        chunks = {(r["method"], int(r["start"]), int(r["stop"])):
                  npz_load(store.read_bytes(r["key"])) for r in results}
        previous = storage.load_previous(audit)
        result = assess(plan, chunks, previous=previous, progress=progress,
                        model=storage.load_model_row(model_row),
                        timings={"attributions": round(sum(r["seconds"] for r in results),
                                                       3)})
        if previous is not None:
            storage.name_previous(result, audit.previous_audit_id)
        progress("storing", 0.99)
        return storage.store_result(result)

    with audit_heartbeat(audit_id, attempt):
        keys = guarded(audit_id, "assess", work)
    if keys is None:
        return {"status": AuditStatus.FAILED.value}
    timings = {**prepare_timings, **progress.finish(), "attribution_chunks": chunk_log}
    return finish_succeeded(audit_id, attempt, timings, keys)
