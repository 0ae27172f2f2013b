"""``xaudit audit`` and ``xaudit demo``: files written, one-line errors, nothing half-written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from explain.cli import main
from reports import validate_report
from tests import hostile, models


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_audit")
    model = models.mlp_classifier(n_features=5, n_classes=2, s=1)
    path = folder / "loans.keras"
    model.save(path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = model.predict(x, verbose=0).argmax(axis=1)
    data = folder / "loans.npz"
    np.savez(data, x=x, y=y, feature_names=np.array(["a", "b", "c", "d", "e"]))
    return path, data, x, y


FAST = ["--samples", "6", "--methods", "integrated_gradients", "--quiet"]


def _error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error")]


def test_audit_writes_html_and_json(model_and_data, tmp_path):
    path, data, _, _ = model_and_data
    html, js = tmp_path / "out" / "r.html", tmp_path / "out" / "r.json"
    r = CliRunner().invoke(main, ["audit", str(path), "--data", str(data), "--out", str(html),
                                  "--json", str(js), "--seed", "5", *FAST])
    assert r.exit_code == 0, r.output + r.stderr
    assert "verdict:" in r.stdout and f"wrote {html}" in r.stdout and f"wrote {js}" in r.stdout
    report = json.loads(js.read_text())
    validate_report(report)
    assert report["config"]["seed"] == 5 and report["config"]["samples"] == 6
    assert report["config"]["methods"] == ["integrated_gradients"]
    assert report["model"]["name"] == "loans"
    text = html.read_text()
    assert text.startswith("<!DOCTYPE html>") or text.lower().startswith("<!doctype html>")
    assert "loans" in text


def test_audit_progress_bars_name_each_stage(model_and_data, tmp_path):
    path, data, _, _ = model_and_data
    r = CliRunner().invoke(main, ["audit", str(path), "--data", str(data), "--out",
                                  str(tmp_path / "r.html"), "--samples", "6", "--methods",
                                  "integrated_gradients,shap"])
    assert r.exit_code == 0, r.stderr
    for stage in ("load_model", "evaluate", "attributions", "quality", "findings"):
        assert stage in r.stderr
    assert r.stdout.startswith("verdict:")
    # The bars reach 100 % for every stage: the last stage's bar is complete.
    assert "assemble" in r.stderr and "100%" in r.stderr


def test_csv_with_label_column(model_and_data, tmp_path):
    path, _, x, y = model_and_data
    csv = tmp_path / "rows.csv"
    lines = ["a,b,c,d,e,target"] + [",".join(f"{v:.6f}" for v in row) + f",{t}"
                                     for row, t in zip(x, y, strict=True)]
    csv.write_text("\n".join(lines) + "\n")
    js = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["audit", str(path), "--data", str(csv), "--label", "target",
                                  "--out", str(tmp_path / "r.html"), "--json", str(js), *FAST])
    assert r.exit_code == 0, r.stderr
    report = json.loads(js.read_text())
    assert report["dataset"]["feature_names"] == ["a", "b", "c", "d", "e"]
    assert report["performance"]["accuracy"] > 0.95  # labels are the model's own predictions


@pytest.mark.parametrize("case, fragment", [
    ("missing_model", "no such model file"),
    ("hostile_model", "error ["),
    ("wrong_shape", "expects inputs of shape"),
    ("nan_data", "finite"),
    ("missing_data", "not found"),
    ("unknown_method", "unknown method"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(model_and_data, tmp_path, case,
                                                         fragment):
    path, data, x, y = model_and_data
    model_arg, data_arg, extra = str(path), str(data), []
    if case == "missing_model":
        model_arg = str(tmp_path / "nope.keras")
    elif case == "hostile_model":
        marker = tmp_path / "ran.txt"
        evil = tmp_path / "evil.keras"
        hostile.tiny_model(hostile.lambda_layer(str(marker))).save(evil)
        marker.unlink(missing_ok=True)
        model_arg = str(evil)
    elif case == "wrong_shape":
        np.savez(tmp_path / "d.npz", x=x[:, :3], y=y)
        data_arg = str(tmp_path / "d.npz")
    elif case == "nan_data":
        bad = x.copy()
        bad[4, 1] = np.nan
        np.savez(tmp_path / "d.npz", x=bad, y=y)
        data_arg = str(tmp_path / "d.npz")
    elif case == "missing_data":
        data_arg = str(tmp_path / "gone.npz")
    elif case == "unknown_method":
        extra = ["--methods", "lime"]
    html, js = tmp_path / "r.html", tmp_path / "r.json"
    r = CliRunner().invoke(main, ["audit", model_arg, "--data", data_arg, "--out", str(html),
                                  "--json", str(js), "--quiet", *extra])
    assert r.exit_code == 2, r.output + r.stderr
    errors = _error_lines(r)
    assert len(errors) == 1 and fragment in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not html.exists() and not js.exists()
    if case == "hostile_model":
        assert not (tmp_path / "ran.txt").exists()


@pytest.mark.slow
def test_demo_trains_audits_and_finds_the_watermark(tmp_path):
    out = tmp_path / "demo" / "report.html"
    r = CliRunner().invoke(main, ["demo", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output + r.stderr
    assert out.exists() and out.with_suffix(".json").exists()
    assert str(out.resolve()) in r.stdout
    report = json.loads(out.with_suffix(".json").read_text())
    validate_report(report)
    codes = {f["code"] for f in report["findings"]}
    assert "shortcut_region" in codes
    assert report["verdict"]["level"] == "fail"
    assert out.stat().st_size < 3 * 1024 * 1024


def test_a_missing_model_is_named_before_the_data_is_read(tmp_path):
    r = CliRunner().invoke(main, ["audit", str(tmp_path / "nope.keras"), "--data",
                                  str(tmp_path / "gone.npz"), "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 2
    errors = _error_lines(r)
    assert len(errors) == 1 and "no such model file" in errors[0], r.stderr
    assert "%|" not in r.stderr  # no progress bar was started
