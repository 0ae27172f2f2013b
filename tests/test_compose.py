"""docker-compose.yml and the Dockerfile agree with the code.

No Docker engine runs here, so the compose file is parsed and every command in it is
checked against what it calls: `xaudit` subcommands and their options (through click),
the options handed on to `celery worker` (through Celery's own parser), the Celery app
path and its queue names, the gunicorn target (imported the way gunicorn imports it), and
every `XAUDIT_*` variable is one the service reads.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SERVICES = {"redis", "postgres", "api", "worker-gpu", "worker-cpu", "worker-explain", "beat",
            "flower"}
XAUDIT_SERVICES = ("migrate", "api", "worker-gpu", "worker-cpu", "worker-explain", "beat",
                   "flower")
WORKERS = ("worker-gpu", "worker-cpu", "worker-explain")
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with nothing set in the environment."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def service_env(tmp_path_factory):
    """The service's environment for importing the app: a temp data dir, in-memory broker."""
    mp = pytest.MonkeyPatch()
    data = tmp_path_factory.mktemp("compose-data")
    for name in list(os.environ):
        if name.startswith("XAUDIT_"):
            mp.delenv(name)
    mp.setenv("XAUDIT_DATA_DIR", str(data))
    mp.setenv("XAUDIT_CELERY_BROKER_URL", "memory://")
    mp.setenv("XAUDIT_CELERY_RESULT_BACKEND", "cache+memory://")
    yield data
    mp.undo()


@pytest.fixture(scope="module")
def celery_app(service_env):
    from celery.app.utils import find_app

    return find_app("worker.celery_app")


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def test_every_service_is_there_and_depends_only_on_services_that_exist(services):
    assert set(services) >= SERVICES
    for name, svc in services.items():
        for dep in svc.get("depends_on") or {}:
            assert dep in services, f"{name} depends on unknown service {dep}"
        assert "image" in svc or "build" in svc, name


def test_redis_keeps_an_append_only_file_on_a_volume(compose, services):
    redis = services["redis"]
    cmd = " ".join(redis["command"]) if isinstance(redis["command"], list) else redis["command"]
    assert re.search(r"--appendonly\s+yes", cmd)
    volumes = [v.split(":") for v in redis["volumes"]]
    assert any(target == "/data" and source in compose["volumes"]
               for source, target, *_ in volumes)
    assert "healthcheck" in redis


def test_postgres_has_a_volume_and_a_healthcheck(compose, services):
    pg = services["postgres"]
    assert any(v.split(":")[0] in compose["volumes"] for v in pg["volumes"])
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    # The services' URL names this database, user and host, with a driver SQLAlchemy has.
    from sqlalchemy.engine import make_url

    env = env_of(pg)
    for name in XAUDIT_SERVICES:
        url = make_url(interpolate(env_of(services[name])["XAUDIT_DATABASE_URL"]))
        assert url.get_backend_name() == "postgresql"
        url.get_dialect()  # the driver (psycopg2) is a dependency of the package
        assert (url.host, url.username, url.database) == (
            "postgres", env["POSTGRES_USER"], env["POSTGRES_DB"])
        assert url.password == interpolate(env["POSTGRES_PASSWORD"])


def test_the_api_runs_gunicorn_on_the_app_factory(services, service_env):
    from flask import Flask
    from gunicorn.config import Config
    from gunicorn.util import import_app

    cmd = services["api"]["command"]
    assert cmd[0] == "gunicorn"
    args = Config().parser().parse_args(cmd[1:])
    assert len(args.args) == 1
    # Exactly what gunicorn does with the target: import the module, call the factory.
    app = import_app(args.args[0])
    assert isinstance(app, Flask)
    assert "/healthz" in {r.rule for r in app.url_map.iter_rules()}
    bind = args.bind[0]
    port = bind.rsplit(":", 1)[1]
    assert any(str(p).endswith(f":{port}") for p in services["api"]["ports"])
    assert not getattr(args, "preload_app", False)  # TensorFlow is not fork-safe


def _celery_worker_argv(monkeypatch, celery_app, argv: list[str]) -> list[str]:
    """Run `xaudit worker ...` with Celery's worker_main replaced by a recorder."""
    from click.testing import CliRunner

    from explain.cli import main

    seen: list[list[str]] = []
    monkeypatch.setattr(celery_app, "worker_main", lambda args: seen.append(list(args)))
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    assert len(seen) == 1
    return seen[0]


def _parse_celery_worker(celery_app, argv: list[str]) -> dict:
    from celery.bin.base import CLIContext
    from celery.bin.worker import worker as celery_worker

    assert argv[0] == "worker"
    ctx = celery_worker.make_context(
        "worker", list(argv[1:]),
        obj=CLIContext(app=celery_app, no_color=True, workdir=None, quiet=True))
    return ctx.params


def _worker_params(monkeypatch, celery_app, service: dict) -> dict:
    cmd = service["command"]
    assert cmd[:2] == ["xaudit", "worker"]
    return _parse_celery_worker(celery_app, _celery_worker_argv(monkeypatch, celery_app,
                                                                cmd[1:]))


def test_workers_consume_queues_the_celery_app_declares(monkeypatch, services, celery_app):
    declared = {q.name for q in celery_app.conf.task_queues}
    consumed: set[str] = set()
    for name in ("worker-gpu", "worker-cpu"):
        params = _worker_params(monkeypatch, celery_app, services[name])
        assert set(params["queues"]) <= declared, (name, params["queues"], declared)
        consumed |= set(params["queues"])
    gpu = _worker_params(monkeypatch, celery_app, services["worker-gpu"])
    cpu = _worker_params(monkeypatch, celery_app, services["worker-cpu"])
    assert gpu["queues"] == ["attributions"]
    assert gpu["concurrency"] == 1 and gpu["prefetch_multiplier"] == 1
    assert gpu["pool"].__module__ == "celery.concurrency.solo"
    assert cpu["queues"] == ["default"]
    # Every queue a task is routed to has a worker in the stack.
    routed = {route["queue"] for route in celery_app.conf.task_routes.values()}
    assert routed <= consumed, routed - consumed


def test_explain_jobs_go_to_a_queue_a_worker_of_their_own_consumes(monkeypatch, services,
                                                                   celery_app):
    from api.queue import ATTRIBUTIONS, celery_config, explain_queue

    # Every service (the API sends, the beat resends) names the same /explain queue.
    queues = {env_of(services[name]).get("XAUDIT_EXPLAIN_QUEUE") for name in XAUDIT_SERVICES}
    assert len(queues) == 1
    queue = explain_queue({"EXPLAIN_QUEUE": queues.pop()})
    assert queue != ATTRIBUTIONS
    params = _worker_params(monkeypatch, celery_app, services["worker-explain"])
    assert params["queues"] == [queue]
    # The Celery app built with that setting declares the queue and routes /explain to it.
    from api.config import defaults, resolve

    cfg = {**defaults(), "EXPLAIN_QUEUE": queue, "DATA_DIR": str(os.getcwd())}
    cfg["CELERY_BROKER_URL"] = "redis://redis:6379/0"
    cfg["CELERY_RESULT_BACKEND"] = "redis://redis:6379/0"
    resolve(cfg)
    conf = celery_config(cfg)
    assert queue in {q.name for q in conf["task_queues"]}
    assert conf["task_routes"]["xaudit.explain"] == {"queue": queue}


def test_workers_are_restarted_after_the_watchdog_ends_them(services):
    # The watchdog ends a worker over its memory or hard time limit (exit 75): compose
    # must start it again.
    for name in (*WORKERS, "beat", "api"):
        assert services[name].get("restart") == "unless-stopped", name


def test_the_gpu_worker_reserves_an_nvidia_gpu_and_is_pinned(services):
    gpu = services["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    pinned = env_of(gpu)["CUDA_VISIBLE_DEVICES"]
    assert pinned != ""
    reserved = {str(i) for d in devices for i in d.get("device_ids", [])}
    assert not reserved or set(pinned.split(",")) <= reserved
    assert gpu["build"]["args"]["EXTRAS"] == "gpu"


def test_beat_migrate_and_flower_commands_exist(services, celery_app):
    from celery import Celery
    from celery.app.utils import find_app
    from click.testing import CliRunner

    from explain.cli import main

    for name in ("beat", "migrate"):
        cmd = services[name]["command"]
        assert cmd[0] == "xaudit"
        result = CliRunner().invoke(main, [*cmd[1:], "--help"])
        assert result.exit_code == 0, (name, result.output)
    flower = services["flower"]["command"]
    assert flower[0] == "celery" and "flower" in flower
    app_path = flower[flower.index("-A") + 1]
    assert isinstance(find_app(app_path), Celery)
    assert find_app(app_path) is celery_app


def test_every_xaudit_variable_is_read_by_the_code(services):
    """A misspelt variable would be ignored silently: each one must be a configuration key
    (``from_prefixed_env`` reads ``XAUDIT_<KEY>`` for the keys in api.config.defaults)
    or be read by name somewhere in the code."""
    from api.config import defaults

    keys = set(defaults())
    code = "\n".join(p.read_text(errors="replace")
                     for pkg in ("explain", "api", "worker", "reports")
                     for p in (ROOT / pkg).rglob("*.py"))
    names: set[str] = set()
    for svc in services.values():
        names |= {k for k in env_of(svc) if k.startswith("XAUDIT_")}
    names |= set(re.findall(r"\b(XAUDIT_\w+)=", DOCKERFILE.read_text()))
    assert {"XAUDIT_DATABASE_URL", "XAUDIT_REDIS_URL", "XAUDIT_DATA_DIR"} <= names
    unknown = sorted(n for n in names
                     if n.removeprefix("XAUDIT_") not in keys and n not in code)
    assert unknown == [], f"set in compose/Dockerfile but read nowhere: {unknown}"


def test_services_share_the_data_volume_and_talk_to_redis(compose, services):
    for name in XAUDIT_SERVICES:
        env = env_of(services[name])
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]}
        assert mounts.get(env["XAUDIT_DATA_DIR"]) == "xaudit-data", name
        assert env["XAUDIT_REDIS_URL"].startswith("redis://redis:")
    assert "xaudit-data" in compose["volumes"]


def test_the_dockerfile_installs_the_package_with_an_optional_gpu_extra():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG EXTRAS=", text, re.M)
    assert "pip install .;" in text
    assert 'pip install ".[${EXTRAS}]"' in text
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert "gpu" in extras
    for pkg in ("explain", "reports", "api", "worker"):
        assert re.search(rf"^COPY {pkg} ", text, re.M), pkg
    assert "flower" in text  # the flower service runs `celery flower` from this image
