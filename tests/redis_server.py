"""A throwaway ``redis-server`` for the tests that need a real Redis.

Each test session (each xdist worker) starts its own server on a free port, with its
data folder in a temporary directory and nothing persisted, so the suite never touches a
Redis the user runs (nor another checkout's suite), and a test may stop and restart it
freely. Every test that uses it gets the server flushed first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

_current: RedisServer | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:<port>``, data in ``directory``."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url(), socket_timeout=5, socket_connect_timeout=2)

    def up(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.exceptions.RedisError:
            return False

    def start(self, timeout: float = 30) -> None:
        """Start the server (again, on the same port) and wait until it answers."""
        if self.proc is not None and self.proc.poll() is None and self.up():
            return
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
                "--save", "", "--appendonly", "no", "--dir", str(self.directory),
                "--logfile", str(self.directory / "redis.log"), "--daemonize", "no"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.up():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "redis.log")
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server did not start on port {self.port}\n{tail}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def flush(self) -> None:
        self.start()
        self.client().flushall()


def available() -> bool:
    return shutil.which("redis-server") is not None


def current() -> RedisServer:
    """The session's server (started by the ``redis_server`` fixture)."""
    if _current is None:
        raise RuntimeError("no test Redis: use the redis_server fixture")
    return _current


def set_current(server: RedisServer | None) -> None:
    global _current
    _current = server
