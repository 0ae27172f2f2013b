"""Celery tasks. Messages carry row ids; inputs and results live in the database and the
blob store, and every task can run twice (redelivery) without a second effect.

Adding a task: decorate it with ``@shared_task(name="xaudit.<name>")``, add its queue to
:data:`worker.app.ROUTES`, and use :func:`api.db.session` inside (tasks run in the Flask
app context).

An audit runs as one task on the ``attributions`` queue (:func:`explain.audit.run_audit`
in one process), or, with ``AUDIT_FANOUT`` on and Redis for results, as a chain whose
attribution chunks are a chord over the ``attributions`` workers (see "fanned-out audits"
below).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import numpy as np
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from flask import current_app, has_app_context
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy.exc import InterfaceError
from sqlalchemy.exc import OperationalError as DBOperationalError

from api import db, lifecycle
from api.config import budget_policy, policy_environ
from api.lifecycle import AuditStatus
from explain.audit.plan import npz_bytes
from worker import webhooks  # noqa: F401 - registers xaudit.webhook with the app
from worker.cache import ModelCache

log = logging.getLogger("xaudit.worker")

#: Errors worth retrying: the database or the broker blinked. Everything else is either
#: the user's input (an XauditError, recorded with its code) or a bug (recorded as
#: internal_error; see api.lifecycle.classify).
TRANSIENT = (DBOperationalError, InterfaceError, KombuOperationalError, ConnectionError)
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
    from api.config import intake_policy
    from explain.modelio import load_model_safely

    path = blobs().path(row.blob_key)
    return model_cache().get(row.sha256,
                             lambda: load_model_safely(path, policy=intake_policy(current_app.config)))


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


def _explain_batch_size(spec, method: str, x: np.ndarray) -> int | None:
    """Rows per pass that fit this worker's memory budget (from the model's cost), or
    None to keep the method's default."""
    if spec is None or not getattr(spec, "cost", None):
        return None
    from explain.attributions.registry import default_batch_size, method_info
    from explain.budget import BudgetPolicy, ModelCost, explain_batch_size

    gradient = method_info(method).gradient_based
    policy = (budget_policy(current_app.config) if has_app_context()
              else BudgetPolicy.from_env())
    cap = explain_batch_size(ModelCost.from_dict(spec.cost), policy, gradient)
    return int(min(default_batch_size(x.shape[1:], gradient), cap))


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


#: Background rows drawn from a dataset (or a stored background sample) for model-agnostic
#: SHAP in /explain (tables).
BACKGROUND_ROWS = 50


def background_from(x: np.ndarray) -> np.ndarray:
    """SHAP's background from rows of the model's data.

    Tables: ``BACKGROUND_ROWS`` rows drawn with a fixed seed. Images: one image of the
    rows' mean colour per channel, SHAP's usual image background (a removed region is
    greyed out to the data's mean colour), here from the data rather than the rows
    being explained.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 4:
        return np.broadcast_to(x.mean(axis=(0, 1, 2), keepdims=True),
                               (1, *x.shape[1:])).astype(np.float32)
    rng = np.random.default_rng(0)
    take = np.sort(rng.choice(len(x), min(BACKGROUND_ROWS, len(x)), replace=False))
    return x[take]


def dataset_background(session, tenant_id: str, dataset_id: str, spec) -> np.ndarray:
    """SHAP's background from one of the tenant's datasets, fitted to the model
    (:func:`background_from`)."""
    from explain.datasets import load_data_file, validate_for_model
    from explain.errors import DataError

    row = db.get_owned(db.DatasetRow, dataset_id, tenant_id)
    if row is None:
        raise DataError("the dataset for SHAP's background no longer exists; send "
                        "'background' rows with the request", code="no_background")
    data = validate_for_model(load_data_file(blobs().path(row.blob_key), label=row.label),
                              spec)
    return background_from(data.x)


def model_background(model_row: db.ModelRow, spec) -> np.ndarray:
    """SHAP's background from the sample stored with the model at upload (checked then
    against the model; read again with the same checks, as files are untrusted)."""
    from explain.datasets import load_background
    from explain.errors import DataError

    if not model_row.background_key or not blobs().exists(model_row.background_key):
        raise DataError("the model's stored background is gone; send 'background' rows "
                        "with the request", code="no_background")
    path = blobs().path(model_row.background_key)
    return background_from(
        load_background(path, spec, environ=policy_environ(current_app.config)).x)


def _explain_job(job_id: str) -> dict[str, Any]:
    from api import explain_jobs as claims
    from explain.attributions import ModelFunction, explain
    from worker import watchdog

    cfg = current_app.config
    stale_after = float(cfg.get("EXPLAIN_STALE_AFTER", claims.DEFAULT_STALE_AFTER))
    outcome, attempt = claims.claim_explain(job_id, stale_after)
    if outcome != "claimed":
        # Finished, missing, or computing on a live worker: a duplicate message (a re-send
        # or a redelivery) must not start a second computation.
        log.info("explain job %s is %s; not computed again", job_id, outcome)
        return {"status": outcome, "skipped": True}
    session = db.session()
    job = session.get(db.ExplainJob, job_id)
    model_row = session.get(db.ModelRow, job.model_id)
    req = job.request or {}
    options = dict(req.get("options") or {})
    method = req.get("method", "integrated_gradients")
    values: dict[str, Any]
    try:
        with claims.explain_heartbeat(job_id, attempt, stale_after / 4), \
                watchdog.guard("explain", job_id, soft=float(cfg["EXPLAIN_SOFT_TIME_LIMIT"]),
                               hard=float(cfg["EXPLAIN_TIME_LIMIT"])):
            model, spec = load_model_row(model_row)
            instances = req["instances"]
            texts = bool(instances) and isinstance(instances[0], str)
            x = (np.asarray(instances, dtype=str) if texts
                 else np.asarray(instances, dtype=np.float32))
            background = None
            if not texts and req.get("background") is not None:
                options["background"] = np.asarray(req["background"], dtype=np.float32)
                background = {"source": "request"}
            elif not texts and req.get("background_source") == "model":
                options["background"] = model_background(model_row, spec)
                background = {"source": "model"}
            elif not texts and req.get("background_dataset_id"):
                options["background"] = dataset_background(
                    session, job.tenant_id, req["background_dataset_id"], spec)
                background = {"source": "dataset",
                              "dataset_id": req["background_dataset_id"]}
            if background is not None:
                background["rows"] = int(len(options["background"]))
            target = req.get("target")
            if isinstance(target, list):
                target = np.asarray(target, dtype=np.int64)
            if "batch_size" not in options and not texts:
                size = _explain_batch_size(spec, method, x)
                if size is not None:
                    options["batch_size"] = size
            att = explain(model, x, method, target, **options)
            token_ids = att.extra.get("token_ids")
            if token_ids is not None:
                # a text model: predictions from the ids it was explained on
                from explain.attributions.tokens import token_model

                tm = token_model(model)
                prediction = ModelFunction(tm.ids_model, output=options.get("output")).predict(
                    np.asarray(token_ids, np.float32))
            else:
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
            if background is not None:
                result["background"] = background
            if token_ids is not None:
                result["token_ids"] = np.asarray(token_ids).astype(int).tolist()
                vocab = tm.vocabulary()
                if vocab is not None:
                    result["tokens"] = [[vocab[int(t)] if 0 <= int(t) < len(vocab) else None
                                         for t in row] for row in result["token_ids"]]
        values = {"status": AuditStatus.SUCCEEDED.value, "result": result}
    except SoftTimeLimitExceeded:
        values = {"status": AuditStatus.FAILED.value, "error_code": "time_limit",
                  "error": "the computation exceeded the time limit "
                           f"({cfg['EXPLAIN_SOFT_TIME_LIMIT']} s); ask for fewer rows or "
                           "steps"}
    except TRANSIENT:
        raise
    except Exception as exc:
        code, message = lifecycle.classify(exc, default_code="invalid_request",
                                           context=f"explain job {job_id}")
        values = {"status": AuditStatus.FAILED.value, "error_code": code,
                  "error": (message[:2000] if code != lifecycle.INTERNAL
                            else "internal error while computing attributions")}
    if not claims.finish_explain(job_id, attempt, **values):
        log.info("explain job %s was finished or taken over elsewhere", job_id)
    from api.jobwait import notify_done

    notify_done(cfg, job_id)
    return {"status": values["status"]}


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
            return {"status": AuditStatus.FAILED.value}
        raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc


def _claim(audit_id: str) -> str:
    """Mark the audit running if it is queued or abandoned; return what happened."""
    if lifecycle.claim(audit_id, heartbeat_stale_after(current_app.config)):
        return "claimed"
    status = lifecycle.status_of(audit_id)
    return "missing" if status is None else status.value


def _release(audit_id: str) -> None:
    """Give a running audit back to the queue before a retry (best effort)."""
    try:
        lifecycle.release(audit_id)
    except Exception:
        log.warning("could not release audit %s", audit_id, exc_info=True)


def _finish_failed(audit_id: str, code: str, message: str) -> None:
    if lifecycle.fail(audit_id, code, message):
        # Only the run that changed the row notifies, so one failure sends one webhook.
        webhooks.notify(audit_id)


def _fail_with(audit_id: str, exc: BaseException, step: str = "", prefix: str = "",
               default_code: str = "invalid_input",
               internal_code: str = lifecycle.INTERNAL) -> None:
    """Fail the audit for ``exc``: the user's error with its message, anything else as
    ``internal_code`` (logged with its traceback; see :func:`api.lifecycle.classify`)."""
    code, message = lifecycle.classify(exc, default_code=default_code, step=step,
                                       context=f"audit {audit_id}",
                                       internal_code=internal_code)
    _finish_failed(audit_id, code, prefix + message)


def _finish_succeeded(audit_id: str, attempt: int | None, timings: dict[str, Any],
                      keys: tuple[str, str, str | None]) -> dict[str, Any]:
    """The one end of a successful audit, for the single-task and the fan-out path."""
    html_key, json_key, arrays_key = keys
    if not lifecycle.succeed(audit_id, attempt=attempt, timings=timings, html_key=html_key,
                             json_key=json_key, arrays_key=arrays_key):
        log.info("audit %s was finished by another run; keeping its report", audit_id)
        return {"status": "superseded"}
    webhooks.notify(audit_id)
    return {"status": AuditStatus.SUCCEEDED.value}


def _store_result(result) -> tuple[str, str, str | None]:
    """Render and store a result: (html key, json key, arrays key)."""
    from reports import render_html, render_json

    store = blobs()
    return (store.put_bytes(render_html(result).encode("utf-8"), ".html"),
            store.put_bytes(render_json(result).encode("utf-8"), ".json"),
            store.put_bytes(npz_bytes(result.arrays), ".npz") if result.arrays else None)


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
        if not lifecycle.progress(self.audit_id, self.stage, fraction, self.timings):
            raise AuditSuperseded(self.audit_id)

    def finish(self) -> dict[str, float]:
        if self.stage is not None:
            self.timings[self.stage] = round(time.monotonic() - self.stage_t0, 3)
        self.timings["total"] = round(time.monotonic() - self.t0, 3)
        return self.timings


def _audit_heartbeat(audit_id: str, attempt: int):
    """Refreshes a claimed audit's heartbeat from a thread while it runs.

    Progress reports come only between steps, and one step (SHAP on large images, say)
    can outlast ``AUDIT_STALE_AFTER``; without this a live worker would look dead and
    its audit be started again. Only the run that holds the claim (same attempt) beats.
    """
    from api.explain_jobs import Heartbeat

    stale = heartbeat_stale_after(current_app.config)
    return Heartbeat(lambda: lifecycle.heartbeat(audit_id, attempt),
                     min(60.0, max(0.5, stale / 4)), f"audit {audit_id}")


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
    if (prev is None or prev.tenant_id != audit.tenant_id
            or prev.status != AuditStatus.SUCCEEDED):
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
        if claimed == AuditStatus.RUNNING:
            # Another worker holds it and is alive; look again once it could be stale.
            raise task.retry(countdown=heartbeat_stale_after(current_app.config),
                             max_retries=None)
        log.info("audit %s is %s; nothing to do", audit_id, claimed)
        return {"status": claimed, "skipped": True}

    session = db.session()
    audit = session.get(db.Audit, audit_id)
    model_row = session.get(db.ModelRow, audit.model_id)
    dataset_row = session.get(db.DatasetRow, audit.dataset_id)
    progress = _Progress(audit_id)
    from worker import watchdog

    cfg = current_app.config
    with _audit_heartbeat(audit_id, int(audit.attempts or 1)):
        if fanout_enabled():
            return _start_fanout(audit_id, audit, model_row, dataset_row, progress)
        with watchdog.guard("audit", audit_id, soft=float(cfg["AUDIT_SOFT_TIME_LIMIT"]),
                            hard=float(cfg["AUDIT_TIME_LIMIT"])):
            return _run_claimed(audit_id, audit, model_row, dataset_row, progress)


def _load_dataset(dataset_row: db.DatasetRow, config: dict[str, Any] | None) -> Any:
    """The stored dataset, with the sensitive columns it was stored with and those the
    audit asks for taken out of a CSV's inputs."""
    from explain.datasets import load_data_file, sensitive_to_load

    path = blobs().path(dataset_row.blob_key)
    return load_data_file(path, label=dataset_row.label, sensitive=sensitive_to_load(
        path, (dataset_row.spec or {}).get("sensitive"), (config or {}).get("sensitive")),
        environ=policy_environ(current_app.config))


def _run_claimed(audit_id: str, audit: db.Audit, model_row: db.ModelRow,
                 dataset_row: db.DatasetRow, progress: _Progress) -> dict[str, Any]:
    try:
        # Imported here so a missing or broken pipeline fails this audit cleanly instead
        # of leaving its row running.
        from explain.audit import run_audit  # noqa: I001

        progress("loading", 0.0)
        data = _load_dataset(dataset_row, audit.config)
        previous = load_previous(audit)
        result = run_audit(
            str(blobs().path(model_row.blob_key)), data,
            sized_audit_config(model_row.spec, dict(audit.config or {}),
                               budget_policy(current_app.config)),
            progress=progress, previous=previous,
            model_name=model_row.name, dataset_name=dataset_row.name,
        )
        if previous is not None:
            _name_previous(result, audit.previous_audit_id)
        progress("storing", 0.99)
        keys = _store_result(result)
    except AuditSuperseded:
        log.info("audit %s was taken over elsewhere; stopping", audit_id)
        return {"status": "superseded"}
    except SoftTimeLimitExceeded:
        _finish_failed(audit_id, "time_limit", "the audit exceeded its time limit")
        return {"status": AuditStatus.FAILED.value}
    except TRANSIENT:
        raise
    except Exception as exc:
        _fail_with(audit_id, exc)
        return {"status": AuditStatus.FAILED.value}
    return _finish_succeeded(audit_id, None, progress.finish(), keys)


# --------------------------------------------------------------------------- fanned-out audits
#
# With AUDIT_FANOUT (and Redis for results) an audit is a chain: xaudit.audit claims the
# row and runs explain.audit.prepare, storing the plan as a content-addressed blob; a
# chord of xaudit.audit_chunk tasks (one per method and chunk of examples, on the
# `attributions` queue) each store their arrays as a content-addressed blob; its callback
# xaudit.audit_assess assesses, renders and finishes the row with the same conditional
# update as the single-task path. Messages carry ids and blob keys. Every task checks that
# the row is still running under the attempt that sent it, so the work of an attempt the
# stale sweeper has replaced stops at its next task and never writes a report.
#
# Known gap (why the fan-out is off by default): a chunk waiting in the queue behind other
# work writes no heartbeat, so a busy worker pool can make a live fanned-out audit look
# abandoned after AUDIT_STALE_AFTER; the sweeper then starts it again (a wasted attempt,
# and after AUDIT_MAX_ATTEMPTS a worker_lost failure). Chunks need a liveness of their
# own (leases of started chunks) before the fan-out can be the default.


def heartbeat_stale_after(cfg) -> float:
    """Seconds without a heartbeat after which a running audit's worker counts as gone:
    ``AUDIT_HEARTBEAT_STALE`` (a minute; the heartbeat is a thread beating every quarter
    of it). Fanned-out audits keep ``AUDIT_STALE_AFTER``: their row does not beat while
    its chunks wait in the queue."""
    if bool(cfg.get("AUDIT_FANOUT")):
        return float(cfg["AUDIT_STALE_AFTER"])
    return float(cfg.get("AUDIT_HEARTBEAT_STALE") or cfg["AUDIT_STALE_AFTER"])


def fanout_enabled() -> bool:
    """Whether audits fan out: asked for, and a result backend with native chords."""
    cfg = current_app.config
    backend = str(cfg.get("CELERY_RESULT_BACKEND") or "")
    # The database result backend would finish a chord by polling (celery.chord_unlock
    # re-queued every second) and the embedded mode runs one worker anyway: there the
    # single-task path does the same work with fewer moving parts.
    return bool(cfg.get("AUDIT_FANOUT")) and backend.startswith(("redis://", "rediss://"))


def _holds(audit_id: str, attempt: int) -> bool:
    """Whether the audit is still running under ``attempt`` (else a task of it stops)."""
    session = db.session()
    session.expire_all()  # another process may have changed the row since we last read it
    audit = session.get(db.Audit, audit_id)
    return (audit is not None and audit.status == AuditStatus.RUNNING
            and int(audit.attempts) == attempt)


def _guarded(audit_id: str, step: str, work):
    """Run ``work()``; on failure finish the audit failed with a reason and return None."""
    try:
        return work()
    except AuditSuperseded:
        log.info("audit %s was taken over elsewhere; stopping", audit_id)
    except SoftTimeLimitExceeded:
        _finish_failed(audit_id, "time_limit", f"the audit exceeded its time limit ({step})")
    except TRANSIENT:
        raise
    except Exception as exc:
        _fail_with(audit_id, exc, step)
    return None


def _start_fanout(audit_id: str, audit: db.Audit, model_row: db.ModelRow,
                  dataset_row: db.DatasetRow, progress: _Progress) -> dict[str, Any]:
    """Prepare the audit and send its chord of attribution chunks."""
    from celery import chord

    from explain.audit import prepare, stage_span

    attempt = int(audit.attempts or 1)

    def work():
        progress("loading", 0.0)
        data = _load_dataset(dataset_row, audit.config)
        plan = prepare(str(blobs().path(model_row.blob_key)), data,
                       dict(audit.config or {}), progress=progress,
                       model_name=model_row.name, dataset_name=dataset_row.name,
                       model=load_model_row(model_row))
        return plan, blobs().put_bytes(plan.to_bytes(), ".npz")

    got = _guarded(audit_id, "prepare", work)
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
    header = [audit_chunk.si(audit_id, attempt, plan_key, m, start, stop, len(chunks))
              for m, start, stop in chunks]
    body = audit_assess.s(audit_id, attempt, plan_key, timings).on_error(
        audit_chunk_failed.si(audit_id, attempt))
    chord(header)(body)
    return {"status": "fanned_out", "chunks": len(chunks)}


def _advance(audit_id: str, attempt: int, share: float) -> None:
    """One more chunk done: move progress by its share of the attribution stage."""
    from explain.audit import stage_span

    lifecycle.advance(audit_id, attempt, share, stage_span("attributions")[1])


@shared_task(name="xaudit.audit_chunk", bind=True, max_retries=MAX_TRANSIENT_RETRIES)
def audit_chunk(self, audit_id: str, attempt: int, plan_key: str, method: str, start: int,
                stop: int, total: int) -> dict[str, Any]:
    """Attribute examples ``start:stop`` of a prepared audit with ``method``.

    Stores the arrays as a blob named by their content (a redelivered chunk stores the
    same blob) and returns its key with where it ran. A failure fails the audit with the
    chunk named, and is raised so the chord does not assess.
    """
    from explain.audit import AuditPlan, attribute_chunk, stage_span

    where = {"method": method, "start": int(start), "stop": int(stop),
             "worker": self.request.hostname, "pid": os.getpid()}
    if not _holds(audit_id, attempt):
        return {**where, "skipped": True}
    t0 = time.monotonic()
    try:
        _advance(audit_id, attempt, 0.0)  # alive from the start, not one beat period later
        with _audit_heartbeat(audit_id, attempt):
            plan = AuditPlan.from_bytes(blobs().read_bytes(plan_key))
            audit = db.session().get(db.Audit, audit_id)
            loaded = load_model_row(db.session().get(db.ModelRow, audit.model_id))
            arrays = attribute_chunk(plan, method, int(start), int(stop), model=loaded)
            key = blobs().put_bytes(npz_bytes(arrays), ".npz")
    except TRANSIENT as exc:
        if self.request.retries >= self.max_retries:
            _finish_failed(audit_id, "transient_error",
                           f"the database or broker kept failing: {type(exc).__name__}")
            raise
        raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc
    except SoftTimeLimitExceeded:
        _finish_failed(audit_id, "time_limit", f"attribution chunk {method} rows "
                       f"{start}-{stop} exceeded the audit's time limit")
        raise
    except Exception as exc:
        # Not the user's doing: the detail (paths, internals) stays in the worker log.
        _fail_with(audit_id, exc,
                   prefix=f"attribution chunk {method} rows {start}-{stop} failed: ",
                   default_code="attribution_failed", internal_code="attribution_failed")
        raise
    lo, hi = stage_span("attributions")
    _advance(audit_id, attempt, (hi - lo) / max(1, int(total)))
    return {**where, "key": key, "seconds": round(time.monotonic() - t0, 3)}


@shared_task(name="xaudit.audit_chunk_failed")
def audit_chunk_failed(audit_id: str, attempt: int) -> None:
    """The chord's error callback: a chunk (or the chord) failed without saying why."""
    # A chunk that failed in its own code has already failed the row with its reason;
    # this covers the rest (a chunk killed at its hard time limit, a lost result).
    _finish_failed(audit_id, "attribution_failed",
                   f"an attribution chunk of attempt {attempt} failed; see the worker log")


@shared_task(name="xaudit.audit_assess", bind=True, max_retries=MAX_TRANSIENT_RETRIES)
def audit_assess(self, results: list[dict[str, Any]], audit_id: str, attempt: int,
                 plan_key: str, prepare_timings: dict[str, float]) -> dict[str, Any]:
    """The chord's callback: assess the chunks, render, store and finish the audit."""
    try:
        return _audit_assess(results, audit_id, attempt, plan_key, prepare_timings)
    except TRANSIENT as exc:
        if self.request.retries >= self.max_retries:
            _finish_failed(audit_id, "transient_error",
                           f"the database or broker kept failing: {type(exc).__name__}")
            return {"status": AuditStatus.FAILED.value}
        raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc


def _audit_assess(results, audit_id, attempt, plan_key, prepare_timings):
    from explain.audit import AuditPlan, assess, npz_load

    if not _holds(audit_id, attempt):
        return {"status": "superseded"}
    if any(r.get("skipped") for r in results):
        # Chunks of this attempt never skip while it holds the row; a skip means the row
        # changed hands meanwhile.
        return {"status": "superseded"}
    session = db.session()
    audit = session.get(db.Audit, audit_id)
    model_row = session.get(db.ModelRow, audit.model_id)
    progress = _Progress(audit_id)
    chunk_log = [{k: r[k] for k in ("method", "start", "stop", "worker", "pid", "seconds")}
                 for r in results]

    def work():
        plan = AuditPlan.from_bytes(blobs().read_bytes(plan_key))
        chunks = {(r["method"], int(r["start"]), int(r["stop"])):
                  npz_load(blobs().read_bytes(r["key"])) for r in results}
        previous = load_previous(audit)
        result = assess(plan, chunks, previous=previous, progress=progress,
                        model=load_model_row(model_row),
                        timings={"attributions": round(sum(r["seconds"] for r in results),
                                                       3)})
        if previous is not None:
            _name_previous(result, audit.previous_audit_id)
        progress("storing", 0.99)
        return _store_result(result)

    with _audit_heartbeat(audit_id, attempt):
        keys = _guarded(audit_id, "assess", work)
    if keys is None:
        return {"status": AuditStatus.FAILED.value}
    timings = {**prepare_timings, **progress.finish(), "attribution_chunks": chunk_log}
    return _finish_succeeded(audit_id, attempt, timings, keys)


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
