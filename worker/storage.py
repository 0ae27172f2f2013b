"""What the worker reads and writes besides the rows: stored models (through this
process's LRU cache), datasets, rendered reports and their arrays, and a previous audit's
result for drift. HTTP-free; runs inside the Flask app context."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
from flask import current_app

from api import db
from api.config import policy_environ
from api.lifecycle import AuditStatus
from explain.audit.plan import npz_bytes
from worker.cache import ModelCache

log = logging.getLogger("xaudit.worker")

_model_cache: ModelCache | None = None


def model_cache() -> ModelCache:
    """This process's model cache (``MODEL_CACHE_SIZE`` models, least recently used out)."""
    global _model_cache
    if _model_cache is None:
        _model_cache = ModelCache(int(current_app.config["MODEL_CACHE_SIZE"]))
    return _model_cache


def blobs():
    """The app's blob store (:class:`api.blobs.BlobStore`)."""
    return current_app.extensions["xaudit_blobs"]


def load_model_row(row: db.ModelRow):
    """(model, spec) for a stored model, from this process's LRU cache."""
    from api.config import intake_policy
    from explain.modelio import load_model_safely

    path = blobs().path(row.blob_key)
    return model_cache().get(row.sha256,
                             lambda: load_model_safely(path, policy=intake_policy(current_app.config)))


def load_dataset(dataset_row: db.DatasetRow, config: dict[str, Any] | None) -> Any:
    """The stored dataset, with the sensitive columns it was stored with and those the
    audit asks for taken out of a CSV's inputs."""
    from explain.datasets import load_data_file, sensitive_to_load

    path = blobs().path(dataset_row.blob_key)
    return load_data_file(path, label=dataset_row.label, sensitive=sensitive_to_load(
        path, (dataset_row.spec or {}).get("sensitive"), (config or {}).get("sensitive")),
        environ=policy_environ(current_app.config))


def store_result(result) -> tuple[str, str, str | None]:
    """Render and store a result: (html key, json key, arrays key)."""
    from reports import render_html, render_json

    store = blobs()
    return (store.put_bytes(render_html(result).encode("utf-8"), ".html"),
            store.put_bytes(render_json(result).encode("utf-8"), ".json"),
            store.put_bytes(npz_bytes(result.arrays), ".npz") if result.arrays else None)


def load_previous(audit: db.Audit):
    """The previous audit's result (for drift), rebuilt from its stored blobs.

    None when there is no usable previous audit (none named, another tenant's, not
    succeeded, or its blobs are gone): the audit then runs without drift rather than
    failing, since drift is an addition to the report, not its purpose.
    """
    from explain.result import AuditResult

    if not audit.previous_audit_id:
        return None
    prev = db.session().get(db.Audit, audit.previous_audit_id)
    if (prev is None or prev.tenant_id != audit.tenant_id
            or prev.status != AuditStatus.SUCCEEDED):
        return None
    try:
        report = json.loads(blobs().read_bytes(prev.report_json_key))
        arrays: dict[str, np.ndarray] = {}
        if prev.arrays_key:
            with np.load(blobs().path(prev.arrays_key), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as exc:
        log.warning("audit %s: previous audit %s is unreadable (%s); no drift this time",
                    audit.id, prev.id, exc)
        return None
    return AuditResult(report=report, arrays=arrays)


def name_previous(result, previous_audit_id: str | None) -> None:
    """Put the previous audit's id in the drift section, so a reader can open it.

    The pipeline names the previous audit by its title and content digest (it knows no
    database ids); the service adds the id it can be fetched by.
    """
    drift = result.report.get("drift") if previous_audit_id else None
    if isinstance(drift, dict):
        drift["previous_audit"] = f"audit {previous_audit_id}: {drift.get('previous_audit')}"
