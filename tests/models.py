"""Tiny Keras models for tests: fast on 2 CPU cores, deterministic by seed."""

from __future__ import annotations

import numpy as np

from explain._backend import keras


def seed(s: int = 0) -> None:
    keras.utils.set_random_seed(s)


def linear_regression(n_features: int = 5, s: int = 0) -> tuple[keras.Model, np.ndarray, float]:
    """y = x·w + b (Sequential). Returns (model, w, b)."""
    seed(s)
    model = keras.Sequential([keras.Input((n_features,)), keras.layers.Dense(1)])
    rng = np.random.default_rng(s)
    w = rng.normal(size=(n_features, 1)).astype("float32")
    b = np.array([0.3], dtype="float32")
    model.layers[-1].set_weights([w, b])
    return model, w[:, 0], float(b[0])


def mlp_classifier(n_features: int = 8, n_classes: int = 3, s: int = 0,
                   functional: bool = True) -> keras.Model:
    """A smooth (tanh) MLP ending in softmax."""
    seed(s)
    if functional:
        inp = keras.Input((n_features,))
        h = keras.layers.Dense(16, activation="tanh")(inp)
        h = keras.layers.Dense(16, activation="tanh")(h)
        out = keras.layers.Dense(n_classes, activation="softmax")(h)
        return keras.Model(inp, out)
    return keras.Sequential([
        keras.Input((n_features,)),
        keras.layers.Dense(16, activation="tanh"),
        keras.layers.Dense(16, activation="tanh"),
        keras.layers.Dense(n_classes, activation="softmax"),
    ])


def mlp_regressor(n_features: int = 6, s: int = 0) -> keras.Model:
    seed(s)
    inp = keras.Input((n_features,))
    h = keras.layers.Dense(12, activation="tanh")(inp)
    out = keras.layers.Dense(1)(h)
    return keras.Model(inp, out)


def small_cnn(size: int = 16, channels: int = 3, n_classes: int = 3, s: int = 0,
              functional: bool = True) -> keras.Model:
    """Two conv layers (last named ``last_conv``), global pooling, softmax."""
    seed(s)
    layers = [
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="last_conv"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(n_classes, activation="softmax", name="probs"),
    ]
    if functional:
        inp = keras.Input((size, size, channels))
        h = inp
        for layer in layers:
            h = layer(h)
        return keras.Model(inp, h)
    return keras.Sequential([keras.Input((size, size, channels)), *layers])


def nested_cnn(size: int = 32, n_classes: int = 3, s: int = 0) -> keras.Model:
    """A keras.applications backbone (weights=None) nested inside a Sequential."""
    seed(s)
    backbone = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), include_top=False, weights=None, alpha=0.35
    )
    return keras.Sequential([
        keras.Input((size, size, 3)),
        backbone,
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(n_classes, activation="softmax"),
    ])


def multi_output(n_features: int = 6, n_classes: int = 3, s: int = 0) -> keras.Model:
    """Two heads: ``cls`` (softmax) and ``reg`` (linear)."""
    seed(s)
    inp = keras.Input((n_features,))
    h = keras.layers.Dense(12, activation="tanh")(inp)
    cls = keras.layers.Dense(n_classes, activation="softmax", name="cls")(h)
    reg = keras.layers.Dense(1, name="reg")(h)
    return keras.Model(inp, [cls, reg])
