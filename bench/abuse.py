"""Abuse benchmark: the red-team repro list against a real ``xaudit serve`` (embedded:
SQLite, file broker, its own workers), each case timed, with the API process's resident
memory (current and peak) after it.

Cases (from the red-team report that found them):

- models: input ``(50000, 50000, 3)``; ``Dense(20000)`` on 20,000 inputs; ``Dense(15000)``
  on 15,000 inputs; the 20 KB ``(2000, 2000, 3)`` conv model (``XAUDIT_WORKER_MEMORY``
  decides it);
- data: a 1 MB ``savez_compressed`` of 1 GiB of zeros (three at once); an ``.npy`` header
  declaring ``(10**12, 10)``;
- ``/explain`` within the old caps (64 rows, ``steps: 4096``, uniform baseline, 4096
  baseline samples);
- JSON nested 1,000 deep, a 5,000-digit integer, ``seed: 2**70``, ``logits: "yes"``;
- webhooks to ``127.0.0.1``, ``[::1]``, ``169.254.169.254``, a URL with CR/LF;
- 200 every-minute schedules;
- a key revoked and used again;
- then a normal audit, which must still succeed.

    python bench/abuse.py                       # prints a markdown table
    XAUDIT_WORKER_MEMORY=2000000000 python bench/abuse.py

Every process it starts is killed when it ends; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.hostile import declared_model, set_input_shape, wide_dense  # noqa: E402
from tests.proctree import children, cmdline  # noqa: E402
from tests.proctree import memory as proc_memory  # noqa: E402

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    def __init__(self, work: Path, env_extra: dict[str, str]):
        self.work = work
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # XAUDIT_* settings of the caller pass through (budgets, limits); the data is ours.
        self.env = {k: v for k, v in os.environ.items() if k not in (
            "XAUDIT_DATA_DIR", "XAUDIT_DATABASE_URL", "XAUDIT_REDIS_URL")}
        self.env.update({"XAUDIT_DATA_DIR": str(work / "var"), "CUDA_VISIBLE_DEVICES": "",
                         "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT),
                         "XAUDIT_EXPLAIN_TIMEOUT": "60", **env_extra})
        out = subprocess.run([str(BIN / "xaudit"), "keys", "create", "--tenant", "redteam"],
                             env=self.env, capture_output=True, text=True, timeout=300,
                             check=True, cwd=ROOT)
        self.key = out.stdout.strip().splitlines()[-1]
        self.headers = {"Authorization": f"Bearer {self.key}"}
        self.log = open(work / "serve.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([str(BIN / "xaudit"), "serve", "--port", str(self.port)],
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=ROOT, start_new_session=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.base}/healthz", timeout=3).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("xaudit serve exited; see serve.log")
            time.sleep(1)
        raise RuntimeError("xaudit serve never became healthy")

    def api_pid(self) -> int:
        """The gunicorn worker: the serve process's child that is not celery or beat."""
        for child in children(self.proc.pid):
            if " serve " in f"{cmdline(child)} ":  # gunicorn's worker: a fork of serve
                return child
        return self.proc.pid

    def memory(self) -> tuple[float, float]:
        st = proc_memory(self.api_pid())
        return st.get("VmRSS", 0) / 2**20, st.get("VmHWM", 0) / 2**20

    def worker_peak(self) -> float:
        """The largest peak RSS of the embedded celery workers alive now (MiB)."""
        peaks = [proc_memory(c).get("VmHWM", 0) for c in children(self.proc.pid)
                 if "celery" in cmdline(c)]
        return max(peaks, default=0) / 2**20

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def conv_model_bytes(work: Path) -> bytes:
    from explain._backend import keras

    L = keras.layers
    m = keras.Sequential([keras.Input((2000, 2000, 3)), L.Conv2D(4, 3),
                          L.GlobalAveragePooling2D(), L.Dense(3, activation="softmax")])
    path = work / "conv2000.keras"
    m.save(path)
    return path.read_bytes()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="xaudit-abuse-") as tmp:
        work = Path(tmp)
        serve = Serve(work, {})
        try:
            rows = run(serve, work)
        finally:
            serve.stop()
    table = ["| case | answer | seconds | API RSS / peak (MiB) | worker peak (MiB) |",
             "|---|---|---:|---:|---:|"]
    table += [f"| {c} | {a} | {s} | {m} | {w} |" for c, a, s, m, w in rows]
    text = "\n".join(table)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


def run(serve: Serve, work: Path) -> list[list[str]]:
    base, headers = serve.base, serve.headers
    rows: list[list[str]] = []

    def record(case: str, fn) -> requests.Response | None:
        t0 = time.monotonic()
        try:
            r = fn()
            answer = f"{r.status_code} {(r.json().get('error') or {}).get('code', '')}".strip() \
                if r.headers.get("Content-Type", "").startswith("application/json") \
                else str(r.status_code)
        except Exception as exc:  # the case itself failed: record it, keep going
            r, answer = None, f"error {type(exc).__name__}"
        rss, peak = serve.memory()
        rows.append([case, answer, f"{time.monotonic() - t0:.1f}", f"{rss:.0f} / {peak:.0f}",
                     f"{serve.worker_peak():.0f}"])
        print(rows[-1], flush=True)
        return r

    def upload(kind, name, data: bytes, filename: str):
        return requests.post(f"{base}/api/v1/{kind}", headers=headers, timeout=600,
                             files={"file": (filename, data)}, data={"name": name})

    # Files built before the clock starts: only the service's answer is timed.
    huge = declared_model(lambda c: set_input_shape(c, (50000, 50000, 3)))
    wide20k, wide15k = declared_model(wide_dense(20000)), declared_model(wide_dense(15000))
    conv_bytes = conv_model_bytes(work)
    record(f"model: input (50000, 50000, 3), {len(huge) // 1024} KB",
           lambda: upload("models", "huge", huge, "m.keras"))
    record(f"model: Dense(20000) on 20000 inputs, {len(wide20k) // 1024} KB",
           lambda: upload("models", "wide20k", wide20k, "m.keras"))
    record(f"model: Dense(15000) on 15000 inputs, {len(wide15k) // 1024} KB",
           lambda: upload("models", "wide15k", wide15k, "m.keras"))
    conv = record(f"model: conv, input (2000, 2000, 3), {len(conv_bytes) // 1024} KB",
                  lambda: upload("models", "conv2000", conv_bytes, "m.keras"))

    bomb = io.BytesIO()
    np.savez_compressed(bomb, x=np.zeros((2**27, 2), "float32"))
    bomb_bytes = bomb.getvalue()
    record(f"data: npz bomb ({len(bomb_bytes) / 2**20:.1f} MB -> 1 GiB)",
           lambda: upload("datasets", "bomb", bomb_bytes, "bomb.npz"))

    def three_bombs():
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futs = [pool.submit(upload, "datasets", f"bomb{i}", bomb_bytes, "b.npz")
                    for i in range(3)]
            return [f.result() for f in futs][-1]

    record("data: three npz bombs at once", three_bombs)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 10)})
    record("data: .npy header (10**12, 10)",
           lambda: upload("datasets", "hdr", header.getvalue() + b"\0" * 64, "h.npy"))

    # A small model for the request cases.
    from explain._backend import keras

    mlp = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="tanh"),
                            keras.layers.Dense(3, activation="softmax")])
    mlp_path = work / "mlp.keras"
    mlp.save(mlp_path)
    model = upload("models", "mlp", mlp_path.read_bytes(), "mlp.keras").json()
    rng = np.random.default_rng(0)
    data = io.BytesIO()
    np.savez(data, x=rng.normal(size=(60, 4)).astype("float32"), y=rng.integers(0, 3, 60))
    dataset = upload("datasets", "rows", data.getvalue(), "rows.npz").json()

    def explain(body):
        return requests.post(f"{base}/api/v1/explain", headers=headers, json=body, timeout=300)

    record("/explain 64 rows, steps 4096, uniform x 4096", lambda: explain({
        "model_id": model["id"], "instances": [[0.1, 0.2, 0.3, 0.4]] * 64,
        "method": "integrated_gradients",
        "options": {"steps": 4096, "baseline": "uniform", "baseline_samples": 4096}}))

    def raw(body: str):
        return requests.post(f"{base}/api/v1/explain", data=body, timeout=60,
                             headers={**headers, "Content-Type": "application/json"})

    record("JSON nested 1000 deep", lambda: raw("[" * 1000 + "]" * 1000))
    record("JSON 5000-digit integer", lambda: raw(
        '{"model_id": "' + model["id"] + '", "instances": [[' + "9" * 5000 + ', 1, 1, 1]]}'))
    record("option seed 2**70", lambda: explain({
        "model_id": model["id"], "instances": [[0.1, 0.2, 0.3, 0.4]],
        "options": {"seed": 2**70}}))
    record('option logits "yes"', lambda: explain({
        "model_id": model["id"], "instances": [[0.1, 0.2, 0.3, 0.4]],
        "options": {"logits": "yes"}}))
    record('instances as numeric strings', lambda: explain({
        "model_id": model["id"], "instances": [["0.1", "0.2", "0.3", "0.4"]]}))

    def schedule(url=None, cron="* * * * *"):
        body = {"cron": cron, "model_name": "mlp", "dataset_name": "rows"}
        if url is not None:
            body["webhook_url"] = url
        return requests.post(f"{base}/api/v1/schedules", headers=headers, json=body,
                             timeout=60)

    for url in ("http://127.0.0.1:8000/hook", "http://[::1]/hook",
                "http://169.254.169.254/latest/meta-data", "http://localhost/x",
                "http://example.com/a\r\nX: 1"):
        record(f"webhook {url!r}", lambda url=url: schedule(url, "0 0 1 1 *"))

    def many_schedules():
        last = None
        for _ in range(200):
            last = schedule()
            if last.status_code != 201:
                break
        return last

    record("200 every-minute schedules", many_schedules)
    # The accepted schedules would keep the worker busy (and the tenant at its queue
    # cap): delete them and the audits they started.
    for item in requests.get(f"{base}/api/v1/schedules?limit=500", headers=headers,
                             timeout=60).json()["items"]:
        requests.delete(f"{base}/api/v1/schedules/{item['id']}", headers=headers, timeout=60)

    def revoke():
        from sqlalchemy import create_engine, text

        eng = create_engine(f"sqlite:///{work / 'var' / 'xaudit.sqlite'}")
        with eng.begin() as conn:
            key_id = conn.execute(text("select id from api_keys")).scalars().first()
        eng.dispose()
        spare = subprocess.run([str(BIN / "xaudit"), "keys", "create", "--tenant", "redteam"],
                               env=serve.env, capture_output=True, text=True, timeout=120,
                               check=True, cwd=ROOT).stdout.strip().splitlines()[-1]
        r = requests.delete(f"{base}/api/v1/keys/{key_id}",
                            headers={"Authorization": f"Bearer {spare}"}, timeout=30)
        assert r.status_code == 204, r.text
        after = requests.get(f"{base}/api/v1/models", headers=headers, timeout=30)
        headers["Authorization"] = f"Bearer {spare}"
        return after

    record("revoked key used again", revoke)

    if conv is not None and conv.status_code == 201:
        images = io.BytesIO()
        np.savez_compressed(images, x=rng.random((2, 2000, 2000, 3), dtype=np.float32),
                            y=np.array([0, 1]))
        ds = upload("datasets", "images", images.getvalue(), "img.npz").json()

        def conv_audit():
            r = requests.post(f"{base}/api/v1/audits", headers=headers, timeout=60, json={
                "model_id": conv.json()["id"], "dataset_id": ds["id"],
                "config": {"samples": 2, "methods": ["integrated_gradients"]}})
            if r.status_code != 202:
                return r
            return _wait_audit(base, headers, r.json()["status_url"], 900)

        record("audit of the conv model, 2 images, IG", conv_audit)

    def normal_audit():
        r = requests.post(f"{base}/api/v1/audits", headers=headers, timeout=60, json={
            "model_id": model["id"], "dataset_id": dataset["id"],
            "config": {"samples": 4, "methods": ["integrated_gradients"],
                       "global_rows": 16, "sanity_rows": 2}})
        if r.status_code != 202:
            return r
        return _wait_audit(base, headers, r.json()["status_url"], 600)

    record("then a normal audit", normal_audit)
    return rows


class _Done:
    def __init__(self, body: dict):
        self.status_code = body["status"]
        self.headers = {"Content-Type": "application/json"}
        self._body = body

    def json(self):
        err = self._body.get("error") or {}
        return {"error": {"code": err.get("code", "")}}


def _wait_audit(base, headers, url, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = requests.get(f"{base}{url}" if url.startswith("/") else url,
                            headers=headers, timeout=30).json()
        if body["status"] in ("succeeded", "failed"):
            return _Done(body)
        time.sleep(1)
    return _Done({"status": "timeout"})


if __name__ == "__main__":
    raise SystemExit(main())
