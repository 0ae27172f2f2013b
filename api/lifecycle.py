"""The audit lifecycle: its statuses, every transition between them, and which failures
are the user's fault.

HTTP-free; the API (creating and enqueueing audits), the worker (running them) and the
beat (recovering abandoned ones) all change an audit's status here and nowhere else.
Each transition is one compare-and-set ``UPDATE audits ... WHERE id = :id AND status IN
(...)`` (plus whatever else the transition needs to hold, such as the attempt that claimed
the row) and returns whether it applied: when two runs race, exactly one sees True, and
the other stops without a second effect.

::

    queued ──claim──► running ──succeed──► succeeded
      ▲                 │ │ └──fail──────► failed   (fail also from queued)
      └──release────────┘ └──heartbeat / progress (stay running)
      └──requeue_stale (its worker stopped beating) / give_up_stale ──► failed

Errors: :func:`classify` says what a failure means. Only :class:`explain.errors.XauditError`
(and its subclasses, which input validation raises) is the user's doing and is reported
with its message; anything else is a bug in xaudit, logged with its traceback and reported
as ``internal_error`` without internals.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.orm import Session

from api import db
from explain.errors import XauditError

log = logging.getLogger("xaudit.lifecycle")


class AuditStatus(str, Enum):
    """Where an audit is. Its value is what the database and the API show."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        return self in (AuditStatus.SUCCEEDED, AuditStatus.FAILED)


Q, R, S, F = (AuditStatus.QUEUED.value, AuditStatus.RUNNING.value,
              AuditStatus.SUCCEEDED.value, AuditStatus.FAILED.value)
A = db.Audit


def _apply(stmt, session: Session | None = None) -> bool:
    """Run one compare-and-set; True when it changed the row."""
    if session is not None:
        res = session.execute(stmt.execution_options(synchronize_session=False))
        session.commit()
    else:
        with db.engine().begin() as conn:
            res = conn.execute(stmt)
    return res.rowcount == 1


def _held(audit_id: str, attempt: int | None):
    """WHERE: the audit is running (under ``attempt`` when given)."""
    conds = [A.id == audit_id, A.status == R]
    if attempt is not None:
        conds.append(A.attempts == int(attempt))
    return conds


# --------------------------------------------------------------------------- transitions


def claim(audit_id: str, stale_after: float, now: datetime | None = None) -> bool:
    """queued, or running with a heartbeat older than ``stale_after`` s → running.

    Counts the attempt, starts the heartbeat and clears a previous attempt's error.
    """
    now = now or db.utcnow()
    stale = now - timedelta(seconds=float(stale_after))
    return _apply(
        update(A).where(A.id == audit_id,
                        or_(A.status == Q,
                            (A.status == R)
                            & (or_(A.heartbeat_at.is_(None), A.heartbeat_at < stale))))
        .values(status=R, attempts=A.attempts + 1, heartbeat_at=now,
                started_at=func.coalesce(A.started_at, now),
                stage="loading", error=None, error_code=None))


def heartbeat(audit_id: str, attempt: int) -> bool:
    """The run holding ``attempt`` is alive."""
    return _apply(update(A).where(*_held(audit_id, attempt)).values(heartbeat_at=db.utcnow()))


def progress(audit_id: str, stage: str, fraction: float,
             timings: Mapping[str, Any] | None = None) -> bool:
    """A running audit reached ``fraction`` (0 → 1) of its work, in ``stage``."""
    return _apply(update(A).where(*_held(audit_id, None))
                  .values(stage=stage, progress=float(fraction), heartbeat_at=db.utcnow(),
                          timings=dict(timings or {})))


def advance(audit_id: str, attempt: int, share: float, cap: float) -> bool:
    """Add ``share`` to a running audit's progress, never beyond ``cap`` (a redelivered
    fan-out chunk may count twice; the cap keeps progress inside its stage)."""
    moved = A.progress + float(share)
    return _apply(update(A).where(*_held(audit_id, attempt))
                  .values(progress=case((moved > cap, cap), else_=moved),
                          heartbeat_at=db.utcnow()))


def release(audit_id: str) -> bool:
    """running → queued, before a retry of the same message."""
    return _apply(update(A).where(*_held(audit_id, None)).values(status=Q, stage="retrying"))


def fail(audit_id: str, code: str, message: str) -> bool:
    """queued or running → failed, with a code and a message for the user."""
    return _apply(update(A).where(A.id == audit_id, A.status.in_((Q, R)))
                  .values(status=F, error_code=code, error=str(message)[:4000],
                          finished_at=db.utcnow()))


def succeed(audit_id: str, *, attempt: int | None, timings: Mapping[str, Any],
            html_key: str, json_key: str, arrays_key: str | None) -> bool:
    """running (under ``attempt`` when given) → succeeded, with its report's blobs."""
    now = db.utcnow()
    return _apply(update(A).where(*_held(audit_id, attempt))
                  .values(status=S, progress=1.0, stage="done", timings=dict(timings),
                          report_html_key=html_key, report_json_key=json_key,
                          arrays_key=arrays_key, finished_at=now, heartbeat_at=now))


def requeue_stale(session: Session, audit_id: str, seen_heartbeat: datetime | None,
                  now: datetime) -> bool:
    """running with the heartbeat the caller saw (its worker stopped) → queued.

    ``heartbeat_at`` of the queued audit becomes when it was last sent (``now``).
    """
    return _apply(update(A).where(A.id == audit_id, A.status == R,
                                  A.heartbeat_at == seen_heartbeat)
                  .values(status=Q, stage="requeued", heartbeat_at=now), session)


def give_up_stale(session: Session, audit_id: str, seen_heartbeat: datetime | None,
                  attempts: int, now: datetime) -> bool:
    """running with the heartbeat the caller saw, after too many attempts → failed."""
    return _apply(update(A).where(A.id == audit_id, A.status == R,
                                  A.heartbeat_at == seen_heartbeat)
                  .values(status=F, error_code="worker_lost", finished_at=now,
                          error=f"the worker running this audit stopped {attempts} times"),
                  session)


def mark_resent(session: Session, audit_id: str, seen_heartbeat: datetime | None,
                now: datetime) -> bool:
    """A queued audit's message is being sent again: one sender wins (stays queued)."""
    same = (A.heartbeat_at.is_(None) if seen_heartbeat is None
            else A.heartbeat_at == seen_heartbeat)
    return _apply(update(A).where(A.id == audit_id, A.status == Q, same)
                  .values(heartbeat_at=now), session)


def status_of(audit_id: str) -> AuditStatus | None:
    """The audit's status as stored now (None: no such audit)."""
    with db.engine().connect() as conn:
        value = conn.execute(select(A.status).where(A.id == audit_id)).scalar()
    return None if value is None else AuditStatus(value)


# --------------------------------------------------------------------------- errors


INTERNAL = "internal_error"


def classify(exc: BaseException, *, default_code: str = "invalid_input", step: str = "",
             context: str = "", internal_code: str = INTERNAL) -> tuple[str, str]:
    """``(error_code, message)`` to record for a failure.

    :class:`~explain.errors.XauditError` is the user's input: its own code (else
    ``default_code``) and message. Anything else is a bug: logged here with its traceback,
    recorded as ``internal_code`` with the exception's type only (paths and internals stay
    in the log).

    Parameters
    ----------
    exc
        The exception.
    default_code
        The code of a user error that carries none of its own.
    step
        Which step failed (``"prepare"``, ...), named in an internal error's message.
    context
        What failed (``"audit 1f3e..."``), for the log line.
    internal_code
        The code of an internal error (``internal_error``; a fan-out chunk names itself).
    """
    if isinstance(exc, XauditError):
        return getattr(exc, "code", None) or default_code, str(exc)
    at = f" in {step}" if step else ""
    log.error("%s failed%s", context or "a task", at, exc_info=exc)
    return internal_code, f"internal error ({type(exc).__name__}){at}; see the worker log"
