"""Model intake: hostile files are refused before Keras sees them; good ones load and are
described correctly."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from explain._backend import keras, tf
from explain.cli import main
from explain.errors import ModelIntakeError
from explain.modelio import (
    REFUSAL_CODES,
    IntakePolicy,
    ModelSpec,
    inspect_model_file,
    load_model_safely,
    sha256_file,
)
from tests import models as M
from tests.hostile import Scale, build_hostile_zoo, tiny_model

REPO = Path(__file__).resolve().parents[2]

HOSTILE = {
    "lambda_keras": "unsafe_layer",
    "lambda_h5": "unsafe_layer",
    "custom_registered_keras": "custom_object",
    "custom_registered_h5": "custom_object",
    "custom_unregistered_keras": "custom_object",
    "disguised_keras": "custom_object",
    "safe_mode_off_keras": "unsafe_config",
    "safe_mode_key_keras": "unsafe_config",
    "module_builtins_keras": "unsafe_config",
    "module_os_system_keras": "unsafe_config",
    "module_subprocess_keras": "unsafe_config",
    "module_posix_h5": "unsafe_config",
    "lambda_activation_keras": "unsafe_config",
    "foreign_function_keras": "unsafe_config",
    "external_link_h5": "unsafe_config",
    "zip_bomb_keras": "archive_too_large",
    "traversal_keras": "archive_bad_member",
    "absolute_keras": "archive_bad_member",
    "symlink_keras": "archive_bad_member",
    "duplicate_keras": "archive_bad_member",
    "extra_member_keras": "archive_bad_member",
    "truncated_keras": "corrupt_file",
    "truncated_h5": "corrupt_file",
    "random_keras": "corrupt_file",
    "random_h5": "corrupt_file",
    "empty_keras": "corrupt_file",
    "weights_only_h5": "corrupt_file",
    "pickle_pkl": "unsupported_format",
    "text_txt": "unsupported_format",
    "keras_as_pkl": "unsupported_format",
    "h5_as_keras": "unsupported_format",
    "keras_as_h5": "unsupported_format",
    "savedmodel_dir": "unsupported_format",
    "savedmodel_zip": "unsupported_format",
    "savedmodel_targz": "unsupported_format",
    "savedmodel_as_keras": "unsupported_format",
    "plain_dir": "unsupported_format",
}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return build_hostile_zoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture
def keras_never_called(monkeypatch):
    """Make every Keras/TensorFlow loading entry point fail the test if it is reached."""
    calls: list[str] = []

    def spy(name):
        def fn(*args, **kwargs):
            calls.append(name)
            raise RuntimeError(f"{name} reached for a file that should have been refused")
        return fn

    for owner, attr in [(keras.saving, "load_model"), (keras.models, "load_model"),
                        (keras.saving, "deserialize_keras_object"),
                        (keras.models, "model_from_json"), (tf.saved_model, "load"),
                        (keras.layers, "TFSMLayer")]:
        monkeypatch.setattr(owner, attr, spy(f"{owner.__name__}.{attr}"))
    return calls


# ------------------------------------------------------------------------ hostile files


def test_zoo_has_every_case(zoo):
    assert {name: code for name, (_p, code, _m) in zoo.items()} == HOSTILE
    assert set(HOSTILE.values()) <= set(REFUSAL_CODES)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_refused_before_keras(zoo, keras_never_called, name):
    path, code, marker = zoo[name]
    with pytest.raises(ModelIntakeError) as info:
        load_model_safely(path, policy=IntakePolicy())
    assert info.value.code == code, info.value.message
    assert info.value.status == 422
    assert "\n" not in info.value.message and "Traceback" not in info.value.message
    assert not marker.exists(), f"{name}: hostile code ran"
    assert keras_never_called == [], f"{name}: Keras was reached: {keras_never_called}"


def test_hostile_files_refused_with_savedmodel_allowed_too(zoo, keras_never_called):
    # Allowing SavedModels must not open a path for any of the Keras-format attacks.
    policy = IntakePolicy(allow_savedmodel=True)
    for name, (path, code, marker) in zoo.items():
        if name.startswith("savedmodel") and name != "savedmodel_as_keras":
            continue
        with pytest.raises(ModelIntakeError) as info:
            load_model_safely(path, policy=policy)
        assert info.value.code == code, (name, info.value.message)
        assert not marker.exists()
    assert keras_never_called == []


def test_hostile_files_are_live(tmp_path):
    """Control: loaded by Keras without xaudit's checks (and, for Lambda, without safe
    mode), the zoo's code does run and writes the markers. So the marker assertions
    above can fail."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(REPO)!r})
        from explain._backend import keras
        from tests.hostile import build_hostile_zoo
        zoo = build_hostile_zoo({str(tmp_path)!r}, include_savedmodel=False)
        seen = {{}}
        for name, kwargs in [("lambda_keras", {{"safe_mode": False}}),
                             ("lambda_h5", {{"safe_mode": False}}),
                             ("custom_registered_keras", {{}}),
                             ("custom_registered_h5", {{}}),
                             ("disguised_keras", {{}})]:
            path, _code, marker = zoo[name]
            try:
                keras.saving.load_model(path, **kwargs)
            except Exception:
                pass
            seen[name] = marker.exists()
        print(json.dumps(seen))
    """)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=300, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"lambda_keras": True, "lambda_h5": True, "custom_registered_keras": True,
                    "custom_registered_h5": True, "disguised_keras": True}


def test_missing_file_is_not_found(tmp_path):
    with pytest.raises(ModelIntakeError) as info:
        load_model_safely(tmp_path / "nope.keras")
    assert info.value.code == "not_found"


# ------------------------------------------------------------------------ good models


def _binary():
    M.seed(0)
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(1, activation="sigmoid")])


def _multilabel():
    M.seed(0)
    return keras.Sequential([keras.Input((7, 3)), keras.layers.Flatten(),
                             keras.layers.Dense(4, activation="sigmoid", name="tags")])


# name: (builder, task, input_kind, input_shape, heads, Grad-CAM candidates that must be there)
GOOD = {
    "functional_mlp": (M.mlp_classifier, "multiclass", "tabular", [8], 1, []),
    "sequential_mlp": (lambda: M.mlp_classifier(functional=False), "multiclass", "tabular",
                       [8], 1, []),
    "functional_cnn": (M.small_cnn, "multiclass", "image", [16, 16, 3], 1,
                       ["conv1", "last_conv"]),
    "sequential_cnn": (lambda: M.small_cnn(functional=False), "multiclass", "image",
                       [16, 16, 3], 1, ["last_conv"]),
    "nested_cnn": (M.nested_cnn, "multiclass", "image", [32, 32, 3], 1,
                   ["mobilenetv2_0.35_32/Conv1"]),
    "multi_output": (M.multi_output, "multiclass", "tabular", [6], 2, []),
    "regression": (M.mlp_regressor, "regression", "tabular", [6], 1, []),
    "linear_sequential": (lambda: M.linear_regression()[0], "regression", "tabular", [5], 1,
                          []),
    "binary": (_binary, "binary", "tabular", [5], 1, []),
    "multilabel_sequence": (_multilabel, "multilabel", "sequence", [7, 3], 1, []),
}


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    files = {}
    for name, (build, *_rest) in GOOD.items():
        model = build()
        for ext in (".keras", ".h5"):
            path = folder / f"{name}{ext}"
            model.save(path)
            files[name, ext] = (path, model)
    return files


@pytest.mark.parametrize("ext", [".keras", ".h5"])
@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_model_loads_and_is_described(good_files, name, ext):
    path, original = good_files[name, ext]
    _build, task, kind, in_shape, n_heads, must_candidates = GOOD[name]
    model, spec = load_model_safely(path, policy=IntakePolicy())

    x = np.random.default_rng(1).normal(size=(3, *in_shape)).astype("float32")
    for got, want in zip(keras.tree.flatten(model(x)), keras.tree.flatten(original(x)), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)

    assert spec.format == ext.lstrip(".")
    assert spec.task == task
    assert spec.input_kind == kind
    assert spec.input_shape == in_shape
    assert len(spec.outputs) == n_heads
    assert spec.n_params == original.count_params()
    assert spec.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert spec.file_size == path.stat().st_size
    assert set(must_candidates) <= set(spec.gradcam_layers)
    if spec.gradcam_layers:
        assert spec.gradcam_default == spec.gradcam_layers[-1]
    else:
        assert spec.gradcam_default is None
    names = [layer.name for layer in spec.layers]
    assert len(names) == len(set(names))
    assert ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_spec_details_of_small_cnn(good_files):
    spec = inspect_model_file(good_files["functional_cnn", ".keras"][0])
    assert spec.final_activation == "softmax"
    assert spec.outputs[0].name == "probs" and spec.outputs[0].shape == [3]
    assert spec.outputs[0].width == 3
    assert spec.gradcam_layers == ["conv1", "last_conv"]
    assert spec.gradcam_default == "last_conv"
    conv = next(layer for layer in spec.layers if layer.name == "last_conv")
    assert conv.class_name == "Conv2D"
    assert conv.output_shape == [None, 16, 16, 8]
    assert conv.params == 8 * 3 * 3 * 8 + 8
    assert spec.keras_version == keras.__version__


def test_spec_of_multi_output_lists_every_head(good_files):
    spec = inspect_model_file(good_files["multi_output", ".h5"][0])
    heads = {h.name: (h.activation, h.task, h.shape) for h in spec.outputs}
    assert heads == {"cls": ("softmax", "multiclass", [3]), "reg": ("linear", "regression", [1])}


def test_nested_model_layers_are_paths(good_files):
    spec = inspect_model_file(good_files["nested_cnn", ".keras"][0])
    backbone = "mobilenetv2_0.35_32"
    inner = [layer for layer in spec.layers if layer.name.startswith(backbone + "/")]
    assert inner and all(layer.depth == 1 for layer in inner)
    assert spec.gradcam_default.startswith(backbone + "/")
    # A candidate is a real layer inside the backbone with a (H, W) > 1 map.
    by_name = {layer.name: layer for layer in spec.layers}
    shape = by_name[spec.gradcam_default].output_shape
    assert len(shape) == 4 and shape[1] > 1 and shape[2] > 1


def test_spec_candidates_match_grad_cam(good_files):
    from explain.attributions.grad_cam import gradcam_candidate_layers

    model, spec = load_model_safely(good_files["nested_cnn", ".h5"][0])
    assert spec.gradcam_layers == gradcam_candidate_layers(model)


def test_sha256_file(tmp_path):
    path = tmp_path / "blob.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_spec_from_dict_rejects_unknown_fields(good_files):
    data = inspect_model_file(good_files["binary", ".keras"][0]).to_dict()
    with pytest.raises(ValueError):
        ModelSpec.from_dict({**data, "surprise": 1})
    del data["task"]
    with pytest.raises(ValueError):
        ModelSpec.from_dict(data)


# ------------------------------------------------------------------------ policy


def test_size_cap_gives_file_too_large(good_files, keras_never_called):
    path = good_files["functional_mlp", ".keras"][0]
    with pytest.raises(ModelIntakeError) as info:
        load_model_safely(path, policy=IntakePolicy(max_file_bytes=path.stat().st_size - 1))
    assert info.value.code == "file_too_large"
    assert keras_never_called == []


def test_uncompressed_cap_gives_archive_too_large(good_files):
    path = good_files["functional_mlp", ".keras"][0]
    with zipfile.ZipFile(path) as zf:
        total = sum(i.file_size for i in zf.infolist())
    with pytest.raises(ModelIntakeError) as info:
        load_model_safely(path, policy=IntakePolicy(max_uncompressed_bytes=total - 1))
    assert info.value.code == "archive_too_large"
    load_model_safely(path, policy=IntakePolicy(max_uncompressed_bytes=total))


def test_hdf5_declared_size_cap(good_files):
    path = good_files["functional_mlp", ".h5"][0]
    with pytest.raises(ModelIntakeError) as info:
        load_model_safely(path, policy=IntakePolicy(max_uncompressed_bytes=64))
    assert info.value.code == "archive_too_large"


def test_compression_ratio_cap_is_configurable(zoo):
    path = zoo["zip_bomb_keras"][0]
    # The same bomb is refused by the total-size cap when the ratio check is relaxed.
    policy = IntakePolicy(max_compression_ratio=10_000, max_uncompressed_bytes=32 * 2**20)
    with pytest.raises(ModelIntakeError) as info:
        load_model_safely(path, policy=policy)
    assert info.value.code == "archive_too_large"


@pytest.fixture(scope="module")
def scale_file(tmp_path_factory):
    model = tiny_model(Scale(3.0, name="scale"))
    path = tmp_path_factory.mktemp("custom") / "scale.keras"
    model.save(path)
    return path, model


def test_custom_object_refused_by_default(scale_file):
    with pytest.raises(ModelIntakeError) as info:
        load_model_safely(scale_file[0], policy=IntakePolicy())
    assert info.value.code == "custom_object"
    assert "xaudit_test>Scale" in info.value.message


@pytest.mark.parametrize("allowed", ["xaudit_test>Scale", "tests.hostile.Scale"])
def test_allow_list_admits_a_named_custom_object(scale_file, allowed):
    path, original = scale_file
    model, spec = load_model_safely(path, policy=IntakePolicy(allowed_custom_objects={allowed}))
    x = np.ones((2, 4), "float32")
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(original(x)), atol=1e-6)
    assert [layer.class_name for layer in spec.layers] == ["Scale", "Dense"]


def test_allow_list_admits_only_what_it_names(zoo):
    policy = IntakePolicy(allowed_custom_objects={"xaudit_test>Scale"})
    path, _code, marker = zoo["custom_registered_keras"]
    with pytest.raises(ModelIntakeError) as info:
        load_model_safely(path, policy=policy)
    assert info.value.code == "custom_object"
    assert not marker.exists()


def test_policy_from_env():
    policy = IntakePolicy.from_env({
        "XAUDIT_MAX_MODEL_BYTES": "1234",
        "XAUDIT_ALLOW_SAVEDMODEL": "true",
        "XAUDIT_ALLOWED_CUSTOM_OBJECTS": " a>B , c.D ,,",
    })
    assert policy.max_file_bytes == 1234
    assert policy.uncompressed_cap == 2468
    assert policy.allow_savedmodel is True
    assert policy.allowed_custom_objects == frozenset({"a>B", "c.D"})
    default = IntakePolicy.from_env({})
    # From the environment, the intake also enforces the work budget (explain.budget).
    assert default.budget is not None
    assert dataclasses.replace(default, budget=None) == IntakePolicy()
    assert default.allow_savedmodel is False and default.allowed_custom_objects == frozenset()
    assert IntakePolicy.from_env({"XAUDIT_ALLOW_SAVEDMODEL": "0"}).allow_savedmodel is False
    with pytest.raises(ValueError):
        IntakePolicy.from_env({"XAUDIT_MAX_MODEL_BYTES": "lots"})


def test_default_policy_comes_from_env(monkeypatch, good_files):
    path = good_files["binary", ".keras"][0]
    monkeypatch.setenv("XAUDIT_MAX_MODEL_BYTES", "10")
    with pytest.raises(ModelIntakeError) as info:
        load_model_safely(path)
    assert info.value.code == "file_too_large"


# ------------------------------------------------------------------------ SavedModel


@pytest.mark.parametrize("name", ["savedmodel_dir", "savedmodel_zip", "savedmodel_targz"])
def test_savedmodel_loads_when_the_operator_allows_it(zoo, name):
    path = zoo[name][0]
    model, spec = load_model_safely(path, policy=IntakePolicy(allow_savedmodel=True))
    assert spec.format == "savedmodel"
    assert spec.input_shape == [4] and spec.input_kind == "tabular"
    assert [h.shape for h in spec.outputs] == [[1]]
    assert spec.task == "unknown"  # the graph hides the final activation
    x = np.linspace(-1, 1, 8, dtype="float32").reshape(2, 4)
    reference, _ = load_model_safely(zoo["savedmodel_dir"][0],
                                     policy=IntakePolicy(allow_savedmodel=True))
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(reference(x)), atol=1e-6)


# ------------------------------------------------------------------------ CLI


def test_cli_inspect_good_model(good_files):
    path = good_files["functional_cnn", ".keras"][0]
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert "multiclass" in result.output and "last_conv" in result.output
    assert "image" in result.output


def test_cli_inspect_json(good_files):
    path = good_files["multi_output", ".keras"][0]
    result = CliRunner().invoke(main, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    spec = ModelSpec.from_dict(json.loads(result.stdout))
    assert [h.name for h in spec.outputs] == ["cls", "reg"]


@pytest.mark.parametrize("name", ["lambda_h5", "zip_bomb_keras", "random_keras",
                                  "savedmodel_dir", "module_os_system_keras"])
def test_cli_inspect_hostile_file(zoo, name):
    path, code, marker = zoo[name]
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error [{code}]: ")
    assert "Traceback" not in result.output and result.stdout == ""
    assert not marker.exists()


def test_cli_inspect_missing_file(tmp_path):
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "missing.keras")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error [not_found]: ")


@pytest.mark.parametrize("name", ["<b>dense<b>", "a b", "x\x1b[31m"])
def test_layer_names_tensorflow_cannot_trace_are_refused_at_intake(tmp_path, name):
    """Such a layer loads and predicts, then failed every gradient method in the worker."""
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name=name)],
                             name="inner")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, inner(keras.layers.Dense(3)(inputs)))
    path = tmp_path / "named.keras"
    model.save(path)
    with pytest.raises(ModelIntakeError) as err:
        load_model_safely(path)
    assert err.value.code == "bad_layer_name"
    assert "rename the layer" in err.value.message


def test_layer_names_with_dots_dashes_and_digits_load(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense-1.v2_x")])
    path = tmp_path / "ok.keras"
    model.save(path)
    loaded, _spec = load_model_safely(path)
    assert loaded.layers[-1].name == "dense-1.v2_x"
