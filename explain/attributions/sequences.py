"""Attributions over time: Grad-CAM in one dimension, SHAP players for float sequences.

Float sequence models take ``(N, T, F)``; the gradient methods, occlusion (windows over
time covering every channel) and SHAP work on them through the common contract. This
module adds what differs from images:

- :func:`grad_cam_1d`: Grad-CAM on the last layer with a time axis (Conv1D, pooling over
  time, LSTM/GRU/SimpleRNN returning sequences, Bidirectional), maps ``(N, T)`` resized
  by linear interpolation to the input length. Text models use it on their ids.
- :func:`sequence_groups`: SHAP players for ``(T, F)``: time windows x channels (the
  counterpart of image regions), so M stays small whatever T is.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from explain._backend import tf
from explain.attributions.base import check_positive_int, gather_targets
from explain.errors import InputError

#: Layer classes whose output has a time axis Grad-CAM may use.
TIME_LAYERS = ("Conv1D", "SeparableConv1D", "DepthwiseConv1D", "Conv1DTranspose", "LSTM",
               "GRU", "SimpleRNN", "Bidirectional", "MaxPooling1D", "AveragePooling1D")

#: Players per channel over time for sequence SHAP by default.
DEFAULT_WINDOWS = 10


def time_layer_names(model: Any) -> list[str]:
    """Top-level layers with a ``(batch, T', C)`` output, T' > 1, of a time class."""
    names = []
    for layer in getattr(model, "layers", []):
        if type(layer).__name__ not in TIME_LAYERS:
            continue
        try:
            shape = tuple(layer.output.shape)
        except Exception:  # shared layers, several outputs
            continue
        if len(shape) == 3 and (shape[1] is None or shape[1] > 1):
            names.append(layer.name)
    return names


class _CamModel:
    """Activations of ``layer`` and their gradient in one traced call of the whole model.

    The layer's ``call`` is wrapped while the graph is traced, so the activations are
    those of this very model's graph (a layer reused in several graphs has no single
    ``output`` tensor to cut a sub-model at)."""

    def __init__(self, model: Any, layer: Any, output: int):
        @tf.function(reduce_retracing=True)
        def run(x, targets):
            store = {}
            original = layer.call
            with tf.GradientTape() as tape:
                def recorded(*args, **kwargs):
                    acts = original(*args, **kwargs)
                    tape.watch(acts)
                    store["acts"] = acts
                    return acts

                layer.call = recorded
                try:
                    out = model(x, training=False)
                finally:
                    del layer.call
                if isinstance(out, (list, tuple)):
                    out = out[output]
                out = tf.reshape(out, (tf.shape(out)[0], -1))
                score = gather_targets(out, targets)
            acts = store["acts"]
            grads = tape.gradient(score, acts)
            weights = tf.reduce_mean(grads, axis=1, keepdims=True)
            return tf.nn.relu(tf.reduce_sum(weights * acts, axis=-1))

        self.run = run


_CAMS: dict[tuple, tuple[Any, _CamModel]] = {}


def grad_cam_1d(model: Any, x: np.ndarray, targets: np.ndarray, *, layer: str | None = None,
                batch_size: int = 128, output: int = 0) -> tuple[np.ndarray, str]:
    """Grad-CAM maps ``(N, T)`` at input length, and the layer used.

    Raises
    ------
    ValueError
        If the model has no Conv1D / recurrent layer with a time axis, or ``layer`` is not
        one of them.
    """
    names = time_layer_names(model)
    if not names:
        raise InputError("grad_cam needs a Conv1D or recurrent layer that keeps the time "
                         "axis (return_sequences=True); this model has none")
    if layer is None:
        layer = names[-1]
    elif layer not in names:
        raise InputError(f"grad_cam layer {layer!r} is not a layer with a time axis; "
                         f"choose one of {names}")
    key = (id(model), layer, output)
    hit = _CAMS.get(key)
    if hit is None or hit[0] is not model:
        cam = _CamModel(model, model.get_layer(layer), output)
        _CAMS[key] = (model, cam)
        while len(_CAMS) > 8:
            _CAMS.pop(next(iter(_CAMS)))
    else:
        cam = hit[1]
    length = x.shape[1]
    parts = []
    for lo in range(0, len(x), batch_size):
        maps = cam.run(tf.convert_to_tensor(x[lo : lo + batch_size], tf.float32),
                       tf.convert_to_tensor(targets[lo : lo + batch_size], tf.int32)).numpy()
        parts.append(maps)
    maps = np.concatenate(parts).astype(np.float64)
    if maps.shape[1] != length:
        # linear interpolation from the layer's time steps (cell centres) to the input's
        src = (np.arange(maps.shape[1]) + 0.5) * length / maps.shape[1] - 0.5
        maps = np.stack([np.interp(np.arange(length), src, row) for row in maps])
    return maps.astype(np.float32), layer


def default_window(length: int) -> int:
    """Time steps per SHAP player: ``ceil(T / 10)``."""
    return max(1, math.ceil(length / DEFAULT_WINDOWS))


def sequence_groups(shape: tuple[int, ...], window: Any = None) -> np.ndarray:
    """``feature_groups`` ``(T, F)`` for SHAP on a sequence: window ``t // window`` of
    channel ``f`` is player ``(t // window) * F + f``."""
    t, f = int(shape[0]), int(shape[1])
    window = default_window(t) if window is None else check_positive_int("window", window)
    steps = np.arange(t) // window
    return (steps[:, None] * f + np.arange(f)[None, :]).astype(np.int64)
