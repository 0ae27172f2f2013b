"""The xaudit HTTP API: validates, stores, enqueues and serves.

apiflask is used for request validation and the OpenAPI spec because it is Flask-native
(an ``APIFlask`` *is* a Flask app: blueprints, ``init_app`` extensions and the test client
work unchanged, so there is no second app object to wire), its schemas are marshmallow
(one declaration validates the request and documents it), and the spec is generated from
those same declarations and served at ``/openapi.json``. Its docs UI loads JavaScript
from a CDN, which our Content-Security-Policy forbids, so ``/docs`` is our own
server-rendered page built from the spec (see :mod:`api.resources.system`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from apiflask import APIFlask

from api import config as _config

log = logging.getLogger("xaudit.api")


def create_app(test_config: dict[str, Any] | None = None) -> APIFlask:
    """Build the API application.

    Configuration comes from :func:`api.config.defaults`, then ``XAUDIT_*`` environment
    variables, then ``test_config``.

    Parameters
    ----------
    test_config
        Overrides applied last (tests use it for a temporary data folder and database).

    Returns
    -------
    APIFlask
        The app, with the database migrated (when ``AUTO_MIGRATE``), the blob store,
        Celery (``app.extensions["celery"]``) and metrics wired in.
    """
    app = APIFlask(
        __name__,
        title="xaudit",
        version=_version(),
        docs_path=None,  # our own CDN-free page, registered by the system blueprint
        instance_relative_config=False,
    )
    app.config.from_mapping(_config.defaults())
    app.config.from_prefixed_env("XAUDIT")
    if test_config:
        app.config.from_mapping(test_config)
    _config.resolve(app.config)
    app.config["HTTP_ERROR_SCHEMA"] = errors_schema()
    app.config["VALIDATION_ERROR_SCHEMA"] = errors_schema()
    app.config["SECURITY_SCHEMES"] = {
        "BearerAuth": {"type": "http", "scheme": "bearer"},
    }
    app.config["INFO"] = {
        "description": "Explainability audits for Keras models. Every /api/v1 call needs "
                       "'Authorization: Bearer <key>' (create one with `xaudit keys create`).",
    }
    Path(app.config["DATA_DIR"]).mkdir(parents=True, exist_ok=True)

    from api import db, errors, jsonguard, metrics, security
    from api.blobs import BlobStore

    db.Database(app)
    if app.config["AUTO_MIGRATE"]:
        from api.migrate import upgrade

        upgrade(app.extensions["xaudit_db"]["engine"])
    app.extensions["xaudit_blobs"] = BlobStore(app.config["BLOB_DIR"])
    errors.init_app(app)
    jsonguard.init_app(app)
    security.init_app(app)
    metrics.init_app(app)

    from api.queue import celery_init_app

    celery_init_app(app)

    from api.resources import audits, datasets, explain, keys, models, schedules, system

    app.register_blueprint(system.bp)
    from api import web

    app.register_blueprint(web.bp)
    for module in (models, datasets, audits, explain, schedules, keys):
        app.register_blueprint(module.bp, url_prefix="/api/v1")
    return app


def errors_schema() -> dict[str, Any]:
    """The OpenAPI schema of every error body (what :mod:`api.errors` returns)."""
    return {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                           "detail": {"type": "object"}},
        }},
    }


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("xaudit")
    except Exception:  # running from a source tree that was never installed
        return "0.0.0"
