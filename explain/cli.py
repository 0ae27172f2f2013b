"""The ``xaudit`` command.

Each subcommand lives in its own section below. Errors a user can cause
(:class:`explain.errors.XauditError`, ``ValueError``, ``TypeError``) are printed as one
line with their code and exit with status 2; nothing prints a traceback for bad input.
"""

from __future__ import annotations

import functools
import sys

import click

from explain.errors import XauditError


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
@click.option("--method", default="integrated_gradients", show_default=True)
@click.option("--rows", default=8, show_default=True, help="Explain the first N rows.")
@click.option("--out", default="attributions.npy", show_default=True,
              help="Where to write the attributions (.npy).")
@friendly_errors
def explain_cmd(model_path: str, data_path: str, method: str, rows: int, out: str) -> None:
    """Compute attributions for the first rows of DATA and save them as .npy."""
    import numpy as np

    from explain.attributions import explain as run
    from explain.datasets import load_data_file
    from explain.modelio import load_model_safely

    model, _spec = load_model_safely(model_path)
    data = load_data_file(data_path)
    res = run(model, data.x[:rows], method)
    np.save(out, res.values)
    msg = f"wrote {out} {res.values.shape}"
    if res.completeness_gap is not None:
        msg += f"; max |completeness gap| {float(np.max(np.abs(res.completeness_gap))):.3g}"
    click.echo(msg)


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
              help="A bundled data set: breast_cancer, wine, digits, shapes, tabular_leaky.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the model (.keras); the sidecar goes to OUT.json.")
@click.option("--shortcut/--no-shortcut", default=None,
              help="shapes / tabular_leaky: plant the shortcut (default) or use the clean "
                   "twin.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Epoch budget (default depends on the data set; early stopping may end "
                   "sooner).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the data, the split and the weights.")
@click.option("--save-test", type=click.Path(dir_okay=False), default=None,
              help="Also write the held-out test split here (.npz) for `xaudit audit`.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@friendly_errors
def train_cmd(dataset_name: str, out: str, shortcut: bool | None, epochs: int | None,
              seed: int, save_test: str | None, quiet: bool) -> None:
    """Train a reference model on a bundled data set, evaluate it and save it."""
    from explain.training import train_reference_model

    res = train_reference_model(dataset_name, out=out, epochs=epochs, seed=seed,
                                shortcut=shortcut, save_test=save_test,
                                verbose=0 if quiet else 1)
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
# (explain/audit.py)

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
    """Start a helper process that dies with this one (Linux: parent-death signal)."""
    import signal
    import subprocess

    def _die_with_parent() -> None:
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass

    return subprocess.Popen(argv, preexec_fn=_die_with_parent)


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

    cfg, _engine = _service_db()
    children = []
    if embedded_worker:
        children.append(_spawn_child([
            sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
            "-Q", "attributions,default", "--pool", "solo", "-c", "1",
            "-n", "embedded@%h", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
        ]))
    if with_beat:
        children.append(_spawn_child([sys.executable, "-m", "explain.cli", "beat"]))

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
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=20)
            except Exception:
                child.kill()


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
