"""``/api/v1/audits``: start an audit, follow it, fetch its report."""

from __future__ import annotations

import json
import logging

from apiflask import APIBlueprint
from flask import Response, current_app, url_for

from api import db, limits, services
from api.auth import auth, current_tenant_id
from api.config import policy_environ
from api.errors import abort
from api.lifecycle import AuditStatus
from api.resources.datasets import get_dataset_or_404
from api.resources.models import get_model_or_404
from api.schemas import AuditIn, AuditListOut, AuditOut, StatusQuery
from explain.errors import DataError

log = logging.getLogger("xaudit.api")

bp = APIBlueprint("audits", __name__, tag="Audits")

MAX_CONFIG_BYTES = 16 * 1024


def get_audit_or_404(audit_id: str) -> db.Audit:
    row = db.get_owned(db.Audit, audit_id, current_tenant_id())
    if row is None:
        abort(404, "not_found", f"no audit with id {audit_id!r}")
    return row


def validate_config(config: dict) -> dict:
    """Refuse at the door (422) every config the worker would refuse.

    The same parse as the worker's, the CLI's and ``/schedules``':
    :meth:`explain.audit.AuditConfig.from_dict`, whose errors are
    :class:`~explain.errors.ConfigError` (``bad_config``, ``unknown_method``), answered
    422 by the API's error handler. Only the size bound is the API's own.
    """
    from explain.audit import AuditConfig

    if len(json.dumps(config)) > MAX_CONFIG_BYTES:
        abort(422, "bad_config", f"config is larger than {MAX_CONFIG_BYTES} bytes")
    AuditConfig.from_dict(config)
    return config


def check_data_fits_model(model_row: db.ModelRow, dataset_row: db.DatasetRow,
                          config: dict | None = None) -> None:
    """Load the dataset and check it against the model's spec and the audit's sensitive
    attributes (422 when it cannot fit)."""
    from explain.datasets import load_data_file, sensitive_to_load, validate_for_model
    from explain.fairness import check_sensitive_data
    from explain.modelio import ModelSpec

    config = config or {}
    try:
        spec = ModelSpec.from_dict(model_row.spec)
    except ValueError:
        return  # a spec from an older intake: the worker validates instead
    path = services.blobs().path(dataset_row.blob_key)
    data = load_data_file(path, label=dataset_row.label, sensitive=sensitive_to_load(
        path, (dataset_row.spec or {}).get("sensitive"), config.get("sensitive")),
        environ=policy_environ(current_app.config))
    validate_for_model(data, spec)
    check_sensitive_data(data, config.get("sensitive"), config.get("thresholds"),
                         config.get("fairness"))


@bp.post("/audits")
@bp.auth_required(auth)
@bp.input(AuditIn, location="json")
@bp.output(AuditOut, status_code=202)
@bp.doc(summary="Audit a model on a dataset",
        description="Checks that the dataset fits the model, stores a queued audit and "
                    "enqueues it. Follow `status_url`; the report is at `report_url` once "
                    "the status is `succeeded`.",
        responses={202: "queued", 404: "unknown model, dataset or previous audit",
                   422: "invalid request or data that does not fit the model",
                   503: "the task queue is unavailable"})
def create_audit(json_data):
    model_row = get_model_or_404(json_data["model_id"])
    dataset_row = get_dataset_or_404(json_data["dataset_id"])
    config = validate_config(json_data["config"])
    limits.check_audit_budget(model_row.spec or {}, config)
    previous_id = json_data.get("previous_audit_id")
    if previous_id is not None:
        previous = get_audit_or_404(previous_id)
        if previous.status != AuditStatus.SUCCEEDED:
            abort(422, "previous_not_succeeded",
                  "previous_audit_id must name a succeeded audit (drift needs its results)")
    try:
        check_data_fits_model(model_row, dataset_row, config)
    except DataError:
        raise
    session = db.session()
    limits.check_tenant_queue(session, current_tenant_id(), "audit")
    audit = services.create_audit(session, current_tenant_id(), model_row, dataset_row,
                                  config, previous_audit_id=previous_id)
    if not services.enqueue_audit(current_app.extensions["celery"], session, audit):
        abort(503, "broker_unavailable", "the task queue is unavailable; try again later")
    body = services.audit_json(audit)
    return body, 202, {"Location": url_for("audits.get_audit", audit_id=audit.id)}


@bp.get("/audits")
@bp.auth_required(auth)
@bp.input(StatusQuery, location="query")
@bp.output(AuditListOut)
@bp.doc(summary="List the tenant's audits (newest first)")
def list_audits(query_data):
    stmt = db.scoped(db.Audit, current_tenant_id())
    if query_data.get("status"):
        stmt = stmt.where(db.Audit.status == query_data["status"])
    stmt = stmt.order_by(db.Audit.created_at.desc())
    rows = db.session().scalars(stmt.limit(query_data["limit"]).offset(query_data["offset"]))
    return {"items": [services.audit_json(a) for a in rows]}


@bp.get("/audits/<audit_id>")
@bp.auth_required(auth)
@bp.output(AuditOut)
@bp.doc(summary="An audit's status, progress, error and report links",
        responses={404: "not found"})
def get_audit(audit_id: str):
    return services.audit_json(get_audit_or_404(audit_id))


def _report_blob(audit_id: str, attr: str) -> bytes:
    audit = get_audit_or_404(audit_id)
    key = getattr(audit, attr)
    if audit.status != AuditStatus.SUCCEEDED or not key:
        abort(409, "report_not_ready",
              f"the audit is {audit.status}; its report exists once it has succeeded")
    try:
        return services.blobs().read_bytes(key)
    except FileNotFoundError:
        log.error("audit %s: report blob %s is missing", audit.id, key)
        abort(410, "report_missing", "the report file is missing from the blob store")
    return b""  # unreachable: abort raises


@bp.get("/audits/<audit_id>/report")
@bp.auth_required(auth)
@bp.doc(summary="The audit report (self-contained HTML)",
        responses={200: {"description": "HTML report", "content": {"text/html": {}}},
                   404: "not found", 409: "not finished"})
def get_report(audit_id: str):
    from reports import CSP

    body = _report_blob(audit_id, "report_html_key")
    # The report's own policy: no scripts, nothing from the network.
    return Response(body, mimetype="text/html", headers={"Content-Security-Policy": CSP})


@bp.get("/audits/<audit_id>/report.json")
@bp.auth_required(auth)
@bp.doc(summary="The audit report as JSON (report.json)",
        responses={200: {"description": "report.json", "content": {"application/json": {}}},
                   404: "not found", 409: "not finished"})
def get_report_json(audit_id: str):
    body = _report_blob(audit_id, "report_json_key")
    return Response(body, mimetype="application/json")
