"""The report.json schema and its validation (beside :mod:`explain.result`, the contract
it checks, so the audit pipeline validates what it writes without importing the
rendering package; :mod:`reports.schema` re-exports it).

``report.schema.json`` (JSON Schema draft 2020-12) fixes the structure; a few rules a JSON
Schema cannot say (rankings sorted, top findings that exist, a confusion matrix that matches
the class list) are checked here as well, so a report either passes as a whole or fails
with every problem listed.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import jsonschema

from explain.result import to_jsonable

__all__ = ["SCHEMA_VERSION", "load_schema", "validate_report"]

#: The report.json layout this package writes and reads.
SCHEMA_VERSION = "1.0"


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """Return the report.json JSON Schema as a dict (read once from package data)."""
    text = resources.files("explain").joinpath("report.schema.json").read_text("utf-8")
    schema = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def validate_report(report: dict[str, Any]) -> dict[str, Any]:
    """Check a report against the schema and the rules the schema cannot express.

    Parameters
    ----------
    report
        The report.json content. numpy scalars are accepted (converted before checking).

    Returns
    -------
    dict
        The report as plain JSON types (what report.json will contain).

    Raises
    ------
    ValueError
        Listing every problem found, one per line, each with its location in the report.
    """
    if not isinstance(report, dict):
        raise ValueError(f"report must be a JSON object, got {type(report).__name__}")
    try:
        plain = to_jsonable(report)
    except TypeError as exc:
        raise ValueError(f"report is not JSON: {exc}") from exc
    validator = jsonschema.Draft202012Validator(load_schema())
    problems = [
        f"{_location(error.absolute_path)}: {error.message}"
        for error in sorted(validator.iter_errors(plain), key=lambda e: list(map(str, e.path)))
    ]
    # The cross-field rules assume the structure is right; only run them when it is.
    if not problems:
        problems = _semantic_problems(plain)
    if problems:
        raise ValueError(
            f"report.json is not valid (schema {SCHEMA_VERSION}):\n  " + "\n  ".join(problems)
        )
    return plain


def _location(path: Any) -> str:
    parts = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return "report" + parts


def _sorted_descending(items: list[dict[str, Any]]) -> bool:
    scores = [item["score"] for item in items]
    return all(a >= b for a, b in zip(scores, scores[1:], strict=False))


def _semantic_problems(report: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    codes = {finding["code"] for finding in report["findings"]}
    for code in report["verdict"]["top_findings"]:
        if code not in codes:
            problems.append(f"report.verdict.top_findings: {code!r} is not a finding's code")

    importance = report["global_importance"]
    if not _sorted_descending(importance["items"]):
        problems.append("report.global_importance.items: not sorted by score, highest first")
    for name, items in importance.get("per_class", {}).items():
        if not _sorted_descending(items):
            problems.append(
                f"report.global_importance.per_class.{name}: not sorted by score, highest first"
            )
    if importance["kind"] != report["dataset"]["kind"]:
        problems.append(
            f"report.global_importance.kind: {importance['kind']!r} but the data set is "
            f"{report['dataset']['kind']!r}"
        )
    if importance["kind"] == "image" and importance["grid"] is not None:
        rows, cols = importance["grid"]
        for i, item in enumerate(importance["items"]):
            cell = item.get("cell")
            if cell is not None and not (cell[0] < rows and cell[1] < cols):
                problems.append(
                    f"report.global_importance.items[{i}].cell: {cell} is outside the "
                    f"{rows}x{cols} grid"
                )

    matrix = report["performance"].get("confusion_matrix")
    class_names = report["dataset"]["class_names"]
    if matrix is not None:
        size = len(matrix)
        if any(len(row) != size for row in matrix):
            problems.append("report.performance.confusion_matrix: not a square matrix")
        elif class_names is not None and size != len(class_names):
            problems.append(
                f"report.performance.confusion_matrix: {size} rows but "
                f"{len(class_names)} class names"
            )

    return problems
