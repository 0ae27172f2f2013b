"""``/api/v1/schedules``: recurring audits (a cron expression, a model name, a dataset
name). The beat process (:mod:`worker.beat`) dispatches the due ones.

Each run audits the *latest* version of ``model_name`` on the *latest* version of
``dataset_name`` and measures drift against the schedule's previous successful audit.
Cron expressions have five fields (minute hour day-of-month month day-of-week) and are
read in UTC.

An optional webhook is POSTed when a run finishes (``webhook_on: completion``) or only
when it has a critical finding or fails (``webhook_on: critical``). Each delivery is
signed; see :mod:`worker.webhooks` for the headers and how to verify them. Operators can
restrict the hosts webhooks may reach with ``XAUDIT_WEBHOOK_ALLOWED_HOSTS`` (a
comma-separated list of host names; ``*.example.com`` allows the subdomains).
"""

from __future__ import annotations

import secrets
from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import Boolean, Dict, String
from apiflask.validators import Length, OneOf
from flask import current_app

from api import db, limits, webhook_policy
from api.auth import auth, current_tenant_id
from api.cron import next_run, validate_cron
from api.errors import abort
from api.resources.audits import check_data_fits_model, validate_config
from api.schemas import ListQuery, Name, ScheduleListOut

bp = APIBlueprint("schedules", __name__, tag="Schedules")

class ScheduleCreateIn(Schema):
    cron = String(required=True, validate=Length(min=1, max=128),
                  metadata={"description": "Five fields (minute hour day month weekday), "
                                           "read in UTC, e.g. `0 3 * * *`."})
    model_name = Name(required=True, metadata={"description": "An uploaded model's name."})
    dataset_name = Name(required=True,
                        metadata={"description": "An uploaded dataset's name."})
    config = Dict(keys=String(), load_default=dict,
                  metadata={"description": "The audit config, as for `POST /audits`."})
    enabled = Boolean(load_default=True)
    webhook_url = String(load_default=None, allow_none=True, validate=Length(min=1, max=2048),
                         metadata={"description": "http(s) URL POSTed when a run finishes."})
    webhook_on = String(load_default="completion", validate=OneOf(db.WEBHOOK_EVENTS),
                        metadata={"description": "`completion`: every run; `critical`: "
                                                 "runs with a critical finding, or failed."})


class ScheduleOutSchema(Schema):
    id = String()
    cron = String()
    model_name = String()
    dataset_name = String()
    config = Dict()
    enabled = Boolean()
    next_run_at = String()
    last_run_at = String(allow_none=True)
    created_at = String()
    webhook_url = String(allow_none=True)
    webhook_on = String(allow_none=True)


class ScheduleCreatedOut(ScheduleOutSchema):
    webhook_secret = String(
        allow_none=True,
        metadata={"description": "Signs the webhook deliveries. Shown only in this answer."})


def allowed_hosts() -> list[str]:
    """``XAUDIT_WEBHOOK_ALLOWED_HOSTS`` as a list (empty: any host)."""
    return webhook_policy.allowed_hosts(current_app.config)


def allow_private_webhooks() -> bool:
    """``XAUDIT_WEBHOOK_ALLOW_PRIVATE``: webhooks may go to private and loopback hosts."""
    return webhook_policy.allow_private(current_app.config)


def validate_webhook_url(url: str) -> str:
    """An http(s) URL to a public host (and an allowed one, when the operator set a list);
    see :mod:`api.webhook_policy`."""
    from api.webhook_policy import WebhookRefused, check_url

    url = url.strip()
    try:
        check_url(url, allowed_hosts(), allow_private_webhooks())
    except WebhookRefused as exc:
        abort(422, exc.code, exc.message)
    return url


def validate_audit_config(config: dict) -> dict:
    """The checks of ``POST /audits`` (:func:`api.resources.audits.validate_config`).

    A one-off audit with a bad option fails once, visibly; a schedule would fail at every
    run, possibly at night, so the whole config is checked when the schedule is created.
    """
    return validate_config(config)


def _latest_or_404(model: type[db.Base], name: str, what: str):
    from api import services

    row = services.latest(db.session(), model, current_tenant_id(), name)
    if row is None:
        abort(404, f"{what}_not_found",
              f"no {what} named {name!r}: upload one before scheduling its audits")
    return row


def get_schedule_or_404(schedule_id: str) -> db.Schedule:
    row = db.get_owned(db.Schedule, schedule_id, current_tenant_id())
    if row is None:
        abort(404, "not_found", f"no schedule with id {schedule_id!r}")
    return row


def schedule_json(row: db.Schedule) -> dict[str, Any]:
    return {
        "id": row.id,
        "cron": row.cron,
        "model_name": row.model_name,
        "dataset_name": row.dataset_name,
        "config": row.config or {},
        "enabled": row.enabled,
        "next_run_at": db.iso(row.next_run_at),
        "last_run_at": db.iso(row.last_run_at),
        "created_at": db.iso(row.created_at),
        "webhook_url": row.webhook_url,
        "webhook_on": row.webhook_on if row.webhook_url else None,
    }


@bp.post("/schedules")
@bp.auth_required(auth)
@bp.input(ScheduleCreateIn, location="json")
@bp.output(ScheduleCreatedOut, status_code=201)
@bp.doc(summary="Create a recurring audit",
        description="At each cron time (five fields, UTC) the latest version of "
                    "`model_name` is audited on the latest version of `dataset_name`, with "
                    "drift against the schedule's previous successful audit. Both names "
                    "must already exist. With `webhook_url`, each run (or each run with a "
                    "critical finding) is POSTed there, signed with HMAC-SHA256: the "
                    "`webhook_secret` in this answer is shown only once.",
        responses={201: "created", 404: "no model or dataset with that name",
                   422: "invalid cron, config or webhook URL, or data that does not fit "
                        "the model"})
def create_schedule(json_data):
    cron = validate_cron(json_data["cron"])
    config = validate_audit_config(json_data["config"])
    webhook_url = json_data.get("webhook_url")
    if webhook_url is not None:
        webhook_url = validate_webhook_url(webhook_url)
    model_row = _latest_or_404(db.ModelRow, json_data["model_name"], "model")
    dataset_row = _latest_or_404(db.DatasetRow, json_data["dataset_name"], "dataset")
    # The same check as POST /audits, on today's latest versions: a schedule that could
    # never run is refused now rather than failing at every cron time.
    check_data_fits_model(model_row, dataset_row, config)
    limits.check_audit_budget(model_row.spec or {}, config)
    limits.check_schedule_cap(db.session(), current_tenant_id())
    secret = f"whsec_{secrets.token_hex(32)}" if webhook_url else None
    row = db.Schedule(tenant_id=current_tenant_id(), cron=cron,
                      model_name=json_data["model_name"],
                      dataset_name=json_data["dataset_name"], config=config,
                      enabled=json_data["enabled"], next_run_at=next_run(cron, db.utcnow()),
                      webhook_url=webhook_url,
                      webhook_on=json_data["webhook_on"] if webhook_url else None,
                      webhook_secret=secret)
    session = db.session()
    session.add(row)
    session.commit()
    return {**schedule_json(row), "webhook_secret": secret}, 201


@bp.get("/schedules")
@bp.auth_required(auth)
@bp.input(ListQuery, location="query")
@bp.output(ScheduleListOut)
@bp.doc(summary="List the tenant's schedules")
def list_schedules(query_data):
    stmt = db.scoped(db.Schedule, current_tenant_id()).order_by(db.Schedule.created_at.desc())
    rows = db.session().scalars(stmt.limit(query_data["limit"]).offset(query_data["offset"]))
    return {"items": [schedule_json(r) for r in rows]}


@bp.get("/schedules/<schedule_id>")
@bp.auth_required(auth)
@bp.output(ScheduleOutSchema)
@bp.doc(summary="One schedule", responses={404: "not found"})
def get_schedule(schedule_id: str):
    return schedule_json(get_schedule_or_404(schedule_id))


@bp.delete("/schedules/<schedule_id>")
@bp.auth_required(auth)
@bp.output({}, status_code=204)
@bp.doc(summary="Delete a schedule (its past audits are kept)",
        responses={204: "deleted", 404: "not found"})
def delete_schedule(schedule_id: str):
    row = get_schedule_or_404(schedule_id)
    session = db.session()
    session.delete(row)
    session.commit()
    return "", 204
