"""Running a claimed audit: on one worker (:func:`explain.audit.run_audit` in this
process), or fanned out (:mod:`worker.fanout`) when ``AUDIT_FANOUT`` is on and Redis keeps
the results. HTTP-free; runs inside the Flask app context of a task."""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from flask import current_app

from api import db
from api.config import budget_policy
from api.lifecycle import AuditStatus
from worker import audit_state, fanout, storage
from worker.transient import TRANSIENT

log = logging.getLogger("xaudit.worker")


def sized_audit_config(spec: dict[str, Any] | None, config: dict[str, Any],
                       policy=None) -> dict[str, Any]:
    """The audit config with ``batch_size`` no larger than what fits this worker's memory
    budget for the model (from the cost its intake recorded) next to the audit's own
    arrays (deletion/insertion blocks, stability copies: explain.budget.audit_memory);
    unchanged without a cost. ``policy``: the app's budget (default: the environment's)."""
    cost = (spec or {}).get("cost")
    if not cost:
        return config
    from explain.audit import DEFAULT_METHODS, AuditConfig
    from explain.budget import BudgetPolicy, ModelCost, audit_batch_size

    policy = policy or BudgetPolicy.from_env()
    methods = config.get("methods") or DEFAULT_METHODS.get(
        str((spec or {}).get("input_kind")), DEFAULT_METHODS["tabular"])
    asked = int(config.get("batch_size") or AuditConfig.batch_size)
    cap = audit_batch_size(ModelCost.from_dict(cost), {**config, "batch_size": asked},
                           methods, policy)
    if asked > cap:
        log.info("audit batch size %d -> %d (memory budget)", asked, cap)
        config = {**config, "batch_size": cap}
    return config


def run_claimed(audit_id: str) -> dict[str, Any]:
    """Run an audit this worker has claimed, under its heartbeat: fanned out when
    :func:`worker.fanout.fanout_enabled`, else here within the audit's time limits."""
    from worker import watchdog

    session = db.session()
    audit = session.get(db.Audit, audit_id)
    model_row = session.get(db.ModelRow, audit.model_id)
    dataset_row = session.get(db.DatasetRow, audit.dataset_id)
    progress = audit_state.Progress(audit_id)
    cfg = current_app.config
    with audit_state.audit_heartbeat(audit_id, int(audit.attempts or 1)):
        if fanout.fanout_enabled():
            return fanout.start_fanout(audit_id, audit, model_row, dataset_row, progress)
        with watchdog.guard("audit", audit_id, soft=float(cfg["AUDIT_SOFT_TIME_LIMIT"]),
                            hard=float(cfg["AUDIT_TIME_LIMIT"])):
            return _run_here(audit_id, audit, model_row, dataset_row, progress)


def _run_here(audit_id: str, audit: db.Audit, model_row: db.ModelRow,
              dataset_row: db.DatasetRow, progress: audit_state.Progress) -> dict[str, Any]:
    """The whole audit in this process: load, run the pipeline, render, store, finish."""
    try:
        # Imported here so a missing or broken pipeline fails this audit cleanly instead
        # of leaving its row running.
        from explain.audit import run_audit  # noqa: I001

        progress("loading", 0.0)
        data = storage.load_dataset(dataset_row, audit.config)
        previous = storage.load_previous(audit)
        result = run_audit(
            str(storage.blobs().path(model_row.blob_key)), data,
            sized_audit_config(model_row.spec, dict(audit.config or {}),
                               budget_policy(current_app.config)),
            progress=progress, previous=previous,
            model_name=model_row.name, dataset_name=dataset_row.name,
        )
        if previous is not None:
            storage.name_previous(result, audit.previous_audit_id)
        progress("storing", 0.99)
        keys = storage.store_result(result)
    except audit_state.AuditSuperseded:
        log.info("audit %s was taken over elsewhere; stopping", audit_id)
        return {"status": "superseded"}
    except SoftTimeLimitExceeded:
        audit_state.finish_failed(audit_id, "time_limit", "the audit exceeded its time limit")
        return {"status": AuditStatus.FAILED.value}
    except TRANSIENT:
        raise
    except Exception as exc:
        audit_state.fail_with(audit_id, exc)
        return {"status": AuditStatus.FAILED.value}
    return audit_state.finish_succeeded(audit_id, None, progress.finish(), keys)
