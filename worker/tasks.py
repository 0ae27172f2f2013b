"""Celery tasks. Messages carry row ids; inputs and results live in the database and the
blob store, and every task can run twice (redelivery) without a second effect.

Adding a task: decorate it with ``@shared_task(name="xaudit.<name>")``, add its queue to
:data:`worker.app.ROUTES`, and use :func:`api.db.session` inside (tasks run in the Flask
app context).

Fan-out note: an audit runs as one task on the ``attributions`` queue, because
:func:`explain.audit.run_audit` is one call; splitting its attribution stage into chunks
across workers (a Celery group/chord) is a later step and would keep this task as the
coordinator that owns the audit row.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import zipfile
from datetime import timedelta
from typing import Any

import numpy as np
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from flask import current_app
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy import func, or_, update
from sqlalchemy.exc import InterfaceError
from sqlalchemy.exc import OperationalError as DBOperationalError

from api import db
from explain.errors import XauditError
from worker import webhooks  # noqa: F401 - registers xaudit.webhook with the app
from worker.cache import ModelCache

log = logging.getLogger("xaudit.worker")

#: Errors worth retrying: the database or the broker blinked. Everything else is either
#: the user's input (recorded as a failed audit with its code) or a bug (recorded too).
TRANSIENT = (DBOperationalError, InterfaceError, KombuOperationalError, ConnectionError)
USER_ERRORS = (XauditError, ValueError, TypeError)
MAX_TRANSIENT_RETRIES = 5
PROGRESS_EVERY = 0.5  # seconds between progress writes, stage changes excepted

_model_cache: ModelCache | None = None


def model_cache() -> ModelCache:
    global _model_cache
    if _model_cache is None:
        _model_cache = ModelCache(int(current_app.config["MODEL_CACHE_SIZE"]))
    return _model_cache


def blobs():
    return current_app.extensions["xaudit_blobs"]


def load_model_row(row: db.ModelRow):
    """(model, spec) for a stored model, from this process's LRU cache."""
    from explain.modelio import IntakePolicy, load_model_safely

    path = blobs().path(row.blob_key)
    return model_cache().get(row.sha256,
                             lambda: load_model_safely(path, policy=IntakePolicy.from_env()))


def backoff(retries: int) -> float:
    return float(min(60, 2 ** retries))


def _finite_list(values: Any) -> Any:
    """A nested list with NaN/Inf as None (JSON columns and clients reject them)."""
    arr = np.asarray(values, dtype=np.float64)
    out = arr.astype(object)
    out[~np.isfinite(arr)] = None
    return out.tolist()


# --------------------------------------------------------------------------- /explain


@shared_task(name="xaudit.explain", bind=True, max_retries=3)
def explain_job(self, job_id: str) -> dict[str, Any]:
    """Compute the attributions of one explain job and store them on its row."""
    try:
        return _explain_job(job_id)
    except TRANSIENT as exc:
        if self.request.retries >= self.max_retries:
            raise
        raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc


def _explain_job(job_id: str) -> dict[str, Any]:
    from explain.attributions import ModelFunction, explain

    session = db.session()
    job = session.get(db.ExplainJob, job_id)
    if job is None:
        log.warning("explain job %s does not exist", job_id)
        return {"status": "missing"}
    if job.status in ("succeeded", "failed"):
        return {"status": job.status}
    model_row = session.get(db.ModelRow, job.model_id)
    req = job.request or {}
    options = dict(req.get("options") or {})
    try:
        model, _spec = load_model_row(model_row)
        x = np.asarray(req["instances"], dtype=np.float32)
        target = req.get("target")
        if isinstance(target, list):
            target = np.asarray(target, dtype=np.int64)
        att = explain(model, x, req.get("method", "integrated_gradients"), target, **options)
        prediction = ModelFunction(model, output=options.get("output")).predict(x)
        result = {
            "method": att.method,
            "shape": list(att.values.shape),
            "attributions": _finite_list(att.values),
            "prediction": _finite_list(prediction),
            "targets": [int(t) for t in att.targets],
            "scores": None if att.scores is None else _finite_list(att.scores),
            "completeness_gap": (None if att.completeness_gap is None
                                 else _finite_list(att.completeness_gap)),
        }
        job.status, job.result = "succeeded", result
    except SoftTimeLimitExceeded:
        job.status, job.error_code = "failed", "time_limit"
        job.error = "the computation exceeded the time limit; ask for fewer rows or steps"
    except USER_ERRORS as exc:
        job.status = "failed"
        job.error_code = getattr(exc, "code", None) or "invalid_request"
        job.error = str(exc)[:2000]
    except TRANSIENT:
        raise
    except Exception:
        log.exception("explain job %s failed", job_id)
        job.status, job.error_code = "failed", "internal_error"
        job.error = "internal error while computing attributions"
    job.finished_at = db.utcnow()
    session.commit()
    from api.jobwait import notify_done

    notify_done(current_app.config, job_id)
    return {"status": job.status}


# --------------------------------------------------------------------------- audits


class AuditSuperseded(Exception):
    """The audit row is no longer ours (finished or reclaimed elsewhere): stop quietly."""


@shared_task(name="xaudit.audit", bind=True, max_retries=MAX_TRANSIENT_RETRIES)
def run_audit_task(self, audit_id: str) -> dict[str, Any]:
    """Run one audit: load and validate → evaluate → attribute → assess → render → store.

    Idempotent: an audit that already succeeded or failed is left alone; a re-run writes
    the same content-addressed blobs and the row is finished by one compare-and-set, so
    there is never a second report.
    """
    try:
        return _run_audit(self, audit_id)
    except TRANSIENT as exc:
        _release(audit_id)
        if self.request.retries >= self.max_retries:
            _finish_failed(audit_id, "transient_error",
                           f"the database or broker kept failing: {type(exc).__name__}")
            return {"status": "failed"}
        raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc


def _claim(audit_id: str) -> str:
    """Mark the audit running if it is queued or abandoned; return what happened."""
    now = db.utcnow()
    stale = now - timedelta(seconds=float(current_app.config["AUDIT_STALE_AFTER"]))
    with db.engine().begin() as conn:
        res = conn.execute(
            update(db.Audit)
            .where(db.Audit.id == audit_id,
                   or_(db.Audit.status == "queued",
                       (db.Audit.status == "running")
                       & (or_(db.Audit.heartbeat_at.is_(None), db.Audit.heartbeat_at < stale))))
            .values(status="running", attempts=db.Audit.attempts + 1, heartbeat_at=now,
                    started_at=func.coalesce(db.Audit.started_at, now),
                    stage="loading", error=None, error_code=None)
        )
        if res.rowcount == 1:
            return "claimed"
    audit = db.session().get(db.Audit, audit_id)
    return "missing" if audit is None else audit.status


def _release(audit_id: str) -> None:
    """Give a running audit back to the queue before a retry (best effort)."""
    try:
        with db.engine().begin() as conn:
            conn.execute(update(db.Audit).where(db.Audit.id == audit_id,
                                                db.Audit.status == "running")
                         .values(status="queued", stage="retrying"))
    except Exception:
        log.warning("could not release audit %s", audit_id, exc_info=True)


def _finish_failed(audit_id: str, code: str, message: str) -> None:
    with db.engine().begin() as conn:
        res = conn.execute(
            update(db.Audit)
            .where(db.Audit.id == audit_id, db.Audit.status.in_(("running", "queued")))
            .values(status="failed", error_code=code, error=message[:4000],
                    finished_at=db.utcnow()))
    if res.rowcount == 1:
        # Only the run that changed the row notifies, so one failure sends one webhook.
        webhooks.notify(audit_id)


class _Progress:
    """run_audit's progress callback: writes stage, progress and heartbeat to the row."""

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
        with db.engine().begin() as conn:
            res = conn.execute(
                update(db.Audit).where(db.Audit.id == self.audit_id,
                                       db.Audit.status == "running")
                .values(stage=self.stage, progress=fraction, heartbeat_at=db.utcnow(),
                        timings=dict(self.timings)))
        if res.rowcount == 0:
            raise AuditSuperseded(self.audit_id)

    def finish(self) -> dict[str, float]:
        if self.stage is not None:
            self.timings[self.stage] = round(time.monotonic() - self.stage_t0, 3)
        self.timings["total"] = round(time.monotonic() - self.t0, 3)
        return self.timings


class _Heartbeat:
    """Refreshes a claimed audit's heartbeat from a thread while it runs.

    Progress reports come only between steps, and one step (SHAP on large images, say)
    can outlast ``AUDIT_STALE_AFTER``; without this a live worker would look dead and
    its audit be started again. Only the run that holds the claim (same attempt) beats.
    """

    def __init__(self, audit_id: str, attempt: int):
        self.app = current_app._get_current_object()
        self.audit_id, self.attempt = audit_id, attempt
        stale = float(self.app.config["AUDIT_STALE_AFTER"])
        self.every = min(60.0, max(0.5, stale / 4))
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"heartbeat-{audit_id}")

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                with self.app.app_context(), db.engine().begin() as conn:
                    conn.execute(update(db.Audit).where(
                        db.Audit.id == self.audit_id, db.Audit.status == "running",
                        db.Audit.attempts == self.attempt).values(heartbeat_at=db.utcnow()))
            except Exception:
                log.warning("audit %s: heartbeat write failed", self.audit_id, exc_info=True)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Arrays as .npz bytes that depend only on the arrays (fixed zip timestamps), so a
    re-run stores the same blob."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.save(member, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def load_previous(audit: db.Audit):
    """The previous audit's result (for drift), rebuilt from its stored blobs.

    None when there is no usable previous audit (none named, another tenant's, not
    succeeded, or its blobs are gone): the audit then runs without drift rather than
    failing, since drift is an addition to the report, not its purpose.
    """
    from explain.result import AuditResult

    if not audit.previous_audit_id:
        return None
    prev = db.session().get(db.Audit, audit.previous_audit_id)
    if prev is None or prev.tenant_id != audit.tenant_id or prev.status != "succeeded":
        return None
    try:
        report = json.loads(blobs().read_bytes(prev.report_json_key))
        arrays: dict[str, np.ndarray] = {}
        if prev.arrays_key:
            with np.load(blobs().path(prev.arrays_key), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as exc:
        log.warning("audit %s: previous audit %s is unreadable (%s); no drift this time",
                    audit.id, prev.id, exc)
        return None
    return AuditResult(report=report, arrays=arrays)


def _name_previous(result, previous_audit_id: str | None) -> None:
    """Put the previous audit's id in the drift section, so a reader can open it.

    The pipeline names the previous audit by its title and content digest (it knows no
    database ids); the service adds the id it can be fetched by.
    """
    drift = result.report.get("drift") if previous_audit_id else None
    if isinstance(drift, dict):
        drift["previous_audit"] = f"audit {previous_audit_id}: {drift.get('previous_audit')}"


def _run_audit(task, audit_id: str) -> dict[str, Any]:
    claimed = _claim(audit_id)
    if claimed != "claimed":
        if claimed == "running":
            # Another worker holds it and is alive; look again once it could be stale.
            raise task.retry(countdown=float(current_app.config["AUDIT_STALE_AFTER"]),
                             max_retries=None)
        log.info("audit %s is %s; nothing to do", audit_id, claimed)
        return {"status": claimed, "skipped": True}

    session = db.session()
    audit = session.get(db.Audit, audit_id)
    model_row = session.get(db.ModelRow, audit.model_id)
    dataset_row = session.get(db.DatasetRow, audit.dataset_id)
    progress = _Progress(audit_id)
    with _Heartbeat(audit_id, int(audit.attempts or 1)):
        return _run_claimed(audit_id, audit, model_row, dataset_row, progress)


def _run_claimed(audit_id: str, audit: db.Audit, model_row: db.ModelRow,
                 dataset_row: db.DatasetRow, progress: _Progress) -> dict[str, Any]:
    try:
        # Imported here so a missing or broken pipeline fails this audit cleanly instead
        # of leaving its row running.
        from explain.audit import run_audit  # noqa: I001
        from explain.datasets import load_data_file
        from reports import render_html, render_json

        progress("loading", 0.0)
        data = load_data_file(blobs().path(dataset_row.blob_key), label=dataset_row.label)
        previous = load_previous(audit)
        result = run_audit(
            str(blobs().path(model_row.blob_key)), data, dict(audit.config or {}),
            progress=progress, previous=previous,
            model_name=model_row.name, dataset_name=dataset_row.name,
        )
        if previous is not None:
            _name_previous(result, audit.previous_audit_id)
        progress("storing", 0.99)
        store = blobs()
        html_key = store.put_bytes(render_html(result).encode("utf-8"), ".html")
        json_key = store.put_bytes(render_json(result).encode("utf-8"), ".json")
        arrays_key = store.put_bytes(npz_bytes(result.arrays), ".npz") if result.arrays else None
    except AuditSuperseded:
        log.info("audit %s was taken over elsewhere; stopping", audit_id)
        return {"status": "superseded"}
    except SoftTimeLimitExceeded:
        _finish_failed(audit_id, "time_limit", "the audit exceeded its time limit")
        return {"status": "failed"}
    except USER_ERRORS as exc:
        _finish_failed(audit_id, getattr(exc, "code", None) or "invalid_input", str(exc))
        return {"status": "failed"}
    except TRANSIENT:
        raise
    except Exception as exc:
        log.exception("audit %s failed", audit_id)
        _finish_failed(audit_id, "internal_error",
                       f"internal error ({type(exc).__name__}); see the worker log")
        return {"status": "failed"}

    timings = progress.finish()
    with db.engine().begin() as conn:
        res = conn.execute(
            update(db.Audit).where(db.Audit.id == audit_id, db.Audit.status == "running")
            .values(status="succeeded", progress=1.0, stage="done", timings=timings,
                    report_html_key=html_key, report_json_key=json_key,
                    arrays_key=arrays_key, finished_at=db.utcnow(),
                    heartbeat_at=db.utcnow()))
    if res.rowcount == 0:
        log.info("audit %s was finished by another run; keeping its report", audit_id)
        return {"status": "superseded"}
    webhooks.notify(audit_id)
    return {"status": "succeeded"}


# --------------------------------------------------------------------------- housekeeping


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
