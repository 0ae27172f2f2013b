"""Request and response schemas (marshmallow): one declaration validates the request and
documents it in the OpenAPI spec."""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import Dict, File, Float, Integer, List, Raw, String
from apiflask.validators import Length, OneOf, Range, Regexp

from api.lifecycle import AuditStatus

#: Names of models and datasets: they reach URLs, logs and reports, so a small charset.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
NAME_RULE = "1-128 characters: letters, digits, '.', '_', '-' (starting with a letter or digit)"
ID_FIELD = {"validate": Length(min=1, max=64)}


def Name(**kw):  # noqa: N802 - a field factory, named like the fields it returns
    return String(validate=Regexp(NAME_PATTERN, error=f"invalid name: {NAME_RULE}"), **kw)


class ErrorDetail(Schema):
    code = String(required=True)
    message = String(required=True)
    detail = Dict()


class ErrorOut(Schema):
    error = Raw(required=True, metadata={"description": "{code, message}"})


# --------------------------------------------------------------------------- uploads


class ModelUploadIn(Schema):
    file = File(required=True, metadata={"description": "A .keras or .h5 model file."})
    name = Name(required=True)
    background = File(metadata={
        "description": "Optional: a background sample stored with the model (.npz with "
                       "array x, .npy, or .csv with a header row), rows of the model's "
                       "inputs only: shaped like its input, finite, at most 1000 rows. "
                       "Model-agnostic SHAP in /explain measures against it when the "
                       "request sends no background of its own. Refused with 422 "
                       "bad_background (the reason in error.detail.reason) and nothing "
                       "stored."})


class DatasetUploadIn(Schema):
    file = File(required=True, metadata={"description": "A .npz, .npy or .csv data file."})
    name = Name(required=True)
    label = String(validate=Length(min=1, max=128),
                   metadata={"description": "For .csv: the label column."})
    sensitive = String(validate=Length(min=1, max=1024), metadata={
        "description": "For .csv: comma-separated sensitive columns (e.g. `sex,age`), kept "
                       "out of the model's inputs and audited for group fairness. An .npz "
                       "carries its own (arrays `sensitive`, `sensitive_names`)."})


class ArtifactOut(Schema):
    id = String()
    name = String()
    version = Integer()
    sha256 = String()
    size = Integer()
    spec = Dict()
    created_at = String()
    background = Dict(allow_none=True, metadata={
        "description": "Models only: the stored background sample, {rows, sha256}, or "
                       "null when the model was uploaded without one."})


class ArtifactListOut(Schema):
    items = List(Raw())


# --------------------------------------------------------------------------- audits


class AuditIn(Schema):
    model_id = String(required=True, **ID_FIELD)
    dataset_id = String(required=True, **ID_FIELD)
    config = Dict(keys=String(), load_default=dict)
    previous_audit_id = String(allow_none=True, load_default=None, **ID_FIELD)


class AuditOut(Schema):
    id = String()
    status = String()
    progress = Float()
    stage = String(allow_none=True)
    error = Raw(allow_none=True)
    model_id = String()
    dataset_id = String()
    previous_audit_id = String(allow_none=True)
    schedule_id = String(allow_none=True)
    config = Dict()
    timings = Dict()
    created_at = String()
    started_at = String(allow_none=True)
    finished_at = String(allow_none=True)
    status_url = String()
    report_url = String(allow_none=True)
    report_json_url = String(allow_none=True)


class AuditListOut(Schema):
    items = List(Raw())


# --------------------------------------------------------------------------- explain


class ExplainIn(Schema):
    model_id = String(required=True, **ID_FIELD)
    instances = List(Raw(), required=True, validate=Length(min=1),
                     metadata={"description": "Rows shaped like the model input, (N, ...); "
                               "for text models, strings (when the model reads strings) "
                               "or lists of token ids."})
    method = String(load_default="integrated_gradients", validate=Length(min=1, max=64))
    target = Raw(load_default=None, allow_none=True,
                 metadata={"description": "null (predicted class), an int, or one int per row."})
    options = Dict(keys=String(), load_default=dict)
    background = List(Raw(), load_default=None, allow_none=True, metadata={
        "description": "Rows from the model's data, shaped like instances: the background "
                       "of model-agnostic SHAP. Without it SHAP uses the background stored "
                       "with the model, else the model's latest audited dataset, and "
                       "answers 422 no_background when there is none. The answer's "
                       "`background` says which was used."})


class ExplainOut(Schema):
    job_id = String()
    status = String()
    job_url = String()
    method = String(allow_none=True)
    attributions = Raw(allow_none=True)
    prediction = Raw(allow_none=True)
    targets = Raw(allow_none=True)
    scores = Raw(allow_none=True)
    completeness_gap = Raw(allow_none=True)
    shape = Raw(allow_none=True)
    background = Raw(allow_none=True, metadata={
        "description": "Model-agnostic SHAP: the background it measured against, "
                       "{source, rows} with source `request` (the caller's rows), `model` "
                       "(stored with the model at upload) or `dataset` (the model's latest "
                       "audited dataset, also `dataset_id`)."})
    token_ids = Raw(allow_none=True, metadata={
        "description": "Text models: the token ids each row was explained on (N, T)."})
    tokens = Raw(allow_none=True, metadata={
        "description": "Text models with a vocabulary: the token of each id (N, T)."})
    error = Raw(allow_none=True)


# --------------------------------------------------------------------------- schedules


class ScheduleListOut(Schema):
    items = List(Raw())


class ListQuery(Schema):
    limit = Integer(load_default=50, validate=Range(min=1, max=500))
    offset = Integer(load_default=0, validate=Range(min=0, max=10_000_000))
    name = String(validate=Length(max=128))


class StatusQuery(Schema):
    status = String(validate=OneOf([s.value for s in AuditStatus]))
    limit = Integer(load_default=50, validate=Range(min=1, max=500))
    offset = Integer(load_default=0, validate=Range(min=0, max=10_000_000))
