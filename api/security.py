"""Response headers: a Content-Security-Policy on every HTML response.

Reports are self-contained (inline CSS/JS, ``data:`` images), so the policy forbids every
network load while allowing inline content. A view that needs a different policy (for
instance a page that calls the API with ``fetch``) sets its own header; it is kept.
"""

from __future__ import annotations

from flask import Flask, Response


def init_app(app: Flask) -> None:
    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy",
                                        app.config["CONTENT_SECURITY_POLICY"])
            response.headers.setdefault("Referrer-Policy", "no-referrer")
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response
