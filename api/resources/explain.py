"""``/api/v1/explain``: on-demand attributions for a few instances, computed on a worker.

The request is validated here (instances numeric, finite, shaped like the model input,
within the per-request limits; method and options known), stored as an explain job, and
sent to the ``attributions`` queue by id. The API waits up to ``EXPLAIN_TIMEOUT``
seconds: 200 with the result, or 202 with the job URL to poll.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from apiflask import APIBlueprint
from flask import current_app, url_for

from api import db, jobwait, limits
from api.auth import auth, current_tenant_id
from api.errors import abort
from api.queue import send_task
from api.resources.models import get_model_or_404
from api.schemas import ExplainIn, ExplainOut

log = logging.getLogger("xaudit.api")

bp = APIBlueprint("explain", __name__, tag="Explain")

#: Error codes the worker reports for the caller's mistakes (answered 422, not 500).
USER_ERROR_STATUS = 422


def _fmt(shape) -> str:
    return "(N, " + ", ".join("?" if d is None else str(d) for d in shape) + ")"


#: Longest text accepted per instance, in characters.
MAX_TEXT_CHARS = 20_000


def _validate_texts(instances: list, spec: dict[str, Any]) -> np.ndarray:
    """Raw strings for a text model: the model must read strings itself."""
    text = spec.get("text") or {}
    if not all(isinstance(v, str) for v in instances):
        abort(422, "non_numeric", "instances must be all strings (texts) or all lists of "
              "token ids")
    if not text.get("string_input"):
        abort(422, "bad_instances", "this model takes token ids and carries no vocabulary to "
              "read text with; send each instance as a list of token ids")
    longest = max(len(v) for v in instances)
    if longest > MAX_TEXT_CHARS:
        abort(422, "too_many_values", f"an instance has {longest} characters; at most "
              f"{MAX_TEXT_CHARS}")
    return np.array(instances, dtype=str)


def validate_instances(instances: list, spec: dict[str, Any], *, max_rows: int | None = None,
                       what: str = "instances") -> np.ndarray:
    cfg = current_app.config
    max_rows = int(cfg["EXPLAIN_MAX_INSTANCES"]) if max_rows is None else max_rows
    if len(instances) > max_rows:
        abort(422, f"too_many_{what}" if what == "instances" else "bad_background",
              f"{len(instances)} {what}; at most {max_rows} per request")
    text = spec.get("text") if spec.get("input_kind") == "text" else None
    if text and any(isinstance(v, str) for v in instances):
        return _validate_texts(instances, spec)
    limits.check_numeric_rows(instances)
    try:
        arr = np.asarray(instances, dtype=np.float64)
    except (ValueError, TypeError, OverflowError) as exc:
        text = str(exc)
        if "inhomogeneous" in text or "sequence" in text:
            abort(422, "bad_shape", f"{what} are ragged: every row must have the same shape")
        abort(422, "non_numeric", f"{what} must hold numbers only")
    if arr.size > int(cfg["EXPLAIN_MAX_VALUES"]):
        abort(422, "too_many_values",
              f"{arr.size} values; at most {cfg['EXPLAIN_MAX_VALUES']} per request")
    if not np.all(np.isfinite(arr)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        abort(422, "non_finite", f"{what} contain NaN or Inf (first at index {bad})")
    want = spec.get("input_shape")
    if text and text.get("sequence_length"):
        # a text model is explained from token ids (N, T), also when it reads strings
        want = [int(text["sequence_length"])]
        vocab = int(text.get("vocab_size") or 0)
        if arr.ndim == 2 and arr.shape[1] == want[0] and (
                np.any(arr != np.round(arr)) or arr.min() < 0
                or (vocab and arr.max() >= vocab)):
            abort(422, "bad_instances", f"token ids must be integers in [0, {vocab - 1}] "
                  "for this model's vocabulary")
    if want is not None:
        want = [None if d is None else int(d) for d in want]
        got = list(arr.shape[1:])
        if arr.ndim != len(want) + 1 or any(
                w is not None and g != w for g, w in zip(got, want, strict=False)):
            abort(422, "bad_shape",
                  f"{what} must have shape {_fmt(want)} for this model; got "
                  f"{tuple(arr.shape)}")
    return arr


def validate_method_and_options(method: str, options: dict[str, Any], target: Any,
                                n_rows: int, spec: dict[str, Any]) -> None:
    from explain.attributions import METHODS, method_info
    from explain.attributions.registry import COMMON_OPTIONS
    from explain.errors import InputError

    if method not in METHODS:
        abort(422, "unknown_method",
              f"unknown method {method[:64]!r}; known methods: {', '.join(METHODS)}")
    if spec.get("input_kind") == "text":
        from explain.attributions.tokens import TOKEN_OPTIONS

        if method not in TOKEN_OPTIONS:
            abort(422, "unknown_method", f"{method} does not apply to text models; use one "
                  f"of {', '.join(sorted(TOKEN_OPTIONS))}")
        allowed = set(TOKEN_OPTIONS[method]) | COMMON_OPTIONS
        unknown = sorted(set(options) - allowed)
        if unknown:
            abort(422, "bad_options",
                  f"unknown option(s) {unknown[:5]} for {method}; allowed: {sorted(allowed)}")
    else:
        # The same check explain() runs in the worker: the method's registration.
        try:
            method_info(method).validate(options)
        except InputError as exc:
            abort(422, "bad_options", str(exc)[:500])
    limits.check_option_types(options, int(current_app.config["EXPLAIN_MAX_OPTION_INT"]))
    width = None
    outputs = spec.get("outputs") or []
    if outputs and isinstance(outputs[0], dict):
        width = outputs[0].get("width")
    if target is None:
        return
    targets = [target] if not isinstance(target, list) else target
    if isinstance(target, list) and len(target) != n_rows:
        abort(422, "bad_target", f"target must be one int per instance ({n_rows})")
    for t in targets:
        if isinstance(t, bool) or not isinstance(t, int):
            abort(422, "bad_target", "target must be null, an int, or a list of ints")
        if t < 0 or (width is not None and "output" not in options and t >= int(width)):
            abort(422, "bad_target",
                  f"target {t} is out of range for an output of width {width}")


#: Most background rows a caller may send with one request.
MAX_BACKGROUND_ROWS = 256


def background_source(model_row: db.ModelRow, method: str, options: dict[str, Any],
                      background: list | None, spec: dict[str, Any]) -> dict[str, Any]:
    """Where model-agnostic SHAP takes its background from, as stored on the job.

    SHAP values are measured against a background from the model's data. Drawn from the
    submitted rows (the engine's default when it has nothing else), one row yields all
    zeros, and a few rows yield values about the wrong reference. So, in this order: the
    rows the caller sends (``background``), the background sample stored with the model
    at upload, or the model's latest audited dataset; with none, the request is refused
    (422 ``no_background``) rather than answered wrong. ``background_source`` on the job
    names the one used, and the answer reports it.
    """
    from explain.attributions import METHODS, method_info

    if (method not in METHODS or not method_info(method).data_background
            or spec.get("input_kind") == "text"):
        return {}
    in_options = options.pop("background", None)
    if in_options is not None:
        if not isinstance(in_options, list):
            abort(422, "bad_options",
                  "options.background must be rows from the model's data (a list shaped "
                  "like instances); a number would sample the submitted instances")
        background = in_options if background is None else background
    if background is not None:
        rows = validate_instances(background, spec, max_rows=MAX_BACKGROUND_ROWS,
                                  what="background rows")
        return {"background": rows.tolist(), "background_source": "request"}
    if model_row.background_key:
        return {"background_source": "model"}
    audit = db.session().scalars(
        db.scoped(db.Audit, model_row.tenant_id)
        .where(db.Audit.model_id == model_row.id, db.Audit.status == "succeeded")
        .order_by(db.Audit.created_at.desc())).first()
    if audit is not None:
        return {"background_dataset_id": audit.dataset_id, "background_source": "dataset"}
    abort(422, "no_background",
          "model-agnostic SHAP needs background rows from the model's data: send "
          "'background' (rows shaped like instances, e.g. 50 training rows), upload the "
          "model with a background file, or audit this model on a dataset first (its "
          "latest audited dataset is then used)")


def job_json(job: db.ExplainJob) -> dict[str, Any]:
    body: dict[str, Any] = {
        "job_id": job.id,
        "status": job.status,
        "job_url": url_for("explain.get_job", job_id=job.id),
        "method": (job.request or {}).get("method"),
    }
    if job.status == "succeeded" and job.result:
        body.update(job.result)
    if job.status == "failed":
        body["error"] = {"code": job.error_code or "explain_failed", "message": job.error}
    return body


@bp.post("/explain")
@bp.auth_required(auth)
@bp.input(ExplainIn, location="json")
@bp.output(ExplainOut)
@bp.doc(summary="Attributions for a few instances, computed on a worker",
        responses={200: "done: attributions, prediction, completeness gap",
                   202: "still running: poll job_url",
                   404: "unknown model",
                   422: "invalid instances, method, options or target",
                   503: "the task queue is unavailable"})
def explain(json_data):
    model_row = get_model_or_404(json_data["model_id"])
    spec = model_row.spec or {}
    arr = validate_instances(json_data["instances"], spec)
    method = json_data["method"]
    options = json_data["options"]
    target = json_data["target"]
    options = dict(options)
    source = background_source(model_row, method, options, json_data.get("background"),
                               spec)
    validate_method_and_options(method, options, target, len(arr), spec)
    limits.check_explain_budget(spec, method, len(arr), options)

    session = db.session()
    limits.check_tenant_queue(session, current_tenant_id(), "explain")
    job = db.ExplainJob(tenant_id=current_tenant_id(), model_id=model_row.id, status="queued",
                        request={"instances": arr.tolist(), "method": method,
                                 "target": target, "options": options, **source})
    session.add(job)
    session.commit()
    celery = current_app.extensions["celery"]
    try:
        # No Celery result: the worker wakes this request through api.jobwait.
        send_task(celery, "xaudit.explain", [job.id], task_id=f"explain-{job.id}",
                  ignore_result=True)
    except Exception as exc:
        log.error("could not enqueue explain job %s: %s", job.id, exc)
        job.status, job.error_code = "failed", "broker_unavailable"
        job.error = "the task queue is unavailable"
        session.commit()
        abort(503, "broker_unavailable", "the task queue is unavailable; try again later")

    def finished() -> bool:
        session.commit()  # a new transaction sees the worker's commit (SQLite snapshots)
        session.refresh(job)
        return job.status in ("succeeded", "failed")

    jobwait.wait_done(current_app.config, job.id,
                      float(current_app.config["EXPLAIN_TIMEOUT"]), finished)
    body = job_json(job)
    if job.status == "succeeded":
        return body, 200
    if job.status == "failed":
        status = 500 if job.error_code == "internal_error" else USER_ERROR_STATUS
        abort(status, job.error_code or "explain_failed", job.error or "explain failed")
    return body, 202, {"Location": body["job_url"]}


@bp.get("/explain/jobs/<job_id>")
@bp.auth_required(auth)
@bp.output(ExplainOut)
@bp.doc(summary="An explain job: its status, and its result once done",
        responses={404: "not found"})
def get_job(job_id: str):
    job = db.get_owned(db.ExplainJob, job_id, current_tenant_id())
    if job is None:
        abort(404, "not_found", f"no explain job with id {job_id!r}")
    _resend_if_lost(job)
    return job_json(job)


def _resend_if_lost(job: db.ExplainJob) -> None:
    """Send a lost job's task again: queued past twice the wait (the broker may have lost
    its message), or running on a worker whose heartbeat stopped. One compare-and-set on
    the row decides, so many polling clients and API processes send it once per period,
    with the embedded broker as with Redis (api/explain_jobs.py)."""
    from api import explain_jobs as claims

    cfg = current_app.config
    action = claims.recover_explain(
        job, resend_after=claims.resend_period(cfg),
        stale_after=float(cfg.get("EXPLAIN_STALE_AFTER", claims.DEFAULT_STALE_AFTER)))
    if action == "resend" and claims.send_explain(current_app.extensions["celery"], job.id):
        log.info("re-sent explain job %s", job.id)
    if action is not None:
        db.session().refresh(job)
