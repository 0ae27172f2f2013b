"""Work and memory budgets, decided from a model's config before Keras builds anything.

An uploaded model declares its own size: ``Dense(20000)`` on 20,000 inputs is 400 million
parameters in a 13 KB file, and ``Input((50000, 50000, 3))`` is 7.5 billion values per
example. Keras allocates whatever the config asks for, so every check here works on the
config JSON alone (the same tree :mod:`explain.modelio` walks for unsafe content): shapes
are propagated layer by layer with plain integer arithmetic, which cannot allocate.

From the propagated shapes come, per example:

- ``params``: the parameter count;
- ``activation_elements``: the sum of every layer's output size (what a forward pass
  keeps alive for a backward pass);
- ``forward_flops``: multiply-adds × 2 of one forward pass.

:class:`ModelCost` turns those into memory per example (gradient or forward-only) and
:func:`request_cost` into the work of an attribution request (per method, steps, samples,
background). :class:`BudgetPolicy` holds the operator's limits (``XAUDIT_WORKER_MEMORY``,
``XAUDIT_MAX_PARAMS``, ``XAUDIT_MAX_INPUT_ELEMENTS``, ``XAUDIT_EXPLAIN_MAX_FLOPS``,
``XAUDIT_AUDIT_MAX_FLOPS``). Refusals are :class:`explain.errors.ModelIntakeError` with
code ``model_too_large`` (the model itself) or :class:`BudgetError` with code
``over_budget`` (a request on an accepted model), each naming the cost and the limit.

Layers this module does not know keep their input's shape and count one operation per
element; their parameters are not counted (a custom layer must be allow-listed anyway).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from explain.errors import ModelIntakeError, XauditError

__all__ = [
    "BudgetError",
    "BudgetPolicy",
    "ModelCost",
    "MethodWork",
    "RequestCost",
    "WorkInputs",
    "audit_cost",
    "audit_batch_size",
    "audit_memory",
    "check_audit_memory",
    "check_model",
    "estimate_config",
    "explain_batch_size",
    "option_count",
    "request_cost",
]

_MiB = 1024 * 1024
_GiB = 1024 * _MiB

#: Bytes per value (float32 everywhere in the attribution code paths).
VALUE_BYTES = 4
#: A gradient pass keeps every activation, its gradient and the framework's temporaries
#: (convolution workspaces, the fused kernels' copies): measured peak RSS per example of
#: an IG batch is within this multiple of the activation bytes (tests/explain/test_budget.py).
GRADIENT_FACTOR = 4.0
#: A forward-only pass needs at most two consecutive layers alive, plus temporaries;
#: counting all activations once is a safe upper bound.
FORWARD_FACTOR = 1.5
#: What the weights cost in a worker: the loaded values plus Keras's build copies.
WEIGHT_FACTOR = 3.0
#: Work counted per model evaluation at least, in FLOPs: a row through a tiny network
#: costs memory traffic and framework time far above its arithmetic (measured: a 4-16-3
#: MLP's IG runs at roughly a million rows per second per core, not a billion), so a
#: request for a billion evaluations of a tiny model is refused like one of a big model.
ROW_FLOOR_FLOPS = 20_000
#: Share of the worker memory one batch may use (the rest: the interpreter, TensorFlow,
#: the data, the model cache).
BATCH_SHARE = 0.5


class BudgetError(XauditError):
    """A request whose estimated work or memory exceeds the operator's budget (422)."""

    code = "over_budget"
    status = 422

    def __init__(self, message: str, detail: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.detail = dict(detail or {})


def _machine_memory() -> int:
    """Physical memory visible to this process (cgroup limit when lower)."""
    total = 8 * _GiB
    with contextlib.suppress(ValueError, OSError, AttributeError):
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                raw = fh.read().strip()
            if raw.isdigit() and 0 < int(raw) < total:
                total = int(raw)
        except OSError:
            continue
    return int(total)


def _env_number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {raw!r}")
    return value


@dataclass(frozen=True)
class BudgetPolicy:
    """The operator's limits.

    Parameters
    ----------
    worker_memory
        Bytes one worker process may use (``XAUDIT_WORKER_MEMORY``; default half the
        machine's memory). A model whose single example cannot be attributed within
        :data:`BATCH_SHARE` of it is refused at upload; batches are sized to fit it.
    max_params
        Largest parameter count accepted (``XAUDIT_MAX_PARAMS``, default 100 million).
    max_input_elements
        Largest number of input values per example (``XAUDIT_MAX_INPUT_ELEMENTS``,
        default 2**24, e.g. a 2048×2048×4 image).
    explain_max_flops
        Largest estimated work of one ``/explain`` request in floating-point operations
        (``XAUDIT_EXPLAIN_MAX_FLOPS``, default 2e12: about a minute of one CPU core).
    audit_max_flops
        Largest estimated attribution work of one audit (``XAUDIT_AUDIT_MAX_FLOPS``,
        default 1e14).
    """

    worker_memory: int = 4 * _GiB
    max_params: int = 100_000_000
    max_input_elements: int = 2**24
    explain_max_flops: float = 2e12
    audit_max_flops: float = 1e14

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BudgetPolicy:
        env = os.environ if environ is None else environ
        return cls(
            worker_memory=int(_env_number(env, "XAUDIT_WORKER_MEMORY",
                                          _machine_memory() // 2)),
            max_params=int(_env_number(env, "XAUDIT_MAX_PARAMS", cls.max_params)),
            max_input_elements=int(_env_number(env, "XAUDIT_MAX_INPUT_ELEMENTS",
                                               cls.max_input_elements)),
            explain_max_flops=_env_number(env, "XAUDIT_EXPLAIN_MAX_FLOPS",
                                          cls.explain_max_flops),
            audit_max_flops=_env_number(env, "XAUDIT_AUDIT_MAX_FLOPS", cls.audit_max_flops),
        )

    @property
    def batch_bytes(self) -> int:
        return int(self.worker_memory * BATCH_SHARE)


@dataclass(frozen=True)
class ModelCost:
    """Per-example cost of a model, from its config."""

    input_shape: tuple[int, ...]
    params: int
    activation_elements: int
    forward_flops: int
    #: The largest convolution workspace (im2col: output positions x kernel volume x input
    #: channels) of one layer; one convolution runs at a time, so the largest counts.
    workspace_elements: int = 0

    @property
    def input_elements(self) -> int:
        return math.prod(self.input_shape) if self.input_shape else 1

    @property
    def weight_bytes(self) -> int:
        return int(self.params * VALUE_BYTES * WEIGHT_FACTOR)

    def example_bytes(self, gradient: bool = True) -> int:
        """Memory one example needs in a batch (activations, gradients, temporaries)."""
        factor = GRADIENT_FACTOR if gradient else FORWARD_FACTOR
        # One workspace alive at a time (forward or the input gradient's backward pass);
        # measured on a 2000x2000x3 conv: ~700 MB per example, estimated 880 MB.
        work = self.workspace_elements * VALUE_BYTES
        return int((self.activation_elements + self.input_elements) * VALUE_BYTES * factor
                   + work)

    def to_dict(self) -> dict[str, Any]:
        return {"input_shape": list(self.input_shape), "params": self.params,
                "activation_elements": self.activation_elements,
                "forward_flops": self.forward_flops,
                "workspace_elements": self.workspace_elements,
                "example_bytes_gradient": self.example_bytes(True),
                "weight_bytes": self.weight_bytes}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCost:
        return cls(input_shape=tuple(int(d) for d in data["input_shape"]),
                   params=int(data["params"]),
                   activation_elements=int(data["activation_elements"]),
                   forward_flops=int(data["forward_flops"]),
                   workspace_elements=int(data.get("workspace_elements") or 0))


# ====================================================================== shape propagation


class _Unsized(Exception):
    """A dimension the config does not fix (None): the estimate uses 1 for it."""


def _bad(message: str) -> ModelIntakeError:
    return ModelIntakeError(message[:300], code="corrupt_file")


def _pos_int(value: Any, what: str, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise _bad(f"the model config declares {what} = {str(value)[:40]!r}, "
                       "not an integer")
    if value < 0 or (value == 0 and not allow_zero):
        raise _bad(f"the model config declares {what} = {value}")
    return value


def _tuple(value: Any, n: int, what: str, *, allow_zero: bool = False) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        if len(value) == 1 and n > 1:
            value = list(value) * n
        if len(value) != n:
            raise _bad(f"{what} has {len(value)} entries; the layer needs {n}")
        return tuple(_pos_int(v, what, allow_zero=allow_zero) for v in value)
    return (_pos_int(value, what, allow_zero=allow_zero),) * n


def _shape_from(value: Any, what: str) -> tuple[int, ...]:
    """A declared shape without the batch axis; None dims count as 1."""
    if not isinstance(value, (list, tuple)):
        raise _bad(f"{what} is not a shape")
    dims = []
    for d in value:
        dims.append(1 if d is None else _pos_int(d, what, allow_zero=True))
    return tuple(dims)


_ELEMENTWISE_MERGE = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
_NESTED_MODELS = {"Sequential", "Functional", "Model"}


@dataclass
class _Acc:
    params: int = 0
    activations: int = 0
    flops: int = 0
    workspace: int = 0


class _Estimator:
    """Walks a model config, propagating per-example shapes (no batch axis)."""

    def __init__(self, policy: BudgetPolicy | None):
        self.policy = policy
        self.acc = _Acc()
        self.layers_seen = 0

    # ------------------------------------------------------------------ models

    def model(self, node: Mapping[str, Any],
              inputs: list[tuple[int, ...]] | None = None) -> list[tuple[int, ...]]:
        cls = node.get("class_name")
        cfg = node.get("config") if isinstance(node.get("config"), Mapping) else {}
        layers = cfg.get("layers")
        if not isinstance(layers, list):
            raise _bad(f"the model config ({cls}) has no layer list")
        if cls == "Sequential":
            return [self._sequential(node, cfg, layers, inputs)]
        return self._functional(cfg, layers, inputs)

    def _declared_input(self, node: Mapping, cfg: Mapping, layers: list) -> tuple[int, ...]:
        for holder in (layers[0] if layers else {}, node, cfg):
            if not isinstance(holder, Mapping):
                continue
            lcfg = holder.get("config") if isinstance(holder.get("config"), Mapping) else {}
            for key in ("batch_shape", "batch_input_shape"):
                if key in lcfg and lcfg[key] is not None:
                    return _shape_from(list(lcfg[key])[1:], key)
            build = holder.get("build_config")
            if isinstance(build, Mapping) and build.get("input_shape") is not None:
                shape = build["input_shape"]
                if isinstance(shape, list) and shape and isinstance(shape[0], list):
                    shape = shape[0]
                return _shape_from(list(shape)[1:], "input_shape")
        raise _bad("the model config declares no input shape")

    def _sequential(self, node, cfg, layers, inputs) -> tuple[int, ...]:
        shape = inputs[0] if inputs else self._declared_input(node, cfg, layers)
        self._note_input(shape)
        for layer in layers:
            if not isinstance(layer, Mapping):
                raise _bad("a layer in the model config is not an object")
            if layer.get("class_name") == "InputLayer":
                continue
            shape = self.layer(layer, [shape])[0]
        return shape

    def _functional(self, cfg, layers, inputs) -> list[tuple[int, ...]]:
        shapes: dict[str, list[tuple[int, ...]]] = {}
        input_names = [_ref_name(r) for r in _refs(cfg.get("input_layers"))]
        fed = dict(zip(input_names, inputs or [], strict=False))
        for layer in layers:
            if not isinstance(layer, Mapping):
                raise _bad("a layer in the model config is not an object")
            name = str(layer.get("name") or (layer.get("config") or {}).get("name"))
            if layer.get("class_name") == "InputLayer":
                if name in fed:
                    shape = fed[name]
                else:
                    lcfg = layer.get("config") or {}
                    raw = lcfg.get("batch_shape", lcfg.get("batch_input_shape"))
                    if raw is None:
                        raise _bad(f"input layer {name[:60]!r} declares no shape")
                    shape = _shape_from(list(raw)[1:], "batch_shape")
                self._note_input(shape)
                shapes[name] = [shape]
                continue
            nodes = layer.get("inbound_nodes") or []
            outs: list[tuple[int, ...]] = []
            for call in nodes[:64]:  # a layer shared across calls costs once per call
                ins = [shapes[n][min(t, len(shapes[n]) - 1)]
                       for n, t in _call_inputs(call) if n in shapes]
                if not ins:
                    raise _bad(f"layer {name[:60]!r} is called on an unknown tensor")
                outs = self.layer(layer, ins)
            if not outs:
                raise _bad(f"layer {name[:60]!r} is never called")
            shapes[name] = outs
        result = []
        for ref in _refs(cfg.get("output_layers")):
            name = _ref_name(ref)
            if name in shapes:
                result.append(shapes[name][0])
        if not result and shapes:
            result = [next(reversed(shapes.values()))[0]]
        return result

    def _note_input(self, shape: tuple[int, ...]) -> None:
        self.acc.activations += math.prod(shape)
        self._check_running()

    def _check_running(self) -> None:
        # Stop as soon as a running total is certainly too big (the rest is not needed).
        p = self.policy
        if p is None:
            return
        if self.acc.params > p.max_params:
            raise ModelIntakeError(
                f"the model declares over {self.acc.params:,} parameters; the limit is "
                f"{p.max_params:,} (XAUDIT_MAX_PARAMS)", code="model_too_large")

    # ------------------------------------------------------------------ layers

    def layer(self, layer: Mapping[str, Any],
              ins: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        self.layers_seen += 1
        if self.layers_seen > 100_000:
            raise ModelIntakeError("the model declares over 100,000 layer calls",
                                   code="model_too_large")
        cls = str(layer.get("class_name"))
        if cls in _NESTED_MODELS:
            return self.model(layer, ins)
        cfg = layer.get("config") if isinstance(layer.get("config"), Mapping) else {}
        out, params, flops = _layer_cost(cls, cfg, ins, self)
        self.acc.params += params
        self.acc.flops += flops
        self.acc.activations += math.prod(out)
        self._check_running()
        return [out]


def _refs(value: Any) -> list:
    """``input_layers`` / ``output_layers``: one ``[name, node, tensor]`` or a list of them."""
    if not isinstance(value, list) or not value:
        return []
    if isinstance(value[0], str):
        return [value]
    return [v for v in value if isinstance(v, list) and v]


def _ref_name(ref: list) -> str:
    return str(ref[0])


def _call_inputs(call: Any) -> list[tuple[str, int]]:
    """(layer name, tensor index) of every tensor a call consumes, in either format."""
    found: list[tuple[str, int]] = []

    def walk(obj: Any, depth: int = 0) -> None:
        if depth > 20:
            return
        if isinstance(obj, Mapping):
            if obj.get("class_name") == "__keras_tensor__":
                hist = (obj.get("config") or {}).get("keras_history") or []
                if len(hist) >= 3:
                    found.append((str(hist[0]), int(hist[2]) if isinstance(hist[2], int)
                                  else 0))
                return
            for v in obj.values():
                walk(v, depth + 1)
        elif isinstance(obj, list):
            # Keras 2: [name, node_index, tensor_index, kwargs]
            if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int):
                found.append((obj[0], obj[2] if isinstance(obj[2], int) else 0))
                return
            for v in obj:
                walk(v, depth + 1)

    walk(call)
    return found


def _channels_first(cfg: Mapping) -> bool:
    return cfg.get("data_format") == "channels_first"


def _spatial(shape: tuple[int, ...], rank: int, cfg: Mapping) -> tuple[tuple[int, ...], int]:
    if len(shape) != rank + 1:
        raise _bad(f"a {rank}-D layer is applied to a tensor of shape {shape}")
    if _channels_first(cfg):
        return shape[1:], shape[0]
    return shape[:-1], shape[-1]


def _join(spatial: Sequence[int], channels: int, cfg: Mapping) -> tuple[int, ...]:
    if _channels_first(cfg):
        return (channels, *spatial)
    return (*spatial, channels)


def _window_out(n: int, k: int, s: int, d: int, padding: str) -> int:
    if padding == "same":
        return -(-n // s)
    eff = (k - 1) * d + 1
    return max(0, -(-(n - eff + 1) // s))


def _rank_of(cls: str) -> int:
    for r in (1, 2, 3):
        if f"{r}D" in cls:
            return r
    return 2


def _layer_cost(cls: str, cfg: Mapping, ins: list[tuple[int, ...]],
                est: _Estimator) -> tuple[tuple[int, ...], int, int]:
    """(output shape, parameters, forward flops) of one layer call."""
    x = ins[0]
    n_in = math.prod(x)
    if cls in ("Dense",):
        units = _pos_int(cfg.get("units"), "units")
        last = x[-1] if x else 1
        bias = units if cfg.get("use_bias", True) else 0
        return (*x[:-1], units), last * units + bias, 2 * (n_in // max(last, 1)) * last * units
    if cls in ("Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
               "Conv3DTranspose", "DepthwiseConv1D", "DepthwiseConv2D",
               "SeparableConv1D", "SeparableConv2D"):
        rank = _rank_of(cls)
        spatial, cin = _spatial(x, rank, cfg)
        k = _tuple(cfg.get("kernel_size", 1), rank, "kernel_size")
        s = _tuple(cfg.get("strides", 1), rank, "strides")
        d = _tuple(cfg.get("dilation_rate", 1), rank, "dilation_rate")
        padding = str(cfg.get("padding", "valid")).lower()
        if "Transpose" in cls:
            out_sp = tuple(n * st if padding == "same" else (n - 1) * st + (kk - 1) * dd + 1
                           for n, kk, st, dd in zip(spatial, k, s, d, strict=True))
        else:
            out_sp = tuple(_window_out(n, kk, st, dd, padding)
                           for n, kk, st, dd in zip(spatial, k, s, d, strict=True))
        kvol = math.prod(k)
        im2col = math.prod(out_sp if "Transpose" not in cls else spatial) * kvol * cin
        est.acc.workspace = max(est.acc.workspace, im2col)
        if cls.startswith("Depthwise"):
            mult = _pos_int(cfg.get("depth_multiplier", 1), "depth_multiplier")
            cout = cin * mult
            params = kvol * cin * mult + (cout if cfg.get("use_bias", True) else 0)
            flops = 2 * math.prod(out_sp) * kvol * cin * mult
        elif cls.startswith("Separable"):
            mult = _pos_int(cfg.get("depth_multiplier", 1), "depth_multiplier")
            cout = _pos_int(cfg.get("filters"), "filters")
            params = kvol * cin * mult + cin * mult * cout + cout
            flops = 2 * math.prod(out_sp) * (kvol * cin * mult + cin * mult * cout)
        else:
            cout = _pos_int(cfg.get("filters"), "filters")
            groups = _pos_int(cfg.get("groups", 1) or 1, "groups")
            params = kvol * (cin // groups) * cout + (cout if cfg.get("use_bias", True) else 0)
            flops = 2 * math.prod(out_sp if "Transpose" not in cls else spatial) \
                * kvol * (cin // groups) * cout
        return _join(out_sp, cout, cfg), params, flops
    if cls.startswith(("MaxPooling", "AveragePooling", "MaxPool", "AvgPool")):
        rank = _rank_of(cls)
        spatial, c = _spatial(x, rank, cfg)
        p = _tuple(cfg.get("pool_size", 2), rank, "pool_size")
        s = _tuple(cfg.get("strides") or p, rank, "strides")
        padding = str(cfg.get("padding", "valid")).lower()
        out_sp = tuple(_window_out(n, kk, st, 1, padding)
                       for n, kk, st in zip(spatial, p, s, strict=True))
        return _join(out_sp, c, cfg), 0, math.prod(out_sp) * c * math.prod(p)
    if cls.startswith(("GlobalAveragePooling", "GlobalMaxPooling", "GlobalAvgPool",
                       "GlobalMaxPool")):
        rank = _rank_of(cls)
        spatial, c = _spatial(x, rank, cfg)
        out = (*([1] * rank), c) if cfg.get("keepdims") else (c,)
        return tuple(out), 0, n_in
    if cls == "Flatten":
        return (n_in,), 0, 0
    if cls == "Reshape":
        target = cfg.get("target_shape")
        if not isinstance(target, list):
            raise _bad("Reshape declares no target_shape")
        dims = [int(d) if isinstance(d, int) and d > 0 else -1 for d in target]
        known = math.prod(d for d in dims if d > 0)
        if -1 in dims:
            dims[dims.index(-1)] = max(1, n_in // max(known, 1))
        return tuple(d if d > 0 else 1 for d in dims), 0, 0
    if cls == "Embedding":
        vocab = _pos_int(cfg.get("input_dim"), "input_dim")
        dim = _pos_int(cfg.get("output_dim"), "output_dim")
        return (*x, dim), vocab * dim, n_in * dim
    if cls in ("LSTM", "GRU", "SimpleRNN"):
        units = _pos_int(cfg.get("units"), "units")
        gates = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}[cls]
        steps, feat = (x[0], x[-1]) if len(x) >= 2 else (1, x[-1] if x else 1)
        biases = 2 if cls == "GRU" and cfg.get("reset_after", True) else 1
        params = gates * (feat * units + units * units + biases * units)
        flops = steps * 2 * gates * (feat + units) * units
        out = (steps, units) if cfg.get("return_sequences") else (units,)
        # The backward pass through time keeps every step's gate activations.
        est.acc.activations += steps * gates * units
        return out, params, flops
    if cls == "Bidirectional":
        inner = cfg.get("layer") if isinstance(cfg.get("layer"), Mapping) else {}
        icls = str(inner.get("class_name"))
        icfg = inner.get("config") if isinstance(inner.get("config"), Mapping) else {}
        out, params, flops = _layer_cost(icls, icfg, ins, est)
        merge = cfg.get("merge_mode", "concat")
        if merge == "concat":
            out = (*out[:-1], out[-1] * 2)
        return out, 2 * params, 2 * flops
    if cls == "TimeDistributed":
        inner = cfg.get("layer") if isinstance(cfg.get("layer"), Mapping) else {}
        icls = str(inner.get("class_name"))
        icfg = inner.get("config") if isinstance(inner.get("config"), Mapping) else {}
        out, params, flops = _layer_cost(icls, icfg, [x[1:]], est)
        return (x[0], *out), params, flops * x[0]
    if cls == "Concatenate":
        axis = cfg.get("axis", -1)
        axis = axis if isinstance(axis, int) else -1
        rank = len(x)
        ax = axis - 1 if axis > 0 else rank + axis  # config axes count the batch axis
        if not 0 <= ax < rank:
            ax = rank - 1
        total = sum(s[ax] if len(s) == rank else 0 for s in ins)
        return tuple(total if i == ax else d for i, d in enumerate(x)), 0, 0
    if cls in _ELEMENTWISE_MERGE:
        return x, 0, n_in * len(ins)
    if cls == "MultiHeadAttention":
        heads = _pos_int(cfg.get("num_heads"), "num_heads")
        kd = _pos_int(cfg.get("key_dim"), "key_dim")
        vd = _pos_int(cfg.get("value_dim") or kd, "value_dim")
        q = x
        kv = ins[1] if len(ins) > 1 else x
        tq, d = (q[0], q[-1]) if len(q) >= 2 else (1, q[-1])
        tk = kv[0] if len(kv) >= 2 else 1
        params = (d + 1) * heads * (2 * kd + vd) + heads * vd * d + d
        flops = 2 * (tq * d * heads * kd + 2 * tk * d * heads * kd + tq * tk * heads * (kd + vd)
                     + tq * heads * vd * d)
        est.acc.activations += heads * tq * tk  # the attention scores
        return q, params, flops
    if cls in ("BatchNormalization", "LayerNormalization", "GroupNormalization",
               "UnitNormalization"):
        c = x[-1] if x else 1
        return x, 4 * c if cls == "BatchNormalization" else 2 * c, 4 * n_in
    if cls.startswith("UpSampling"):
        rank = _rank_of(cls)
        spatial, c = _spatial(x, rank, cfg)
        size = _tuple(cfg.get("size", 2), rank, "size")
        out_sp = tuple(n * f for n, f in zip(spatial, size, strict=True))
        return _join(out_sp, c, cfg), 0, math.prod(out_sp) * c
    if cls.startswith(("ZeroPadding", "Cropping")):
        rank = _rank_of(cls)
        spatial, c = _spatial(x, rank, cfg)
        key = "padding" if cls.startswith("Zero") else "cropping"
        raw = cfg.get(key, 1)
        pads = []
        items = raw if isinstance(raw, list) and len(raw) == rank else [raw] * rank
        for item in items:
            pair = item if isinstance(item, list) else [item, item]
            pads.append(sum(_pos_int(v, key, allow_zero=True) for v in pair[:2]))
        sign = 1 if key == "padding" else -1
        out_sp = tuple(max(1, n + sign * p) for n, p in zip(spatial, pads, strict=True))
        return _join(out_sp, c, cfg), 0, 0
    if cls == "RepeatVector":
        n = _pos_int(cfg.get("n"), "n")
        return (n, *x), 0, 0
    if cls == "Permute":
        dims = cfg.get("dims")
        if isinstance(dims, list) and sorted(dims) == list(range(1, len(x) + 1)):
            return tuple(x[d - 1] for d in dims), 0, 0
        return x, 0, 0
    # Activations, dropout, noise, rescaling, normalization and unknown layers: same shape.
    return x, 0, n_in


def estimate_config(config: Mapping[str, Any],
                    policy: BudgetPolicy | None = None) -> ModelCost:
    """The per-example cost of the model a Keras config declares.

    With a ``policy``, the walk stops at the first total over a cap (``model_too_large``)
    instead of finishing the sum. A config that is not a model, or declares a
    non-integer or negative size, raises ``ModelIntakeError`` (``corrupt_file``).
    """
    est = _Estimator(policy)
    cls = config.get("class_name")
    if cls not in _NESTED_MODELS:
        raise _bad(f"the model config is a {str(cls)[:40]!r}, not a Sequential or "
                   "functional model")
    cfg = config.get("config") if isinstance(config.get("config"), Mapping) else {}
    layers = cfg.get("layers") if isinstance(cfg.get("layers"), list) else []
    if cls == "Sequential":
        input_shape = est._declared_input(config, cfg, layers)
    else:
        names = [_ref_name(r) for r in _refs(cfg.get("input_layers"))]
        first = next((la for la in layers if isinstance(la, Mapping)
                      and la.get("class_name") == "InputLayer"
                      and (not names or la.get("name") == names[0])), None)
        if first is None:
            raise _bad("the model config declares no input layer")
        lcfg = first.get("config") or {}
        raw = lcfg.get("batch_shape", lcfg.get("batch_input_shape"))
        if raw is None:
            raise _bad("the model's input layer declares no shape")
        input_shape = _shape_from(list(raw)[1:], "batch_shape")
    if policy is not None:
        _check_input(input_shape, policy)
    est.model(config)
    return ModelCost(input_shape=input_shape, params=est.acc.params,
                     activation_elements=est.acc.activations,
                     forward_flops=max(est.acc.flops, 1),
                     workspace_elements=est.acc.workspace)


def _check_input(shape: tuple[int, ...], policy: BudgetPolicy) -> None:
    elements = math.prod(shape)
    if elements > policy.max_input_elements:
        raise ModelIntakeError(
            f"the model's input {shape} holds {elements:,} values per example; the limit "
            f"is {policy.max_input_elements:,} (XAUDIT_MAX_INPUT_ELEMENTS)",
            code="model_too_large")


def check_model(config: Mapping[str, Any], policy: BudgetPolicy) -> ModelCost:
    """Refuse (``model_too_large``) a model over a cap or whose single example cannot be
    attributed within the worker's batch memory; otherwise return its cost."""
    cost = estimate_config(config, policy)
    if cost.params > policy.max_params:
        raise ModelIntakeError(
            f"the model has {cost.params:,} parameters; the limit is {policy.max_params:,} "
            "(XAUDIT_MAX_PARAMS)", code="model_too_large")
    need = cost.example_bytes(gradient=True) + cost.weight_bytes
    if need > policy.batch_bytes:
        raise ModelIntakeError(
            f"one example of this model needs about {_fmt_bytes(need)} to attribute "
            f"(activations, gradients and weights); a worker's batch budget is "
            f"{_fmt_bytes(policy.batch_bytes)} (half of XAUDIT_WORKER_MEMORY)",
            code="model_too_large")
    return cost


def _fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", _GiB), ("MiB", _MiB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


# ====================================================================== request costs


@dataclass(frozen=True)
class RequestCost:
    """The estimated work of attributing rows with one method."""

    method: str
    evaluations: int      # model evaluations (rows through the network)
    gradient: bool
    flops: float
    extra_bytes: int      # the method's own arrays (SHAP coalition designs)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "evaluations": self.evaluations,
                "flops": self.flops, "gradient": self.gradient}


@dataclass(frozen=True)
class WorkInputs:
    """What a method's cost model reads besides its options."""

    features: int         # input values of one row (or the features the caller names)
    input_rank: int       # dimensions of one row: 1 for a table row, 3 for an image


@dataclass(frozen=True)
class MethodWork:
    """A method's work per explained row: what its cost model (declared with its
    registration, :attr:`explain.attributions.registry.MethodInfo.cost`) returns."""

    evaluations: int      # model evaluations (rows through the network) per explained row
    gradient: bool        # every evaluation also runs a backward pass
    design_bytes: int = 0  # the method's own arrays for the request (SHAP's coalitions)


#: One forward and one backward pass per row (saliency, Grad-CAM).
ONE_GRADIENT = MethodWork(evaluations=2, gradient=True)


def option_count(options: Mapping[str, Any], key: str, default: int) -> int:
    """``options[key]`` as a count of at least 1, or ``default`` when it is missing or not
    one (the estimate runs before, or without, the method's own validation)."""
    value = options.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value is None:
        return default
    if not math.isfinite(value) or value < 1:
        return default
    return int(value)



def _method_work(method: str, options: Mapping[str, Any], inputs: WorkInputs) -> MethodWork:
    # The registry imports TensorFlow: only when a request is costed, never on import.
    from explain.attributions.registry import method_info

    try:
        info = method_info(method)
    except XauditError:
        return MethodWork(evaluations=2, gradient=False)  # an unknown method is refused later
    return info.work(options, inputs)


def request_cost(cost: ModelCost, method: str, rows: int,
                 options: Mapping[str, Any] | None = None,
                 features: int | None = None) -> RequestCost:
    """Model evaluations and FLOPs to attribute ``rows`` examples with ``method``.

    Each method's cost model (declared with its registration) follows its defaults: IG
    ``steps`` (× the baseline samples for a random baseline), SmoothGrad ``samples``, SHAP
    coalitions × background rows, occlusion one pass per window position (at most one per
    feature).
    """
    work = _method_work(method, dict(options or {}), WorkInputs(
        features=max(int(features or cost.input_elements), 1),
        input_rank=len(cost.input_shape)))
    evaluations = int(rows) * int(work.evaluations)
    per_eval = max(cost.forward_flops, ROW_FLOOR_FLOPS)
    flops = float(evaluations) * per_eval * (3.0 if work.gradient else 1.0)
    return RequestCost(method=method, evaluations=evaluations, gradient=work.gradient,
                       flops=flops, extra_bytes=work.design_bytes)


def check_request(cost: ModelCost, method: str, rows: int, options: Mapping[str, Any],
                  policy: BudgetPolicy, *, limit: float | None = None,
                  what: str = "this request") -> RequestCost:
    """Refuse (:class:`BudgetError`, ``over_budget``) work over the per-request budget."""
    rc = request_cost(cost, method, rows, options)
    cap = policy.explain_max_flops if limit is None else limit
    if rc.flops > cap:
        raise BudgetError(
            f"{what} ({method} on {rows} row(s)) needs about {rc.flops:.3g} floating-point "
            f"operations ({rc.evaluations:,} model evaluations); the limit is {cap:.3g}: "
            "ask for fewer rows, steps or samples",
            detail={"cost_flops": rc.flops, "limit_flops": cap,
                    "evaluations": rc.evaluations})
    if rc.extra_bytes > policy.batch_bytes:
        raise BudgetError(
            f"{what} ({method}) needs about {_fmt_bytes(rc.extra_bytes)} for its sampling "
            f"design; the limit is {_fmt_bytes(policy.batch_bytes)}: ask for fewer samples "
            "or background rows",
            detail={"cost_bytes": rc.extra_bytes, "limit_bytes": policy.batch_bytes})
    return rc


def audit_cost(cost: ModelCost, config: Mapping[str, Any],
               methods: Iterable[str]) -> float:
    """Estimated FLOPs of an audit's attributions (its dominant work)."""
    samples = option_count(config, "samples", 24)
    sanity = option_count(config, "sanity_rows", 8)
    layers = option_count(config, "randomization_layers", 3)
    global_rows = option_count(config, "global_rows", 200)
    per_method = config.get("method_options") if isinstance(
        config.get("method_options"), Mapping) else {}
    total = 0.0
    from explain.attributions.registry import method_info

    for method in methods:
        opts = dict(per_method.get(method) or {}) if isinstance(
            per_method.get(method), Mapping) else {}
        info = method_info(method)
        # The audit config's older per-method keys (ig_steps, shap_samples) stand for
        # options; method_options win over them.
        for key, option in info.config_aliases.items():
            if config.get(key) is not None:
                opts.setdefault(option, config[key])
        if info.data_background:
            # the audit draws `background` rows of the data for such a method
            opts.setdefault("background", option_count(config, "background", 50))
        rows = samples + sanity * (layers + 2)
        total += request_cost(cost, method, rows, opts).flops
    total += request_cost(cost, "saliency", global_rows).flops
    return total


#: Bytes per input value of one deletion/insertion row while its block is built: the
#: boolean mask (1), its fancy-indexed image copy (1), ``np.where``'s result (4) and the
#: float32 copy handed to the model (4) -- explain/metrics/faithfulness.py ``curves``.
CURVE_ROW_BYTES = 10
#: Random orders the audit's deletion/insertion checks draw next to the attribution order.
CURVE_RANDOM_ORDERS = 3
#: Noisy copies per example of the stability check (explain/audit/quality.py).
STABILITY_SAMPLES = 5


def _quality_switch(config: Mapping[str, Any], name: str) -> bool:
    q = config.get("quality")
    if isinstance(q, Mapping) and name in q:
        return bool(q[name])
    return True


def audit_memory(cost: ModelCost, config: Mapping[str, Any],
                 methods: Iterable[str]) -> dict[str, int]:
    """Bytes the audit keeps besides the model's batches, by part (an upper bound).

    ``examples``: the explained examples, their attributions per method and the curves'
    baselines (float32); ``faithfulness``: one block of deletion/insertion rows -- every
    example is perturbed at ``faithfulness_steps + 1`` points along its attribution order
    and :data:`CURVE_RANDOM_ORDERS` random orders, at least one example's rows at once
    whatever the batch size (for a 2000x2000x3 image and 10 steps: 44 rows, ~5.3 GB);
    ``stability``: the noisy copies of the sanity rows; ``randomization``: a copy of the
    weights. ``peak`` is the examples plus the largest of the others (they run one after
    another).
    """
    methods = list(methods)
    n_in = cost.input_elements
    samples = option_count(config, "samples", 24)
    sanity = min(option_count(config, "sanity_rows", 8), samples)
    batch = option_count(config, "batch_size", 256)
    steps = option_count(config, "faithfulness_steps", 10)
    parts = {"examples": samples * n_in * VALUE_BYTES * (2 + len(methods))}
    if _quality_switch(config, "faithfulness"):
        per_example = (1 + CURVE_RANDOM_ORDERS) * (steps + 1)
        rows = max(1, batch // per_example) * per_example
        parts["faithfulness"] = min(rows, samples * per_example) * n_in * CURVE_ROW_BYTES
    if _quality_switch(config, "stability"):
        parts["stability"] = sanity * STABILITY_SAMPLES * n_in * VALUE_BYTES * 2
    if _quality_switch(config, "randomization"):
        parts["randomization"] = cost.weight_bytes
    parts["peak"] = parts["examples"] + max(
        [v for k, v in parts.items() if k != "examples"] or [0])
    return parts


def check_audit_memory(cost: ModelCost, config: Mapping[str, Any], methods: Iterable[str],
                       policy: BudgetPolicy) -> dict[str, int]:
    """Refuse (``over_budget``) an audit whose own arrays (:func:`audit_memory`) do not
    fit the worker's batch memory next to the model's weights and a one-example batch
    (the smallest the worker can size it to, :func:`audit_batch_size`)."""
    parts = audit_memory(cost, {**config, "batch_size": 1}, methods)
    room = policy.batch_bytes - cost.weight_bytes - cost.example_bytes(True)
    if parts["peak"] > room:
        big = max((k for k in parts if k not in ("peak", "examples")),
                  key=lambda k: parts[k], default="examples")
        if parts["examples"] >= parts.get(big, 0):
            big = "examples"
        hint = {"faithfulness": "lower faithfulness_steps or samples, or turn the "
                                "faithfulness check off (quality.faithfulness false)",
                "stability": "lower sanity_rows or turn quality.stability off",
                "randomization": "turn quality.randomization off",
                "examples": "ask for fewer samples or methods"}[big]
        raise BudgetError(
            f"this audit keeps about {_fmt_bytes(parts['peak'])} of arrays besides the "
            f"model (its {big} the largest: {_fmt_bytes(parts[big])}); a worker has "
            f"{_fmt_bytes(max(room, 0))} for them (XAUDIT_WORKER_MEMORY): {hint}",
            detail={"cost_bytes": parts["peak"], "limit_bytes": max(room, 0),
                    "parts": {k: v for k, v in parts.items() if k != "peak"}})
    return parts


def check_audit(cost: ModelCost, config: Mapping[str, Any], methods: Iterable[str],
                policy: BudgetPolicy) -> float:
    methods = list(methods)
    flops = audit_cost(cost, config, methods)
    if flops > policy.audit_max_flops:
        raise BudgetError(
            f"this audit ({', '.join(methods)}) needs about {flops:.3g} floating-point "
            f"operations; the limit is {policy.audit_max_flops:.3g} "
            "(XAUDIT_AUDIT_MAX_FLOPS): ask for fewer samples, steps or methods",
            detail={"cost_flops": flops, "limit_flops": policy.audit_max_flops})
    for method in methods:
        opts = (config.get("method_options") or {}).get(method) or {}
        if isinstance(opts, Mapping):
            check_request(cost, method, 1, opts, policy, limit=float("inf"),
                          what="this audit")
    check_audit_memory(cost, config, methods, policy)
    return flops


def audit_batch_size(cost: ModelCost, config: Mapping[str, Any], methods: Iterable[str],
                     policy: BudgetPolicy) -> int:
    """The audit's rows per pass: no more than asked, and small enough that the batch and
    the audit's own arrays (:func:`audit_memory`, whose deletion/insertion block grows with
    the batch) fit the worker's batch memory together (at least 1)."""
    methods = list(methods)
    size = option_count(config, "batch_size", 256)
    for _ in range(8):  # the block shrinks with the batch: a few rounds settle it
        reserved = audit_memory(cost, {**config, "batch_size": size}, methods)["peak"]
        fit = min(size, explain_batch_size(cost, policy, True, reserved=reserved))
        if fit == size:
            break
        size = fit
    return size


def explain_batch_size(cost: ModelCost, policy: BudgetPolicy, gradient: bool = True,
                       upper: int = 8192, reserved: int = 0) -> int:
    """Rows per forward/backward pass that fit the worker's batch memory (at least 1),
    ``reserved`` bytes of it being taken by other arrays (an audit's, see
    :func:`audit_memory`)."""
    room = policy.batch_bytes - cost.weight_bytes - reserved
    per = max(cost.example_bytes(gradient), 1)
    return int(max(1, min(upper, room // per)))
