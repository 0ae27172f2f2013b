"""Real processes: a Celery worker and an API server as subprocesses, on the test
session's own redis-server (see tests/redis_server.py).

Every process is started in its own session and killed (the whole group) at teardown;
every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XAUDIT_")}
    env.update({
        "XAUDIT_DATA_DIR": str(data_dir),
        "KERAS_BACKEND": "tensorflow",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": str(ROOT),
        # Tests start the API before (or without) workers; the liveness check has its own.
        "XAUDIT_HEALTHZ_REQUIRE_WORKER": "false",
        **extra,
    })
    return env


class Procs:
    """Subprocesses started by a test, each in its own process group."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = self.log_dir / f"{name}.log"
        with open(log, "wb") as fh:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((proc, log))
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
                         for _proc, p in self.procs)

    def stop_all(self) -> None:
        for proc, _log in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc, _log in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group: helpers it spawned too
            proc.wait(timeout=10)


@pytest.fixture
def procs(tmp_path):
    p = Procs(tmp_path)
    yield p
    p.stop_all()


@pytest.fixture
def redis_db(redis_url):
    """The session's own Redis, flushed for this test."""
    return redis_url


def wait_healthy(base: str, procs: Procs, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        for proc, _ in procs.procs:
            if proc.poll() is not None:
                pytest.fail(f"a service process exited early\n{procs.logs()}")
        time.sleep(0.5)
    pytest.fail(f"the API never became healthy\n{procs.logs()}")


def create_key(data_dir: Path, tenant: str, env: dict[str, str]) -> str:
    """`xaudit keys create --tenant NAME`: the key is the only line on stdout."""
    out = subprocess.run([str(BIN / "xaudit"), "keys", "create", "--tenant", tenant],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("xa_")
    return lines[0]


def wait_for(predicate, timeout: float, step: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    pytest.fail(f"timed out waiting for {what}")
