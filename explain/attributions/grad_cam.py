"""Grad-CAM and Grad-CAM++: class activation maps of a spatial layer, weighted by gradients.

Both methods look at one spatial layer of the model (by default the last layer whose
output is a ``(N, h, w, c)`` map with ``h, w > 1``, searching into nested sub-models),
weight its channels by how the target score responds to them, keep the positive part
and upsample the ``(h, w)`` map to the input's height and width.

The maps keep their raw magnitude: nothing is rescaled per example unless the caller asks
for it with ``normalize=True``, so maps of different images (and of different models on
the same image) stay comparable.

Keras 3 gives no direct handle on an inner layer's activations *and* the model's output
in one forward pass when the layer sits inside a nested sub-model (a backbone inside a
Sequential, say). The model is therefore rebuilt, sharing its layers and weights, as a
graph that also returns the chosen layer's output: Sequential models by walking their
layers, functional models with ``keras.models.clone_model(call_function=...)``, and nested
models recursively.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from explain._backend import keras, tf
from explain.attributions import base
from explain.attributions.base import (
    Attribution,
    ModelFunction,
    check_bool,
    gather_targets,
    model_input_shape,
)
from explain.attributions.registry import register
from explain.budget import ONE_GRADIENT
from explain.errors import InputError, InputTypeError
from explain.layers import layer_chains, layer_path

__all__ = ["find_layer", "gradcam_candidate_layers", "grad_cam_maps", "grad_cam_weights",
           "grad_cam_plus_plus_weights"]

# --------------------------------------------------------------------------- layers


def _is_graph_model(layer: Any) -> bool:
    """A functional or Sequential model: one whose layers can be walked and rewired."""
    return (isinstance(layer, keras.Model) and bool(getattr(layer, "inputs", None))
            and bool(getattr(layer, "outputs", None)))


def _walk(model: keras.Model) -> Iterator[tuple]:
    """Every layer as a chain ``(outer, ..., layer)``, descending into nested graph models
    (which are not chains of their own, nor are input layers)."""
    for chain in layer_chains(model, descend=_is_graph_model):
        layer = chain[-1]
        if not isinstance(layer, keras.layers.InputLayer) and not _is_graph_model(layer):
            yield chain


def _output_shape(layer: keras.layers.Layer) -> tuple | None:
    """The layer's output shape, or None when it has no single symbolic output."""
    try:
        out = layer.output
    except (AttributeError, ValueError, RuntimeError):
        # Layers called more than once, or never called on a symbolic input.
        return None
    shape = getattr(out, "shape", None)
    return tuple(shape) if shape is not None else None


def _is_spatial(shape: tuple | None, *, strict: bool = True) -> bool:
    if shape is None or len(shape) != 4:
        return False
    if not strict:
        return True
    h, w = shape[1], shape[2]
    return h is not None and w is not None and h > 1 and w > 1


def gradcam_candidate_layers(model: keras.Model) -> list[str]:
    """Names of the layers Grad-CAM can explain, in forward order.

    A candidate is a layer whose output is a 4-D map ``(N, h, w, c)`` with ``h, w > 1``.
    Layers inside nested functional or Sequential sub-models are included under their
    path ``"outer/inner"``; the last candidate is the automatic choice.

    Parameters
    ----------
    model
        A built Keras 3 model.

    Returns
    -------
    list of str
        Layer paths, accepted by the ``layer`` option of ``grad_cam`` and
        ``grad_cam_plus_plus`` (as are the bare inner names when unambiguous).

    Ref. Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017 (the last convolutional layer as default).
    """
    if not _is_graph_model(model):
        raise InputTypeError(
            f"Grad-CAM needs a functional or Sequential Keras model, got {type(model).__name__}"
        )
    return [layer_path(c) for c in _walk(model) if _is_spatial(_output_shape(c[-1]))]


def _resolve_chain(model: keras.Model, name: str | None) -> tuple:
    """The chain ``(outer, ..., layer)`` of the layer called ``name`` (or the default)."""
    chains = list(_walk(model))
    if name is None:
        spatial = [c for c in chains if _is_spatial(_output_shape(c[-1]))]
        if not spatial:
            raise InputError(
                "Grad-CAM needs a convolutional/spatial layer (an output of shape "
                "(N, h, w, c) with h, w > 1); this model has none. Use a method that "
                "explains the input directly, such as integrated_gradients or shap."
            )
        return spatial[-1]
    if not isinstance(name, str):
        raise InputTypeError(f"layer must be a layer name (str), got {name!r}")
    matches = [c for c in chains if layer_path(c) == name] or [
        c for c in chains if c[-1].name == name
    ]
    if not matches:
        candidates = gradcam_candidate_layers(model)
        hint = (f"layers Grad-CAM can use: {candidates}" if candidates
                else "this model has no convolutional/spatial layer Grad-CAM can use")
        raise InputError(f"unknown layer {name!r}; {hint}")
    if len(matches) > 1:
        raise InputError(
            f"layer name {name!r} is ambiguous; use one of the paths "
            f"{[layer_path(c) for c in matches]}"
        )
    return matches[0]


def find_layer(model: keras.Model, name: str) -> keras.layers.Layer:
    """The layer called ``name`` in ``model``, searching into nested sub-models.

    Parameters
    ----------
    model
        A functional or Sequential Keras 3 model.
    name
        A layer name, or a path ``"outer/inner"`` through nested sub-models.

    Returns
    -------
    keras.layers.Layer
        The layer (shared with ``model``, not a copy).

    Raises
    ------
    ValueError
        If no layer has that name (the message lists the Grad-CAM candidates), or the
        bare name exists in more than one nested sub-model.

    Ref. Selvaraju et al., ICCV 2017 (the layer whose activations Grad-CAM weights).
    """
    if not _is_graph_model(model):
        raise InputTypeError(
            f"Grad-CAM needs a functional or Sequential Keras model, got {type(model).__name__}"
        )
    return _resolve_chain(model, name)[-1]


# --------------------------------------------------------------------------- the split


def _logit_head(mf: ModelFunction) -> tuple[keras.layers.Layer, Callable] | None:
    """``(final layer, fn)`` for ``logits=True``, else None: ``fn`` maps the final layer's
    input to its pre-activation values (ModelFunction has already checked that the head
    ends in softmax or sigmoid) through ``mf``'s own linear twin, which the compiled-graph
    cache re-syncs when a later ModelFunction reuses the graph."""
    if not mf.logits:
        return None
    return mf.final_layer, mf.pre_activation


def _split_model(model: keras.Model, chain: tuple,
                 head: tuple[keras.layers.Layer, Callable] | None = None
                 ) -> keras.Model:
    """``model`` rebuilt on its own layers to return ``[chain[-1] output, *model outputs]``.

    ``head``, when given, replaces the call of one layer (the pre-activation of the
    explained output for ``logits=True``).
    """
    first, rest = chain[0], chain[1:]
    captured: list = []

    def call(layer, *args, **kwargs):
        if layer is first:
            if captured:
                raise InputError(
                    f"layer {first.name!r} is called more than once in the model; Grad-CAM "
                    "needs a layer with a single use"
                )
            if rest:
                inner = _split_model(layer, rest)
                act, *outs = inner(*args, **kwargs)
                out = outs[0] if len(outs) == 1 else outs
            else:
                out = act = layer(*args, **kwargs)
            captured.append(act)
            return out
        if head is not None and layer is head[0]:
            return head[1](*args, **kwargs)
        return layer(*args, **kwargs)

    if isinstance(model, keras.Sequential):
        inputs = keras.Input(batch_shape=tuple(model.inputs[0].shape),
                             dtype=model.inputs[0].dtype)
        h = inputs
        for layer in model.layers:
            h = call(layer, h)
        outputs = [h]
    else:
        clone = keras.models.clone_model(
            model, clone_function=lambda layer: layer, call_function=call
        )
        inputs = clone.inputs[0] if len(clone.inputs) == 1 else clone.inputs
        outputs = list(clone.outputs)
    if not captured:
        raise InputError(f"layer {layer_path(chain)!r} is not on the path to the model's output")
    return keras.Model(inputs, [captured[0], *outputs])


# --------------------------------------------------------------------------- the math


def grad_cam_weights(acts: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    """Grad-CAM channel weights: the spatial mean of the gradients, ``(N, c)``.

    Ref. Selvaraju et al., ICCV 2017, eq. 1.
    """
    del acts  # same signature as the Grad-CAM++ weights
    return tf.reduce_mean(grads, axis=(1, 2))


def grad_cam_plus_plus_weights(acts: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    """Grad-CAM++ channel weights ``(N, c)`` from activations and first-order gradients.

    With an exponential score the second and third derivatives are powers of the first,
    so ``alpha = g^2 / (2 g^2 + sum_ab(A_ab) g^3)`` needs no extra gradient pass; the
    exponential's own positive per-example factor is left out (it only scales the map).
    Positions where the denominator vanishes get ``alpha = 0`` through a zero numerator.

    Ref. Chattopadhay et al., "Grad-CAM++: Generalized Gradient-based Visual Explanations
    for Deep Convolutional Networks", WACV 2018, eqs. 19-20.
    """
    g2 = tf.square(grads)
    g3 = g2 * grads
    total = tf.reduce_sum(acts, axis=(1, 2), keepdims=True)
    denom = 2.0 * g2 + total * g3
    alpha = g2 / tf.where(denom != 0.0, denom, tf.ones_like(denom))
    return tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2))


def grad_cam_maps(acts: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """``ReLU(sum_c weights[n, c] * acts[n, :, :, c])`` as ``(N, h, w)``.

    Ref. Selvaraju et al., ICCV 2017, eq. 2.
    """
    return tf.nn.relu(tf.einsum("nhwc,nc->nhw", acts, weights))


_WEIGHTS = {"grad_cam": grad_cam_weights, "grad_cam_plus_plus": grad_cam_plus_plus_weights}


class _CamFunction:
    """One compiled forward+backward pass: raw maps, upsampled maps and target scores."""

    def __init__(self, mf: ModelFunction, chain: tuple, size: tuple[int, int]):
        self.mf = mf  # whose pre-activation twin the graph uses (see base.compiled)
        split = _split_model(mf.model, chain, _logit_head(mf))
        index = mf.output_index
        self._fns = {}
        for name, weigh in _WEIGHTS.items():
            self._fns[name] = self._compile(split, index, weigh, size)

    @staticmethod
    def _compile(split, index, weigh, size):
        @tf.function(reduce_retracing=True)
        def run(x, targets):
            with tf.GradientTape() as tape:
                # Watching x records every op, even when the layers after the explained
                # one are frozen (no trainable variable for the tape to follow).
                tape.watch(x)
                act, *outs = split(x, training=False)
                out = outs[index]
                out = tf.reshape(out, (tf.shape(out)[0], -1))
                scores = gather_targets(out, targets)
            grads = tape.gradient(scores, act)
            if grads is None:
                raise InputError("the explained output does not depend on this layer")
            act = tf.cast(act, tf.float32)
            raw = grad_cam_maps(act, weigh(act, tf.cast(grads, tf.float32)))
            up = tf.image.resize(raw[..., None], size, method="bilinear")[..., 0]
            return raw, up, scores

        return run

    def __call__(self, method: str, x: np.ndarray, targets: np.ndarray):
        return self._fns[method](tf.convert_to_tensor(x, tf.float32),
                                 tf.convert_to_tensor(targets, tf.int32))


def _cam_function(mf: ModelFunction, chain: tuple, size: tuple[int, int]) -> _CamFunction:
    """The compiled Grad-CAM pass for ``chain`` at ``size``, from the shared compiled-graph
    cache (rebuilding and tracing the split graph costs far more than a small batch)."""
    return base.compiled(mf, "grad_cam", lambda m: _CamFunction(m, chain, size),
                         key=(tuple(id(layer) for layer in chain), size))


def _run(method: str, mf: ModelFunction, x: np.ndarray, targets: np.ndarray, *,
         batch_size: int, layer: str | None, normalize: bool) -> Attribution:
    model = mf.model
    if not _is_graph_model(model):
        raise InputTypeError(
            f"Grad-CAM needs a functional or Sequential Keras model, got {type(model).__name__}"
        )
    chain = _resolve_chain(model, layer)
    shape = _output_shape(chain[-1])
    if not _is_spatial(shape, strict=False):
        raise InputError(
            f"layer {layer_path(chain)!r} has output shape {shape}; Grad-CAM needs a "
            f"convolutional/spatial layer with a 4-D output (N, h, w, c). Candidates: "
            f"{gradcam_candidate_layers(model)}"
        )
    in_shape = model_input_shape(model)
    if len(in_shape) != 4 or in_shape[1] is None or in_shape[2] is None:
        raise InputError(
            f"Grad-CAM maps are drawn at the input's height and width; it needs an image "
            f"input (N, H, W, C) with fixed H and W, got {in_shape}"
        )
    if not isinstance(normalize, (bool, np.bool_)):
        raise InputTypeError(f"normalize must be True or False, got {normalize!r}")
    size = (int(in_shape[1]), int(in_shape[2]))
    fn = _cam_function(mf, chain, size)
    raws, ups, scores = [], [], []
    for i in range(0, len(x), batch_size):
        raw, up, s = fn(method, x[i : i + batch_size], targets[i : i + batch_size])
        raws.append(raw.numpy())
        ups.append(up.numpy())
        scores.append(s.numpy())
    raw = np.concatenate(raws).astype(np.float32)
    values = np.concatenate(ups).astype(np.float32)
    if normalize:
        # Divide by the maximum (not min-max) so 0 keeps meaning "no positive evidence".
        peak = values.reshape(len(values), -1).max(axis=1)
        values = values / np.where(peak > 0, peak, 1.0)[:, None, None]
    return Attribution(
        values=values,
        method=method,
        targets=targets,
        scores=np.concatenate(scores).astype(np.float32),
        extra={"layer": layer_path(chain), "raw": raw},
    )


@register(
    "grad_cam",
    output="spatial",
    summary="Gradient-weighted class activation map of a spatial layer, at input resolution",
    title="Grad-CAM",
    global_priority={"image": 0},
    cheap=True,
    sanity_checks={"randomization", "stability"},
    cost=lambda options, inputs: ONE_GRADIENT,
)
def _grad_cam(mf: ModelFunction, x: np.ndarray, targets: np.ndarray, *, batch_size: int,
              layer: str | None = None, normalize: bool = False) -> Attribution:
    """Grad-CAM maps ``(N, H, W)``: ReLU of the gradient-averaged channel sum, upsampled.

    Parameters
    ----------
    mf
        The model seen as ``f(x) -> (N, K)`` (output head and ``logits`` already chosen).
    x
        float32 images ``(N, H, W, C)``.
    targets
        int ``(N,)`` output index explained for each row.
    batch_size
        Rows per forward/backward pass.
    layer
        Layer name or ``"outer/inner"`` path; None picks the last spatial layer.
    normalize
        Scale each map so its maximum is 1. Off by default: maps keep raw magnitudes,
        comparable across images.

    Returns
    -------
    Attribution
        ``values`` float32 ``(N, H, W)`` (bilinear upsampling of the layer's ``(h, w)``
        maps, not normalised unless asked); ``extra["layer"]`` the layer path and
        ``extra["raw"]`` the ``(N, h, w)`` maps before upsampling (never normalised).

    Ref. Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017.
    """
    if x.ndim == 3:
        # a float sequence (N, T, F): Grad-CAM over time on a Conv1D / recurrent layer
        from explain.attributions.sequences import grad_cam_1d

        maps, name = grad_cam_1d(mf.model, x, targets, layer=layer, batch_size=batch_size,
                                 output=mf.output_index)
        if check_bool("normalize", normalize):
            maps = maps / np.maximum(maps.max(axis=1, keepdims=True), 1e-12)
        return Attribution(values=maps, method="grad_cam", targets=targets,
                           extra={"layer": name})
    return _run("grad_cam", mf, x, targets, batch_size=batch_size, layer=layer,
                normalize=normalize)


@register(
    "grad_cam_plus_plus",
    output="spatial",
    summary="Grad-CAM with pixel-wise (alpha) weighting of positive gradients",
    title="Grad-CAM++",
    cheap=True,
    sanity_checks={"randomization", "stability"},
    cost=lambda options, inputs: ONE_GRADIENT,
)
def _grad_cam_plus_plus(mf: ModelFunction, x: np.ndarray, targets: np.ndarray, *,
                        batch_size: int, layer: str | None = None,
                        normalize: bool = False) -> Attribution:
    """Grad-CAM++ maps ``(N, H, W)``: channel weights from alpha-weighted positive gradients.

    Same parameters and result as Grad-CAM; only the channel weights differ
    (:func:`grad_cam_plus_plus_weights`), which helps when an image holds several
    instances of the class.

    Ref. Chattopadhay et al., "Grad-CAM++: Generalized Gradient-based Visual Explanations
    for Deep Convolutional Networks", WACV 2018.
    """
    return _run("grad_cam_plus_plus", mf, x, targets, batch_size=batch_size, layer=layer,
                normalize=normalize)
