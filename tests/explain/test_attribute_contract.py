"""The contract every registered attribution method keeps (DESIGN: Attributions).

Parametrized over ``explain.METHODS``, so each newly registered method is held to it:
output shape and dtype, every model kind, batch-size independence, and a ValueError or
TypeError naming what was expected for every kind of bad input.
"""

from __future__ import annotations

import numpy as np
import pytest

from explain import METHODS, attribute, explain
from explain._backend import keras
from explain.attributions import method_info
from tests import models as M

ALL = list(METHODS)
#: Cheaper settings for methods whose defaults are tuned for quality, not test speed.
FAST = {"integrated_gradients": {"steps": 8}, "smoothgrad": {"samples": 4}}


def spatial(method: str) -> bool:
    return method_info(method).output == "spatial"


def run(model, x, method, **options):
    return explain(model, x, method, **{**FAST.get(method, {}), **options})


def expected_shape(method, x):
    return x.shape[:3] if spatial(method) else x.shape


# --------------------------------------------------------------------------- a lazy model zoo


def image_two_heads(size=16, n_classes=3):
    M.seed(0)
    inp = keras.Input((size, size, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="last_conv")(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    cls = keras.layers.Dense(n_classes, activation="softmax", name="cls")(h)
    reg = keras.layers.Dense(1, name="reg")(h)
    return keras.Model(inp, [cls, reg])


def image_regressor(size=16):
    M.seed(0)
    inp = keras.Input((size, size, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="last_conv")(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, keras.layers.Dense(1)(h))


def _images(n, size, s):
    return np.random.default_rng(s).random((n, size, size, 3)).astype(np.float32)


def _rows(n, f, s):
    return np.random.default_rng(s).normal(size=(n, f)).astype(np.float32)


BUILDERS = {
    "cnn_functional": lambda: (M.small_cnn(size=16), _images(3, 16, 0)),
    "cnn_sequential": lambda: (M.small_cnn(size=16, functional=False), _images(3, 16, 1)),
    "nested": lambda: (M.nested_cnn(size=32), _images(2, 32, 2)),
    "cnn_regression": lambda: (image_regressor(), _images(3, 16, 3)),
    "cnn_multi": lambda: (image_two_heads(), _images(3, 16, 4)),
    "mlp_functional": lambda: (M.mlp_classifier(n_features=8), _rows(3, 8, 5)),
    "mlp_sequential": lambda: (M.mlp_classifier(n_features=8, functional=False), _rows(3, 8, 6)),
    "mlp_regression": lambda: (M.mlp_regressor(n_features=6), _rows(3, 6, 7)),
    "mlp_multi": lambda: (M.multi_output(n_features=6), _rows(3, 6, 8)),
}
IMAGE_KINDS = ["cnn_functional", "cnn_sequential", "nested", "cnn_regression"]
TABULAR_KINDS = ["mlp_functional", "mlp_sequential", "mlp_regression"]


class Zoo:
    """Builds each model once per module, on first use."""

    def __init__(self):
        self._cache = {}

    def __call__(self, kind):
        if kind not in self._cache:
            self._cache[kind] = BUILDERS[kind]()
        return self._cache[kind]

    def for_method(self, method, role):
        """The classifier / regressor / multi-output model suited to ``method``."""
        prefix = "cnn" if spatial(method) else "mlp"
        return self({"classifier": f"{prefix}_functional", "regressor": f"{prefix}_regression",
                     "multi": f"{prefix}_multi"}[role])


@pytest.fixture(scope="module")
def zoo():
    return Zoo()


def _kind_cases():
    for m in ALL:
        kinds = IMAGE_KINDS if spatial(m) else IMAGE_KINDS + TABULAR_KINDS
        for k in kinds:
            yield pytest.param(m, k, id=f"{m}-{k}")


# --------------------------------------------------------------------------- the contract


def test_the_design_methods_are_registered():
    for name in ("integrated_gradients", "saliency", "smoothgrad", "occlusion"):
        assert name in METHODS


@pytest.mark.parametrize(("method", "kind"), list(_kind_cases()))
def test_every_model_kind_gives_a_float32_array_of_the_promised_shape(zoo, method, kind):
    model, x = zoo(kind)
    res = run(model, x, method)
    assert isinstance(res.values, np.ndarray)
    assert res.values.dtype == np.float32
    assert res.values.shape == expected_shape(method, x)
    assert np.all(np.isfinite(res.values))
    assert res.targets.shape == (len(x),)
    if kind.endswith("regression"):
        np.testing.assert_array_equal(res.targets, 0)
    else:
        np.testing.assert_array_equal(res.targets, np.argmax(keras.ops.convert_to_numpy(model(x)), 1))
    if method_info(method).completeness:
        for name in ("scores", "baseline_scores", "completeness_gap"):
            arr = getattr(res, name)
            assert arr is not None and arr.shape == (len(x),), name
            assert np.all(np.isfinite(arr)), name


@pytest.mark.parametrize("method", ALL)
def test_attribute_returns_the_plain_array(zoo, method):
    model, x = zoo.for_method(method, "classifier")
    values = attribute(model, x, method, **FAST.get(method, {}))
    assert type(values) is np.ndarray and values.dtype == np.float32
    np.testing.assert_array_equal(values, run(model, x, method).values)


@pytest.mark.parametrize("method", ALL)
def test_multi_output_head_by_index_and_by_name(zoo, method):
    model, x = zoo.for_method(method, "multi")
    by_index = run(model, x, method, output=1)
    by_name = run(model, x, method, output="reg")
    first = run(model, x, method, output="cls", target=0)
    np.testing.assert_array_equal(by_index.values, by_name.values)
    np.testing.assert_array_equal(by_name.targets, 0)
    assert by_name.options["output"] == 1
    assert by_name.values.shape == expected_shape(method, x)
    # The option really selects a head: the other head explains differently.
    assert not np.allclose(first.values, by_name.values)


@pytest.mark.parametrize("method", ALL)
def test_logits_on_a_softmax_model(zoo, method):
    model, x = zoo.for_method(method, "classifier")
    probs = run(model, x, method)
    logits = run(model, x, method, logits=True, target=probs.targets)
    assert logits.values.shape == expected_shape(method, x)
    assert logits.values.dtype == np.float32
    assert np.all(np.isfinite(logits.values))
    if probs.scores is not None:
        assert not np.allclose(logits.scores, probs.scores)


@pytest.mark.parametrize("method", ALL)
def test_batched_equals_unbatched(zoo, method):
    model, x = zoo.for_method(method, "classifier")
    runs = [run(model, x, method, batch_size=bs).values for bs in (1, 3, 1000)]
    scale = max(float(np.abs(runs[-1]).max()), 1e-12)
    for r in runs[:-1]:
        np.testing.assert_allclose(r, runs[-1], rtol=1e-5, atol=1e-6 * scale)


# --------------------------------------------------------------------------- bad input

_NAN = np.float32("nan")


def _with(x, value):
    y = x.copy()
    y.flat[1] = value
    return y


#: id -> (how to build the call from (x, n), error type, regex the message must match)
BAD_INPUTS = {
    "wrong_rank": (lambda x, n: ({"x": x[..., None]}), ValueError, r"rank \d"),
    "wrong_shape": (lambda x, n: ({"x": x[:, :-1]}), ValueError, r"must have shape \(N, .*expected"),
    "string_dtype": (lambda x, n: ({"x": x.astype(str)}), TypeError, "numeric array"),
    "object_dtype": (lambda x, n: ({"x": x.astype(object)}), TypeError, "numeric array"),
    "nan": (lambda x, n: ({"x": _with(x, _NAN)}), ValueError, "NaN or Inf"),
    "inf": (lambda x, n: ({"x": _with(x, np.inf)}), ValueError, "NaN or Inf"),
    "empty": (lambda x, n: ({"x": x[:0]}), ValueError, "empty"),
    "unknown_option": (lambda x, n: ({"bogus": 1}), ValueError, r"unknown option.*bogus"),
    "target_out_of_range": (lambda x, n: ({"target": 99}), ValueError, r"target must be in \[0, 2\]"),
    "target_negative": (lambda x, n: ({"target": -1}), ValueError, r"target must be in \[0, 2\]"),
    "target_wrong_length": (lambda x, n: ({"target": np.zeros(n + 1, int)}), ValueError,
                            r"target must have shape \(3,\) \(one per row\)"),
    "target_float": (lambda x, n: ({"target": 1.0}), TypeError, "an int array"),
    "target_float_array": (lambda x, n: ({"target": np.zeros(n)}), TypeError, "an int array"),
    "output_out_of_range": (lambda x, n: ({"output": 5}), ValueError, r"output must be in \[0, 0\]"),
    "output_unknown_name": (lambda x, n: ({"output": "nope"}), ValueError, "unknown output 'nope'"),
    "output_float": (lambda x, n: ({"output": 1.5}), TypeError, "output must be an int index or"),
    "batch_size_zero": (lambda x, n: ({"batch_size": 0}), ValueError,
                        "batch_size must be an integer >= 1"),
    "batch_size_negative": (lambda x, n: ({"batch_size": -4}), ValueError,
                            "batch_size must be an integer >= 1"),
    "batch_size_string": (lambda x, n: ({"batch_size": "8"}), TypeError,
                          "batch_size must be an integer"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.parametrize("method", ALL)
def test_bad_input_is_refused_with_what_was_expected(zoo, method, case):
    model, x = zoo.for_method(method, "classifier")
    make, error, match = BAD_INPUTS[case]
    kwargs = make(x, len(x))
    bad_x = kwargs.pop("x", x)
    with pytest.raises(error, match=match):
        explain(model, bad_x, method, **kwargs)


@pytest.mark.parametrize("method", ALL)
def test_logits_on_a_linear_output_is_refused(zoo, method):
    model, x = zoo.for_method(method, "regressor")
    with pytest.raises(ValueError, match="logits=True needs an output ending in softmax or sigmoid"):
        explain(model, x, method, logits=True)


@pytest.mark.parametrize("steps", [0, -3])
@pytest.mark.parametrize("method", [m for m in ALL if "steps" in method_info(m).options])
def test_non_positive_steps_are_refused(zoo, method, steps):
    model, x = zoo.for_method(method, "classifier")
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        explain(model, x, method, steps=steps)


def test_unknown_method_names_the_known_ones(zoo):
    model, x = zoo("mlp_functional")
    with pytest.raises(ValueError, match="unknown attribution method 'lime'.*saliency"):
        explain(model, x, "lime")
    with pytest.raises(ValueError, match="unknown attribution method"):
        attribute(model, x, None)
