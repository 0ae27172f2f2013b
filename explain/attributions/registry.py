"""The registry of attribution methods and the public ``attribute()`` entry point.

Each method module registers its implementation with :func:`register`, together with what
the rest of xaudit needs to know about the method (its title, whether its attributions
should add up to the output change and to what tolerance, whether it may rank global
importance, which sanity checks apply to it, the options an audit gives it, its cost
model for the work budget and the audit-config keys that stand for its options). The public
:func:`explain` validates inputs, options and targets once and dispatches through the
registry; nothing outside a method's own module branches on its name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
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
from explain.budget import MethodWork, WorkInputs
from explain.errors import InputError

#: Options every method accepts (handled here, before dispatch).
COMMON_OPTIONS = frozenset({"batch_size", "output", "logits"})


#: Sanity checks an audit can run on a method's attributions (explain.metrics).
SANITY_CHECKS = frozenset({"randomization", "stability"})


@dataclass(frozen=True)
class AuditInputs:
    """What a method's :attr:`MethodInfo.audit_options` sees: the audit's config, the
    input kind, every audited row and the audit's seeded generator (draws must keep
    their order: one seed, one plan)."""

    config: Any
    kind: str
    x: Any
    rng: np.random.Generator


@dataclass(frozen=True)
class MethodInfo:
    """Metadata of a registered method, read by the audit and the report.

    ``options`` and ``defaults`` come from the implementation's keyword-only parameters
    (one declaration: the signature).
    """

    name: str
    impl: Callable[..., Attribution]
    options: frozenset[str]
    defaults: dict[str, Any] = field(default_factory=dict)
    #: "input": values have x's shape; "spatial": (N, H, W) maps at input resolution.
    output: str = "input"
    #: True when sum(values) should equal f(x) - f(baseline) (IG, SHAP).
    completeness: bool = False
    #: Largest relative completeness gap of a correct implementation (None: no check).
    completeness_tolerance: float | None = None
    #: True when the method needs gradients (vs. forward passes only).
    gradient_based: bool = True
    summary: str = ""
    #: Display name (report headings, figure labels).
    title: str = ""
    #: Rank among the methods that may compute an audit's global importance, per input
    #: kind (lower first); a kind not listed: not this method.
    global_priority: Mapping[str, int] = field(default_factory=dict)
    #: Cheap enough to run on ``global_rows`` rows (tables' global importance).
    cheap: bool = False
    #: Measured against background rows that must come from the model's data (a service
    #: supplies them rather than letting the method draw them from the explained rows).
    data_background: bool = False
    #: The sanity checks that apply (:data:`SANITY_CHECKS`).
    sanity_checks: frozenset[str] = frozenset()
    #: ``audit_options(ctx: AuditInputs) -> dict``: the options an audit runs it with,
    #: before the config's ``method_options`` (which win).
    audit_options: Callable[[AuditInputs], dict[str, Any]] | None = None
    #: ``cost(options, inputs: WorkInputs) -> MethodWork``: model evaluations per row,
    #: whether each runs a backward pass, and the method's own arrays (explain.budget).
    #: Read leniently (a bad option counts as its default). None: one forward pass and
    #: one more (a backward pass when ``gradient_based``).
    cost: Callable[[Mapping[str, Any], WorkInputs], MethodWork] | None = None
    #: Keys of the audit config that stand for one of the method's options
    #: (``{"ig_steps": "steps"}``); the config's ``method_options`` win over them.
    config_aliases: Mapping[str, str] = field(default_factory=dict)

    def work(self, options: Mapping[str, Any], inputs: WorkInputs) -> MethodWork:
        """The method's work per explained row with ``options`` (see :attr:`cost`)."""
        if self.cost is None:
            return MethodWork(evaluations=2, gradient=self.gradient_based)
        return self.cost(options, inputs)

    def validate(self, options: Mapping[str, Any]) -> None:
        """Refuse option names the method does not take (InputError naming them)."""
        if not isinstance(options, Mapping):
            raise InputError(f"options of {self.name!r} must be a mapping of option names")
        unknown = set(options) - self.options - COMMON_OPTIONS
        if unknown:
            allowed = sorted(self.options | COMMON_OPTIONS)
            raise InputError(f"unknown option(s) {sorted(unknown)} for method {self.name!r}; "
                             f"allowed: {allowed}")

    def options_for_audit(self, ctx: AuditInputs) -> dict[str, Any]:
        """The options an audit runs the method with (``batch_size`` included)."""
        opts: dict[str, Any] = {"batch_size": ctx.config.batch_size}
        if self.audit_options is not None:
            opts.update(self.audit_options(ctx))
        opts.update(ctx.config.method_options.get(self.name, {}))
        return opts


def global_method(methods: list[str] | tuple[str, ...], kind: str) -> str:
    """The method of ``methods`` that ranks global importance for ``kind`` inputs (the
    first of them when none claims it)."""
    ranked = [(method_info(m).global_priority[kind], i, m) for i, m in enumerate(methods)
              if kind in method_info(m).global_priority]
    return min(ranked)[2] if ranked else methods[0]


def _signature_options(impl: Callable[..., Attribution]) -> dict[str, Any]:
    """``{name: default}`` of the implementation's keyword-only options."""
    out = {}
    for name, p in inspect.signature(impl).parameters.items():
        if p.kind is not p.KEYWORD_ONLY or name == "batch_size":
            continue
        if p.default is p.empty:
            raise ValueError(f"option {name!r} of {impl.__name__} needs a default")
        out[name] = p.default
    return out


_REGISTRY: dict[str, MethodInfo] = {}

#: Names of every registered method (kept in registration order).
METHODS: list[str] = []


def register(
    name: str,
    *,
    output: str = "input",
    completeness: bool = False,
    completeness_tolerance: float | None = None,
    gradient_based: bool = True,
    summary: str = "",
    title: str = "",
    global_priority: Mapping[str, int] | None = None,
    cheap: bool = False,
    data_background: bool = False,
    sanity_checks: set[str] | frozenset[str] = frozenset(),
    audit_options: Callable[[AuditInputs], dict[str, Any]] | None = None,
    cost: Callable[[Mapping[str, Any], WorkInputs], MethodWork] | None = None,
    config_aliases: Mapping[str, str] | None = None,
) -> Callable[[Callable[..., Attribution]], Callable[..., Attribution]]:
    """Register ``impl(mf, x, targets, *, batch_size, **options) -> Attribution``.

    The method's options and their defaults are ``impl``'s keyword-only parameters.
    """

    def deco(impl: Callable[..., Attribution]) -> Callable[..., Attribution]:
        if name in _REGISTRY:
            raise ValueError(f"attribution method {name!r} is already registered")
        unknown_checks = set(sanity_checks) - SANITY_CHECKS
        if unknown_checks:
            raise ValueError(f"unknown sanity check(s) {sorted(unknown_checks)}")
        defaults = _signature_options(impl)
        aliases = dict(config_aliases or {})
        if not set(aliases.values()) <= set(defaults):
            raise ValueError(f"config_aliases of {name!r} name options it does not take: "
                             f"{sorted(set(aliases.values()) - set(defaults))}")
        _REGISTRY[name] = MethodInfo(
            name=name,
            impl=impl,
            options=frozenset(defaults),
            defaults=defaults,
            output=output,
            completeness=completeness,
            completeness_tolerance=completeness_tolerance,
            gradient_based=gradient_based,
            summary=summary,
            title=title or name.replace("_", " ").title(),
            global_priority=dict(global_priority or {}),
            cheap=cheap,
            data_background=data_background,
            sanity_checks=frozenset(sanity_checks),
            audit_options=audit_options,
            cost=cost,
            config_aliases=aliases,
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
    info.validate(options)
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
