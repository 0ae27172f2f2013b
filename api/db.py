"""Persistence: SQLAlchemy 2 typed models and the session wiring.

The database is the source of truth for every resource and for each audit's state; the
Celery result backend only wakes up waiting API requests. Every row that belongs to a
user carries ``tenant_id`` and every query filters on it (see :func:`scoped`).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


def new_id() -> str:
    """A random, unguessable id: ids never reveal how many rows other tenants have."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; they were written in UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return None if value is None else value.isoformat()


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """An API key, stored as the sha256 of the token.

    Tokens are 256 random bits, so a fast hash is enough: the slow, salted hashes
    (bcrypt, argon2) exist to protect low-entropy passwords from guessing, which cannot
    succeed against a 2**256 space. A fast hash also keeps per-request auth cheap.
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                           index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the token, so an operator can tell keys apart.
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ModelRow(Base):
    """One stored version of a named model."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("tenant_id", "name", "version",
                                       name="uq_models_tenant_name_version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                           index=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(80))
    size: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # An optional background sample uploaded with the model (the file as sent, checked
    # against the model first): model-agnostic SHAP in /explain measures against it.
    background_key: Mapped[str | None] = mapped_column(String(80))
    background_rows: Mapped[int | None] = mapped_column(Integer)


class DatasetRow(Base):
    """One stored version of a named dataset."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("tenant_id", "name", "version",
                                       name="uq_datasets_tenant_name_version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                           index=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    # sha256 of the uploaded file (the blob); the values' own hash is in spec.
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(80))
    size: Mapped[int] = mapped_column(Integer)
    label: Mapped[str | None] = mapped_column(String(128))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Schedule(Base):
    """A recurring audit of the latest model version on the latest dataset version."""

    __tablename__ = "schedules"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                           index=True)
    cron: Mapped[str] = mapped_column(String(128))
    model_name: Mapped[str] = mapped_column(String(128))
    dataset_name: Mapped[str] = mapped_column(String(128))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Cron times are read in UTC. The beat claims a run by moving this forward with a
    # compare-and-set (see worker.beat.claim_run).
    next_run_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Optional completion webhook. The secret signs each delivery (HMAC-SHA256), so it is
    # kept as given rather than hashed: signing needs the secret itself. It is shown to
    # the tenant once, in the answer to the POST that created the schedule.
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_on: Mapped[str | None] = mapped_column(String(16))
    webhook_secret: Mapped[str | None] = mapped_column(String(128))


#: When a schedule's webhook fires: after every run, or only when a run has a critical
#: finding (or fails).
WEBHOOK_EVENTS = ("completion", "critical")


class Audit(Base):
    """One audit run; its row is the source of truth for its state."""

    __tablename__ = "audits"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                           index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    # One of api.lifecycle.AuditStatus; changed only by api.lifecycle's transitions.
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str | None] = mapped_column(String(64))
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    report_html_key: Mapped[str | None] = mapped_column(String(80))
    report_json_key: Mapped[str | None] = mapped_column(String(80))
    arrays_key: Mapped[str | None] = mapped_column(String(80))
    previous_audit_id: Mapped[str | None] = mapped_column(
        ForeignKey("audits.id", ondelete="SET NULL"))
    schedule_id: Mapped[str | None] = mapped_column(
        ForeignKey("schedules.id", ondelete="SET NULL"), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ExplainJob(Base):
    """One ``POST /explain`` request: its inputs for the worker and its result.

    Celery messages carry only this row's id; the instances and the attributions live
    here, so a job URL keeps working whatever the result backend forgets.
    """

    __tablename__ = "explain_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                           index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A worker claims the job (queued -> running) before computing and beats while it
    # runs; the API re-sends a queued job at most once per period (resent_at) and
    # requeues a running one whose heartbeat stopped (api/explain_jobs.py).
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


# --------------------------------------------------------------------------- engine/session


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout so the API and the
    embedded worker (two processes) can share one file."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class Database:
    """The Flask extension: one engine per app, one session per app context."""

    def __init__(self, app: Flask | None = None):
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        engine = make_engine(app.config["DATABASE_URL"])
        app.extensions["xaudit_db"] = {
            "engine": engine,
            "sessionmaker": sessionmaker(engine, expire_on_commit=False),
        }

        @app.teardown_appcontext
        def _close_session(_exc):
            session = g.pop("xaudit_session", None)
            if session is not None:
                session.close()


def engine() -> Engine:
    return current_app.extensions["xaudit_db"]["engine"]


def session() -> Session:
    """The session of the current app context (closed when the context ends)."""
    if "xaudit_session" not in g:
        g.xaudit_session = current_app.extensions["xaudit_db"]["sessionmaker"]()
    return g.xaudit_session


def scoped(model: type[Base], tenant_id: str):
    """``SELECT model WHERE tenant_id = ...``: the only way resources are queried."""
    return select(model).where(model.tenant_id == tenant_id)


def get_owned(model: type[Base], object_id: str, tenant_id: str):
    """The tenant's row with this id, or None (another tenant's row is None too)."""
    if not isinstance(object_id, str) or len(object_id) > 64:
        return None
    return session().scalars(scoped(model, tenant_id).where(model.id == object_id)).first()
