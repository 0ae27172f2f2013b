"""Per-request limits the API applies before anything is queued: strict types of the
numbers a request carries, and the work budget of :mod:`explain.budget`.

A request whose estimated work is over the budget is refused 422 ``over_budget`` with the
estimate and the limit, so it never occupies a worker. Models stored before the intake
recorded their cost (``spec["cost"]``) skip the estimate; their workers still size
batches from the model they load.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from api.errors import abort
from explain.budget import BudgetError, ModelCost, check_audit, check_request

#: Options that are switches: JSON true/false only (``"yes"``, 1 are refused).
BOOL_OPTIONS = frozenset({"logits", "multiply_by_input", "absolute", "normalize"})
#: Options that are counts or seeds: JSON integers only (not ``"12"``, ``12.0``, ``true``).
INT_OPTIONS = frozenset({"steps", "baseline_samples", "samples", "seed", "batch_size",
                         "output"})
#: Options that are numbers (int or float), never strings or booleans.
NUMBER_OPTIONS = frozenset({"noise", "fill", "blur_sigma"})


def _is_number(v: Any) -> bool:
    return type(v) in (int, float)


def check_option_types(options: Mapping[str, Any], cap: int) -> None:
    """422 ``bad_options`` for an option of the wrong JSON type or out of range."""
    for key, value in options.items():
        if key in BOOL_OPTIONS and not isinstance(value, bool):
            abort(422, "bad_options", f"option {key!r} must be true or false")
        if key in INT_OPTIONS and value is not None and type(value) is not int:
            abort(422, "bad_options", f"option {key!r} must be an integer")
        if key in NUMBER_OPTIONS and value is not None and not _is_number(value):
            abort(422, "bad_options", f"option {key!r} must be a number")
        if _is_number(value) and (not math.isfinite(value) or abs(value) > cap):
            abort(422, "bad_options", f"option {key!r} must be finite and at most {cap}")
        if key in INT_OPTIONS and type(value) is int and value < 0:
            abort(422, "bad_options", f"option {key!r} must not be negative")


def check_numeric_rows(instances: list) -> None:
    """422 ``non_numeric`` unless every leaf is a JSON number (not a string or boolean;
    numpy would read ``"1.5"`` and ``true`` as numbers)."""
    stack = [instances]
    while stack:
        node = stack.pop()
        for v in node:
            t = type(v)
            if t is list:
                stack.append(v)
            elif t is not int and t is not float and v is not None:
                abort(422, "non_numeric", "instances must hold numbers only (not strings "
                      "or booleans)")


def _cost(spec: Mapping[str, Any]) -> ModelCost | None:
    raw = spec.get("cost")
    if not isinstance(raw, Mapping):
        return None
    try:
        return ModelCost.from_dict(raw)
    except (KeyError, TypeError, ValueError):
        return None


def _refuse(exc: BudgetError) -> None:
    abort(422, "over_budget", exc.message)


def check_explain_budget(spec: Mapping[str, Any], method: str, rows: int,
                         options: Mapping[str, Any]) -> None:
    cost = _cost(spec)
    if cost is None:
        return
    try:
        check_request(cost, method, rows, options, _budget())
    except BudgetError as exc:
        _refuse(exc)


def check_audit_budget(spec: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """422 ``bad_config`` for a config the audit would refuse, ``over_budget`` for one
    over the audit budget."""
    from explain.audit import DEFAULT_METHODS, AuditConfig

    try:
        cfg = AuditConfig.from_dict(config)
    except (TypeError, ValueError) as exc:
        abort(422, "bad_config", str(exc)[:300])
        return
    cost = _cost(spec)
    if cost is None:
        return
    methods = cfg.methods or DEFAULT_METHODS.get(str(spec.get("input_kind")),
                                                 DEFAULT_METHODS["tabular"])
    try:
        check_audit(cost, config, methods, _budget())
    except BudgetError as exc:
        _refuse(exc)


# --------------------------------------------------------------------------- per-tenant caps


def _too_many(message: str, retry_after: int) -> None:
    from apiflask import abort as _abort

    _abort(429, message, headers={"Retry-After": str(int(retry_after))},
           extra_data={"code": "too_many_requests"})


def _budget():
    """The work budget of the app's configuration (api.config.budget_policy)."""
    from flask import current_app

    from api.config import budget_policy

    return budget_policy(current_app.config)


def _setting(name: str, default: int) -> int:
    from flask import current_app

    try:
        return int(current_app.config.get(name, default))
    except (TypeError, ValueError):
        return default


def check_tenant_queue(session, tenant_id: str, kind: str) -> None:
    """429 with ``Retry-After`` when the tenant already has too much work waiting.

    ``kind`` is ``audit`` (``MAX_QUEUED_AUDITS`` queued or running audits) or ``explain``
    (``MAX_QUEUED_EXPLAIN`` queued or running explain jobs): one tenant cannot fill the
    queue in front of everybody else.
    """
    from sqlalchemy import func, select

    from api import db

    if kind == "audit":
        model, cap = db.Audit, _setting("MAX_QUEUED_AUDITS", 10)
    else:
        model, cap = db.ExplainJob, _setting("MAX_QUEUED_EXPLAIN", 16)
    waiting = session.scalar(select(func.count()).select_from(model).where(
        model.tenant_id == tenant_id, model.status.in_(("queued", "running"))))
    if waiting >= cap:
        _too_many(f"{waiting} {kind} job(s) of this tenant are already queued or running; "
                  f"at most {cap}: wait for some to finish", 30 if kind == "explain" else 60)


def check_schedule_cap(session, tenant_id: str) -> None:
    """429 when the tenant already has ``MAX_SCHEDULES`` schedules."""
    from sqlalchemy import func, select

    from api import db

    cap = _setting("MAX_SCHEDULES", 50)
    have = session.scalar(select(func.count()).select_from(db.Schedule).where(
        db.Schedule.tenant_id == tenant_id))
    if have >= cap:
        _too_many(f"this tenant has {have} schedules; at most {cap}: delete one first", 3600)
