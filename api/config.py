"""Service configuration: defaults, overridden by ``XAUDIT_*`` environment variables.

Every key here can be set from the environment with the ``XAUDIT_`` prefix
(``XAUDIT_DATABASE_URL``, ``XAUDIT_MAX_CONTENT_LENGTH=50000000``, ...); Flask's
``from_prefixed_env`` parses values as JSON when it can, so numbers and booleans work.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MB = 1024 * 1024


def defaults() -> dict[str, Any]:
    """The default configuration: one machine, SQLite, local blobs, no Redis."""
    return {
        # Where the SQLite database, blobs and the server-less broker live.
        "DATA_DIR": os.environ.get("XAUDIT_DATA_DIR", "./var"),
        # Empty means SQLite in DATA_DIR; PostgreSQL via postgresql+psycopg2://...
        "DATABASE_URL": "",
        # Empty means the embedded broker (kombu filesystem transport) and results in a
        # SQLite file; a redis:// URL puts both the broker and the results in Redis.
        "REDIS_URL": "",
        # Explicit overrides, for deployments that split broker and results.
        "CELERY_BROKER_URL": "",
        "CELERY_RESULT_BACKEND": "",
        # Upgrade the schema to the newest migration when the app starts.
        "AUTO_MIGRATE": True,
        # Uploads larger than this answer 413 before anything is stored.
        "MAX_CONTENT_LENGTH": 512 * MB,
        # POST /explain: rows per request, values per request, seconds to wait for the
        # worker before answering 202 with a job URL.
        "EXPLAIN_MAX_INSTANCES": 64,
        "EXPLAIN_MAX_VALUES": 2_000_000,
        "EXPLAIN_TIMEOUT": 10.0,
        # A job still queued this many seconds after it was created has its message sent
        # again when polled (the broker may have lost it); at most once per period.
        # None: twice EXPLAIN_TIMEOUT.
        "EXPLAIN_RESEND_AFTER": None,
        # Integer options (steps, samples, ...) above this are refused: they bound the work
        # one request can ask of a worker.
        "EXPLAIN_MAX_OPTION_INT": 4096,
        # Webhooks: hosts they may go to ("example.com", "*.example.com"; empty: any
        # public host), and whether private/loopback addresses are allowed (an internal
        # receiver; a host named exactly on the list may be private anyway).
        "WEBHOOK_ALLOWED_HOSTS": "",
        "WEBHOOK_ALLOW_PRIVATE": False,
        # The queue /explain jobs are sent to. `xaudit serve` sets "explain" and runs a
        # worker for it next to the audit worker: a short lane no audit can block.
        "EXPLAIN_QUEUE": "",
        # A running explain job whose worker stopped beating this long (s) is sent again.
        "EXPLAIN_STALE_AFTER": 30.0,
        # /healthz answers 503 when no worker has beaten within 30 s (eager mode: no check).
        "HEALTHZ_REQUIRE_WORKER": True,
        # Base URL of the API as users reach it (https://xaudit.example); makes the report
        # links in webhooks absolute. Empty: links are paths.
        "PUBLIC_URL": "",
        # Model intake and the work budget (read by explain.modelio.IntakePolicy,
        # explain.budget.BudgetPolicy and explain.arrayguard; see POLICY_KEYS). None keeps
        # the library's default.
        "MAX_MODEL_BYTES": None,  # largest model file accepted
        "ALLOW_SAVEDMODEL": None,  # accept TensorFlow SavedModel archives (true/false)
        "ALLOWED_CUSTOM_OBJECTS": None,  # comma-separated custom layer names to allow
        "MAX_DATA_BYTES": None,  # largest declared array data in an uploaded .npy/.npz
        "MAX_DATA_RATIO": None,  # largest declared/stored size ratio of a compressed .npz
        "WORKER_MEMORY": None,  # bytes a worker may use for one request (default: half RAM)
        "MAX_PARAMS": None,  # largest parameter count of an uploaded model
        "MAX_INPUT_ELEMENTS": None,  # largest number of input values per example
        "EXPLAIN_MAX_FLOPS": None,  # largest estimated work of one /explain request
        "AUDIT_MAX_FLOPS": None,  # largest estimated attribution work of one audit
        # Per tenant: queued or running audits / explain jobs, and schedules; over the cap
        # a request is answered 429 with Retry-After.
        "MAX_QUEUED_AUDITS": 10,
        "MAX_QUEUED_EXPLAIN": 16,
        "MAX_SCHEDULES": 50,
        # Celery task limits (seconds): soft raises inside the task, hard kills the child.
        "AUDIT_SOFT_TIME_LIMIT": 3600,
        "AUDIT_TIME_LIMIT": 3900,
        "EXPLAIN_SOFT_TIME_LIMIT": 120,
        "EXPLAIN_TIME_LIMIT": 150,
        # Loaded models kept per worker process (LRU, keyed by the file's sha256).
        "MODEL_CACHE_SIZE": 4,
        # An audit whose heartbeat is older than this is considered abandoned.
        # The same age makes the beat send a still-queued audit's message again (the
        # broker may have lost it).
        "AUDIT_STALE_AFTER": 900,
        # A running audit whose heartbeat (a thread, every quarter of this) is older than
        # this many seconds lost its worker and is requeued by the beat.
        "AUDIT_HEARTBEAT_STALE": 60,
        # Audits started this many times by workers that died are failed (worker_lost).
        "AUDIT_MAX_ATTEMPTS": 3,
        # Fan an audit's attribution chunks out over the `attributions` workers (a Celery
        # chord; needs Redis for results). Off: one worker runs the whole audit. Off by
        # default until chunks that wait in the queue count as alive for the stale-audit
        # sweeper (see worker/fanout.py).
        "AUDIT_FANOUT": False,
        # The beat loop's period (seconds).
        "BEAT_INTERVAL": 15.0,
        # Content-Security-Policy of every HTML response: nothing from the network.
        # Reports are self-contained (inline styles/scripts, data: images).
        "CONTENT_SECURITY_POLICY": (
            "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
            "script-src 'unsafe-inline'; font-src data:; connect-src 'none'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        ),
    }


def resolve(config: dict[str, Any]) -> None:
    """Fill the derived settings (paths and URLs) in place, after all overrides."""
    data_dir = Path(config["DATA_DIR"]).expanduser().resolve()
    config["DATA_DIR"] = str(data_dir)
    config.setdefault("BLOB_DIR", str(data_dir / "blobs"))
    if not config.get("BLOB_DIR"):
        config["BLOB_DIR"] = str(data_dir / "blobs")
    if not config.get("DATABASE_URL"):
        config["DATABASE_URL"] = f"sqlite:///{data_dir / 'xaudit.sqlite'}"
    redis_url = config.get("REDIS_URL") or ""
    if not config.get("CELERY_BROKER_URL"):
        config["CELERY_BROKER_URL"] = redis_url or "filesystem://"
    if not config.get("CELERY_RESULT_BACKEND"):
        config["CELERY_RESULT_BACKEND"] = (
            redis_url or f"db+sqlite:///{data_dir / 'celery-results.sqlite'}"
        )
    config["BROKER_DIR"] = str(data_dir / "broker")


#: Settings the explain library's policies read, under their ``XAUDIT_*`` names.
POLICY_KEYS = ("MAX_MODEL_BYTES", "ALLOW_SAVEDMODEL", "ALLOWED_CUSTOM_OBJECTS",
               "MAX_DATA_BYTES", "MAX_DATA_RATIO", "WORKER_MEMORY", "MAX_PARAMS",
               "MAX_INPUT_ELEMENTS", "EXPLAIN_MAX_FLOPS", "AUDIT_MAX_FLOPS")


def policy_environ(config: Mapping[str, Any]) -> dict[str, str]:
    """The policy settings of ``config`` as the ``XAUDIT_*`` mapping the explain library
    reads (``IntakePolicy.from_env(environ)`` and friends).

    The service passes this mapping instead of letting the library read ``os.environ``,
    so the app's configuration (defaults, ``XAUDIT_*`` variables, ``create_app``'s test
    config) is the one place intake limits come from.
    """
    out: dict[str, str] = {}
    for key in POLICY_KEYS:
        value = config.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, (list, tuple, set, frozenset)):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        out[f"XAUDIT_{key}"] = str(value)
    return out


def intake_policy(config: Mapping[str, Any]):
    """The model intake policy of ``config`` (:class:`explain.modelio.IntakePolicy`)."""
    from explain.modelio import IntakePolicy

    return IntakePolicy.from_env(policy_environ(config))


def budget_policy(config: Mapping[str, Any]):
    """The work budget of ``config`` (:class:`explain.budget.BudgetPolicy`)."""
    from explain.budget import BudgetPolicy

    return BudgetPolicy.from_env(policy_environ(config))


def load() -> dict[str, Any]:
    """The configuration an app would get (defaults, then ``XAUDIT_*``), resolved.

    For commands that need the database but not the whole app (``xaudit keys``,
    ``xaudit db``, the ``serve`` supervisor), so they start without importing TensorFlow.
    """
    from flask import Config

    cfg = Config(root_path=".")
    cfg.from_mapping(defaults())
    cfg.from_prefixed_env("XAUDIT")
    resolve(cfg)
    Path(cfg["DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    return dict(cfg)
