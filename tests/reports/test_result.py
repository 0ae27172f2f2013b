"""AuditResult: the hand-over between the audit pipeline and the renderer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from explain.result import ARRAYS_FILE, REPORT_FILE, AuditResult, to_jsonable
from tests.reports.builders import image_audit


def test_save_load_round_trip_keeps_report_and_arrays(tmp_path):
    result = image_audit(n_examples=9)
    folder = result.save(tmp_path / "audit")
    assert sorted(p.name for p in folder.iterdir()) == sorted([REPORT_FILE, ARRAYS_FILE])

    loaded = AuditResult.load(folder)
    assert loaded.report == json.loads(result.to_json())
    assert sorted(loaded.arrays) == sorted(result.arrays)
    for name, array in result.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[name], array)
        assert loaded.arrays[name].dtype == array.dtype
    assert set(loaded.maps()) == {"grad_cam", "integrated_gradients", "shap"}
    assert loaded.maps()["shap"].shape == (9, 64, 64)
    assert loaded.class_maps()["grad_cam"].shape == (10, 64, 64)
    assert set(loaded.drift_arrays()) == {"class_maps.grad_cam"}
    assert loaded.examples_x.shape == (9, 64, 64, 3)


def test_save_twice_overwrites_without_leftovers(tmp_path):
    result = image_audit(n_examples=8, with_drift=False)
    result.save(tmp_path)
    result.report["title"] = "second run"
    result.save(tmp_path)
    assert AuditResult.load(tmp_path).report["title"] == "second run"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([REPORT_FILE, ARRAYS_FILE])


def test_load_refuses_pickled_arrays(tmp_path):
    (tmp_path / REPORT_FILE).write_text("{}", encoding="utf-8")
    np.savez(tmp_path / ARRAYS_FILE, examples_x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        AuditResult.load(tmp_path)


@pytest.mark.parametrize("name", ["maps", "maps.", "maps.a/b", "x", "class_maps.<img>", "../x"])
def test_array_names_follow_the_convention(name):
    with pytest.raises(ValueError, match="array name"):
        AuditResult(report={}, arrays={name: np.zeros(3)})


def test_object_arrays_are_refused():
    with pytest.raises(TypeError, match="dtype"):
        AuditResult(report={}, arrays={"examples_x": np.array(["a", "b"])})


def test_report_must_be_a_dict():
    with pytest.raises(TypeError):
        AuditResult(report=[], arrays={})


def test_to_json_converts_numpy_and_non_finite_numbers():
    result = AuditResult(
        report={"a": np.float32(0.5), "b": np.int64(3), "c": [np.nan, math.inf, 1.0],
                "d": np.arange(3), "e": (True, None), "f": np.bool_(True)},
    )
    assert json.loads(result.to_json()) == {
        "a": 0.5, "b": 3, "c": [None, None, 1.0], "d": [0, 1, 2], "e": [True, None], "f": True
    }


def test_to_jsonable_rejects_what_json_cannot_hold():
    with pytest.raises(TypeError):
        to_jsonable({"x": {1, 2}})
    with pytest.raises(TypeError):
        to_jsonable({1: "non-string key"})


def test_to_jsonable_lenient_mode_is_for_free_form_details():
    from enum import Enum

    class Kind(Enum):
        A = "a"

    detail = {1: np.float32(np.nan), "kind": Kind.A, "obj": (o := object()),
              "v": np.arange(2)}
    assert to_jsonable(detail, strict=False) == {"1": None, "kind": "a", "obj": o,
                                                 "v": [0, 1]}
    assert to_jsonable({"kind": Kind.A, "x": np.int64(3)}) == {"kind": "a", "x": 3}
    with pytest.raises(TypeError):
        to_jsonable(detail)
