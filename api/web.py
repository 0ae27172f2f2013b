"""The web page: paste an API key, upload a model and a dataset, start an audit, watch it,
open the report.

The page is a thin client of the REST API (``/api/v1``): the server renders a static shell
and ``/static/web.js`` does the calls with the key the user pasted, which stays in the
tab's ``sessionStorage``. Nothing is loaded from another origin.

Content-Security-Policy: scripts only from this origin (no inline script, no inline event
handlers), ``fetch`` only to this origin. Inline *styles* and ``data:`` images are allowed
because the report is opened from the page as a ``blob:`` document, and a ``blob:``
document inherits the policy of the page that made it; the report is self-contained
(inline CSS, ``data:`` figures) and needs exactly that, and nothing more.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, render_template

bp = Blueprint("web", __name__)

#: The page's policy (see the module docstring for why styles may be inline).
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


@bp.get("/")
@bp.get("/ui")
def index() -> Response:
    """The upload-and-audit page."""
    max_mb = int(current_app.config["MAX_CONTENT_LENGTH"]) // (1024 * 1024)
    html = render_template("web.html", max_upload_mb=max_mb)
    return Response(html, mimetype="text/html", headers={
        "Content-Security-Policy": PAGE_CSP,
        "Cache-Control": "no-store",
    })
