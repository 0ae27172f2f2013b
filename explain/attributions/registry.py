"""The registry of attribution methods and the public ``attribute()`` entry point.

Each method module registers one private implementation with :func:`register`; the
public :func:`explain` validates inputs, options and targets once and dispatches through
the registry (no if/elif on method names).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from explain.attributions.base import (
    DEFAULT_BATCH_SIZE,
    Attribution,
    ModelFunction,
    as_inputs,
    check_positive_int,
    resolve_targets_with_predictions,
)
from explain.errors import InputError

#: Options every method accepts (handled here, before dispatch).
COMMON_OPTIONS = frozenset({"batch_size", "output", "logits"})


@dataclass(frozen=True)
class MethodInfo:
    """Metadata of a registered method, read by the audit and the report."""

    name: str
    impl: Callable[..., Attribution]
    options: frozenset[str]
    defaults: dict[str, Any] = field(default_factory=dict)
    #: "input": values have x's shape; "spatial": (N, H, W) maps at input resolution.
    output: str = "input"
    #: True when sum(values) should equal f(x) - f(baseline) (IG, SHAP).
    completeness: bool = False
    #: True when the method needs gradients (vs. forward passes only).
    gradient_based: bool = True
    summary: str = ""


_REGISTRY: dict[str, MethodInfo] = {}

#: Names of every registered method (kept in registration order).
METHODS: list[str] = []


def register(
    name: str,
    *,
    options: set[str] | frozenset[str] = frozenset(),
    defaults: dict[str, Any] | None = None,
    output: str = "input",
    completeness: bool = False,
    gradient_based: bool = True,
    summary: str = "",
) -> Callable[[Callable[..., Attribution]], Callable[..., Attribution]]:
    """Register ``impl(mf, x, targets, *, batch_size, **options) -> Attribution``."""

    def deco(impl: Callable[..., Attribution]) -> Callable[..., Attribution]:
        if name in _REGISTRY:
            raise ValueError(f"attribution method {name!r} is already registered")
        _REGISTRY[name] = MethodInfo(
            name=name,
            impl=impl,
            options=frozenset(options),
            defaults=dict(defaults or {}),
            output=output,
            completeness=completeness,
            gradient_based=gradient_based,
            summary=summary,
        )
        METHODS.append(name)
        return impl

    return deco


#: Input values per forward pass that the default batch size aims for (about 4 MB of
#: float32 input). Small tabular rows then travel in thousands per call, which is what
#: makes the forward-only estimators (SHAP, occlusion) fast, while large images stay in
#: batches small enough for their activations and gradients to fit in memory.
_DEFAULT_VALUES_PER_BATCH = 2**20


def default_batch_size(row_shape: tuple[int, ...], gradient_based: bool = True) -> int:
    """The batch size used when the caller gives none, from the size of one input row."""
    per_row = max(int(np.prod(row_shape)), 1)
    budget = _DEFAULT_VALUES_PER_BATCH * (1 if gradient_based else 4)
    upper = DEFAULT_BATCH_SIZE * 32
    return int(min(max(budget // per_row, 16), upper))


def method_info(name: str) -> MethodInfo:
    """Metadata of a registered method; ValueError naming the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown attribution method {name!r}; known methods: {', '.join(METHODS)}"
        ) from None


def explain(
    model: Any,
    x: Any,
    method: str = "integrated_gradients",
    target: Any = None,
    **options: Any,
) -> Attribution:
    """Compute attributions and return the full :class:`Attribution` result.

    Same arguments as :func:`attribute`; the result also carries the targets, the
    model scores and, for IG and SHAP, the per-example completeness gap.
    """
    info = method_info(method)
    from explain.attributions.tokens import explain_tokens, token_model

    text = token_model(model) if not isinstance(model, str) else None
    if text is not None:
        # token ids (or strings) into an Embedding: one score per token, (N, T)
        return explain_tokens(text, x, method, target, options)
    unknown = set(options) - info.options - COMMON_OPTIONS
    if unknown:
        allowed = sorted(info.options | COMMON_OPTIONS)
        raise InputError(
            f"unknown option(s) {sorted(unknown)} for method {method!r}; allowed: {allowed}"
        )
    requested = options.pop("batch_size", None)
    mf = ModelFunction(model, output=options.pop("output", None),
                       logits=bool(options.pop("logits", False)))
    arr = as_inputs(model, x)
    batch_size = (default_batch_size(arr.shape[1:], info.gradient_based) if requested is None
                  else check_positive_int("batch_size", requested))
    targets, predictions = resolve_targets_with_predictions(mf, arr, target, batch_size)
    merged = {**info.defaults, **options}
    # f(x) from finding the predicted classes is lent to the method for its scores.
    with mf.predictions_known(arr, predictions):
        result = info.impl(mf, arr, targets, batch_size=batch_size, **merged)
    result.method = method
    result.targets = targets
    result.options = {**merged, "batch_size": batch_size, "output": mf.output_index,
                      "logits": mf.logits}
    result.values = np.asarray(result.values, dtype=np.float32)
    return result


def attribute(
    model: Any,
    x: Any,
    method: str = "integrated_gradients",
    target: Any = None,
    **options: Any,
) -> np.ndarray:
    """Attributions of ``model``'s output at ``target`` for the rows of ``x``.

    Parameters
    ----------
    model
        A Keras 3 model with one input (functional, Sequential or nested).
    x
        Numeric array ``(N, ...)`` matching the model input.
    method
        A name from :data:`METHODS`.
    target
        None (the predicted class; output 0 for regression), an int, or an int array
        ``(N,)``.
    **options
        Method options (``steps``, ``baseline``, ``rule``, ``batch_size``, ``estimator``,
        ``background``, ``layer``, ``output``, ``logits``, ``noise``, ``samples``,
        ``window``, ``stride``, ...). Unknown options raise ValueError.

    Returns
    -------
    numpy.ndarray
        float32 of shape ``x.shape``; ``(N, H, W)`` for ``grad_cam`` and
        ``grad_cam_plus_plus``. Use :func:`explain` for the completeness gap.
    """
    return explain(model, x, method, target, **options).values
