"""Audit reports: one self-contained HTML file a reviewer can read, and report.json.

::

    from reports import render_html, render_json, validate_report
    html = render_html(result)          # result: explain.result.AuditResult
    text = render_json(result)          # the same content as report.json
    validate_report(result.report)      # raises ValueError listing every problem

The layout of report.json is fixed by ``explain/report.schema.json``
(JSON Schema draft 2020-12, ``schema_version`` :data:`SCHEMA_VERSION`).
"""

from reports.render import CSP, DEFAULT_MAX_EXAMPLES, render_html, render_json
from reports.schema import SCHEMA_VERSION, load_schema, validate_report

__all__ = [
    "CSP",
    "DEFAULT_MAX_EXAMPLES",
    "SCHEMA_VERSION",
    "load_schema",
    "render_html",
    "render_json",
    "validate_report",
]
