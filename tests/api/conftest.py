"""API fixtures: an app on a temporary data folder, SQLite or PostgreSQL, tenants and keys.

Tasks run eagerly (inside the request) so the worker code is exercised for real without
a broker; the real-process tests live in tests/worker.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import numpy as np
import pytest

PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def _postgres_available() -> bool:
    try:
        import sqlalchemy as sa

        with sa.create_engine(PG_URL).connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except Exception:
        return False


@pytest.fixture
def pg_schema_url():
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    if not _postgres_available():
        pytest.skip(f"PostgreSQL is not reachable at {PG_URL}")
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def make_app(tmp_path: Path, database_url: str = "", **overrides):
    from api import create_app

    # The API sends tasks by name; eager tests run them in this process, so the worker's
    # tasks are registered here, as the worker's entry point does.
    from worker.app import celery_init_app

    config = {
        "TESTING": True,
        "DATA_DIR": str(tmp_path / "var"),
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": "memory://",
        "CELERY_RESULT_BACKEND": "cache+memory://",
        "CELERY_TASK_ALWAYS_EAGER": True,
        "EXPLAIN_TIMEOUT": 5.0,
    }
    config.update(overrides)
    app = create_app(config)
    celery_init_app(app)
    return app


@pytest.fixture
def app(tmp_path):
    app = make_app(tmp_path)
    yield app
    app.extensions["xaudit_db"]["engine"].dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_app(request, tmp_path):
    """The app on SQLite, then on PostgreSQL (each test in its own schema)."""
    url = "" if request.param == "sqlite" else request.getfixturevalue("pg_schema_url")
    app = make_app(tmp_path, url)
    yield app
    app.extensions["xaudit_db"]["engine"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


def new_key(app, tenant: str) -> str:
    from api import db
    from api.auth import create_key

    with app.app_context():
        token, _ = create_key(db.session(), tenant)
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def key(app):
    return new_key(app, "acme")


@pytest.fixture
def auth(key):
    return bearer(key)


@pytest.fixture(scope="session")
def mlp_file(tmp_path_factory) -> Path:
    """A tiny saved .keras MLP: 4 features in, 3 softmax classes out."""
    from tests.models import mlp_classifier

    path = tmp_path_factory.mktemp("models") / "mlp.keras"
    mlp_classifier(n_features=4, n_classes=3).save(path)
    return path


@pytest.fixture(scope="session")
def data_file(tmp_path_factory) -> Path:
    """A matching .npz dataset: 40 rows of 4 features, labels in 0..2."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "rows.npz"
    np.savez(path, x=rng.normal(size=(40, 4)).astype("float32"),
             y=rng.integers(0, 3, size=40))
    return path


def upload(client, kind: str, path: Path, name: str, headers, filename: str | None = None,
           **form):
    with open(path, "rb") as fh:
        data = {"file": (io.BytesIO(fh.read()), filename or path.name), "name": name, **form}
    return client.post(f"/api/v1/{kind}", data=data, headers=headers,
                       content_type="multipart/form-data")


def state(app) -> dict[str, int]:
    """Row counts and blob count: to prove a refused request left nothing behind."""
    import sqlalchemy as sa

    from api import db

    with app.app_context():
        s = db.session()
        counts = {t: s.scalar(sa.select(sa.func.count()).select_from(m))
                  for t, m in (("models", db.ModelRow), ("datasets", db.DatasetRow),
                               ("audits", db.Audit), ("explain_jobs", db.ExplainJob),
                               ("schedules", db.Schedule))}
    store = app.extensions["xaudit_blobs"]
    counts["blobs"] = len(store.keys())
    counts["tmp"] = len(list(store.tmp_dir.iterdir()))
    return counts
