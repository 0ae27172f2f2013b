"""Tenants and API keys: Bearer-token auth on every ``/api/v1`` route.

A key is ``xa_`` followed by 43 url-safe characters (256 random bits). Only its sha256 is
stored (see :class:`api.db.ApiKey` for why no bcrypt), so a leaked database does not leak
usable keys, and the token itself is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from apiflask import HTTPTokenAuth
from sqlalchemy import select
from sqlalchemy.orm import Session

from api import db

TOKEN_PREFIX = "xa_"

auth = HTTPTokenAuth(scheme="Bearer", description="An API key from `xaudit keys create`.")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant a valid key belongs to."""

    tenant_id: str
    tenant_name: str
    key_id: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_key(session: Session, tenant_name: str) -> tuple[str, db.Tenant]:
    """Create the tenant if needed and a new key for it; return (token, tenant).

    The token is returned once and never stored.
    """
    tenant = session.scalars(select(db.Tenant).where(db.Tenant.name == tenant_name)).first()
    if tenant is None:
        tenant = db.Tenant(name=tenant_name)
        session.add(tenant)
        session.flush()
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(db.ApiKey(tenant_id=tenant.id, token_sha256=hash_token(token),
                          prefix=token[:10]))
    session.commit()
    return token, tenant


@auth.verify_token
def verify_token(token: str) -> Principal | None:
    if not token or len(token) > 200 or not token.startswith(TOKEN_PREFIX):
        return None
    digest = hash_token(token)
    row = db.session().execute(
        select(db.ApiKey, db.Tenant)
        .join(db.Tenant, db.Tenant.id == db.ApiKey.tenant_id)
        .where(db.ApiKey.token_sha256 == digest, db.ApiKey.revoked_at.is_(None))
    ).first()
    # The lookup is by hash, so timing reveals nothing about the token; the compare is
    # belt and braces against a collation that matched loosely.
    if row is None or not hmac.compare_digest(row[0].token_sha256, digest):
        return None
    key, tenant = row
    return Principal(tenant_id=tenant.id, tenant_name=tenant.name, key_id=key.id)


def current_tenant_id() -> str:
    principal = auth.current_user
    if principal is None:  # only reachable from a view that forgot @auth_required
        raise RuntimeError("no authenticated tenant in this request")
    return principal.tenant_id


def key_json(key: db.ApiKey) -> dict:
    return {"id": key.id, "prefix": key.prefix, "created_at": db.iso(key.created_at),
            "revoked_at": db.iso(key.revoked_at)}


def list_keys(session: Session, tenant_id: str | None = None) -> list[db.ApiKey]:
    """Keys, newest first: one tenant's, or every tenant's (the operator's CLI)."""
    stmt = select(db.ApiKey).order_by(db.ApiKey.created_at.desc())
    if tenant_id is not None:
        stmt = stmt.where(db.ApiKey.tenant_id == tenant_id)
    return list(session.scalars(stmt))


def revoke_key(session: Session, key: str, tenant_id: str | None = None) -> db.ApiKey | None:
    """Revoke a key by its id or its token prefix (``xa_...``, as listed); within one
    tenant when ``tenant_id`` is given. Returns the key (revoked now or before), or None
    when nothing matches. A prefix that matches several keys revokes none (ValueError)."""
    stmt = select(db.ApiKey).where(
        (db.ApiKey.id == key) | (db.ApiKey.prefix == key) if key.startswith(TOKEN_PREFIX)
        else db.ApiKey.id == key)
    if tenant_id is not None:
        stmt = stmt.where(db.ApiKey.tenant_id == tenant_id)
    rows = list(session.scalars(stmt))
    if not rows:
        return None
    if len(rows) > 1:
        raise ValueError(f"{key!r} matches {len(rows)} keys; revoke by id")
    row = rows[0]
    if row.revoked_at is None:
        row.revoked_at = db.utcnow()
        session.commit()
    return row
