"""The ``xaudit`` command.

Each subcommand lives in its own section below. Errors a user can cause
(:class:`explain.errors.XauditError`, ``ValueError``, ``TypeError``) are printed as one
line with their code and exit with status 2; nothing prints a traceback for bad input.
"""

from __future__ import annotations

import functools
import logging
import os
import sys

import click

from explain.errors import XauditError

# TensorFlow's and absl's Python loggers repeat what xaudit already says (or say nothing
# a user can act on); their C++ start-up lines are silenced in explain._backend.
for _name in ("tensorflow", "absl", "h5py"):
    logging.getLogger(_name).setLevel(logging.ERROR)


def friendly_errors(fn):
    """Turn user-caused errors into one clear line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except XauditError as exc:
            click.echo(f"error [{exc.code}]: {exc.message}", err=True)
            sys.exit(2)
        except (ValueError, TypeError, FileNotFoundError, PermissionError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="xaudit")
def main() -> None:
    """xaudit: explainability audits for Keras models."""


# ----------------------------------------------------------------------------- explain
@main.command("explain")
@click.argument("model_path", type=click.Path(dir_okay=False))
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False),
              help="An .npz (array x) or .csv file of rows to explain.")
@click.option("--label", default=None,
              help="The label column of a .csv file (left out of the model's inputs).")
@click.option("--sensitive", default=None, metavar="COL[,COL]",
              help="Sensitive columns of a .csv, left out of the model's inputs (or names "
                   "among an .npz's sensitive_names); prints the inputs whose mean "
                   "attribution differs most between their groups.")
@click.option("--method", default="integrated_gradients", show_default=True)
@click.option("--rows", default=8, show_default=True, help="Explain the first N rows.")
@click.option("--out", default="attributions.npy", show_default=True,
              help="Where to write the attributions (.npy).")
@friendly_errors
def explain_cmd(model_path: str, data_path: str, label: str | None, sensitive: str | None,
                method: str, rows: int, out: str) -> None:
    """Compute attributions for the first rows of DATA and save them as .npy."""
    import numpy as np

    from explain.attributions import explain as run
    from explain.datasets import load_data_file, tokenize_for_model, validate_for_model
    from explain.modelio import load_model_safely

    model, spec = load_model_safely(model_path)
    raw = load_data_file(data_path, label=label, sensitive=sensitive)
    if spec.input_kind == "text":
        raw = tokenize_for_model(raw, model)  # texts (csv column, npz of strings) → ids
    data = validate_for_model(raw, spec)
    res = run(model, data.x[:rows], method)
    np.save(out, res.values)
    msg = f"wrote {out} {res.values.shape}"
    if res.completeness_gap is not None:
        msg += f"; max |completeness gap| {float(np.max(np.abs(res.completeness_gap))):.3g}"
    click.echo(msg)
    if spec.input_kind == "text" and data.vocabulary is not None:
        # the tokens of each row that weigh most either way (a strong negative is as telling
        # as a strong positive), so the numbers can be read at a glance
        ids = np.asarray(data.x[:rows]).astype(int)
        for r, (row, vals) in enumerate(zip(ids, res.values, strict=True)):
            top = [j for j in np.argsort(-np.abs(vals), kind="stable") if row[j] != 0][:3]
            shown = ", ".join(f"{data.vocabulary[row[j]]} {vals[j]:+.3f}" for j in top)
            click.echo(f"row {r}: {shown}")
    if sensitive and data.sensitive and data.kind == "tabular" and data.feature_names:
        from explain.fairness import attribution_by_group, group_labels

        values = np.asarray(res.values).reshape(len(res.values), -1)
        for name, column in data.sensitive.items():
            groups, _ = group_labels(column[:rows], name)
            present = sorted(set(groups.tolist()))
            diffs = attribution_by_group(values, groups, data.feature_names, present,
                                         top=3)["largest_differences"]
            shown = "; ".join(f"{d['feature']} {d['difference']:.3g} ({d['highest']} > "
                              f"{d['lowest']})" for d in diffs)
            click.echo(f"{name}: {len(present)} groups in {len(values)} rows; attribution "
                       f"differs most for: {shown or 'n/a (one group)'}")


# ----------------------------------------------------------------------------- inspect
# (model intake: explain/modelio.py)
@main.command("inspect")
@click.argument("model_path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the model spec as JSON.")
@friendly_errors
def inspect_cmd(model_path: str, as_json: bool) -> None:
    """Check MODEL exactly as an upload is checked, then describe it.

    Prints inputs, heads and task, parameter count, layers and Grad-CAM candidate
    layers. A hostile or broken file prints one line, ``error [code]: reason``, and
    exits with status 2. Caps and allow-lists come from the XAUDIT_* environment.
    """
    import json

    from explain.modelio import inspect_model_file

    spec = inspect_model_file(model_path)
    click.echo(json.dumps(spec.to_dict(), indent=2) if as_json else spec.summary())


# ----------------------------------------------------------------------------- train
# (explain/training.py)
@main.command("train")
@click.option("--dataset", "dataset_name", required=True,
              help="A bundled data set: breast_cancer, wine, digits, shapes, tabular_leaky, "
                   "lending, text_leaky, sequence_spike.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the model (.keras); the sidecar goes to OUT.json.")
@click.option("--shortcut/--no-shortcut", default=None,
              help="shapes / tabular_leaky / lending: plant the shortcut (lending: the "
                   "biased labels; default) or use the clean twin.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Epoch budget (default depends on the data set; early stopping may end "
                   "sooner).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the data, the split and the weights.")
@click.option("--save-test", type=click.Path(dir_okay=False), default=None,
              help="Also write the held-out test split here (.npz) for `xaudit audit`.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--arch", default=None,
              help="text_leaky: pool (default), lstm, gru, conv, vectorize (strings in); "
                   "sequence_spike: conv1d (default), lstm.")
@friendly_errors
def train_cmd(dataset_name: str, out: str, shortcut: bool | None, epochs: int | None,
              seed: int, save_test: str | None, quiet: bool, arch: str | None) -> None:
    """Train a reference model on a bundled data set, evaluate it and save it."""
    from explain.training import train_reference_model

    res = train_reference_model(dataset_name, out=out, epochs=epochs, seed=seed,
                                shortcut=shortcut, save_test=save_test,
                                verbose=0 if quiet else 1, arch=arch)
    m = res.test_metrics
    click.echo(
        f"trained {res.dataset.name}: {res.epochs_run} epochs (best {res.best_epoch}) in "
        f"{res.seconds:.1f}s; test accuracy {m['accuracy']:.3f}, balanced accuracy "
        f"{m['balanced_accuracy']:.3f} on {m['n_samples']} rows"
    )
    click.echo(f"wrote {res.model_path} and {res.sidecar_path}")
    if res.test_path is not None:
        click.echo(f"wrote the test split to {res.test_path}")


# ----------------------------------------------------------------------------- audit / demo
# (explain/audit/)


class _StageBars:
    """run_audit's progress callback: one tqdm bar per stage on stderr."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None
        self.stage: str | None = None

    def __call__(self, stage: str, fraction: float) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        from explain.audit import stage_span

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=100, desc=f"{stage:<17}", file=sys.stderr, leave=True,
                            dynamic_ncols=True,
                            bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}")
        lo, hi = stage_span(stage)
        within = 1.0 if hi <= lo else (fraction - lo) / (hi - lo)
        target = int(round(100 * min(1.0, max(0.0, within))))
        if target > self.bar.n:
            self.bar.update(target - self.bar.n)

    def close(self, complete: bool = True) -> None:
        if self.bar is not None:
            if complete:
                self.bar.update(100 - self.bar.n)
            self.bar.close()
            self.bar = None


def _write_outputs(result, out: str | None, json_out: str | None) -> list[str]:
    """Render first, then write: a failed render leaves no half-written report behind."""
    import os
    import tempfile
    from pathlib import Path

    from reports import render_html, render_json

    texts = []
    if out is not None:
        texts.append((Path(out), render_html(result)))
    if json_out is not None:
        texts.append((Path(json_out), render_json(result)))
    written = []
    for path, text in texts:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(f"{path} ({path.stat().st_size / 1024:.0f} KiB)")
    return written


def _summary_lines(result) -> list[str]:
    report = result.report
    verdict = report["verdict"]
    perf = report["performance"]
    score = (f"accuracy {perf['accuracy']:.3f}" if "accuracy" in perf
             else f"MAE {perf['mae']:.4g}")
    lines = [f"verdict: {verdict['level'].upper()}; {score} on {report['dataset']['rows']} "
             f"rows; {len(report['examples'])} examples explained"]
    for f in report["findings"]:
        lines.append(f"  [{f['severity']}] {f['code']}: {f['message']}")
    return lines


@main.command("audit")
@click.argument("model_path", type=click.Path(dir_okay=False))
@click.option("--data", "data_path", required=True,
              help="Labelled data: an .npz (arrays x, y), a .csv (with --label) or a "
                   "bundled data set name.")
@click.option("--label", default=None, help="The label column of a .csv file.")
@click.option("--sensitive", default=None, metavar="COL[,COL]",
              help="Sensitive attributes to audit for group fairness: .csv columns kept out "
                   "of the model's inputs, or names among an .npz's sensitive_names "
                   "(default: all an .npz holds).")
@click.option("--out", default="report.html", show_default=True,
              type=click.Path(dir_okay=False), help="Where to write the HTML report.")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False),
              help="Also write report.json here.")
@click.option("--methods", multiple=True,
              help="Attribution methods (repeat, or comma-separate). Default: "
                   "integrated_gradients, grad_cam, shap for images; integrated_gradients, "
                   "shap for tables.")
@click.option("--samples", type=click.IntRange(min=2), default=None,
              help="Examples to explain one by one (default 24).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds every random choice; the same seed gives the same report.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="A JSON file of further audit settings (see explain.audit.AuditConfig).")
@click.option("--previous", default=None, type=click.Path(),
              help="A previous report.json (or saved audit folder) to measure drift against.")
@click.option("--name", "model_name", default=None,
              help="Model name in the report (default: the file name).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@friendly_errors
def audit_cmd(model_path: str, data_path: str, label: str | None, sensitive: str | None,
              out: str, json_out: str | None, methods: tuple[str, ...], samples: int | None, seed: int,
              config_path: str | None, previous: str | None, model_name: str | None,
              quiet: bool) -> None:
    """Audit MODEL on labelled DATA and write a self-contained HTML report.

    Checks the model file before loading it, measures performance on every row, explains
    a sample of examples with several methods, checks whether those explanations can be
    trusted, and lists findings (shortcuts, leaks, weak classes, drift). Bad input prints
    one line, ``error [code]: reason``, writes nothing and exits with status 2.
    """
    import json
    from pathlib import Path

    from explain.audit import AuditConfig, run_audit
    from explain.datasets import load_any

    config: dict = {}
    if config_path is not None:
        try:
            config = json.loads(Path(config_path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"--config {config_path} is not JSON: {exc}") from None
        if not isinstance(config, dict):
            raise ValueError(f"--config {config_path} must hold a JSON object")
    names = [m.strip() for item in methods for m in item.split(",") if m.strip()]
    if names:
        config["methods"] = names
    if samples is not None:
        config["samples"] = samples
    if sensitive is not None:
        config["sensitive"] = [c.strip() for c in sensitive.split(",") if c.strip()]
    config["seed"] = seed
    cfg = AuditConfig.from_dict(config)
    if not Path(model_path).is_file():
        # Said before the data is read (which loads TensorFlow): a mistyped path answers at once.
        from explain.errors import ModelIntakeError

        raise ModelIntakeError(f"no such model file: {model_path}", code="not_found")
    data = load_any(data_path, label=label, seed=seed, sensitive=cfg.sensitive)
    bars = _StageBars(enabled=not quiet)
    try:
        result = run_audit(model_path, data, cfg, progress=bars, previous=previous,
                           model_name=model_name)
    except BaseException:
        bars.close(complete=False)  # a failed stage is not shown as done
        raise
    bars.close()
    for line in _summary_lines(result):
        click.echo(line)
    for written in _write_outputs(result, out, json_out):
        click.echo(f"wrote {written}")


@main.command("demo")
@click.option("--out", default="report.html", show_default=True,
              type=click.Path(dir_okay=False),
              help="Where to write the HTML report; report.json goes beside it.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@friendly_errors
def demo_cmd(out: str, seed: int, quiet: bool) -> None:
    """Train a model with a planted shortcut, audit it, and write the report.

    The bundled ``shapes`` images carry a small white watermark in the corner that
    belongs to their class; a CNN trained on them learns to read the corner. The audit
    runs on the held-out test split and should say so.
    """
    import time
    from pathlib import Path

    from explain.audit import run_audit
    from explain.training import train_reference_model

    t0 = time.perf_counter()
    html = Path(out)
    work = html.parent / f"{html.stem}_demo"
    work.mkdir(parents=True, exist_ok=True)
    click.echo("training a CNN on the shapes images (the watermark corner follows the "
               "class) ...", err=True)
    trained = train_reference_model("shapes", out=work / "shapes_shortcut.keras", seed=seed,
                                    shortcut=True, save_test=work / "shapes_test.npz",
                                    verbose=0 if quiet else 1)
    click.echo(f"trained in {trained.seconds:.0f}s: test accuracy "
               f"{trained.test_accuracy:.3f}; auditing {trained.test.n} held-out images ...",
               err=True)
    bars = _StageBars(enabled=not quiet)
    try:
        result = run_audit(trained.model_path, trained.test, {"seed": seed}, progress=bars,
                           model_name="shapes CNN (planted watermark)",
                           dataset_name="shapes, held-out test split")
    finally:
        bars.close()
    for line in _summary_lines(result):
        click.echo(line)
    for written in _write_outputs(result, str(html), str(html.with_suffix(".json"))):
        click.echo(f"wrote {written}")
    click.echo(f"open {html.resolve()} in a browser ({time.perf_counter() - t0:.0f}s in all; "
               f"model and test split in {work})")

# ----------------------------------------------------------------------------- serve / worker / beat / keys
# (api/, worker/) Configuration comes from XAUDIT_* variables (see api/config.py).


def _service_db():
    """(config, engine) with the schema migrated, without importing TensorFlow."""
    from api import config as service_config
    from api.db import make_engine
    from api.migrate import upgrade

    cfg = service_config.load()
    engine = make_engine(cfg["DATABASE_URL"])
    upgrade(engine)
    return cfg, engine


def _spawn_child(argv: list[str]):
    """Start a helper process that dies with this one (Linux: parent-death signal).

    SIGKILL, not SIGTERM: a worker asked to stop politely first finishes its task, so
    after a ``kill -9`` of ``xaudit serve`` it would run on as an orphan; its unfinished
    job is recovered from the database instead (claims and heartbeats).
    """
    import signal
    import subprocess

    def _die_with_parent() -> None:
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass

    return subprocess.Popen(argv, preexec_fn=_die_with_parent)


class _Supervisor:
    """Keeps the embedded worker processes running: one that exits (the watchdog ended it
    over a time or memory limit, or the kernel killed it) is started again."""

    def __init__(self, specs: list[list[str]]):
        import threading

        self.specs = specs
        self.children = [_spawn_child(argv) for argv in specs]
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._watch, daemon=True, name="supervisor")
        self.thread.start()

    def _watch(self) -> None:
        while not self.stopping.wait(1.0):
            with self.lock:
                for i, child in enumerate(self.children):
                    if child.poll() is not None and not self.stopping.is_set():
                        click.echo(f"xaudit: child process {' '.join(self.specs[i][3:8])} "
                                   f"exited ({child.returncode}); starting it again", err=True)
                        self.children[i] = _spawn_child(self.specs[i])

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            for child in self.children:
                child.terminate()
            for child in self.children:
                try:
                    child.wait(timeout=20)
                except Exception:
                    child.kill()


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int,
              help="Request threads (an /explain call holds one while it waits).")
@click.option("--embedded-worker/--no-embedded-worker", default=True, show_default=True,
              help="Also run a worker consuming both queues.")
@click.option("--beat/--no-beat", "with_beat", default=True, show_default=True,
              help="Also run the schedule dispatcher.")
@friendly_errors
def serve_cmd(host: str, port: int, threads: int, embedded_worker: bool,
              with_beat: bool) -> None:
    """Run the service: API, a worker and the beat on this machine.

    With no configuration it needs no other server: SQLite and blobs in XAUDIT_DATA_DIR
    (default ./var), a broker in files there. With XAUDIT_REDIS_URL set the broker and
    results are in Redis; with XAUDIT_DATABASE_URL, the database is PostgreSQL.
    """
    from gunicorn.app.base import BaseApplication

    specs: list[list[str]] = []
    if embedded_worker:
        # /explain gets a lane (queue and worker) of its own: one tenant's long audit never
        # holds up another tenant's one-row explain.
        os.environ.setdefault("XAUDIT_EXPLAIN_QUEUE", "explain")
        lanes = [("attributions,default", "embedded")]
        if os.environ["XAUDIT_EXPLAIN_QUEUE"] not in ("attributions", "default"):
            lanes.append((os.environ["XAUDIT_EXPLAIN_QUEUE"], "explain"))
        for queues, name in lanes:
            specs.append([
                sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
                "-Q", queues, "--pool", "solo", "-c", "1", "-n", f"{name}@%h",
                "--loglevel", "INFO", "--without-gossip", "--without-mingle",
            ])
    if with_beat:
        specs.append([sys.executable, "-m", "explain.cli", "beat"])
    cfg, _engine = _service_db()
    supervisor = _Supervisor(specs)

    class _Gunicorn(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", 1)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", threads)
            self.cfg.set("timeout", 300)
            self.cfg.set("accesslog", "-")

        def load(self):
            # Built in the worker process, after the fork: TensorFlow is not fork-safe.
            from api import create_app

            return create_app()

    click.echo(f"xaudit: serving on http://{host}:{port} (data in {cfg['DATA_DIR']}, "
               f"broker {cfg['CELERY_BROKER_URL'].split('@')[-1]})", err=True)
    try:
        _Gunicorn().run()
    finally:
        supervisor.stop()


@main.command("worker", context_settings={"ignore_unknown_options": True})
@click.option("--queues", "-Q", default="attributions,default", show_default=True,
              help="Comma-separated queues to consume.")
@click.option("--concurrency", "-c", default=1, show_default=True, type=int)
@click.option("--pool", default="solo", show_default=True,
              type=click.Choice(["solo", "prefork", "threads"]))
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker_cmd(queues: str, concurrency: int, pool: str, loglevel: str,
               celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker (one per GPU: pin it with CUDA_VISIBLE_DEVICES)."""
    from worker.celery_app import celery

    celery.worker_main([
        "worker", "-Q", queues, "-c", str(concurrency), "--pool", pool,
        "--loglevel", loglevel, *celery_args,
    ])


@main.command("beat")
@click.option("--interval", default=None, type=float,
              help="Seconds between rounds (default: XAUDIT_BEAT_INTERVAL, 15).")
def beat_cmd(interval: float | None) -> None:
    """Dispatch due scheduled audits and requeue audits whose worker vanished."""
    import logging
    import signal
    import threading

    from api import create_app
    from worker.beat import run_forever

    logging.basicConfig(level=logging.INFO, format="%(asctime)s beat %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run_forever(create_app(), interval=interval, stop=stop)


@main.group("keys")
def keys_group() -> None:
    """API keys of tenants."""


@keys_group.command("create")
@click.option("--tenant", required=True, help="The tenant's name (created if new).")
@friendly_errors
def keys_create_cmd(tenant: str) -> None:
    """Create an API key for TENANT and print it (it is shown only this once)."""
    import re

    from sqlalchemy.orm import Session

    from api.auth import create_key

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", tenant):
        raise ValueError("tenant names are 1-128 letters, digits, '.', '_' or '-'")
    _cfg, engine = _service_db()
    with Session(engine) as session:
        token, _tenant = create_key(session, tenant)
    click.echo(token)


@keys_group.command("list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
@friendly_errors
def keys_list_cmd(tenant: str | None) -> None:
    """List API keys: id, token prefix, tenant, created, revoked (never the tokens)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from api import db
    from api.auth import key_json, list_keys

    _cfg, engine = _service_db()
    with Session(engine) as session:
        tenant_id = None
        if tenant is not None:
            row = session.scalars(select(db.Tenant).where(db.Tenant.name == tenant)).first()
            if row is None:
                raise ValueError(f"no tenant named {tenant!r}")
            tenant_id = row.id
        names = {t.id: t.name for t in session.scalars(select(db.Tenant))}
        for key in list_keys(session, tenant_id):
            info = key_json(key)
            click.echo(f"{info['id']}  {info['prefix']}  {names.get(key.tenant_id, '?')}  "
                       f"created {info['created_at']}  "
                       + (f"REVOKED {info['revoked_at']}" if info["revoked_at"] else "active"))


@keys_group.command("revoke")
@click.argument("key")
@friendly_errors
def keys_revoke_cmd(key: str) -> None:
    """Revoke the API key KEY (its id, or its token prefix as `keys list` shows it)."""
    from sqlalchemy.orm import Session

    from api.auth import revoke_key

    _cfg, engine = _service_db()
    with Session(engine) as session:
        row = revoke_key(session, key)
        if row is None:
            raise ValueError(f"no API key {key!r}")
        click.echo(f"revoked {row.id} ({row.prefix}...)")


@main.group("db")
def db_group() -> None:
    """The service database."""


@db_group.command("upgrade")
@friendly_errors
def db_upgrade_cmd() -> None:
    """Create or migrate the database schema to the newest version."""
    from api.migrate import current

    _cfg, engine = _service_db()
    click.echo(f"database at revision {current(engine)}")


if __name__ == "__main__":  # pragma: no cover
    main()
