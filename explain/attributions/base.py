"""What every attribution method shares: input cleaning, the model as a function of its
input, target resolution, the result object, and batched gradient helpers.

Inputs are cleaned in one place (:func:`as_inputs`) so methods only ever see a float32
numpy array of the model's input shape, and targets are resolved in one place
(:func:`resolve_targets`) so methods only ever see an int array ``(N,)``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from explain._backend import keras, tf
from explain.errors import InputError, InputTypeError

DEFAULT_BATCH_SIZE = 128

_SQUASHING = {"softmax", "sigmoid"}


# --------------------------------------------------------------------------- inputs


def model_input_shape(model: keras.Model) -> tuple[int | None, ...]:
    """The model's single input shape, batch dimension included (``(None, ...)``)."""
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise InputError(
            "the model has no defined input; build it with keras.Input(...) or call it once "
            "on data before explaining it"
        )
    if len(inputs) != 1:
        raise InputError(
            f"xaudit explains models with one input tensor; this model has {len(inputs)}"
        )
    return tuple(inputs[0].shape)


def as_inputs(model: keras.Model, x: Any, *, name: str = "x") -> np.ndarray:
    """Validate ``x`` against the model's input and return it as float32 ``(N, ...)``.

    Raises
    ------
    TypeError
        If ``x`` is not numeric.
    ValueError
        If its rank or shape does not match the model input, it is empty, or it holds
        NaN or Inf.
    """
    if isinstance(x, tf.Tensor):
        x = x.numpy()
    if isinstance(x, tf.data.Dataset):
        x = np.concatenate([np.asarray(b[0] if isinstance(b, tuple) else b) for b in x])
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise InputTypeError(f"{name} must be a numeric array; could not convert it: {exc}") from None
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise InputTypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    expected = model_input_shape(model)
    if arr.ndim != len(expected):
        raise InputError(
            f"{name} must have shape (N, {', '.join(str(d) for d in expected[1:])}) "
            f"(rank {len(expected)}), got shape {arr.shape}"
        )
    for axis, (got, want) in enumerate(zip(arr.shape[1:], expected[1:], strict=True), start=1):
        if want is not None and got != want:
            raise InputError(
                f"{name} must have shape (N, {', '.join(str(d) for d in expected[1:])}); "
                f"axis {axis} is {got}, expected {want} (got shape {arr.shape})"
            )
    if arr.shape[0] == 0:
        raise InputError(f"{name} is empty: it has no rows")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise InputError(
            f"{name} contains NaN or Inf (first at index {tuple(int(i) for i in bad)})"
        )
    return arr


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` as a bool; TypeError unless it is a Python or numpy bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputTypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


# --------------------------------------------------------------------------- the model as f(x)


def _output_layer(model: keras.Model, index: int) -> keras.layers.Layer:
    """The layer that produces output ``index`` of a functional or Sequential model."""
    if isinstance(model, keras.Sequential):
        return model.layers[-1]
    history = getattr(model.outputs[index], "_keras_history", None)
    if history is None:
        raise ValueError("cannot find the layer that produces this output")
    return history[0]


def _activation_name(layer: keras.layers.Layer) -> str | None:
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    act = getattr(layer, "activation", None)
    if act is None:
        return None
    return getattr(act, "__name__", str(act))


def linear_twin(layer: keras.layers.Layer) -> keras.layers.Layer | None:
    """The pre-activation of ``layer``: a twin with a linear activation and the same
    weights (copied now; copy again after training), or None for a Softmax/Activation
    layer, whose input already is its pre-activation."""
    if isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)):
        return None
    cfg = layer.get_config()
    cfg["activation"] = "linear"
    twin = layer.__class__.from_config(cfg)
    twin.build(tuple(layer.input.shape))
    twin.set_weights(layer.get_weights())
    return twin


class ModelFunction:
    """A Keras model seen as ``f(x) -> (N, K)``: one output head, optionally pre-softmax.

    Parameters
    ----------
    model
        A built Keras 3 model with one input (functional, Sequential or nested).
    output
        Which head of a multi-output model to explain: an index or an output name.
    logits
        For heads ending in softmax or sigmoid, explain the pre-activation values instead
        (the usual best practice for path methods such as Integrated Gradients).
    """

    def __init__(self, model: keras.Model, output: int | str | None = None, logits: bool = False):
        if not isinstance(model, keras.Model):
            raise InputTypeError(f"model must be a keras.Model, got {type(model).__name__}")
        self.model = model
        self.input_shape = model_input_shape(model)
        n_heads = len(model.outputs) if getattr(model, "outputs", None) else 1
        self.output_index = self._resolve_output(model, output, n_heads)
        self.n_heads = n_heads
        self.logits = bool(logits)
        self._twin: tuple[keras.layers.Layer, keras.layers.Layer] | None = None
        self._known: tuple[np.ndarray, np.ndarray] | None = None
        layer = _output_layer(model, self.output_index)
        self.final_activation = _activation_name(layer)
        self._forward = self._build_forward(model, layer) if self.logits else None
        out_shape = tuple(model.outputs[self.output_index].shape)
        self.n_outputs = int(np.prod([d for d in out_shape[1:] if d is not None])) or 1
        self.task = (
            "classification" if self.final_activation in _SQUASHING else "regression"
        )

    @staticmethod
    def _resolve_output(model: keras.Model, output: int | str | None, n_heads: int) -> int:
        if output is None:
            return 0
        names = list(getattr(model, "output_names", None) or [])
        if isinstance(output, str):
            if output not in names:
                raise InputError(f"unknown output {output!r}; the model's outputs are {names}")
            return names.index(output)
        if isinstance(output, bool) or not isinstance(output, (int, np.integer)):
            raise InputTypeError(f"output must be an int index or an output name, got {output!r}")
        if not 0 <= int(output) < n_heads:
            raise InputError(f"output must be in [0, {n_heads - 1}], got {output}")
        return int(output)

    def _build_forward(self, model: keras.Model, layer: keras.layers.Layer):
        act = _activation_name(layer)
        if act not in _SQUASHING:
            raise InputError(
                f"logits=True needs an output ending in softmax or sigmoid; this output's "
                f"final activation is {act!r}"
            )
        # The pre-activation is computed by a twin of the final layer with a linear
        # activation and the same weights; an Activation/Softmax layer is simply skipped.
        twin = linear_twin(layer)
        if twin is not None:
            self._twin = (layer, twin)
        if isinstance(model, keras.Sequential):
            body = model.layers[:-1]

            def trunk(x, training=False):
                for lyr in body:
                    x = lyr(x, training=training)
                return x
        else:
            sub = keras.Model(model.inputs, layer.input)

            def trunk(x, training=False):
                return sub(x, training=training)

        def forward(x, training=False):
            h = trunk(x, training=training)
            return h if twin is None else twin(h)

        return forward

    @property
    def final_layer(self) -> keras.layers.Layer:
        """The layer that produces the explained head."""
        return _output_layer(self.model, self.output_index)

    def pre_activation(self, h, **_kwargs) -> tf.Tensor:
        """The explained head's pre-activation values from its final layer's input ``h``
        (``logits=True``): through the linear twin (see :meth:`sync`), or ``h`` itself
        when the final layer is a Softmax/Activation layer."""
        return h if self._twin is None else self._twin[1](h)

    def sync(self) -> None:
        """Copy the final layer's current weights into the pre-activation twin, if any."""
        if self._twin is not None:
            layer, twin = self._twin
            twin.set_weights(layer.get_weights())

    def __call__(self, x, training: bool = False) -> tf.Tensor:
        """Outputs of the chosen head as a 2-D tensor ``(N, K)``."""
        if self._forward is not None:
            out = self._forward(x, training=training)
        else:
            out = self.model(x, training=training)
            if isinstance(out, dict):
                out = list(out.values())
            if isinstance(out, (list, tuple)):
                out = out[self.output_index]
        out = tf.convert_to_tensor(out)
        return tf.reshape(out, (tf.shape(out)[0], -1))

    def predict(self, x: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """``f(x)`` as a numpy float32 array ``(N, K)``, computed in batches."""
        parts = [
            _call_graph(self, tf.convert_to_tensor(x[i : i + batch_size]))
            for i in range(0, len(x), batch_size)
        ]
        return np.concatenate([p.numpy() for p in parts]).astype(np.float32)

    def target_scores(self, x: np.ndarray, targets: np.ndarray,
                      batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """``f(x)[i, targets[i]]`` as float32 ``(N,)``."""
        out = self.known_predictions(x)
        if out is None:
            out = self.predict(x, batch_size)
        return out[np.arange(len(x)), targets].astype(np.float32)

    @contextmanager
    def predictions_known(self, x: np.ndarray, predictions: np.ndarray | None):
        """Within the block, ``f(x)`` for this very array is ``predictions`` (no new pass).

        :func:`explain` computes ``f(x)`` once to find the predicted classes and lends it
        to the method for its scores; the loan ends with the block, so no array outlives
        the call and a later, possibly modified, array is never matched.
        """
        self._known = None if predictions is None else (x, predictions)
        try:
            yield
        finally:
            self._known = None

    def known_predictions(self, x: np.ndarray) -> np.ndarray | None:
        """``f(x)`` if it was lent for this very array object, else None."""
        known = self._known
        return known[1] if known is not None and known[0] is x else None


# Tracing a model's graph costs far more than running a batch through it (seconds for a
# MobileNet-size network), and every ``explain()`` call builds a fresh ModelFunction. The
# compiled graphs are therefore cached per (model, head, logits), not per ModelFunction,
# in a small LRU: entries keep their model alive, hence the bound.
_COMPILED: OrderedDict[tuple, tuple[keras.Model, Any]] = OrderedDict()
_COMPILED_SIZE = 8


def compiled(mf: ModelFunction, kind: str, build: Callable[[ModelFunction], Any],
             key: tuple = ()) -> Any:
    """``build(mf)`` cached for ``mf``'s model, head and ``logits`` under the name ``kind``
    (and ``key``: what else the graph was built for, e.g. Grad-CAM's layer and size).

    A cached entry was built on an earlier ModelFunction of the same model (the one it
    keeps as ``.mf``); that one's pre-activation twin (``logits=True``) is re-synced so
    later weight updates are seen. Graphs that compute a pre-activation must therefore do
    it through their ``.mf`` (:meth:`ModelFunction.pre_activation`).
    """
    key = (kind, id(mf.model), mf.output_index, mf.logits, getattr(mf, "space", "input"),
           *key)
    hit = _COMPILED.get(key)
    if hit is not None and hit[0] is mf.model:
        _COMPILED.move_to_end(key)
        fn = hit[1]
        owner = getattr(fn, "mf", None)
        if owner is not None and owner is not mf:
            owner.sync()
        return fn
    fn = build(mf)
    _COMPILED[key] = (mf.model, fn)
    while len(_COMPILED) > _COMPILED_SIZE:
        _COMPILED.popitem(last=False)
    return fn


class _ForwardFn:
    """``f(x)`` of a ModelFunction as a compiled graph."""

    def __init__(self, mf: ModelFunction):
        self.mf = mf
        self._fn = tf.function(lambda t: mf(t), reduce_retracing=True)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return self._fn(x)


def _call_graph(mf: ModelFunction, x: tf.Tensor) -> tf.Tensor:
    return compiled(mf, "forward", _ForwardFn)(x)


# --------------------------------------------------------------------------- targets


def resolve_targets(
    mf: ModelFunction, x: np.ndarray, target: Any, batch_size: int = DEFAULT_BATCH_SIZE
) -> np.ndarray:
    """Turn the user's ``target`` into an int array ``(N,)`` of output indices.

    ``None`` means the predicted class for classification heads with more than one unit,
    and output 0 otherwise (regression, or a single sigmoid unit).
    """
    return resolve_targets_with_predictions(mf, x, target, batch_size)[0]


def resolve_targets_with_predictions(
    mf: ModelFunction, x: np.ndarray, target: Any, batch_size: int = DEFAULT_BATCH_SIZE
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`resolve_targets`, plus ``f(x)`` ``(N, K)`` when finding the targets needed it
    (the predicted class), else None."""
    n = len(x)
    k = mf.n_outputs
    if target is None:
        if mf.task == "classification" and k > 1:
            predictions = mf.predict(x, batch_size)
            return np.argmax(predictions, axis=1).astype(np.int64), predictions
        return np.zeros(n, dtype=np.int64), None
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        t = np.full(n, int(target), dtype=np.int64)
    else:
        arr = np.asarray(target)
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.integer):
            raise InputTypeError(
                f"target must be None, an int, or an int array of shape ({n},); got {target!r:.80}"
            )
        if arr.shape != (n,):
            raise InputError(f"target must have shape ({n},) (one per row), got {arr.shape}")
        t = arr.astype(np.int64)
    if np.any(t < 0) or np.any(t >= k):
        raise InputError(f"target must be in [0, {k - 1}] for this output of width {k}")
    return t, None


# --------------------------------------------------------------------------- gradients


def gather_targets(out: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """``out[i, targets[i]]`` for a 2-D ``out``."""
    return tf.gather(out, tf.cast(targets, tf.int32), axis=1, batch_dims=1)


class GradientFn:
    """Batched ``d f(x)[target] / dx`` as a compiled graph, reused across calls."""

    def __init__(self, mf: ModelFunction):
        self.mf = mf

        @tf.function(reduce_retracing=True)
        def _grad(x, targets):
            with tf.GradientTape() as tape:
                tape.watch(x)
                scores = gather_targets(mf(x), targets)
            return tape.gradient(scores, x), scores

        self._grad = _grad

    def __call__(self, x: np.ndarray | tf.Tensor, targets: np.ndarray | tf.Tensor):
        """Gradients (same shape as x) and target scores ``(N,)`` as tensors."""
        return self._grad(tf.convert_to_tensor(x, tf.float32),
                          tf.convert_to_tensor(targets, tf.int32))

    def batched(self, x: np.ndarray, targets: np.ndarray,
                batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
        grads, scores = [], []
        for i in range(0, len(x), batch_size):
            g, s = self(x[i : i + batch_size], targets[i : i + batch_size])
            grads.append(g.numpy())
            scores.append(s.numpy())
        return np.concatenate(grads).astype(np.float32), np.concatenate(scores).astype(np.float32)


def gradient_fn(mf: ModelFunction) -> GradientFn:
    """The compiled gradient function of ``mf``, cached per model, head and ``logits``."""
    return compiled(mf, "gradient", GradientFn)


# --------------------------------------------------------------------------- the result


@dataclass
class Attribution:
    """The result of one attribution call.

    Attributes
    ----------
    values
        float32, shape ``x.shape`` (``(N, H, W)`` for Grad-CAM maps).
    method
        The registered method name.
    targets
        int ``(N,)``: the output index each row was explained for.
    scores
        float32 ``(N,)``: ``f(x)[target]`` (pre-softmax when ``logits=True``).
    baseline_scores
        float32 ``(N,)``: ``f(baseline)[target]`` (or ``E[f(background)]`` for SHAP), for
        methods with a completeness property; else None.
    completeness_gap
        float32 ``(N,)``: ``sum(values) - (scores - baseline_scores)``, for methods with a
        completeness property (IG, SHAP); else None.
    options
        The options the method ran with, defaults filled in.
    extra
        Method-specific detail (e.g. the Grad-CAM layer, SHAP feature groups).
    """

    values: np.ndarray
    method: str
    targets: np.ndarray
    scores: np.ndarray | None = None
    baseline_scores: np.ndarray | None = None
    completeness_gap: np.ndarray | None = None
    options: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __array__(self, dtype=None, copy=None):
        return self.values if dtype is None else self.values.astype(dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    def relative_gap(self) -> np.ndarray | None:
        """``|gap| / max(|f(x) - f(baseline)|, eps)`` per row, or None."""
        if self.completeness_gap is None:
            return None
        diff = np.abs(self.scores - self.baseline_scores)
        return np.abs(self.completeness_gap) / np.maximum(diff, 1e-8)


def completeness_gap(values: np.ndarray, scores: np.ndarray, baseline_scores: np.ndarray
                     ) -> np.ndarray:
    """Per-row ``sum(values) - (scores - baseline_scores)`` as float32 ``(N,)``."""
    total = values.reshape(len(values), -1).astype(np.float64).sum(axis=1)
    return (total - (scores.astype(np.float64) - baseline_scores.astype(np.float64))).astype(
        np.float32
    )


def spatial_axes(shape: Sequence[int | None]) -> tuple[int, int] | None:
    """``(H, W)`` of an image-like input shape ``(None, H, W, C)``, else None."""
    if len(shape) == 4:
        return int(shape[1]), int(shape[2])
    return None


def stream_chunks(n_rows: int, per_row: int, batch_size: int
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Walk the ``n_rows * per_row`` (row, copy) pairs in chunks of at most ``batch_size``.

    Methods that evaluate many copies of each row (interpolation steps, noisy samples,
    occluded variants) flatten them into one row-major stream so a forward pass never
    holds more than ``batch_size`` copies, whatever ``n_rows`` and ``per_row`` are.

    Yields
    ------
    rows, copies
        int64 arrays of equal length ``<= batch_size``: the row index and the copy index
        of each element of the chunk.
    """
    total = n_rows * per_row
    for start in range(0, total, batch_size):
        flat = np.arange(start, min(start + batch_size, total), dtype=np.int64)
        yield flat // per_row, flat % per_row
