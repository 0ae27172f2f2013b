"""The Celery app, built from the Flask config (the Flask documentation's pattern), and
sending tasks by name.

HTTP-free and free of the worker's code: the API builds the app to send messages, the
worker (:mod:`worker.celery_app`) builds the same app and registers its tasks on it.
Tasks run inside a Flask app context, so they use the same database session helpers,
blob store and configuration as the API. Messages are JSON (never pickle) and carry ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery, Task
from flask import Flask
from kombu import Queue

ATTRIBUTIONS = "attributions"
DEFAULT = "default"

#: Which queue each task goes to. Model work (audits, /explain) needs the model in memory
#: and, where there is one, a GPU: the `attributions` queue.
ROUTES = {
    "xaudit.audit": {"queue": ATTRIBUTIONS},
    "xaudit.audit_chunk": {"queue": ATTRIBUTIONS},
    # Quality checks run the model many times: the assessment goes where models are.
    "xaudit.audit_assess": {"queue": ATTRIBUTIONS},
    "xaudit.audit_chunk_failed": {"queue": DEFAULT},
    # Overridden by EXPLAIN_QUEUE (see celery_config): `xaudit serve` gives /explain a
    # lane of its own, so a long audit never holds up a one-row explain.
    "xaudit.explain": {"queue": ATTRIBUTIONS},
    "xaudit.dispatch_schedules": {"queue": DEFAULT},
    "xaudit.reap_stale_audits": {"queue": DEFAULT},
}


def explain_queue(config: dict[str, Any]) -> str:
    """The queue /explain jobs go to: ``EXPLAIN_QUEUE`` (default ``attributions``)."""
    return str(config.get("EXPLAIN_QUEUE") or ATTRIBUTIONS)


def celery_config(config: dict[str, Any]) -> dict[str, Any]:
    """Celery settings derived from the Flask config."""
    broker = config["CELERY_BROKER_URL"]
    hard_limit = int(config["AUDIT_TIME_LIMIT"])
    out: dict[str, Any] = {
        "broker_url": broker,
        "result_backend": config["CELERY_RESULT_BACKEND"],
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # A task is acknowledged when it finishes, and handed to another worker when the
        # one running it dies: every task is written to be run twice safely.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": DEFAULT,
        "task_queues": tuple(Queue(q) for q in dict.fromkeys(
            (ATTRIBUTIONS, DEFAULT, explain_queue(config)))),
        "task_routes": {**ROUTES, "xaudit.explain": {"queue": explain_queue(config)}},
        "task_track_started": True,
        "result_expires": 24 * 3600,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        # Soft limits raise inside the task (which records a clean failure); hard limits
        # kill the child when a task is stuck in native code.
        "task_annotations": {
            "xaudit.audit": {"soft_time_limit": int(config["AUDIT_SOFT_TIME_LIMIT"]),
                             "time_limit": hard_limit},
            "xaudit.audit_chunk": {"soft_time_limit": int(config["AUDIT_SOFT_TIME_LIMIT"]),
                                   "time_limit": hard_limit},
            "xaudit.audit_assess": {"soft_time_limit": int(config["AUDIT_SOFT_TIME_LIMIT"]),
                                    "time_limit": hard_limit},
            "xaudit.explain": {"soft_time_limit": int(config["EXPLAIN_SOFT_TIME_LIMIT"]),
                               "time_limit": int(config["EXPLAIN_TIME_LIMIT"])},
        },
    }
    if broker.startswith(("redis://", "rediss://")):
        # Redis redelivers an unacknowledged message after the visibility timeout; it
        # must outlast the longest task or a running audit would be started twice.
        out["broker_transport_options"] = {"visibility_timeout": hard_limit + 600}
        out["result_backend_transport_options"] = {"retry_policy": {"timeout": 5.0}}
    elif broker.startswith("filesystem://"):
        base = Path(config["BROKER_DIR"])
        for sub in ("queue", "processed", "control"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        out["broker_transport_options"] = {
            "data_folder_in": str(base / "queue"),
            "data_folder_out": str(base / "queue"),
            "processed_folder": str(base / "processed"),
            "store_processed": False,
            "control_folder": str(base / "control"),
            # The embedded broker polls a folder; 50 ms keeps /explain snappy.
            "polling_interval": 0.05,
        }
    for key in ("CELERY_TASK_ALWAYS_EAGER", "CELERY_TASK_EAGER_PROPAGATES"):
        if key in config:
            out[key[len("CELERY_"):].lower()] = config[key]
    return out


def celery_init_app(app: Flask) -> Celery:
    """Create the Celery app for ``app`` and store it in ``app.extensions["celery"]``.

    The tasks themselves are registered by importing :mod:`worker.tasks` (the worker's
    entry point :mod:`worker.celery_app` does); the API only sends them by name.
    """

    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(celery_config(app.config))
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def send_task(celery_app: Celery, name: str, args: list[Any], **options: Any) -> Any:
    """Send the task ``name`` with ``args`` (ids only), by name.

    The API never imports the worker's code to send it work: the message names the task
    and the broker routes it by :data:`ROUTES`. In a test configuration with
    ``CELERY_TASK_ALWAYS_EAGER`` and the tasks registered in this process, the task runs
    inline instead (``send_task`` alone never runs eagerly).
    """
    if celery_app.conf.task_always_eager and name in celery_app.tasks:
        return celery_app.tasks[name].apply_async(args=args, **options)
    return celery_app.send_task(name, args=args, **options)
