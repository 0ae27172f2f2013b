"""Signed webhooks for scheduled audits.

When a scheduled audit finishes, :func:`notify` decides from the schedule's
``webhook_on`` whether to tell the tenant, and sends :func:`deliver_webhook` (a Celery
task on the ``default`` queue) with the audit id. The task POSTs a JSON body::

    {"event": "audit.completed", "audit_id": "...", "status": "succeeded",
     "schedule_id": "...", "model": {...}, "dataset": {...},
     "findings": {"total": 3, "by_severity": {"critical": 1, ...}, "top": [...]},
     "verdict": "fail", "drift": {"ndcg": 0.42, "previous_audit_id": "..."} | null,
     "error": null | {"code": "...", "message": "..."},
     "report_url": "https://xaudit.example/api/v1/audits/.../report"}

with these headers:

``X-Xaudit-Timestamp``
    Unix seconds when this attempt was sent.
``X-Xaudit-Signature``
    ``sha256=<hex>``: HMAC-SHA256, keyed with the schedule's ``webhook_secret``, over
    ``<timestamp> + "." + <raw body bytes>``.
``X-Xaudit-Delivery``
    The same for every attempt of one notification (the audit id): receivers use it to
    drop repeats (delivery is at least once).
``X-Xaudit-Event``
    ``audit.completed``, ``audit.critical`` (a critical finding) or ``audit.failed``.

To verify a delivery (see :func:`verify_signature`): recompute the HMAC over the
timestamp header, a dot and the raw body exactly as received (before any JSON parsing),
compare with :func:`hmac.compare_digest`, and refuse timestamps more than a few minutes
from your clock. Signing the timestamp with the body is what stops a captured delivery
from being replayed later.

Deliveries time out after 10 s, never follow redirects (a redirect could point the worker
at an internal address), and are retried with exponential backoff on connection errors,
429 and 5xx answers; any other 4xx is final. ``XAUDIT_WEBHOOK_ALLOWED_HOSTS`` is checked
again at send time, so an operator's tightened list applies to existing schedules too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

from celery import shared_task
from flask import current_app, url_for

from api import db
from api import webhook_policy as _policy
from api.lifecycle import AuditStatus
from api.queue import DEFAULT

log = logging.getLogger("xaudit.webhooks")

SIGNATURE_HEADER = "X-Xaudit-Signature"
TIMESTAMP_HEADER = "X-Xaudit-Timestamp"
DELIVERY_HEADER = "X-Xaudit-Delivery"
EVENT_HEADER = "X-Xaudit-Event"
#: Seconds a receiver should accept between the timestamp and its own clock.
DEFAULT_TOLERANCE = 300
MAX_RETRIES = 8
TIMEOUT = 10.0
TOP_FINDINGS = 5


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``X-Xaudit-Signature`` value for one delivery.

    Parameters
    ----------
    secret
        The schedule's ``webhook_secret``.
    timestamp
        The ``X-Xaudit-Timestamp`` value (Unix seconds).
    body
        The raw request body.

    Returns
    -------
    str
        ``"sha256=" + hex(HMAC-SHA256(secret, f"{timestamp}." + body))``.
    """
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body,
                   hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(secret: str, headers: Any, body: bytes, now: float | None = None,
                     tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """True when a received delivery is authentic and fresh (what a receiver runs).

    Parameters
    ----------
    secret
        The schedule's ``webhook_secret``.
    headers
        The request headers (any mapping with ``.get``).
    body
        The raw request body, exactly as received.
    now
        The receiver's clock (Unix seconds); default: ``time.time()``.
    tolerance
        Largest accepted distance between the timestamp and ``now``, in seconds.
    """
    ts = headers.get(TIMESTAMP_HEADER)
    sent = headers.get(SIGNATURE_HEADER) or ""
    try:
        age = abs((time.time() if now is None else now) - int(ts))
    except (TypeError, ValueError):
        return False
    if age > tolerance:
        return False
    return hmac.compare_digest(signature(secret, ts, body), sent)


# Where webhooks may go is decided in api.webhook_policy (also at creation time).
host_allowed = _policy.host_allowed


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    findings = report.get("findings") or []
    by_severity = {"critical": 0, "warning": 0, "info": 0}
    for f in findings:
        sev = f.get("severity")
        by_severity[sev] = by_severity.get(sev, 0) + 1
    rank = {"critical": 0, "warning": 1, "info": 2}
    top = sorted(findings, key=lambda f: rank.get(f.get("severity"), 3))[:TOP_FINDINGS]
    return {"total": len(findings), "by_severity": by_severity,
            "top": [{"code": f.get("code"), "severity": f.get("severity"),
                     "message": f.get("message")} for f in top]}


def _report(audit: db.Audit) -> dict[str, Any] | None:
    if audit.status != AuditStatus.SUCCEEDED or not audit.report_json_key:
        return None
    try:
        return json.loads(current_app.extensions["xaudit_blobs"].read_bytes(
            audit.report_json_key))
    except (OSError, ValueError):
        log.warning("audit %s: report.json unreadable for its webhook", audit.id)
        return None


def has_critical(report: dict[str, Any] | None) -> bool:
    return any(f.get("severity") == "critical" for f in (report or {}).get("findings") or [])


def should_notify(webhook_on: str | None, status: str, report: dict[str, Any] | None) -> bool:
    """``completion``: every finished run. ``critical``: a critical finding, or a failed
    run (a schedule that cannot audit any more is as urgent as a bad audit)."""
    if status not in (AuditStatus.SUCCEEDED, AuditStatus.FAILED):
        return False
    if webhook_on == "critical":
        return status == AuditStatus.FAILED or has_critical(report)
    return True


def _report_url(audit: db.Audit) -> str | None:
    if audit.status != AuditStatus.SUCCEEDED:
        return None
    # Workers have no request: build the path from the routes, and make it absolute
    # with XAUDIT_PUBLIC_URL when the operator set it.
    public = str(current_app.config.get("PUBLIC_URL") or "").rstrip("/")
    with current_app.test_request_context("/"):
        path = url_for("audits.get_report", audit_id=audit.id)
    return f"{public}{path}" if public else path


def payload(audit: db.Audit, schedule: db.Schedule | None) -> dict[str, Any]:
    """The webhook body for a finished audit (the same for every attempt)."""
    session = db.session()
    report = _report(audit)
    model = session.get(db.ModelRow, audit.model_id)
    dataset = session.get(db.DatasetRow, audit.dataset_id)
    critical = has_critical(report)
    drift = None
    if report and report.get("drift"):
        drift = {"ndcg": report["drift"].get("ndcg"),
                 "previous_audit_id": audit.previous_audit_id}
    return {
        "event": ("audit.failed" if audit.status == AuditStatus.FAILED
                  else "audit.critical" if critical else "audit.completed"),
        "audit_id": audit.id,
        "status": audit.status,
        "schedule_id": audit.schedule_id,
        "model": None if model is None else {"name": model.name, "version": model.version,
                                             "sha256": model.sha256},
        "dataset": None if dataset is None else {"name": dataset.name,
                                                 "version": dataset.version},
        "findings": _summary(report or {}),
        "verdict": ((report or {}).get("verdict") or {}).get("level"),
        "drift": drift,
        "error": (None if audit.status != AuditStatus.FAILED
                  else {"code": audit.error_code or "audit_failed", "message": audit.error}),
        "report_url": _report_url(audit),
        "finished_at": db.iso(audit.finished_at),
        "schedule": None if schedule is None else {"cron": schedule.cron,
                                                   "webhook_on": schedule.webhook_on},
    }


def notify(audit_id: str) -> bool:
    """Send the webhook task for a finished scheduled audit if its schedule wants one.

    Called once per audit, by the run that finished its row (the compare-and-set on the
    status makes that one run). Never raises: a webhook must not undo a finished audit.
    """
    try:
        session = db.session()
        audit = session.get(db.Audit, audit_id)
        if audit is None or not audit.schedule_id:
            return False
        session.refresh(audit)  # the row was finished by a statement outside the session
        schedule = session.get(db.Schedule, audit.schedule_id)
        if schedule is None or not schedule.webhook_url:
            return False
        if not should_notify(schedule.webhook_on, audit.status, _report(audit)):
            return False
        deliver_webhook.apply_async(args=[audit.id], queue=DEFAULT)
        return True
    except Exception:
        log.exception("audit %s: could not send its webhook task", audit_id)
        return False


class _RetryLater(Exception):
    """The receiver was unreachable or answered 429/5xx."""


@shared_task(name="xaudit.webhook", bind=True, max_retries=MAX_RETRIES)
def deliver_webhook(self, audit_id: str) -> dict[str, Any]:
    """POST the signed notification of one finished scheduled audit.

    Retries with exponential backoff (1, 2, 4, ... 60 s) on connection errors, timeouts,
    429 and 5xx; a 2xx ends it, any other answer is final and logged.
    """
    try:
        return _deliver(audit_id)
    except _RetryLater as exc:
        if self.request.retries >= self.max_retries:
            log.warning("audit %s: webhook gave up after %d attempts: %s", audit_id,
                        self.request.retries + 1, exc)
            return {"status": "gave_up", "reason": str(exc)}
        raise self.retry(exc=exc, countdown=min(60, 2 ** self.request.retries)) from exc


def _deliver(audit_id: str) -> dict[str, Any]:
    import requests

    session = db.session()
    audit = session.get(db.Audit, audit_id)
    if audit is None or not audit.schedule_id:
        return {"status": "skipped"}
    schedule = session.get(db.Schedule, audit.schedule_id)
    if schedule is None or not schedule.webhook_url or not schedule.webhook_secret:
        return {"status": "skipped"}  # deleted, or the webhook removed, since the run
    # Checked again now, after resolving the name: the address posted to is the one
    # judged public (a name re-pointed at 127.0.0.1 since creation is refused here).
    try:
        target, address = _policy.resolve_public(
            schedule.webhook_url, _policy.allowed_hosts(current_app.config),
            _policy.allow_private(current_app.config))
    except _policy.WebhookRefused as exc:
        log.warning("schedule %s: webhook not sent: %s", schedule.id, exc.message)
        return {"status": "refused", "reason": exc.message}
    except OSError as exc:
        raise _RetryLater(f"cannot resolve the webhook host: {exc}") from exc
    body_obj = payload(audit, schedule)
    body = json.dumps(body_obj, sort_keys=True, separators=(",", ":")).encode("utf-8")
    ts = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "xaudit-webhook/1",
        TIMESTAMP_HEADER: ts,
        SIGNATURE_HEADER: signature(schedule.webhook_secret, ts, body),
        DELIVERY_HEADER: f"{audit.id}",
        EVENT_HEADER: body_obj["event"],
    }
    try:
        resp = _post_pinned(target, address, body, headers)
    except requests.RequestException as exc:
        raise _RetryLater(f"{type(exc).__name__}: {exc}") from exc
    if resp.status_code == 429 or resp.status_code >= 500:
        raise _RetryLater(f"HTTP {resp.status_code}")
    if not 200 <= resp.status_code < 300:
        log.warning("schedule %s: webhook answered HTTP %d; not retried", schedule.id,
                    resp.status_code)
        return {"status": "rejected", "http_status": resp.status_code}
    return {"status": "delivered", "http_status": resp.status_code}


def _post_pinned(target, address: str, body: bytes, headers: dict[str, str]):
    """POST to ``address`` (already checked) while speaking to ``target.host``: the Host
    header, TLS SNI and certificate check all use the name, so no second DNS lookup can
    send the request elsewhere."""
    from urllib.parse import urlsplit, urlunsplit

    import requests
    from requests.adapters import HTTPAdapter

    parts = urlsplit(target.url)
    ip_host = f"[{address}]" if ":" in address else address
    pinned = urlunsplit((parts.scheme, f"{ip_host}:{target.port}", parts.path or "/",
                         parts.query, ""))
    default_port = 443 if target.scheme == "https" else 80
    host_header = target.host if target.port == default_port else \
        f"{target.host}:{target.port}"

    class _Pinned(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            kwargs["server_hostname"] = target.host
            kwargs["assert_hostname"] = target.host
            super().init_poolmanager(*args, **kwargs)

    with requests.Session() as session:
        session.trust_env = False  # no proxy from the environment: the address is checked
        if target.scheme == "https":
            session.mount("https://", _Pinned())
        return session.post(pinned, data=body, headers={**headers, "Host": host_header},
                            timeout=TIMEOUT, allow_redirects=False)
