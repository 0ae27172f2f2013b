"""Service benchmark: the real stack on this machine, measured from the outside.

Starts the API (gunicorn, several threads per worker process) and Celery workers on
Redis, all on 127.0.0.1, creates a tenant key, uploads a tabular MLP (breast_cancer) and
a small CNN (shapes), and measures:

- ``POST /api/v1/explain`` latency p50/p99, throughput and errors at 1, 8 and 32
  concurrent clients: the MLP with Integrated Gradients on 10 rows, the CNN with
  Grad-CAM on 4 images; beside the in-process time of the same ``explain()`` call (the
  service's overhead is latency minus compute);
- audits per minute with 1 and 2 workers;
- the worker's resident memory over 1,000 ``/explain`` requests, sampled every 100.

Targets: MLP/IG p99 <= 100 ms (one client; with more clients than workers a request
also waits for the ones ahead of it), zero errors over 60 s at 32 clients, worker
memory flat after warm-up.

    python bench/service.py              # full run (about 12 minutes)
    python bench/service.py --quick      # a short run (about 4 minutes)
    python bench/service.py --markdown bench/service.md

Every process it starts is killed when it ends; every loop has a deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


# --------------------------------------------------------------------------- processes


class Processes:
    """Subprocesses in their own process groups, killed (whole group) on exit."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.items: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        with open(self.log_dir / f"{name}.log", "wb") as fh:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.items.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 20) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in reversed(self.items):
            self.stop(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@contextlib.contextmanager
def database(kind: str):
    """A database URL for the stack: a fresh PostgreSQL schema (dropped after), or
    SQLite in the data folder (empty URL)."""
    if kind == "sqlite":
        yield ""
        return
    import sqlalchemy as sa

    engine = sa.create_engine(PG_URL)
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


# --------------------------------------------------------------------------- the stack


class Stack:
    def __init__(self, args, data_dir: Path, db_url: str, procs: Processes):
        self.args = args
        self.procs = procs
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("XAUDIT_")}
        self.env.update({
            "XAUDIT_DATA_DIR": str(data_dir), "XAUDIT_REDIS_URL": self.redis_url,
            "XAUDIT_EXPLAIN_TIMEOUT": "30", "KERAS_BACKEND": "tensorflow",
            "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT),
        })
        if db_url:
            self.env["XAUDIT_DATABASE_URL"] = db_url
        self.workers: list[subprocess.Popen] = []
        self.headers: dict[str, str] = {}

    def create_key(self) -> None:
        # Also creates the schema, before several API processes start at once.
        out = subprocess.run([str(BIN / "xaudit"), "keys", "create", "--tenant", "bench"],
                             cwd=ROOT, env=self.env, capture_output=True, text=True,
                             timeout=300, check=True)
        self.headers = {"Authorization": f"Bearer {out.stdout.strip().splitlines()[-1]}"}

    def start_api(self) -> None:
        self.procs.start("api", [
            str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(self.args.api_workers), "--worker-class", "gthread",
            "--threads", str(self.args.api_threads), "--timeout", "120",
            "api:create_app()"], self.env)

    def start_worker(self) -> subprocess.Popen:
        n = len(self.workers) + 1
        proc = self.procs.start(f"worker{n}", [
            str(BIN / "celery"), "-A", "worker.celery_app", "worker",
            "-Q", "attributions,default", "--pool", "solo", "-c", "1",
            "-n", f"bench{n}@%h", "--without-gossip", "--without-mingle",
            "--loglevel", "WARNING"], self.env)
        self.workers.append(proc)
        return proc

    def stop_worker(self, proc: subprocess.Popen) -> None:
        self.procs.stop(proc)
        self.workers.remove(proc)

    def wait_healthy(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"the API never became healthy (logs in {self.procs.log_dir})")

    def upload(self, kind: str, path: Path, name: str) -> dict:
        with open(path, "rb") as fh:
            r = requests.post(f"{self.base}/api/v1/{kind}", headers=self.headers,
                              files={"file": (path.name, fh)}, data={"name": name},
                              timeout=120)
        r.raise_for_status()
        return r.json()


# --------------------------------------------------------------------------- load


@dataclass
class Case:
    name: str
    model_id: str
    body: dict
    compute_ms: float = float("nan")


@dataclass
class Level:
    case: str
    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else float("nan")

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())


def run_level(stack: Stack, case: Case, clients: int, seconds: float,
              max_requests: int | None = None, on_count=None) -> Level:
    """``clients`` threads, each with its own session, posting until the deadline (or
    until ``max_requests`` in all). Non-200 answers and exceptions are errors."""
    level = Level(case.name, clients, seconds)
    lock = threading.Lock()
    sent = [0]
    start = time.monotonic()
    deadline = start + seconds
    url = f"{stack.base}/api/v1/explain"

    def client() -> None:
        with requests.Session() as s:
            s.headers.update(stack.headers)
            while time.monotonic() < deadline:
                with lock:
                    if max_requests is not None and sent[0] >= max_requests:
                        return
                    sent[0] += 1
                    n = sent[0]
                t0 = time.perf_counter()
                try:
                    r = s.post(url, json=case.body, timeout=60)
                    code = None if r.status_code == 200 else str(r.status_code)
                except requests.RequestException as exc:
                    code = type(exc).__name__
                dt = time.perf_counter() - t0
                with lock:
                    if code is None:
                        level.latencies.append(dt)
                    else:
                        level.errors[code] = level.errors.get(code, 0) + 1
                if on_count is not None:
                    on_count(n)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, deadline - time.monotonic()) + 90)
    level.seconds = time.monotonic() - start
    return level


def in_process_ms(model_path: Path, body: dict, repeats: int) -> float:
    """Median time of the worker's own computation for one request, in this process:
    the same ``explain()`` call and prediction, on a warm model."""
    from explain.attributions import ModelFunction, explain
    from explain.modelio import load_model_safely

    model, _spec = load_model_safely(model_path)
    x = np.asarray(body["instances"], dtype=np.float32)
    options = dict(body.get("options") or {})

    def once() -> None:
        explain(model, x, body["method"], body.get("target"), **options)
        ModelFunction(model).predict(x)

    for _ in range(3):
        once()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def audits_per_minute(stack: Stack, model: dict, data: dict, n: int,
                      timeout: float = 1200) -> tuple[float, int]:
    """Submit ``n`` audits at once; audits per minute from the first submission to the
    last finish, and how many failed."""
    t0 = time.monotonic()
    ids = []
    for i in range(n):
        r = requests.post(f"{stack.base}/api/v1/audits", headers=stack.headers, timeout=60,
                          json={"model_id": model["id"], "dataset_id": data["id"],
                                "config": {"seed": i, "samples": 16}})
        r.raise_for_status()
        ids.append(r.json()["id"])
    pending, failed = set(ids), 0
    deadline = t0 + timeout
    while pending and time.monotonic() < deadline:
        for audit_id in list(pending):
            a = requests.get(f"{stack.base}/api/v1/audits/{audit_id}", headers=stack.headers,
                             timeout=30).json()
            if a["status"] in ("succeeded", "failed"):
                pending.discard(audit_id)
                failed += a["status"] == "failed"
        time.sleep(0.25)
    if pending:
        raise RuntimeError(f"{len(pending)} audits did not finish in {timeout} s")
    return n / ((time.monotonic() - t0) / 60), failed


# --------------------------------------------------------------------------- models


def build_models(work: Path) -> dict[str, Path]:
    """A tabular MLP on breast_cancer and a small CNN on shapes, trained briefly."""
    from explain.training import train_reference_model

    paths = {}
    for name, ds, epochs, extra in (("mlp", "breast_cancer", 5, None),
                                    ("cnn", "shapes", 2, {"n": 300})):
        res = train_reference_model(ds, out=work / f"{name}.keras", epochs=epochs, verbose=0,
                                    save_test=work / f"{name}_test.npz",
                                    dataset_options=extra)
        paths[name] = res.model_path
        paths[f"{name}_test"] = res.test_path
    return paths


# --------------------------------------------------------------------------- report


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    sep = "| " + " | ".join("-" * w for w in widths) + " |"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
            for r in rows]
    return "\n".join([line, sep, *body])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short levels, fewer requests")
    ap.add_argument("--markdown", type=Path, help="also write the tables here")
    ap.add_argument("--seconds", type=float, help="seconds per load level")
    ap.add_argument("--api-workers", type=int, default=2, help="gunicorn worker processes")
    ap.add_argument("--api-threads", type=int, default=16, help="threads per API process")
    ap.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    ap.add_argument("--redis-db", type=int, default=13)
    args = ap.parse_args(argv)
    level_s = args.seconds or (5.0 if args.quick else 20.0)
    long_s = level_s if args.quick else 60.0  # the zero-error target is over 60 s
    memory_requests = 300 if args.quick else 1000
    n_audits = 3 if args.quick else 6

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    sys.path.insert(0, str(ROOT))
    import redis

    redis.Redis.from_url(f"redis://127.0.0.1:6379/{args.redis_db}").flushdb()

    with tempfile.TemporaryDirectory(prefix="xaudit-bench-") as tmp, \
            database(args.database) as db_url:
        work = Path(tmp)
        procs = Processes(work)
        try:
            return _run(args, work, db_url, procs, level_s, long_s, memory_requests,
                        n_audits)
        finally:
            procs.stop_all()
            with contextlib.suppress(Exception):
                redis.Redis.from_url(f"redis://127.0.0.1:6379/{args.redis_db}").flushdb()


def _run(args, work, db_url, procs, level_s, long_s, memory_requests, n_audits) -> int:
    print(f"load average at start: {load_average()}", flush=True)
    stack = Stack(args, work / "data", db_url, procs)
    stack.create_key()
    stack.start_api()
    worker = stack.start_worker()
    print("training the MLP and the CNN ...", flush=True)
    paths = build_models(work)
    stack.wait_healthy()
    mlp = stack.upload("models", paths["mlp"], "mlp")
    cnn = stack.upload("models", paths["cnn"], "cnn")
    mlp_data = stack.upload("datasets", paths["mlp_test"], "breast_cancer")

    with np.load(paths["mlp_test"]) as z:
        mlp_rows = z["x"][:10].round(5).tolist()
    with np.load(paths["cnn_test"]) as z:
        cnn_rows = z["x"][:4].round(4).tolist()
    cases = [
        Case("MLP, IG, 10 rows", mlp["id"], {"model_id": mlp["id"], "instances": mlp_rows,
                                             "method": "integrated_gradients"}),
        Case("CNN, Grad-CAM, 4 images", cnn["id"], {"model_id": cnn["id"],
                                                   "instances": cnn_rows,
                                                   "method": "grad_cam"}),
    ]
    for case, path in zip(cases, (paths["mlp"], paths["cnn"]), strict=True):
        case.compute_ms = in_process_ms(path, case.body, 10 if args.quick else 30)
        # Warm the worker: model cache and compiled graphs.
        warm = run_level(stack, case, 1, 120, max_requests=5)
        if not warm.latencies:
            raise RuntimeError(f"the worker never answered {case.name}: {warm.errors} "
                               f"(logs in {work})")

    latency_rows, levels = [], []
    for case in cases:
        for clients in (1, 8, 32):
            seconds = long_s if (clients == 32 and case is cases[0]) else level_s
            lv = run_level(stack, case, clients, seconds)
            levels.append(lv)
            n = len(lv.latencies)
            latency_rows.append([
                case.name, clients, f"{lv.seconds:.0f}", n, f"{lv.pct(50):.1f}",
                f"{lv.pct(99):.1f}", f"{n / lv.seconds:.1f}", f"{case.compute_ms:.1f}",
                f"{lv.pct(50) - case.compute_ms:.1f}",
                lv.n_errors if not lv.errors else f"{lv.n_errors} {json.dumps(lv.errors)}",
            ])
            print(f"  {latency_rows[-1]}", flush=True)

    # Worker memory over many requests (8 clients), sampled every 100.
    samples: list[tuple[int, float]] = [(0, rss_mb(worker.pid))]
    sample_lock = threading.Lock()

    def on_count(n: int) -> None:
        if n % 100 == 0:
            with sample_lock:
                samples.append((n, rss_mb(worker.pid)))

    mem = run_level(stack, cases[0], 8, 600, max_requests=memory_requests, on_count=on_count)
    samples.sort()

    # Audits per minute with 1, then 2 workers.
    audit_rows = []
    for n_workers in (1, 2):
        while len(stack.workers) < n_workers:
            stack.start_worker()
            time.sleep(1)
        if n_workers == 2:  # let the second worker import and join before timing
            run_level(stack, cases[0], 4, 60, max_requests=20)
        rate, failed = audits_per_minute(stack, mlp, mlp_data, n_audits * n_workers)
        audit_rows.append([n_workers, n_audits * n_workers, f"{rate:.1f}", failed])
        print(f"  audits: {audit_rows[-1]}", flush=True)

    load = load_average()
    out = [
        f"`/explain` latency (ms; compute = the same call in-process, overhead = p50 − "
        f"compute; API: gunicorn {args.api_workers}×{args.api_threads} threads, 1 worker, "
        f"{args.database}):",
        "",
        table(latency_rows, ["case", "clients", "s", "ok", "p50", "p99", "req/s",
                             "compute", "overhead", "errors"]),
        "",
        "Audits per minute (breast_cancer test split, 16 examples, IG + SHAP):",
        "",
        table(audit_rows, ["workers", "audits", "audits/min", "failed"]),
        "",
        f"Worker RSS (MB) over {memory_requests} `/explain` requests (MLP/IG, 8 clients, "
        f"{mem.n_errors} errors):",
        "",
        table([[n, f"{mb:.0f}"] for n, mb in samples], ["requests", "RSS MB"]),
        "",
        f"load average at end: {load}",
    ]
    text = "\n".join(out)
    print("\n" + text)
    one = next(lv for lv in levels if lv.case == cases[0].name and lv.clients == 1)
    long32 = next(lv for lv in levels if lv.case == cases[0].name and lv.clients == 32)
    after_warm = [mb for n, mb in samples if n >= min(200, memory_requests // 2)]
    growth = (max(after_warm) - min(after_warm)) if after_warm else float("nan")
    verdict = [
        f"target MLP/IG p99 <= 100 ms at 1 client: {one.pct(99):.1f} ms "
        f"({'met' if one.pct(99) <= 100 else 'MISSED'})",
        f"target zero errors over {long32.seconds:.0f} s at 32 clients: {long32.n_errors} "
        f"({'met' if long32.n_errors == 0 else 'MISSED'})",
        f"worker RSS after warm-up varies by {growth:.0f} MB "
        f"({'flat' if growth <= 25 else 'GROWING'})",
    ]
    print("\n".join(verdict))
    if args.markdown:
        args.markdown.write_text(text + "\n\n" + "\n".join(f"- {v}" for v in verdict) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
