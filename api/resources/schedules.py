"""``/api/v1/schedules``: recurring audits (a cron expression, a model name, a dataset
name). The beat process (:mod:`worker.beat`) dispatches the due ones."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from apiflask import APIBlueprint
from croniter import croniter

from api import db
from api.auth import auth, current_tenant_id
from api.errors import abort
from api.resources.audits import validate_config
from api.schemas import ListQuery, ScheduleIn, ScheduleListOut, ScheduleOut

bp = APIBlueprint("schedules", __name__, tag="Schedules")


def next_run(cron: str, after: datetime) -> datetime:
    return croniter(cron, after).get_next(datetime)


def validate_cron(cron: str) -> str:
    cron = " ".join(cron.split())
    # Five fields only: seconds-level schedules would let one tenant flood the workers.
    if len(cron.split(" ")) != 5 or not croniter.is_valid(cron):
        abort(422, "bad_cron",
              "cron must be a valid five-field expression (minute hour day month weekday)")
    return cron


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
    }


@bp.post("/schedules")
@bp.auth_required(auth)
@bp.input(ScheduleIn, location="json")
@bp.output(ScheduleOut, status_code=201)
@bp.doc(summary="Create a recurring audit",
        description="At each cron time the latest version of `model_name` is audited on "
                    "the latest version of `dataset_name`, with drift against the "
                    "schedule's previous successful audit.",
        responses={201: "created", 422: "invalid cron or config"})
def create_schedule(json_data):
    cron = validate_cron(json_data["cron"])
    config = validate_config(json_data["config"])
    row = db.Schedule(tenant_id=current_tenant_id(), cron=cron,
                      model_name=json_data["model_name"],
                      dataset_name=json_data["dataset_name"], config=config,
                      enabled=json_data["enabled"], next_run_at=next_run(cron, db.utcnow()))
    session = db.session()
    session.add(row)
    session.commit()
    return schedule_json(row), 201


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
@bp.output(ScheduleOut)
@bp.doc(summary="One schedule", responses={404: "not found"})
def get_schedule(schedule_id: str):
    row = db.get_owned(db.Schedule, schedule_id, current_tenant_id())
    if row is None:
        abort(404, "not_found", f"no schedule with id {schedule_id!r}")
    return schedule_json(row)


@bp.delete("/schedules/<schedule_id>")
@bp.auth_required(auth)
@bp.output({}, status_code=204)
@bp.doc(summary="Delete a schedule (its past audits are kept)",
        responses={204: "deleted", 404: "not found"})
def delete_schedule(schedule_id: str):
    row = db.get_owned(db.Schedule, schedule_id, current_tenant_id())
    if row is None:
        abort(404, "not_found", f"no schedule with id {schedule_id!r}")
    session = db.session()
    session.delete(row)
    session.commit()
    return "", 204
