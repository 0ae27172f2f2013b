"""One error shape for every 4xx/5xx: ``{"error": {"code": ..., "message": ...}}``.

apiflask routes every HTTP error (werkzeug's 404/405/413, validation errors, auth
errors, ``abort``) through one error processor; :class:`explain.errors.XauditError`
(model intake and data refusals) maps to its own status and code.
"""

from __future__ import annotations

import logging
from typing import Any

from apiflask import APIFlask, HTTPError
from apiflask import abort as _abort

from explain.errors import XauditError

log = logging.getLogger("xaudit.api")

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}

MESSAGES = {
    401: "a valid API key is required: send 'Authorization: Bearer <key>'",
    404: "not found",
    405: "method not allowed on this URL",
    413: "the request body is larger than this server accepts",
}


def error_body(status: int, code: str, message: str, detail: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if detail:
        err["detail"] = detail
    return {"error": err}


def abort(status: int, code: str, message: str, detail: dict[str, Any] | None = None) -> None:
    """Stop the request with a JSON error (never returns); ``detail`` (422 only) is sent
    as ``error.detail``."""
    _abort(status, message, detail=detail, extra_data={"code": code})


def _validation_message(detail: Any) -> str:
    """``json.instances: Not a valid list.`` from webargs' nested error dict."""
    parts: list[str] = []

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        elif isinstance(node, (list, tuple)):
            if all(isinstance(v, str) for v in node):
                parts.append(f"{prefix}: {' '.join(node)}")
            else:
                for v in node:
                    walk(prefix, v)
        else:
            parts.append(f"{prefix}: {node}")

    walk("", detail)
    return "invalid request: " + "; ".join(parts[:10]) if parts else "invalid request"


def init_app(app: APIFlask) -> None:
    @app.error_processor
    def _http_error(error: HTTPError):
        status = error.status_code
        code = (error.extra_data or {}).get("code") or CODES.get(status, "error")
        if status == 422 and error.detail and "code" not in (error.extra_data or {}):
            message = _validation_message(error.detail)
        elif status in MESSAGES and error.message in (None, "", _reason(status)):
            message = MESSAGES[status]
        else:
            message = error.message or _reason(status)
        detail = error.detail if status == 422 else None
        return error_body(status, code, message, detail), status, error.headers

    @app.errorhandler(XauditError)
    def _xaudit_error(exc: XauditError):
        status = exc.status if 400 <= int(exc.status) < 600 else 400
        return error_body(status, exc.code, exc.message), status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        # Anything reaching here is a bug in xaudit, not the caller's fault.
        log.exception("unhandled error")
        return error_body(500, "internal_error", "internal error; see the server log"), 500


def _reason(status: int) -> str:
    from werkzeug.http import HTTP_STATUS_CODES

    return HTTP_STATUS_CODES.get(status, "error")
