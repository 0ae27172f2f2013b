"""``/api/v1/models``: upload a model (intake first, then store), list, get."""

from __future__ import annotations

import logging

from apiflask import APIBlueprint
from flask import current_app

from api import db, services
from api.auth import auth, current_tenant_id
from api.config import policy_environ
from api.errors import abort
from api.schemas import ArtifactListOut, ArtifactOut, ListQuery, ModelUploadIn
from explain.errors import DataError, ModelIntakeError

log = logging.getLogger("xaudit.api")

bp = APIBlueprint("models", __name__, tag="Models")


def get_model_or_404(model_id: str) -> db.ModelRow:
    row = db.get_owned(db.ModelRow, model_id, current_tenant_id())
    if row is None:
        abort(404, "not_found", f"no model with id {model_id!r}")
    return row


@bp.post("/models")
@bp.auth_required(auth)
@bp.input(ModelUploadIn, location="form_and_files")
@bp.output(ArtifactOut, status_code=201)
@bp.doc(summary="Upload a new version of a named model",
        description="The file is checked by the model intake (archive structure, config "
                    "contents, unsafe layers) and loaded in Keras safe mode before anything "
                    "is stored; a refusal answers 4xx with the intake's code and leaves "
                    "nothing behind. An optional `background` file (rows of the model's "
                    "inputs) is checked against the model and stored with it: "
                    "model-agnostic SHAP in /explain measures against it.",
        responses={201: "stored", 413: "file too large",
                   422: "refused by the model intake, or a bad background "
                        "(bad_background)"})
def upload_model(form_and_files_data):
    from api.config import intake_policy
    from explain.modelio import inspect_model_file

    upload = form_and_files_data["file"]
    name = form_and_files_data["name"]
    tmp, sha, size, suffix = services.receive_upload(upload)
    try:
        spec = inspect_model_file(tmp, policy=intake_policy(current_app.config))
        spec_dict = spec.to_dict()
    except ModelIntakeError:
        tmp.unlink(missing_ok=True)
        raise
    except (ValueError, TypeError, OSError) as exc:
        # Keras itself choked on a file that passed the structural checks.
        tmp.unlink(missing_ok=True)
        log.info("model upload refused by keras: %s", exc)
        abort(422, "corrupt_file", f"the model could not be loaded: {str(exc)[:300]}")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if spec.unsupported:
        # a safe model that xaudit cannot audit: refused now, never later in a worker
        tmp.unlink(missing_ok=True)
        abort(422, "unsupported_model", f"xaudit cannot audit this model: {spec.unsupported}")
    background = None
    if form_and_files_data.get("background") is not None:
        try:
            background = receive_background(form_and_files_data["background"], spec)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    store = services.blobs()
    # Blobs are adopted only once both files passed; a blob this upload created is
    # removed again when no row can be written (services.insert_versioned).
    extra_blobs: list[str] = []
    fields = {}
    if background is not None:
        bg_tmp, bg_sha, bg_suffix, bg_rows = background
        bg_key, bg_created = store.adopt(bg_tmp, bg_sha, bg_suffix)
        if bg_created:
            extra_blobs.append(bg_key)
        fields = {"background_key": bg_key, "background_rows": bg_rows}
    try:
        key, created = store.adopt(tmp, sha, suffix)
    except BaseException:
        for k in extra_blobs:
            store.delete(k)
        raise
    session = db.session()
    row = services.insert_versioned(
        session, db.ModelRow, created, key, tenant_id=current_tenant_id(), name=name,
        sha256=sha, size=size, spec=spec_dict, extra_blobs=extra_blobs, **fields)
    return services.artifact_json(row, "models"), 201


def receive_background(upload, spec) -> tuple:
    """Stream the optional background file and check it against the model.

    Returns (tmp_path, sha256, suffix, rows); the caller adopts the temp file. A refusal
    answers 422 ``bad_background`` with the data check's code as ``detail.reason`` (or
    the 413 of an oversized body) and leaves no file behind.
    """
    from explain.datasets import MAX_BACKGROUND_ROWS, load_background

    tmp, sha, _size, suffix = services.receive_upload(upload)
    try:
        ds = load_background(tmp, spec, max_rows=MAX_BACKGROUND_ROWS,
                             environ=policy_environ(current_app.config))
    except DataError as exc:
        tmp.unlink(missing_ok=True)
        abort(422, "bad_background", f"background: {exc.message}",
              detail={"reason": exc.code})
    except (ValueError, TypeError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        abort(422, "bad_background",
              f"background: the file could not be read: {str(exc)[:300]}",
              detail={"reason": "bad_format"})
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, sha, suffix, ds.n


@bp.get("/models")
@bp.auth_required(auth)
@bp.input(ListQuery, location="query")
@bp.output(ArtifactListOut)
@bp.doc(summary="List the tenant's models (newest first); filter by name")
def list_models(query_data):
    return services.list_artifacts(db.ModelRow, "models", current_tenant_id(), query_data)


@bp.get("/models/<object_id>")
@bp.auth_required(auth)
@bp.output(ArtifactOut)
@bp.doc(summary="One model version", responses={404: "not found"})
def get_model(object_id: str):
    return services.artifact_json(get_model_or_404(object_id), "models")
