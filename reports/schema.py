"""The report.json schema and its validation: they live in :mod:`explain.report_schema`
(beside the result they describe); re-exported here for the rendering side."""

from explain.report_schema import SCHEMA_VERSION, load_schema, validate_report

__all__ = ["SCHEMA_VERSION", "load_schema", "validate_report"]
