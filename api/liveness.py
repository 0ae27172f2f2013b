"""Worker liveness: each worker writes a heartbeat every few seconds (a Redis key with a
TTL, or a file under ``DATA_DIR/workers`` without Redis); ``/healthz`` counts the fresh
ones. HTTP-free: the worker writes, the API reads.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("xaudit.worker")

LIVENESS_EVERY = 5.0
LIVENESS_TTL = 30.0


def _liveness_dir(config: Mapping[str, Any]) -> Path:
    return Path(config["DATA_DIR"]) / "workers"


def _redis(config: Mapping[str, Any]):
    url = config.get("REDIS_URL") or ""
    if not url.startswith(("redis://", "rediss://")):
        return None
    import redis

    return redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)


def beat_liveness(config: Mapping[str, Any], name: str) -> None:
    client = _redis(config)
    if client is not None:
        client.set(f"xaudit:worker:{name}", str(time.time()), ex=int(LIVENESS_TTL))
        return
    path = _liveness_dir(config)
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(str(time.time()))


def start_liveness(config: Mapping[str, Any], name: str | None = None) -> threading.Thread:
    """Write this worker's heartbeat every few seconds, from a daemon thread."""
    name = (name or f"{socket.gethostname()}-{os.getpid()}").replace("/", "_")

    def run() -> None:
        while True:
            try:
                beat_liveness(config, name)
            except Exception:
                log.warning("worker liveness write failed", exc_info=True)
            time.sleep(LIVENESS_EVERY)

    thread = threading.Thread(target=run, name="xaudit-liveness", daemon=True)
    thread.start()
    return thread


def live_workers(config: Mapping[str, Any]) -> int:
    """How many workers wrote a heartbeat within :data:`LIVENESS_TTL` seconds."""
    client = _redis(config)
    if client is not None:
        return sum(1 for _ in client.scan_iter("xaudit:worker:*", count=100))
    path = _liveness_dir(config)
    if not path.is_dir():
        return 0
    now = time.time()
    count = 0
    for entry in path.iterdir():
        try:
            if now - entry.stat().st_mtime < LIVENESS_TTL:
                count += 1
        except OSError:
            continue
    return count
