"""``/api/v1/datasets``: upload a dataset (parsed and checked first), list, get."""

from __future__ import annotations

import logging

from apiflask import APIBlueprint
from flask import current_app

from api import db, services
from api.auth import auth, current_tenant_id
from api.config import policy_environ
from api.errors import abort
from api.schemas import ArtifactListOut, ArtifactOut, DatasetUploadIn, ListQuery
from explain.errors import DataError

log = logging.getLogger("xaudit.api")

bp = APIBlueprint("datasets", __name__, tag="Datasets")

#: Column names kept in the stored spec; a wide table keeps only the first ones.
MAX_NAMES = 512


def get_dataset_or_404(dataset_id: str) -> db.DatasetRow:
    row = db.get_owned(db.DatasetRow, dataset_id, current_tenant_id())
    if row is None:
        abort(404, "not_found", f"no dataset with id {dataset_id!r}")
    return row


def dataset_spec(ds, suffix: str) -> dict:
    names = ds.feature_names or []
    return {
        "format": suffix.lstrip("."),
        "kind": ds.kind,
        "rows": int(ds.x.shape[0]),
        "row_shape": [int(d) for d in ds.x.shape[1:]],
        "has_labels": ds.y is not None,
        "feature_names": names[:MAX_NAMES],
        "n_features_named": len(names),
        "class_names": (ds.class_names or [])[:MAX_NAMES],
        "values_sha256": ds.sha256,
        "sensitive": list(ds.sensitive or {}),
    }


@bp.post("/datasets")
@bp.auth_required(auth)
@bp.input(DatasetUploadIn, location="form_and_files")
@bp.output(ArtifactOut, status_code=201)
@bp.doc(summary="Upload a new version of a named dataset",
        description="The file is parsed (no pickle) and checked before it is stored.",
        responses={201: "stored", 413: "file too large", 422: "refused"})
def upload_dataset(form_and_files_data):
    from explain.datasets import load_data_file

    upload = form_and_files_data["file"]
    name = form_and_files_data["name"]
    label = form_and_files_data.get("label")
    sensitive = form_and_files_data.get("sensitive")
    tmp, sha, size, suffix = services.receive_upload(upload)
    try:
        ds = load_data_file(tmp, label=label, sensitive=sensitive,
                            environ=policy_environ(current_app.config))
        spec = dataset_spec(ds, suffix)
    except DataError:
        tmp.unlink(missing_ok=True)
        raise
    except (ValueError, TypeError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        abort(422, "bad_data", f"the data file could not be read: {str(exc)[:300]}")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    store = services.blobs()
    key, created = store.adopt(tmp, sha, suffix)
    session = db.session()
    row = services.insert_versioned(
        session, db.DatasetRow, created, key, tenant_id=current_tenant_id(), name=name,
        sha256=sha, size=size, label=label, spec=spec)
    return services.artifact_json(row, "datasets"), 201


@bp.get("/datasets")
@bp.auth_required(auth)
@bp.input(ListQuery, location="query")
@bp.output(ArtifactListOut)
@bp.doc(summary="List the tenant's datasets (newest first); filter by name")
def list_datasets(query_data):
    return services.list_artifacts(db.DatasetRow, "datasets", current_tenant_id(), query_data)


@bp.get("/datasets/<object_id>")
@bp.auth_required(auth)
@bp.output(ArtifactOut)
@bp.doc(summary="One dataset version", responses={404: "not found"})
def get_dataset(object_id: str):
    return services.artifact_json(get_dataset_or_404(object_id), "datasets")
