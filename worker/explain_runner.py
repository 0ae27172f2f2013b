"""Running one /explain job: claim it, compute the attributions within the job's time
limits under its heartbeat, and store the result (or the reason it failed) on its row.
HTTP-free; runs inside the Flask app context of a task."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from flask import current_app, has_app_context

from api import db, lifecycle
from api.config import budget_policy, policy_environ
from api.lifecycle import AuditStatus
from worker import storage
from worker.transient import TRANSIENT

log = logging.getLogger("xaudit.worker")

#: Background rows drawn from a dataset (or a stored background sample) for model-agnostic
#: SHAP in /explain (tables).
BACKGROUND_ROWS = 50


def finite_list(values: Any) -> Any:
    """A nested list with NaN/Inf as None (JSON columns and clients reject them)."""
    arr = np.asarray(values, dtype=np.float64)
    out = arr.astype(object)
    out[~np.isfinite(arr)] = None
    return out.tolist()


def explain_batch_size(spec, method: str, x: np.ndarray) -> int | None:
    """Rows per pass that fit this worker's memory budget (from the model's cost), or
    None to keep the method's default."""
    if spec is None or not getattr(spec, "cost", None):
        return None
    from explain.attributions.registry import default_batch_size, method_info
    from explain.budget import BudgetPolicy, ModelCost
    from explain.budget import explain_batch_size as budget_batch_size

    gradient = method_info(method).gradient_based
    policy = (budget_policy(current_app.config) if has_app_context()
              else BudgetPolicy.from_env())
    cap = budget_batch_size(ModelCost.from_dict(spec.cost), policy, gradient)
    return int(min(default_batch_size(x.shape[1:], gradient), cap))


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
    data = validate_for_model(
        load_data_file(storage.blobs().path(row.blob_key), label=row.label), spec)
    return background_from(data.x)


def model_background(model_row: db.ModelRow, spec) -> np.ndarray:
    """SHAP's background from the sample stored with the model at upload (checked then
    against the model; read again with the same checks, as files are untrusted)."""
    from explain.datasets import load_background
    from explain.errors import DataError

    store = storage.blobs()
    if not model_row.background_key or not store.exists(model_row.background_key):
        raise DataError("the model's stored background is gone; send 'background' rows "
                        "with the request", code="no_background")
    path = store.path(model_row.background_key)
    return background_from(
        load_background(path, spec, environ=policy_environ(current_app.config)).x)


def _attribute(session, job: db.ExplainJob, model_row: db.ModelRow, model, spec
               ) -> dict[str, Any]:
    """The job's result: attributions, predictions, targets and scores (JSON-ready), and
    where SHAP's background came from."""
    from explain.attributions import ModelFunction, explain

    req = job.request or {}
    options = dict(req.get("options") or {})
    method = req.get("method", "integrated_gradients")
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
        background = {"source": "dataset", "dataset_id": req["background_dataset_id"]}
    if background is not None:
        background["rows"] = int(len(options["background"]))
    target = req.get("target")
    if isinstance(target, list):
        target = np.asarray(target, dtype=np.int64)
    if "batch_size" not in options and not texts:
        size = explain_batch_size(spec, method, x)
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
        "attributions": finite_list(att.values),
        "prediction": finite_list(prediction),
        "targets": [int(t) for t in att.targets],
        "scores": None if att.scores is None else finite_list(att.scores),
        "completeness_gap": (None if att.completeness_gap is None
                             else finite_list(att.completeness_gap)),
    }
    if background is not None:
        result["background"] = background
    if token_ids is not None:
        result["token_ids"] = np.asarray(token_ids).astype(int).tolist()
        vocab = tm.vocabulary()
        if vocab is not None:
            result["tokens"] = [[vocab[int(t)] if 0 <= int(t) < len(vocab) else None
                                 for t in row] for row in result["token_ids"]]
    return result


def run_explain_job(job_id: str) -> dict[str, Any]:
    """Compute the attributions of one explain job and store them on its row.

    A job that is finished, missing or computing on a live worker is skipped; a
    transient error is raised for the task to retry; anything else fails the job with
    its reason (the user's) or as an internal error (logged with its traceback).
    """
    from api import explain_jobs as claims
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
    values: dict[str, Any]
    try:
        with claims.explain_heartbeat(job_id, attempt, stale_after / 4), \
                watchdog.guard("explain", job_id, soft=float(cfg["EXPLAIN_SOFT_TIME_LIMIT"]),
                               hard=float(cfg["EXPLAIN_TIME_LIMIT"])):
            model, spec = storage.load_model_row(model_row)
            result = _attribute(session, job, model_row, model, spec)
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
