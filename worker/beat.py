"""Dispatch of scheduled audits and recovery of abandoned ones.

Each due schedule is claimed with a compare-and-set on ``next_run_at`` (the UPDATE only
succeeds for the process that read the current value), so two beat processes never start
the same run twice. ``xaudit beat`` runs :func:`run_forever`; the same functions are
Celery tasks (``xaudit.dispatch_schedules``, ``xaudit.reap_stale_audits``) for
deployments that prefer ``celery beat``.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from flask import Flask
from sqlalchemy import select, update

from api import db, services

log = logging.getLogger("xaudit.beat")

#: Audits whose worker vanished are started again this many times, then failed.
MAX_ATTEMPTS = 3


def dispatch_due(app: Flask, now: datetime | None = None, limit: int = 100) -> list[str]:
    """Start one audit for each schedule due at ``now``; return the new audit ids."""
    from api.resources.schedules import next_run

    now = now or db.utcnow()
    started: list[str] = []
    with app.app_context():
        session = db.session()
        due = session.scalars(
            select(db.Schedule)
            .where(db.Schedule.enabled.is_(True), db.Schedule.next_run_at <= now)
            .order_by(db.Schedule.next_run_at).limit(limit)
        ).all()
        for sched in due:
            claimed = session.execute(
                update(db.Schedule)
                .where(db.Schedule.id == sched.id,
                       db.Schedule.next_run_at == sched.next_run_at)
                .values(next_run_at=next_run(sched.cron, now), last_run_at=now)
                .execution_options(synchronize_session=False)
            )
            session.commit()
            if claimed.rowcount != 1:
                continue  # another beat process took this run
            audit_id = _start_scheduled(app, session, sched)
            if audit_id:
                started.append(audit_id)
    return started


def _start_scheduled(app: Flask, session, sched: db.Schedule) -> str | None:
    model_row = services.latest(session, db.ModelRow, sched.tenant_id, sched.model_name)
    dataset_row = services.latest(session, db.DatasetRow, sched.tenant_id, sched.dataset_name)
    if model_row is None or dataset_row is None:
        log.warning("schedule %s: no model %r or dataset %r yet; skipped this run",
                    sched.id, sched.model_name, sched.dataset_name)
        return None
    previous = session.scalars(
        db.scoped(db.Audit, sched.tenant_id)
        .where(db.Audit.schedule_id == sched.id, db.Audit.status == "succeeded")
        .order_by(db.Audit.finished_at.desc()).limit(1)
    ).first()
    audit = services.create_audit(session, sched.tenant_id, model_row, dataset_row,
                                  dict(sched.config or {}),
                                  previous_audit_id=previous.id if previous else None,
                                  schedule_id=sched.id)
    services.enqueue_audit(app.extensions["celery"], session, audit)
    return audit.id


def reap_stale(app: Flask, now: datetime | None = None) -> list[str]:
    """Requeue running audits whose heartbeat stopped (their worker died); fail them after
    :data:`MAX_ATTEMPTS`. Returns the ids touched."""
    now = now or db.utcnow()
    touched: list[str] = []
    with app.app_context():
        stale_before = now - timedelta(seconds=float(app.config["AUDIT_STALE_AFTER"]))
        session = db.session()
        rows = session.scalars(
            select(db.Audit).where(db.Audit.status == "running",
                                   db.Audit.heartbeat_at < stale_before).limit(100)
        ).all()
        for audit in rows:
            give_up = (audit.attempts or 0) >= MAX_ATTEMPTS
            values = (
                {"status": "failed", "error_code": "worker_lost", "finished_at": now,
                 "error": f"the worker running this audit stopped {audit.attempts} times"}
                if give_up else {"status": "queued", "stage": "requeued"}
            )
            res = session.execute(
                update(db.Audit).where(db.Audit.id == audit.id, db.Audit.status == "running",
                                       db.Audit.heartbeat_at == audit.heartbeat_at)
                .values(**values).execution_options(synchronize_session=False))
            session.commit()
            if res.rowcount != 1:
                continue
            touched.append(audit.id)
            if not give_up:
                session.refresh(audit)
                services.enqueue_audit(app.extensions["celery"], session, audit)
    return touched


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
        except Exception:
            # The database or broker may be restarting: keep the loop alive.
            log.exception("beat: a dispatch round failed; retrying next round")
        stop.wait(interval)
