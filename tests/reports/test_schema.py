"""report.json schema: the contract between the audit pipeline, the renderer and users."""

from __future__ import annotations

import copy

import jsonschema
import numpy as np
import pytest

from reports import SCHEMA_VERSION, load_schema, validate_report
from tests.reports.builders import image_audit, regression_audit, tabular_audit


def test_schema_is_valid_draft_2020_12():
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION == "1.0"


@pytest.mark.parametrize("build", [image_audit, tabular_audit, regression_audit])
def test_fixture_reports_validate(build):
    report = build().report
    plain = validate_report(report)
    assert plain["schema_version"] == "1.0"


def test_numpy_scalars_are_accepted():
    report = tabular_audit().report
    report["performance"]["accuracy"] = np.float32(0.85)
    report["dataset"]["rows"] = np.int64(5000)
    plain = validate_report(report)
    assert isinstance(plain["dataset"]["rows"], int)


def _broken(mutate):
    report = copy.deepcopy(image_audit(n_examples=8).report)
    mutate(report)
    return report


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r.pop("findings"), "'findings' is a required property"),
        (lambda r: r["model"].pop("sha256"), "'sha256' is a required property"),
        (lambda r: r["findings"][0].update(severity="severe"), "report.findings[0].severity"),
        (lambda r: r["verdict"].update(level="ok"), "report.verdict.level"),
        (lambda r: r.update(schema_version="2.0"), "report.schema_version"),
        (lambda r: r["model"].update(sha256="abc"), "report.model.sha256"),
        (lambda r: r["examples"][0].update(reason="random"), "report.examples[0].reason"),
        (lambda r: r["findings"][0].update(code="Bad Code!"), "report.findings[0].code"),
        (lambda r: r.update(global_importances={}), "Additional properties"),
        (lambda r: r["performance"].update(accuracy=1.5), "report.performance.accuracy"),
        (lambda r: r["performance"].pop("accuracy"), "report.performance"),
        (lambda r: r["timings"].update(render=-1), "report.timings.render"),
    ],
)
def test_broken_reports_fail_with_their_location(mutate, expected):
    with pytest.raises(ValueError) as info:
        validate_report(_broken(mutate))
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r["global_importance"]["items"].reverse(), "not sorted by score"),
        (lambda r: r["verdict"]["top_findings"].append("no_such_finding"), "is not a finding's code"),
        (lambda r: r["global_importance"].update(kind="tabular"), "but the data set is 'image'"),
        (lambda r: r["performance"]["confusion_matrix"].pop(), "not a square matrix"),
        (lambda r: r["global_importance"]["items"][0].update(cell=[5, 0]), "outside the 3x3 grid"),
    ],
)
def test_rules_beyond_the_schema(mutate, expected):
    with pytest.raises(ValueError, match=expected):
        validate_report(_broken(mutate))


def test_every_problem_is_listed_at_once():
    def two_problems(r):
        r["findings"][0]["severity"] = "severe"
        r["verdict"]["level"] = "ok"

    with pytest.raises(ValueError) as info:
        validate_report(_broken(two_problems))
    message = str(info.value)
    assert "report.findings[0].severity" in message and "report.verdict.level" in message


def test_non_json_values_are_a_validation_error():
    with pytest.raises(ValueError, match="not JSON"):
        validate_report(_broken(lambda r: r["config"].update(when=object())))
