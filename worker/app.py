"""The worker's view of the Celery app: the same app the API builds
(:mod:`api.queue`), with the worker's tasks registered on it."""

from __future__ import annotations

from celery import Celery
from flask import Flask

from api.queue import ATTRIBUTIONS, DEFAULT, ROUTES, celery_config
from api.queue import celery_init_app as _celery_init_app

__all__ = ["ATTRIBUTIONS", "DEFAULT", "ROUTES", "celery_config", "celery_init_app"]


def celery_init_app(app: Flask) -> Celery:
    """The app's Celery app (see :func:`api.queue.celery_init_app`) with the tasks of
    :mod:`worker.tasks` registered."""
    celery_app = app.extensions.get("celery") or _celery_init_app(app)
    import worker.tasks  # noqa: F401 - registers the @shared_tasks

    return celery_app
