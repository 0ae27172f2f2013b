"""``/api/v1/keys``: a tenant lists its API keys and revokes one (a leaked key stops
working at once; the revoking request may use the very key it revokes)."""

from __future__ import annotations

from apiflask import APIBlueprint

from api import db
from api.auth import auth, current_tenant_id, key_json, list_keys, revoke_key
from api.errors import abort
from api.schemas import ListQuery, ScheduleListOut

bp = APIBlueprint("keys", __name__, tag="Keys")


@bp.get("/keys")
@bp.auth_required(auth)
@bp.input(ListQuery, location="query")
@bp.output(ScheduleListOut)
@bp.doc(summary="The tenant's API keys (id, token prefix, created, revoked); never tokens")
def get_keys(query_data):
    rows = list_keys(db.session(), current_tenant_id())
    start = query_data["offset"]
    return {"items": [key_json(k) for k in rows[start:start + query_data["limit"]]]}


@bp.delete("/keys/<key_id>")
@bp.auth_required(auth)
@bp.output({}, status_code=204)
@bp.doc(summary="Revoke one of the tenant's API keys",
        responses={204: "revoked", 404: "no such key of this tenant"})
def delete_key(key_id: str):
    if len(key_id) > 64:
        abort(404, "not_found", "no such key")
    row = revoke_key(db.session(), key_id, tenant_id=current_tenant_id())
    if row is None or row.id != key_id:
        abort(404, "not_found", f"no key with id {key_id!r}")
    return "", 204
