"""Time and memory limits that fire in any pool, and the worker's liveness signal.

Workers run Celery's ``solo`` pool (TensorFlow is not fork-safe), which ignores Celery's
``soft_time_limit`` / ``time_limit``. So a thread in the worker process watches the task
that is running (registered with :func:`guard`):

- past the **soft** limit it raises ``SoftTimeLimitExceeded`` inside the task's thread
  (delivered at the next Python bytecode: between batches), and the task records a clean
  ``time_limit`` failure itself;
- past the **hard** limit (a batch stuck in native code), or when the process's resident
  memory passes ``XAUDIT_WORKER_MEMORY``, it marks the row ``failed`` with ``time_limit``
  or ``memory_limit`` and ends the process (exit code :data:`EXIT_CODE`). The supervisor
  (``xaudit serve``, or the container's restart policy) starts a fresh worker; a
  redelivered message finds the row failed and does nothing.

:func:`api.liveness.start_liveness` writes the worker's heartbeat that ``/healthz`` reads.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

log = logging.getLogger("xaudit.worker")

EXIT_CODE = 75
POLL = 0.2


@dataclass
class _Running:
    kind: str
    row_id: str
    soft: float
    hard: float
    thread_id: int
    t0: float = field(default_factory=time.monotonic)
    soft_fired: bool = False


_lock = threading.Lock()
_current: _Running | None = None
_thread: threading.Thread | None = None
_app = None


def rss_bytes() -> int:
    """This process's resident memory (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def memory_limit(config=None) -> int | None:
    """The worker's memory limit: WORKER_MEMORY of the app's configuration (api/config.py,
    so ``XAUDIT_WORKER_MEMORY`` or create_app's test config), else the budget's default."""
    from api.config import budget_policy

    if config is None:
        config = _app.config if _app is not None else {}
    return budget_policy(config).worker_memory


@contextlib.contextmanager
def guard(kind: str, row_id: str, *, soft: float, hard: float) -> Iterator[None]:
    """Watch the code in this block: the current thread is the task's."""
    global _current, _app
    from flask import current_app

    _app = current_app._get_current_object()
    _ensure_thread()
    with _lock:
        _current = _Running(kind, row_id, float(soft), float(hard), threading.get_ident())
    try:
        yield
    finally:
        with _lock:
            _current = None


def _ensure_thread() -> None:
    global _thread
    if _thread is not None and _thread.is_alive():
        return
    _thread = threading.Thread(target=_loop, name="xaudit-watchdog", daemon=True)
    _thread.start()


def _raise_in(thread_id: int, exc_type: type[BaseException]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc_type))


def _loop() -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    limit = memory_limit()
    while True:
        time.sleep(POLL)
        with _lock:
            cur = _current
        if cur is None:
            continue
        elapsed = time.monotonic() - cur.t0
        rss = rss_bytes()
        if limit and rss > limit:
            _kill(cur, "memory_limit",
                  f"the worker passed its memory limit ({rss / 2**20:,.0f} MiB > "
                  f"{limit / 2**20:,.0f} MiB, XAUDIT_WORKER_MEMORY) while computing; ask "
                  "for fewer rows, samples or steps")
        if elapsed > cur.hard:
            _kill(cur, "time_limit",
                  f"the computation passed its hard time limit ({cur.hard:g} s) and was "
                  "stopped; ask for fewer rows, samples or steps")
        if elapsed > cur.soft and not cur.soft_fired:
            cur.soft_fired = True
            log.warning("%s %s: soft time limit (%g s) reached", cur.kind, cur.row_id,
                        cur.soft)
            _raise_in(cur.thread_id, SoftTimeLimitExceeded)


def _kill(cur: _Running, code: str, message: str) -> None:
    """Record the failure, then end this process (the supervisor starts a new one)."""
    log.error("%s %s: %s; ending the worker process", cur.kind, cur.row_id, message)
    try:
        from api.explain_jobs import fail_running

        with _app.app_context():
            fail_running(cur.kind, cur.row_id, code, message)
            if cur.kind == "explain":
                from api.jobwait import notify_done

                notify_done(_app.config, cur.row_id)
            elif cur.kind == "audit":
                from worker import webhooks

                webhooks.notify(cur.row_id)
    except Exception:
        log.exception("could not record the %s failure of %s", code, cur.row_id)
    finally:
        logging.shutdown()
        os._exit(EXIT_CODE)
