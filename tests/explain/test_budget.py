"""Work and memory budgets from the model config, before Keras builds anything."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from explain import budget
from explain._backend import keras
from explain.errors import ModelIntakeError
from explain.modelio import IntakePolicy, load_model_safely
from tests.hostile import declared_model, set_input_shape, wide_dense

L = keras.layers
GiB = 1024**3


def _config(model: keras.Model, tmp_path: Path) -> dict:
    path = tmp_path / "m.keras"
    model.save(path)
    return json.loads(zipfile.ZipFile(path).read("config.json"))


def _models() -> dict[str, keras.Model]:
    i = keras.Input((10,))
    a = L.Dense(5)(i)
    b = L.Dense(7)(i)
    d = L.Dense(5)(L.Concatenate()([a, b]))
    inner = keras.Sequential([keras.Input((5,)), L.Dense(4), L.Dense(2)])
    functional = keras.Model(i, inner(L.Add()([a, d])))
    q = keras.Input((6, 8))
    att = L.MultiHeadAttention(2, 4)(q, q)
    return {
        "mlp": keras.Sequential([keras.Input((8,)), L.Dense(16, activation="relu"),
                                 L.Dropout(0.1), L.Dense(3)]),
        "cnn": keras.Sequential([keras.Input((32, 32, 3)), L.Conv2D(8, 3, padding="same"),
                                 L.BatchNormalization(), L.MaxPooling2D(),
                                 L.Conv2D(16, 5, strides=2), L.SeparableConv2D(8, 3),
                                 L.DepthwiseConv2D(3, padding="same"), L.Flatten(),
                                 L.Dense(4)]),
        "rnn": keras.Sequential([keras.Input((20,)), L.Embedding(100, 8),
                                 L.Bidirectional(L.LSTM(6, return_sequences=True)),
                                 L.GRU(5), L.Dense(2)]),
        "conv1d": keras.Sequential([keras.Input((50, 4)), L.Conv1D(8, 5, dilation_rate=2),
                                    L.AveragePooling1D(3), L.SimpleRNN(4), L.RepeatVector(3),
                                    L.TimeDistributed(L.Dense(7)), L.LayerNormalization(),
                                    L.GlobalMaxPooling1D(), L.Dense(1)]),
        "upsample": keras.Sequential([keras.Input((8, 8, 2)), L.UpSampling2D(2),
                                      L.ZeroPadding2D(1), L.Cropping2D(2),
                                      L.Conv2DTranspose(3, 3, strides=2), L.Reshape((-1, 3)),
                                      L.Permute((2, 1)), L.Flatten(), L.Dense(2)]),
        "functional": functional,
        "attention": keras.Model(q, L.Dense(1)(L.GlobalAveragePooling1D()(att))),
    }


@pytest.mark.parametrize("name", list(_models()))
def test_parameter_count_from_the_config_matches_keras(name, tmp_path):
    model = _models()[name]
    cost = budget.estimate_config(_config(model, tmp_path))
    assert cost.params == model.count_params()
    assert cost.input_shape == tuple(model.input_shape[1:])
    # Every layer's output counted once at least.
    assert cost.activation_elements >= sum(
        int(abs(__import__("numpy").prod(la.output.shape[1:]))) for la in model.layers
        if hasattr(la, "output") and not isinstance(la.output, list))


def _declared(tmp_path: Path, name: str, edit) -> Path:
    out = tmp_path / f"{name}.keras"
    out.write_bytes(declared_model(edit))
    return out


def _conv_model(cfg, size):
    set_input_shape(cfg, (size, size, 3))
    layers = cfg["config"]["layers"]
    conv = {"module": "keras.layers", "class_name": "Conv2D", "registered_name": None,
            "config": {"name": "conv", "filters": 4, "kernel_size": [3, 3], "strides": [1, 1],
                       "padding": "valid", "activation": "relu"}}
    gap = {"module": "keras.layers", "class_name": "GlobalAveragePooling2D",
           "registered_name": None, "config": {"name": "gap"}}
    layers[1:2] = [conv, gap]
    layers[-1]["config"]["units"] = 3


def _policy(**kw) -> IntakePolicy:
    return IntakePolicy(budget=budget.BudgetPolicy(**kw))


def test_huge_declared_input_is_refused_before_keras(tmp_path):
    path = _declared(tmp_path, "huge-input", lambda c: set_input_shape(c, (50000, 50000, 3)))
    with pytest.raises(ModelIntakeError) as err:
        load_model_safely(path, policy=_policy())
    assert err.value.code == "model_too_large"
    assert "7,500,000,000" in str(err.value) and "XAUDIT_MAX_INPUT_ELEMENTS" in str(err.value)


def test_wide_dense_layer_is_refused_by_the_parameter_cap(tmp_path):
    path = _declared(tmp_path, "wide", wide_dense(20000))
    with pytest.raises(ModelIntakeError) as err:
        load_model_safely(path, policy=_policy())
    assert err.value.code == "model_too_large"
    assert "XAUDIT_MAX_PARAMS" in str(err.value)
    # Under a smaller cap, a model of 15,000 x 15,000 too.
    path = _declared(tmp_path, "wide2", wide_dense(15000))
    with pytest.raises(ModelIntakeError, match="model_too_large|parameters"):
        load_model_safely(path, policy=_policy(max_params=10_000_000))


def test_conv_model_whose_single_example_cannot_fit_the_worker_is_refused(tmp_path):
    path = _declared(tmp_path, "conv2000", lambda c: _conv_model(c, 2000))
    with pytest.raises(ModelIntakeError) as err:
        load_model_safely(path, policy=_policy(worker_memory=512 * 1024**2,
                                               max_input_elements=10**8))
    assert err.value.code == "model_too_large"
    assert "XAUDIT_WORKER_MEMORY" in str(err.value)


def test_the_budget_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("XAUDIT_WORKER_MEMORY", "123456789")
    monkeypatch.setenv("XAUDIT_MAX_PARAMS", "1000")
    policy = IntakePolicy.from_env()
    assert policy.budget.worker_memory == 123456789
    assert policy.budget.max_params == 1000
    monkeypatch.setenv("XAUDIT_MAX_PARAMS", "lots")
    with pytest.raises(ValueError, match="XAUDIT_MAX_PARAMS"):
        IntakePolicy.from_env()


def test_a_small_model_passes_and_its_spec_carries_the_cost(tmp_path):
    model = keras.Sequential([keras.Input((6,)), L.Dense(5), L.Dense(2)])
    path = tmp_path / "ok.keras"
    model.save(path)
    _model, spec = load_model_safely(path, policy=_policy())
    assert spec.cost["params"] == model.count_params()
    assert budget.ModelCost.from_dict(spec.cost).input_shape == (6,)


@pytest.mark.parametrize("bad", [-5, "20000", 2.5, True, None])
def test_non_integer_or_negative_sizes_are_refused(tmp_path, bad):
    path = _declared(tmp_path, "bad", lambda c: c["config"]["layers"][1]["config"].update(
        units=bad))
    with pytest.raises(ModelIntakeError) as err:
        load_model_safely(path, policy=_policy())
    assert err.value.code == "corrupt_file"


def test_request_cost_follows_steps_samples_and_background():
    cost = budget.ModelCost(input_shape=(10,), params=100, activation_elements=50,
                            forward_flops=1000)
    ig = budget.request_cost(cost, "integrated_gradients", 4, {"steps": 100})
    # A tiny model counts at least ROW_FLOOR_FLOPS per evaluation (framework overhead).
    assert ig.evaluations == 4 * 101
    assert ig.flops == 4 * 101 * budget.ROW_FLOOR_FLOPS * 3
    uni = budget.request_cost(cost, "integrated_gradients", 4,
                              {"steps": 100, "baseline": "uniform", "baseline_samples": 10})
    assert uni.evaluations == 4 * 1001
    big = budget.ModelCost(input_shape=(10,), params=100, activation_elements=50,
                           forward_flops=10**6)
    assert budget.request_cost(big, "saliency", 1).flops == 2 * 10**6 * 3
    policy = budget.BudgetPolicy(explain_max_flops=1e6)
    with pytest.raises(budget.BudgetError) as err:
        budget.check_request(cost, "integrated_gradients", 64,
                             {"steps": 4096, "baseline": "uniform", "baseline_samples": 4096},
                             policy)
    assert err.value.code == "over_budget"
    assert "1e+06" in err.value.message and err.value.detail["cost_flops"] > 1e6
    budget.check_request(cost, "saliency", 1, {}, budget.BudgetPolicy())  # small work passes


def test_batches_are_sized_from_the_estimate():
    cost = budget.ModelCost(input_shape=(100, 100, 3), params=1000,
                            activation_elements=500_000, forward_flops=10**7)
    policy = budget.BudgetPolicy(worker_memory=256 * 1024**2)
    bs = budget.explain_batch_size(cost, policy)
    assert bs >= 1
    assert bs * cost.example_bytes() + cost.weight_bytes <= policy.batch_bytes
    assert (bs + 1) * cost.example_bytes() + cost.weight_bytes > policy.batch_bytes


_RSS_SCRIPT = textwrap.dedent("""
    import json, resource, sys, zipfile
    import numpy as np
    from explain._backend import keras
    from explain import budget
    from explain.attributions import explain
    L = keras.layers
    size, batch = int(sys.argv[1]), int(sys.argv[2])
    model = keras.Sequential([keras.Input((size, size, 3)),
                              L.Conv2D(8, 3, padding="same", activation="relu"),
                              L.Conv2D(8, 3, padding="same", activation="relu"),
                              L.GlobalAveragePooling2D(), L.Dense(3, activation="softmax")])
    model.save(sys.argv[3])
    cost = budget.estimate_config(json.loads(zipfile.ZipFile(sys.argv[3]).read("config.json")))
    x = np.random.default_rng(0).random((batch, size, size, 3), dtype=np.float32)
    explain(model, x[:1], "integrated_gradients", steps=2, batch_size=1)  # warm up
    # Growth of the peak over the resident size now. The peak reached while saving or
    # warming up may exceed what the batch needs, so it is reset first (Linux: writing 5 to
    # clear_refs resets VmHWM).
    def status(key):
        with open("/proc/self/status") as f:
            line = next(l for l in f if l.startswith(key + ":"))
        return int(line.split()[1]) * 1024
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS")
    explain(model, x, "integrated_gradients", steps=batch, batch_size=batch)
    after = status("VmHWM")
    print(json.dumps({"measured": after - before, "estimated": batch * cost.example_bytes()}))
""")


def test_estimated_memory_bounds_the_measured_peak_rss(tmp_path):
    """Peak RSS growth of an IG batch stays within the estimate, and the estimate is not
    wildly pessimistic (it sizes batches, so too large an estimate wastes the worker)."""
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, "192", "32",
                          str(tmp_path / "cnn.keras")],
                         capture_output=True, text=True, timeout=600, check=True)
    numbers = json.loads(out.stdout.strip().splitlines()[-1])
    assert numbers["measured"] <= numbers["estimated"], numbers
    assert numbers["estimated"] <= 12 * max(numbers["measured"], 1), numbers


# ------------------------------------------------------------- the audit's own arrays


def _big_conv_cost():
    # The (2000, 2000, 3) conv of bench/abuse.py, as its intake records it.
    return budget.ModelCost(input_shape=(2000, 2000, 3), params=150,
                            activation_elements=28_000_000, forward_flops=10**9,
                            workspace_elements=108_000_000)


def test_audit_memory_counts_the_deletion_insertion_rows_of_a_huge_example():
    cost = _big_conv_cost()
    parts = budget.audit_memory(cost, {"samples": 2, "batch_size": 1},
                                ["integrated_gradients", "saliency"])
    # 4 orders x 11 curve points of one 12-million-value image, at 10 bytes a value.
    assert parts["faithfulness"] == 44 * 12_000_000 * 10
    assert parts["peak"] == parts["examples"] + parts["faithfulness"]
    off = budget.audit_memory(cost, {"samples": 2, "quality": {"faithfulness": False}},
                              ["integrated_gradients"])
    assert "faithfulness" not in off and off["peak"] < parts["peak"]
    # More curve points, more rows.
    more = budget.audit_memory(cost, {"samples": 2, "batch_size": 1,
                                      "faithfulness_steps": 20}, ["saliency"])
    assert more["faithfulness"] == 4 * 21 * 12_000_000 * 10


def test_a_huge_example_audit_is_refused_up_front_or_sized_to_fit():
    cost = _big_conv_cost()
    config = {"samples": 2, "methods": ["integrated_gradients", "saliency"]}
    methods = config["methods"]
    # 8 GB worker: the 5.3 GB curve block does not fit next to the model -> refused,
    # naming the part and the option to lower.
    small = budget.BudgetPolicy(worker_memory=8 * 10**9)
    with pytest.raises(budget.BudgetError) as err:
        budget.check_audit(cost, config, methods, small)
    assert err.value.code == "over_budget"
    assert "faithfulness" in str(err.value) and "XAUDIT_WORKER_MEMORY" in str(err.value)
    assert err.value.detail["cost_bytes"] > err.value.detail["limit_bytes"]
    # 40 GB worker: accepted, and the batch is sized so batch + the audit's arrays fit.
    big = budget.BudgetPolicy(worker_memory=40 * 10**9)
    budget.check_audit(cost, config, methods, big)
    size = budget.audit_batch_size(cost, {**config, "batch_size": 256}, methods, big)
    reserved = budget.audit_memory(cost, {**config, "batch_size": size}, methods)["peak"]
    assert size >= 1
    assert (size * cost.example_bytes(True) + reserved + cost.weight_bytes
            <= big.batch_bytes)
    # The arrays alone leave less room than the plain gradient batch would get.
    assert size < budget.explain_batch_size(cost, big, True)


def test_worker_sizes_the_audit_batch_next_to_its_arrays():
    from worker.tasks import sized_audit_config

    cost = _big_conv_cost()
    spec = {"cost": cost.to_dict(), "input_kind": "image"}
    big = budget.BudgetPolicy(worker_memory=40 * 10**9)
    sized = sized_audit_config(spec, {"samples": 2}, big)
    assert sized["batch_size"] == budget.audit_batch_size(
        cost, {"samples": 2, "batch_size": 256},
        sized_methods(spec), big)
    assert sized["batch_size"] < budget.explain_batch_size(cost, big, True)


def sized_methods(spec):
    from explain.audit import DEFAULT_METHODS

    return DEFAULT_METHODS[spec["input_kind"]]
