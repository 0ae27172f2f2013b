"""What the blueprints (and the beat) share: storing uploads, creating and enqueueing
audits, and turning rows into JSON."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from flask import current_app, url_for
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import db, lifecycle
from api.blobs import BlobStore
from api.errors import abort
from api.lifecycle import AuditStatus
from api.queue import send_task

log = logging.getLogger("xaudit.api")

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5", ".zip", ".tar", ".tgz")
DATA_SUFFIXES = (".npz", ".npy", ".csv")
_SAFE_SUFFIX = re.compile(r"^\.[a-z0-9]{1,10}$")


def blobs() -> BlobStore:
    return current_app.extensions["xaudit_blobs"]


def upload_suffix(filename: str | None) -> str:
    """The lowercased extension of an uploaded file name, or "" when it is not a plain
    short extension. The name itself is never used for anything on disk."""
    lowered = (filename or "").lower()
    if lowered.endswith(".tar.gz"):
        return ".tgz"  # the same format under a one-part extension the blob keys allow
    suffix = Path(lowered).suffix
    return suffix if _SAFE_SUFFIX.match(suffix) else ""


# --------------------------------------------------------------------------- uploads


def receive_upload(file_storage) -> tuple[Path, str, int, str]:
    """Stream an upload into the blob store's tmp folder.

    Returns
    -------
    (tmp_path, sha256, size, suffix)
        The caller adopts ``tmp_path`` into the store or deletes it.
    """
    suffix = upload_suffix(getattr(file_storage, "filename", None))
    store = blobs()
    tmp = store.temp_file(suffix)
    try:
        sha, size = store.write_stream(file_storage.stream, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # An empty file goes to the intake like any other: it names the refusal.
    return tmp, sha, size, suffix


def next_version(session: Session, model: type[db.Base], tenant_id: str, name: str) -> int:
    current = session.scalar(
        select(func.max(model.version)).where(model.tenant_id == tenant_id, model.name == name)
    )
    return int(current or 0) + 1


def insert_versioned(session: Session, model: type[db.Base], blob_created: bool,
                     blob_key: str, extra_blobs: list[str] | tuple[str, ...] = (),
                     **fields: Any):
    """Insert a new version of a named artifact; the version is max+1 for (tenant, name).

    Two uploads of the same name at once race for the same version: the unique constraint
    rejects the loser, which retries with the next number. When no row can be written, a
    blob this upload created is deleted (``blob_key`` when ``blob_created``, and every key
    of ``extra_blobs``, e.g. a model's background sample), so a refused upload leaves
    nothing behind.
    """
    created = ([blob_key] if blob_created else []) + list(extra_blobs)
    try:
        for _attempt in range(8):
            version = next_version(session, model, fields["tenant_id"], fields["name"])
            row = model(version=version, blob_key=blob_key, **fields)
            session.add(row)
            try:
                session.commit()
                return row
            except IntegrityError:
                session.rollback()
    except BaseException:
        session.rollback()
        for key in created:
            blobs().delete(key)
        raise
    for key in created:
        blobs().delete(key)
    abort(409, "conflict", "too many concurrent uploads of this name; try again")
    return None  # unreachable: abort raises


def list_artifacts(model: type[db.Base], kind: str, tenant_id: str,
                   query: dict[str, Any]) -> dict[str, Any]:
    """A page of the tenant's models or datasets, newest first, optionally by name."""
    stmt = db.scoped(model, tenant_id)
    if query.get("name"):
        stmt = stmt.where(model.name == query["name"])
    stmt = stmt.order_by(model.created_at.desc(), model.version.desc())
    rows = db.session().scalars(stmt.limit(query["limit"]).offset(query["offset"]))
    return {"items": [artifact_json(r, kind) for r in rows]}


def artifact_json(row: db.ModelRow | db.DatasetRow, kind: str) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "version": row.version,
        "sha256": row.sha256,
        "size": row.size,
        "spec": row.spec,
        "created_at": db.iso(row.created_at),
        "url": url_for(f"{kind}.get_{kind[:-1]}", object_id=row.id),
        **({"background": model_background_json(row)} if kind == "models" else {}),
    }


def model_background_json(row: db.ModelRow) -> dict[str, Any] | None:
    """The background sample stored with a model: its row count and file hash, or None."""
    if not row.background_key:
        return None
    return {"rows": row.background_rows, "sha256": row.background_key[:64]}


# --------------------------------------------------------------------------- audits


def latest(session: Session, model: type[db.Base], tenant_id: str, name: str):
    return session.scalars(
        db.scoped(model, tenant_id).where(model.name == name)
        .order_by(model.version.desc()).limit(1)
    ).first()


def create_audit(session: Session, tenant_id: str, model_row: db.ModelRow,
                 dataset_row: db.DatasetRow, config: dict[str, Any],
                 previous_audit_id: str | None = None,
                 schedule_id: str | None = None) -> db.Audit:
    """Insert a queued audit row (committed); the caller enqueues it."""
    audit = db.Audit(tenant_id=tenant_id, model_id=model_row.id, dataset_id=dataset_row.id,
                     status=AuditStatus.QUEUED.value, progress=0.0, stage="queued",
                     config=config,
                     timings={}, previous_audit_id=previous_audit_id,
                     schedule_id=schedule_id)
    session.add(audit)
    session.commit()
    return audit


def enqueue_audit(celery_app, session: Session, audit: db.Audit) -> bool:
    """Send the audit's task (the message carries only its id).

    The task id is the audit id, so a duplicate send is recognisable. When the broker
    cannot be reached the row is marked failed, so nothing waits for a message that was
    never sent; returns False then.
    """
    try:
        # The audit's state lives in the database, never in Celery's result backend; not
        # asking for a result also keeps the API's request threads off the backend's
        # shared pub/sub connection, which is not thread-safe.
        send_task(celery_app, "xaudit.audit", [audit.id], task_id=f"audit-{audit.id}",
                  ignore_result=True)
        return True
    except Exception as exc:
        log.error("could not enqueue audit %s: %s", audit.id, exc)
        lifecycle.fail(audit.id, "broker_unavailable",
                       "the task queue is unavailable; the audit was not started")
        session.refresh(audit)
        return False


def audit_json(audit: db.Audit) -> dict[str, Any]:
    done = audit.status == AuditStatus.SUCCEEDED
    error = None
    if audit.error:
        error = {"code": audit.error_code or "audit_failed", "message": audit.error}
    return {
        "id": audit.id,
        "status": audit.status,
        "progress": float(audit.progress or 0.0),
        "stage": audit.stage,
        "error": error,
        "model_id": audit.model_id,
        "dataset_id": audit.dataset_id,
        "previous_audit_id": audit.previous_audit_id,
        "schedule_id": audit.schedule_id,
        "config": audit.config or {},
        "timings": audit.timings or {},
        "created_at": db.iso(audit.created_at),
        "started_at": db.iso(audit.started_at),
        "finished_at": db.iso(audit.finished_at),
        "status_url": url_for("audits.get_audit", audit_id=audit.id),
        "report_url": url_for("audits.get_report", audit_id=audit.id) if done else None,
        "report_json_url": (url_for("audits.get_report_json", audit_id=audit.id)
                            if done else None),
    }
