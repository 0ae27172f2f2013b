"""Data in: loaders, validation against a model, and the bundled ground-truth sets."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from explain.datasets import (
    BUNDLED,
    LEAKY_FEATURE,
    MAX_NAME_LENGTH,
    SHAPE_CORNERS,
    Dataset,
    _corner_box,
    load_any,
    load_bundled,
    load_data_file,
    validate_for_model,
)
from explain.errors import DataError
from tests import models

# --------------------------------------------------------------------------- helpers


def spec(input_shape, width=3, task="multiclass", kind="tabular"):
    """A stand-in with the ModelSpec attributes validate_for_model reads."""
    return SimpleNamespace(
        inputs=[SimpleNamespace(shape=list(input_shape))],
        input_shape=list(input_shape),
        outputs=[SimpleNamespace(width=width, task=task)],
        task=task,
        input_kind=kind,
    )


def write_csv(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def code_of(excinfo) -> str:
    return excinfo.value.code


@pytest.fixture(scope="module")
def real_specs(tmp_path_factory):
    """ModelSpecs from explain.modelio for a tabular classifier and a grayscale CNN."""
    from explain.modelio import load_model_safely

    d = tmp_path_factory.mktemp("models")
    mlp = models.mlp_classifier(n_features=4, n_classes=3)
    mlp.save(d / "mlp.keras")
    cnn = models.small_cnn(size=8, channels=1, n_classes=10)
    cnn.save(d / "cnn.keras")
    return load_model_safely(d / "mlp.keras")[1], load_model_safely(d / "cnn.keras")[1]


# --------------------------------------------------------------------------- Dataset


def test_sha256_is_deterministic_and_sensitive_to_values_and_labels():
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    a = Dataset(x=x, y=np.array([0, 1, 0, 1]))
    b = Dataset(x=x.astype(np.float32), y=np.array([0, 1, 0, 1], dtype=np.int32))
    assert a.sha256 == b.sha256 and len(a.sha256) == 64
    x2 = x.copy()
    x2[2, 1] += 1
    assert Dataset(x=x2, y=a.y).sha256 != a.sha256
    assert Dataset(x=x, y=np.array([0, 1, 1, 1])).sha256 != a.sha256
    assert Dataset(x=x).sha256 != a.sha256


def test_dataset_refuses_non_numeric_inputs():
    with pytest.raises(DataError) as e:
        Dataset(x=np.array([["a", "b"]]))
    assert code_of(e) == "bad_dtype"
    with pytest.raises(DataError) as e:
        Dataset(x=np.ones((2, 2)) * (1 + 1j))
    assert code_of(e) == "bad_dtype"


def test_to_npz_round_trips_everything(tmp_path):
    d = load_bundled("shapes", n=30)
    path = d.to_npz(tmp_path / "sub" / "shapes.npz")
    back = load_data_file(path)
    np.testing.assert_array_equal(back.x, d.x)
    np.testing.assert_array_equal(back.y, d.y)
    assert back.sha256 == d.sha256
    assert back.class_names == d.class_names
    assert back.kind == "image" and back.name == "shapes"
    assert back.meta == json.loads(json.dumps(d.meta))


def test_subset_slices_per_row_meta():
    d = load_bundled("shapes", n=30)
    s = d.subset([3, 1])
    np.testing.assert_array_equal(s.x, d.x[[3, 1]])
    assert s.meta["per_row"]["mark_corner"] == [d.meta["per_row"]["mark_corner"][i]
                                                for i in (3, 1)]


# --------------------------------------------------------------------------- npz / npy


def test_npz_with_names_and_text_labels(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.ones((3, 2)), y=np.array(["dog", "cat", "dog"]),
             feature_names=np.array(["a", "b"]))
    d = load_data_file(p)
    assert d.x.dtype == np.float32 and d.x.shape == (3, 2)
    assert d.class_names == ["cat", "dog"]
    np.testing.assert_array_equal(d.y, [1, 0, 1])
    assert d.feature_names == ["a", "b"] and d.kind == "tabular" and d.name == "d"


def test_pickled_npz_is_refused(tmp_path):
    p = tmp_path / "evil.npz"
    np.savez(p, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError) as e:
        load_data_file(p)
    assert code_of(e) == "pickled_data"
    assert "pickle" in str(e.value)


def test_pickled_names_are_refused(tmp_path):
    p = tmp_path / "evil_names.npz"
    np.savez(p, x=np.ones((2, 2)), feature_names=np.array(["a", 3], dtype=object))
    with pytest.raises(DataError) as e:
        load_data_file(p)
    assert code_of(e) == "pickled_data"


def test_npz_without_x_and_non_numeric_x(tmp_path):
    p = tmp_path / "nox.npz"
    np.savez(p, inputs=np.ones((2, 2)))
    with pytest.raises(DataError) as e:
        load_data_file(p)
    assert code_of(e) == "bad_format" and "'x'" in str(e.value) and "inputs" in str(e.value)
    p = tmp_path / "strx.npz"
    np.savez(p, x=np.array([["a", "b"]]))
    with pytest.raises(DataError) as e:
        load_data_file(p)
    assert code_of(e) == "bad_dtype"


def test_npz_label_count_and_empty_and_corrupt(tmp_path):
    p = tmp_path / "mismatch.npz"
    np.savez(p, x=np.ones((3, 2)), y=np.array([0, 1]))
    with pytest.raises(DataError) as e:
        load_data_file(p)
    assert code_of(e) == "bad_labels" and "3 rows" in str(e.value)
    p = tmp_path / "empty.npz"
    np.savez(p, x=np.ones((0, 2)))
    with pytest.raises(DataError) as e:
        load_data_file(p)
    assert code_of(e) == "empty"
    p = tmp_path / "corrupt.npz"
    p.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError) as e:
        load_data_file(p)
    assert code_of(e) == "bad_format"


def test_npz_per_row_meta_that_does_not_fit_is_dropped(tmp_path):
    p = tmp_path / "m.npz"
    np.savez(p, x=np.ones((3, 2)), meta=np.array(json.dumps(
        {"per_row": {"a": [1, 2]}, "note": "<b>kept</b>"})))
    d = load_data_file(p)
    assert "per_row" not in d.meta and d.meta["note"] == "<b>kept</b>"
    assert d.subset([0, 2]).n == 2


def test_npy_inputs_only(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, np.arange(6).reshape(2, 3))
    d = load_data_file(p)
    assert d.x.shape == (2, 3) and d.y is None


# --------------------------------------------------------------------------- csv


def test_csv_with_label_column(tmp_path):
    p = write_csv(tmp_path / "t.csv", "age,income,target\n30,1.5,0\n41,2.5,1\n52,,2\n")
    d = load_data_file(p, label="target")
    assert d.feature_names == ["age", "income"]
    np.testing.assert_array_equal(d.y, [0, 1, 2])
    assert d.y.dtype == np.int64
    assert d.x[0].tolist() == [30.0, 1.5]
    assert np.isnan(d.x[2, 1])  # a blank cell is a missing value, caught by validation


def test_csv_text_labels_and_float_labels(tmp_path):
    p = write_csv(tmp_path / "t.csv", "a,kind\n1,spam\n2,ham\n3,spam\n")
    d = load_data_file(p, label="kind")
    assert d.class_names == ["ham", "spam"]
    np.testing.assert_array_equal(d.y, [1, 0, 1])
    p = write_csv(tmp_path / "r.csv", "a,price\n1,2.5\n2,3.0\n")
    d = load_data_file(p, label="price")
    assert d.y.dtype == np.float32 and d.y.tolist() == [2.5, 3.0]


def test_csv_non_numeric_column_is_named_with_first_row(tmp_path):
    p = write_csv(tmp_path / "t.csv", "age,city,target\n30,0,0\n41,Paris,1\n52,Rome,0\n")
    with pytest.raises(DataError) as e:
        load_data_file(p, label="target")
    msg = str(e.value)
    assert code_of(e) == "non_numeric"
    assert "'city'" in msg and "row 2" in msg and "Paris" in msg


def test_csv_missing_label_column(tmp_path):
    p = write_csv(tmp_path / "t.csv", "a,b\n1,2\n")
    with pytest.raises(DataError) as e:
        load_data_file(p, label="target")
    assert code_of(e) == "bad_labels" and "'target'" in str(e.value) and "'a'" in str(e.value)


@pytest.mark.parametrize("text, code, fragment", [
    ("", "empty", "empty"),
    ("\n\n", "empty", "empty"),
    ("a,b\n", "empty", "no data rows"),
    ("a,b\n1,2\n3\n", "bad_format", "row 2"),
    ("1,2\n3,4\n", "bad_format", "header"),
])
def test_csv_format_errors(tmp_path, text, code, fragment):
    p = write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(DataError) as e:
        load_data_file(p)
    assert code_of(e) == code and fragment in str(e.value)


def test_csv_not_utf8(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes("caf\xe9,b\n1,2\n".encode("latin-1"))
    with pytest.raises(DataError) as e:
        load_data_file(p)
    assert code_of(e) == "bad_format"


def test_hostile_names_kept_verbatim_but_capped(tmp_path):
    long_name = "é" * (MAX_NAME_LENGTH + 50)
    header = f'<script>alert(1)</script>,"naïve, ünïcode ✓",{long_name},y'
    p = write_csv(tmp_path / "h.csv", header + "\n1,2,3,0\n")
    d = load_data_file(p, label="y")
    assert d.feature_names[0] == "<script>alert(1)</script>"
    assert d.feature_names[1] == "naïve, ünïcode ✓"
    assert len(d.feature_names[2]) == MAX_NAME_LENGTH and d.feature_names[2].endswith("…")


def test_missing_file_unknown_extension_and_directory(tmp_path):
    with pytest.raises(DataError) as e:
        load_data_file(tmp_path / "nope.csv")
    assert code_of(e) == "not_found" and e.value.status == 404
    p = tmp_path / "data.parquet"
    p.write_bytes(b"PAR1")
    with pytest.raises(DataError) as e:
        load_data_file(p)
    assert code_of(e) == "bad_format" and ".parquet" in str(e.value)
    with pytest.raises(DataError) as e:
        load_data_file(tmp_path)
    assert code_of(e) == "bad_format"


# --------------------------------------------------------------------------- validation


def test_valid_data_passes_and_takes_the_model_kind():
    d = Dataset(x=np.ones((4, 3)), y=np.array([0, 1, 2, 0]))
    out = validate_for_model(d, spec([3], kind="sequence"))
    assert out.kind == "sequence" and out.x.shape == (4, 3)
    np.testing.assert_array_equal(out.y, d.y)


def test_wrong_shape_names_expected_and_actual():
    d = Dataset(x=np.ones((5, 7)))
    with pytest.raises(DataError) as e:
        validate_for_model(d, spec([8]))
    assert code_of(e) == "bad_shape"
    assert "(N, 8)" in str(e.value) and "(5, 7)" in str(e.value)
    with pytest.raises(DataError) as e:
        validate_for_model(Dataset(x=np.ones((5, 8, 8, 3))), spec([8, 8, 1], kind="image"))
    assert "(N, 8, 8, 1)" in str(e.value) and "(5, 8, 8, 3)" in str(e.value)


def test_grayscale_gets_a_channel_axis():
    d = Dataset(x=np.random.default_rng(0).random((3, 8, 8)), kind="image")
    out = validate_for_model(d, spec([8, 8, 1], width=10, kind="image"))
    assert out.x.shape == (3, 8, 8, 1)
    assert out.sha256 == d.sha256  # same values, same hash
    with pytest.raises(DataError):
        validate_for_model(d, spec([8, 8, 3], kind="image"))


def test_keras_style_shape_with_batch_axis_is_understood():
    plain = SimpleNamespace(input_shape=(None, 3), task="multiclass",
                            output_shapes=[(None, 2)])
    out = validate_for_model(Dataset(x=np.ones((2, 3)), y=np.array([0, 1])), plain)
    assert out.x.shape == (2, 3)
    with pytest.raises(DataError) as e:
        validate_for_model(Dataset(x=np.ones((2, 3)), y=np.array([0, 2])), plain)
    assert code_of(e) == "bad_labels"


def test_nan_names_row_and_feature():
    x = np.ones((5, 3))
    x[3, 2] = np.nan
    x[4, 0] = np.inf
    d = Dataset(x=x, feature_names=["a", "b", "<c>"])
    with pytest.raises(DataError) as e:
        validate_for_model(d, spec([3]))
    assert code_of(e) == "non_finite"
    assert "row 3" in str(e.value) and "'<c>'" in str(e.value) and "nan" in str(e.value)


def test_inf_in_an_image_names_the_position():
    x = np.zeros((2, 4, 4, 1))
    x[1, 2, 3, 0] = -np.inf
    with pytest.raises(DataError) as e:
        validate_for_model(Dataset(x=x, kind="image"), spec([4, 4, 1], kind="image"))
    assert "row 1" in str(e.value) and "(2, 3, 0)" in str(e.value)


def test_label_out_of_range_names_row():
    d = Dataset(x=np.ones((4, 3)), y=np.array([0, 2, 3, 1]))
    with pytest.raises(DataError) as e:
        validate_for_model(d, spec([3], width=3))
    assert code_of(e) == "bad_labels"
    assert "row 2" in str(e.value) and "3 classes" in str(e.value)
    with pytest.raises(DataError) as e:
        validate_for_model(Dataset(x=np.ones((2, 3)), y=np.array([0, -1])), spec([3]))
    assert "row 1" in str(e.value)
    with pytest.raises(DataError) as e:
        validate_for_model(Dataset(x=np.ones((2, 3)), y=np.array([0.0, 1.5])), spec([3]))
    assert "row 1" in str(e.value) and "integers" in str(e.value)


def test_sigmoid_binary_head_means_two_classes():
    d = Dataset(x=np.ones((3, 3)), y=np.array([0, 1, 1]))
    validate_for_model(d, spec([3], width=1, task="binary"))
    with pytest.raises(DataError):
        validate_for_model(Dataset(x=np.ones((1, 3)), y=np.array([2])),
                           spec([3], width=1, task="binary"))


def test_one_hot_labels_become_indices():
    y = np.eye(3)[[2, 0, 1]]
    out = validate_for_model(Dataset(x=np.ones((3, 3)), y=y), spec([3]))
    np.testing.assert_array_equal(out.y, [2, 0, 1])
    bad = y.copy()
    bad[1] = [1, 1, 0]
    with pytest.raises(DataError) as e:
        validate_for_model(Dataset(x=np.ones((3, 3)), y=bad), spec([3]))
    assert "row 1" in str(e.value) and "one-hot" in str(e.value)


def test_regression_and_multilabel_labels():
    out = validate_for_model(Dataset(x=np.ones((2, 3)), y=np.array([0.5, 2.0])),
                             spec([3], width=1, task="regression"))
    assert out.y.dtype == np.float32
    with pytest.raises(DataError) as e:
        validate_for_model(Dataset(x=np.ones((2, 3)), y=np.array([0.5, np.nan])),
                           spec([3], width=1, task="regression"))
    assert code_of(e) == "bad_labels" and "row 1" in str(e.value)
    validate_for_model(Dataset(x=np.ones((2, 3)), y=np.array([[0, 1], [1, 1]])),
                       spec([3], width=2, task="multilabel"))
    with pytest.raises(DataError) as e:
        validate_for_model(Dataset(x=np.ones((2, 3)), y=np.array([[0, 1], [2, 1]])),
                           spec([3], width=2, task="multilabel"))
    assert "row 1" in str(e.value)


def test_against_real_model_specs(real_specs):
    mlp_spec, cnn_spec = real_specs
    ok = validate_for_model(Dataset(x=np.ones((2, 4)), y=np.array([0, 2])), mlp_spec)
    assert ok.kind == "tabular"
    with pytest.raises(DataError) as e:
        validate_for_model(Dataset(x=np.ones((2, 5)), y=np.array([0, 2])), mlp_spec)
    assert code_of(e) == "bad_shape" and "(N, 4)" in str(e.value)
    with pytest.raises(DataError) as e:
        validate_for_model(Dataset(x=np.ones((2, 4)), y=np.array([0, 3])), mlp_spec)
    assert code_of(e) == "bad_labels" and "row 1" in str(e.value)
    digits = load_bundled("digits").subset(np.arange(5))
    flat = Dataset(x=digits.x[..., 0], y=digits.y, kind="image")
    out = validate_for_model(flat, cnn_spec)
    assert out.x.shape == (5, 8, 8, 1)


# --------------------------------------------------------------------------- bundled sets


@pytest.mark.parametrize("name, shape, n_classes, kind", [
    ("breast_cancer", (569, 30), 2, "tabular"),
    ("wine", (178, 13), 3, "tabular"),
    ("digits", (1797, 8, 8, 1), 10, "image"),
])
def test_scikit_learn_sets(name, shape, n_classes, kind):
    d = load_bundled(name)
    assert d.x.shape == shape and d.kind == kind and d.x.dtype == np.float32
    assert len(d.class_names) == n_classes and set(np.unique(d.y)) == set(range(n_classes))
    if kind == "tabular":
        assert len(d.feature_names) == shape[1]
    else:
        assert d.x.min() == 0.0 and d.x.max() == 1.0
    assert load_bundled(name).sha256 == d.sha256


@pytest.mark.parametrize("name", ["shapes", "tabular_leaky"])
def test_synthetic_sets_are_deterministic_by_seed(name):
    a = load_bundled(name, seed=3, n=120)
    b = load_bundled(name, seed=3, n=120)
    c = load_bundled(name, seed=4, n=120)
    assert a.sha256 == b.sha256
    np.testing.assert_array_equal(a.x, b.x)
    assert c.sha256 != a.sha256


def _mark_corners_from_pixels(x: np.ndarray, mark: int = 4) -> np.ndarray:
    """Which corner box is entirely white, read from the pixels alone (-1: none)."""
    found = np.full(x.shape[0], -1)
    for c in range(len(SHAPE_CORNERS)):
        r0, c0, r1, c1 = _corner_box(c, x.shape[1], mark, 1)
        white = (x[:, r0:r1, c0:c1, :] == 1.0).all(axis=(1, 2, 3))
        assert not (white & (found >= 0)).any(), "two corners marked in one image"
        found[white] = c
    return found


def test_shapes_watermark_follows_the_label_at_rate():
    d = load_bundled("shapes", seed=0)
    assert d.x.shape == (1500, 32, 32, 3) and d.class_names == ["circle", "square",
                                                                  "triangle"]
    corners = _mark_corners_from_pixels(d.x)
    assert (corners >= 0).all()
    np.testing.assert_array_equal(corners, d.meta["per_row"]["mark_corner"])
    agree = (corners == d.y).mean()
    assert abs(agree - 0.95) < 0.02
    for k in range(3):  # every class, not just on average
        assert (corners[d.y == k] == k).mean() > 0.9
    sc = d.meta["shortcut"]
    assert sc["planted"] and sc["rate"] == 0.95
    assert sc["class_corner"] == {"circle": "top-left", "square": "top-right",
                                  "triangle": "bottom-left"}
    assert sc["boxes"]["top-left"] == [1, 1, 5, 5]


def test_shapes_clean_twin_has_the_same_images_and_an_independent_mark():
    d = load_bundled("shapes", seed=0)
    twin = load_bundled("shapes", seed=0, shortcut=False)
    np.testing.assert_array_equal(twin.y, d.y)
    corners = _mark_corners_from_pixels(twin.x)
    assert (corners >= 0).all()
    assert abs((corners == twin.y).mean() - 0.25) < 0.05  # 4 corners, chosen at random
    # Away from the corner boxes the pixels are identical.
    inner = np.s_[:, 6:26, 6:26, :]
    np.testing.assert_array_equal(twin.x[inner], d.x[inner])
    assert twin.meta["shortcut"]["planted"] is False and twin.name == "shapes_clean"


def test_shapes_rate_option_and_bad_options():
    d = load_bundled("shapes", seed=1, rate=0.5, n=900)
    corners = _mark_corners_from_pixels(d.x)
    assert abs((corners == d.y).mean() - 0.5) < 0.06
    with pytest.raises(ValueError):
        load_bundled("shapes", rate=1.5)
    with pytest.raises(TypeError):
        load_bundled("shapes", colour="red")


def test_only_the_watermark_is_white():
    d = load_bundled("shapes", n=60)
    corners = _mark_corners_from_pixels(d.x)
    for i in range(d.n):
        r0, c0, r1, c1 = _corner_box(int(corners[i]), 32, 4, 1)
        white = (d.x[i] == 1.0).all(axis=-1)
        white[r0:r1, c0:c1] = False
        assert white.sum() <= 2  # noise may saturate a stray pixel, never a patch


def test_tabular_leaky_leak_and_clean_twin():
    d = load_bundled("tabular_leaky", seed=0)
    twin = load_bundled("tabular_leaky", seed=0, leak=False)
    j = d.feature_names.index(LEAKY_FEATURE)
    assert d.meta["leaky_feature"] == LEAKY_FEATURE and d.meta["leak"]["feature_index"] == j
    assert d.x.shape == (1500, 11) and d.class_names == ["negative", "positive"]
    flag = np.round(d.x[:, j])
    assert abs((flag == d.y).mean() - 0.95) < 0.02
    assert abs((np.round(twin.x[:, j]) == twin.y).mean() - 0.5) < 0.05
    assert not np.array_equal(d.x[:, j], np.round(d.x[:, j]))  # noisy, not exactly 0/1
    honest = [i for i in range(d.x.shape[1]) if i != j]
    np.testing.assert_array_equal(d.x[:, honest], twin.x[:, honest])
    np.testing.assert_array_equal(d.y, twin.y)


def test_unknown_bundled_name_and_load_any(tmp_path, monkeypatch):
    with pytest.raises(DataError) as e:
        load_bundled("imagenet")
    assert code_of(e) == "not_found" and "breast_cancer" in str(e.value)
    assert load_any("wine").name == "wine"
    p = write_csv(tmp_path / "t.csv", "a,y\n1,0\n2,1\n")
    assert load_any(str(p), label="y").y.tolist() == [0, 1]
    with pytest.raises(DataError) as e:
        load_any("no_such_set")
    assert code_of(e) == "not_found"
    # A file wins over a bundled name when both exist.
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "wine.npy", np.ones((2, 2)))
    assert load_any("wine.npy").x.shape == (2, 2)
    assert set(BUNDLED) == {"breast_cancer", "wine", "digits", "shapes", "tabular_leaky",
                            "lending", "text_leaky", "sequence_spike"}
