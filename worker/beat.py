"""Dispatch of scheduled audits and recovery of abandoned ones.

Why one periodic dispatcher rather than Celery beat with a database scheduler: schedules
are tenant data in the SQL database, created and deleted through the API at any time.
Celery beat keeps its own in-memory copy of the schedule and assumes one beat process;
a second one (a restarted container that overlaps the old one, two replicas) would start
every run twice. Here the database row is the only state: each due schedule is claimed
with a compare-and-set on ``next_run_at`` (:func:`claim_run`), so whichever process's
UPDATE changes the row starts the run and every other process skips it, however many
beat processes run.

``xaudit beat`` runs :func:`run_forever`; the same functions are Celery tasks
(``xaudit.dispatch_schedules``, ``xaudit.reap_stale_audits``) for deployments that
prefer to trigger them from ``celery beat``: the claim keeps those duplicate-free too.

Missed runs (the beat was down for a day) are not replayed: a run is due when
``next_run_at`` has passed, and the claim moves it to the first cron time after *now*, so
an outage costs at most one catch-up run per schedule rather than a flood.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from flask import Flask
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from api import db, lifecycle, services
from api.cron import next_run
from api.lifecycle import AuditStatus
from api.queue import send_task

log = logging.getLogger("xaudit.beat")

#: Audits whose worker vanished are started again this many times, then failed.
MAX_ATTEMPTS = 3


def claim_run(session: Session, schedule_id: str, seen_next_run: datetime,
              new_next_run: datetime, now: datetime) -> bool:
    """Claim one run of a schedule: ``UPDATE ... WHERE next_run_at = <the value read>``.

    Parameters
    ----------
    session
        A session whose transaction is committed here.
    schedule_id
        The schedule.
    seen_next_run
        ``next_run_at`` as this process read it when it found the schedule due.
    new_next_run
        The next cron time after ``now``.
    now
        The dispatch time (recorded as ``last_run_at``).

    Returns
    -------
    bool
        True for exactly one of any number of processes that read the same
        ``seen_next_run``: the database applies the UPDATEs one at a time, and after the
        first one the row no longer matches the others' WHERE clause.
    """
    res = session.execute(
        update(db.Schedule)
        .where(db.Schedule.id == schedule_id, db.Schedule.next_run_at == seen_next_run,
               db.Schedule.enabled.is_(True))
        .values(next_run_at=new_next_run, last_run_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return res.rowcount == 1


def previous_successful_audit(session: Session, schedule: db.Schedule) -> db.Audit | None:
    """The schedule's most recently finished successful audit (drift is measured
    against it; failed runs are skipped, so one bad night does not break the chain)."""
    return session.scalars(
        db.scoped(db.Audit, schedule.tenant_id)
        .where(db.Audit.schedule_id == schedule.id,
               db.Audit.status == AuditStatus.SUCCEEDED.value)
        .order_by(db.Audit.finished_at.desc(), db.Audit.created_at.desc()).limit(1)
    ).first()


def dispatch_due(app: Flask, now: datetime | None = None, limit: int = 100) -> list[str]:
    """Start one audit for each schedule due at ``now``.

    Parameters
    ----------
    app
        The Flask app (database, blob store and Celery app).
    now
        The time to dispatch at (default: the current UTC time); tests pass a later time
        instead of waiting for the cron.
    limit
        Most schedules handled in one call; the rest wait for the next round.

    Returns
    -------
    list of str
        The ids of the audits this call started (schedules claimed by another process,
        or whose model or dataset is gone, start nothing here).
    """
    now = db.as_utc(now) if now is not None else db.utcnow()
    started: list[str] = []
    with app.app_context():
        session = db.session()
        due = session.scalars(
            select(db.Schedule)
            .where(db.Schedule.enabled.is_(True), db.Schedule.next_run_at <= now)
            .order_by(db.Schedule.next_run_at).limit(limit)
        ).all()
        for sched in due:
            if not claim_run(session, sched.id, sched.next_run_at,
                             next_run(sched.cron, now), now):
                continue  # another beat process took this run
            audit_id = _start_scheduled(app, session, sched)
            if audit_id:
                started.append(audit_id)
    return started


def _start_scheduled(app: Flask, session: Session, sched: db.Schedule) -> str | None:
    """Create and enqueue the audit of one claimed run: the latest model version on the
    latest dataset version, with the previous successful audit for drift."""
    model_row = services.latest(session, db.ModelRow, sched.tenant_id, sched.model_name)
    dataset_row = services.latest(session, db.DatasetRow, sched.tenant_id, sched.dataset_name)
    if model_row is None or dataset_row is None:
        log.warning("schedule %s: no model %r or dataset %r any more; skipped this run",
                    sched.id, sched.model_name, sched.dataset_name)
        return None
    busy = session.scalars(
        db.scoped(db.Audit, sched.tenant_id)
        .where(db.Audit.schedule_id == sched.id,
               db.Audit.status.in_((AuditStatus.QUEUED.value, AuditStatus.RUNNING.value)))
        .limit(1)).first()
    if busy is not None:
        # One run at a time per schedule: a run that outlasts the cron period (or a queue
        # that is backed up) must not pile up more runs behind it.
        log.info("schedule %s: its previous run %s is still %s; this run is skipped",
                 sched.id, busy.id, busy.status)
        return None
    waiting = session.scalar(
        select(func.count()).select_from(db.Audit).where(
            db.Audit.tenant_id == sched.tenant_id,
            db.Audit.status.in_((AuditStatus.QUEUED.value, AuditStatus.RUNNING.value))))
    cap = int(app.config.get("MAX_QUEUED_AUDITS", 10))
    if waiting >= cap:
        # The tenant's queue cap (429 for POST /audits) holds for its schedules too.
        log.info("schedule %s: its tenant has %d audits waiting (cap %d); run skipped",
                 sched.id, waiting, cap)
        return None
    previous = previous_successful_audit(session, sched)
    audit = services.create_audit(session, sched.tenant_id, model_row, dataset_row,
                                  dict(sched.config or {}),
                                  previous_audit_id=previous.id if previous else None,
                                  schedule_id=sched.id)
    services.enqueue_audit(app.extensions["celery"], session, audit)
    return audit.id


def reap_stale(app: Flask, now: datetime | None = None) -> list[str]:
    """Requeue running audits whose heartbeat stopped (their worker died); fail them after
    ``AUDIT_MAX_ATTEMPTS`` (default :data:`MAX_ATTEMPTS`). Send again the queued audits
    that no worker claimed within ``AUDIT_STALE_AFTER``: their message may be gone (a
    broker restarted without persistence), and the database, not the broker, says what
    is still to do. Returns the ids touched."""
    now = now or db.utcnow()
    touched: list[str] = []
    with app.app_context():
        from worker.audit_state import heartbeat_stale_after

        # Running audits: their heartbeat thread beats every quarter of this, so a minute
        # of silence means the worker is gone. Queued audits: re-sent after the longer
        # AUDIT_STALE_AFTER (the queue may just be busy).
        dead_before = now - timedelta(seconds=heartbeat_stale_after(app.config))
        stale_before = now - timedelta(seconds=float(app.config["AUDIT_STALE_AFTER"]))
        max_attempts = int(app.config.get("AUDIT_MAX_ATTEMPTS", MAX_ATTEMPTS))
        session = db.session()
        rows = session.scalars(
            select(db.Audit).where(db.Audit.status == AuditStatus.RUNNING.value,
                                   db.Audit.heartbeat_at < dead_before).limit(100)
        ).all()
        for audit in rows:
            give_up = (audit.attempts or 0) >= max_attempts
            # heartbeat_at of a queued audit is when it was last sent (see below).
            applied = (lifecycle.give_up_stale(session, audit.id, audit.heartbeat_at,
                                               audit.attempts, now) if give_up
                       else lifecycle.requeue_stale(session, audit.id, audit.heartbeat_at,
                                                    now))
            if not applied:
                continue
            touched.append(audit.id)
            if not give_up and not _send(app, audit.id):
                return touched  # the broker is down: the queued sweep sends it later
        waiting = session.scalars(
            select(db.Audit).where(
                db.Audit.status == AuditStatus.QUEUED.value,
                func.coalesce(db.Audit.heartbeat_at, db.Audit.created_at) < stale_before)
            .order_by(db.Audit.created_at).limit(100)
        ).all()
        for audit in waiting:
            if not lifecycle.mark_resent(session, audit.id, audit.heartbeat_at, now):
                continue  # claimed, or sent by another beat process
            if not _send(app, audit.id):
                break
            touched.append(audit.id)
    return touched


def _send(app: Flask, audit_id: str) -> bool:
    """Send an audit's task again; a duplicate is harmless (the claim lets one run)."""
    try:
        send_task(app.extensions["celery"], "xaudit.audit", [audit_id],
                  task_id=f"audit-{audit_id}", ignore_result=True)
        return True
    except Exception as exc:
        log.warning("beat: could not send audit %s (%s); it stays queued and is sent "
                    "again next round", audit_id, exc)
        return False


def run_forever(app: Flask, interval: float | None = None,
                stop: threading.Event | None = None) -> None:
    """The beat loop: dispatch due schedules and reap stale audits every ``interval`` s."""
    interval = float(interval or app.config["BEAT_INTERVAL"])
    stop = stop or threading.Event()
    log.info("beat: checking schedules every %.1f s", interval)
    while not stop.is_set():
        try:
            started = dispatch_due(app)
            if started:
                log.info("beat: started audits %s", started)
            reaped = reap_stale(app)
            if reaped:
                log.info("beat: requeued or failed stale audits %s", reaped)
            from api.explain_jobs import sweep_explain_jobs

            lost = sweep_explain_jobs(app)
            if lost:
                log.info("beat: re-sent or failed lost explain jobs %s", lost)
        except Exception:
            # The database or broker may be restarting: keep the loop alive.
            log.exception("beat: a dispatch round failed; retrying next round")
        stop.wait(interval)
