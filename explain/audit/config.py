"""What an audit computes and how hard it tries: :class:`AuditConfig`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from explain.errors import ConfigError, ConfigTypeError
from explain.result import to_jsonable

#: Methods run when the config names none, by input kind.
DEFAULT_METHODS: dict[str, tuple[str, ...]] = {
    "image": ("integrated_gradients", "grad_cam", "shap"),
    "tabular": ("integrated_gradients", "shap"),
    # Grad-CAM joins text audits when the model has a Conv1D / recurrent layer with a time
    # axis; a sequence audit keeps methods whose values share the input's (T, F) shape.
    "text": ("integrated_gradients", "shap", "grad_cam"),
    "sequence": ("integrated_gradients", "shap"),
}

#: Quality checks that can be switched on or off (``config["quality"]``) and their defaults.
QUALITY_CHECKS: dict[str, bool] = {
    "completeness": True,
    "faithfulness": True,
    "randomization": True,
    "agreement": True,
    "stability": False,
}


def _int_option(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigTypeError(f"config {name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise ConfigError(f"config {name} must be at least {minimum}{upper}, got {value}")
    return int(value)


def _check_method_options(method: str, opts: Mapping[str, Any]) -> None:
    """Option names ``method`` takes (its registration; on text models, its token
    variant's), refused here as the worker would refuse them."""
    from explain.attributions import method_info
    from explain.attributions.tokens import TOKEN_OPTIONS
    from explain.errors import InputError

    info = method_info(method)
    token_options = set(TOKEN_OPTIONS.get(method, {}))
    extra = {k: v for k, v in opts.items() if k not in token_options}
    try:
        info.validate(extra)
    except InputError as exc:
        raise ConfigError(f"config method_options: {exc}") from None


@dataclass(frozen=True)
class AuditConfig:
    """What an audit computes and how hard it tries.

    Attributes
    ----------
    methods
        Attribution methods (names from :data:`explain.METHODS`); None picks
        :data:`DEFAULT_METHODS` for the input kind (dropping Grad-CAM for an image model
        without a spatial layer).
    samples
        Examples explained one by one (and on which quality is measured).
    background
        Rows of the audited data drawn as the background of the methods measured against
        one (SHAP on tables and sequences). Not an alias of SHAP's own ``background``
        option, which is the drawn rows themselves. Image SHAP masks regions with the
        data's mean colour instead (one background image), which keeps its cost
        independent of this number.
    ig_steps, shap_samples
        Older names of method options, still accepted (stored schedules and configs use
        them): ``ig_steps`` is ``method_options["integrated_gradients"]["steps"]`` and
        ``shap_samples`` is ``method_options["shap"]["samples"]`` (each method's
        registration declares them: ``config_aliases``). Given, they are copied into
        :attr:`method_options` unless it names that option itself (then it wins). None:
        the method's own default (32 steps; for SHAP 512 coalitions on images and
        ``2M + 2048`` for M players on tables).
    global_rows
        Rows the global importance of tables is computed on (with a gradient method).
    sanity_rows
        Examples the randomization (and stability) checks run on.
    randomization_layers
        Top layers randomized one by one before the final all-layer step.
    faithfulness_steps
        Points of the deletion and insertion curves.
    batch_size
        Rows per forward pass (SHAP uses 16× this: its rows are tiny perturbations).
    seed
        Seeds the choice of examples, backgrounds, random orders and weight shuffles.
    thresholds
        Overrides of :class:`explain.findings.FindingThresholds`.
    image_shortcuts
        Overrides of :class:`explain.image_shortcuts.ShortcutSettings` (the candidate
        regions and the attention, ablation and fixed-pattern gates of the image
        shortcut test), e.g. ``{"min_mass_share": 0.1, "min_drop": 0.05}``.
    quality
        Switches of the quality checks (see :data:`QUALITY_CHECKS`).
    method_options
        Per-method options, e.g. ``{"integrated_gradients": {"steps": 64}, "shap":
        {"estimator": "permutation"}}``: the option names each method takes (its
        registration's ``validate``; on text models its token variant's), over the
        options the audit picks for it. After construction it also holds the older keys'
        values (``ig_steps``, ``shap_samples``).
    sensitive
        Sensitive attributes to audit for group fairness: columns of a ``.csv`` taken out
        of the model's inputs, or names among an ``.npz``'s ``sensitive_names`` (None: all
        the data holds). See :mod:`explain.fairness`.
    fairness
        Options of the fairness section (:class:`explain.fairness.FairnessOptions`: bins
        of continuous attributes, the favourable class, bootstrap replicates, ...).
    """

    methods: tuple[str, ...] | None = None
    samples: int = 24
    background: int = 50
    ig_steps: int | None = None
    shap_samples: int | None = None
    global_rows: int = 200
    sanity_rows: int = 8
    randomization_layers: int = 3
    faithfulness_steps: int = 10
    batch_size: int = 256
    seed: int = 0
    thresholds: dict[str, float] = field(default_factory=dict)
    image_shortcuts: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, bool] = field(default_factory=lambda: dict(QUALITY_CHECKS))
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    sensitive: tuple[str, ...] | None = None
    fairness: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from explain.attributions.registry import METHODS
        from explain.findings import FindingThresholds

        if self.methods is not None:
            methods = self.methods
            if (isinstance(methods, str) or not isinstance(methods, Sequence)
                    or not all(isinstance(m, str) for m in methods)):
                raise ConfigTypeError(f"config methods must be a list of method names, got "
                                      f"{methods!r:.200}")
            if not methods:
                raise ConfigError("config methods is empty; name at least one method")
            unknown = [m for m in methods if m not in METHODS]
            if unknown:
                raise ConfigError(f"unknown method(s) {unknown[:5]}; known methods: "
                                  f"{', '.join(METHODS)}", code="unknown_method")
            if len(set(methods)) != len(methods):
                raise ConfigError(f"config methods lists a method twice: {list(methods)}")
            object.__setattr__(self, "methods", tuple(str(m) for m in methods))
        _int_option("samples", self.samples, 2, 10_000)
        _int_option("background", self.background, 1, 10_000)
        if self.ig_steps is not None:
            _int_option("ig_steps", self.ig_steps, 2, 4096)
        if self.shap_samples is not None:
            _int_option("shap_samples", self.shap_samples, 16, 1_000_000)
        _int_option("global_rows", self.global_rows, 1, 1_000_000)
        _int_option("sanity_rows", self.sanity_rows, 2, 10_000)
        _int_option("randomization_layers", self.randomization_layers, 0, 1000)
        _int_option("faithfulness_steps", self.faithfulness_steps, 2, 1000)
        _int_option("batch_size", self.batch_size, 1, 1_000_000)
        _int_option("seed", self.seed, 0, 2**32 - 1)
        if not isinstance(self.thresholds, Mapping):
            raise ConfigTypeError(f"config thresholds must be a mapping, got {self.thresholds!r}")
        FindingThresholds.from_config(self.thresholds)  # raises on unknown names / types
        from explain.image_shortcuts import ShortcutSettings

        ShortcutSettings.from_config(self.image_shortcuts)  # the same, and ranges
        if not isinstance(self.quality, Mapping):
            raise ConfigTypeError(f"config quality must be a mapping, got {self.quality!r}")
        unknown = set(self.quality) - set(QUALITY_CHECKS)
        if unknown:
            raise ConfigError(f"unknown quality check(s) {sorted(unknown)}; known: "
                             f"{sorted(QUALITY_CHECKS)}")
        for k, v in self.quality.items():
            if not isinstance(v, bool):
                raise ConfigTypeError(f"config quality.{k} must be true or false, got {v!r}")
        object.__setattr__(self, "quality", {**QUALITY_CHECKS, **dict(self.quality)})
        if not isinstance(self.method_options, Mapping):
            raise ConfigTypeError("config method_options must map method names to options")
        for name, opts in self.method_options.items():
            if name not in METHODS:
                raise ConfigError(f"method_options names unknown method {name!r}")
            if not isinstance(opts, Mapping):
                raise ConfigTypeError(f"method_options.{name} must be a mapping of options")
            _check_method_options(name, opts)
        object.__setattr__(self, "method_options", self._with_aliases())
        if self.sensitive is not None:
            from explain.datasets import parse_sensitive
            from explain.errors import DataError

            try:
                names = parse_sensitive(self.sensitive)
            except DataError as exc:
                raise ConfigError(f"config sensitive: {exc}") from None
            if not names:
                raise ConfigError("config sensitive is empty; name at least one attribute "
                                  "or leave it out")
            object.__setattr__(self, "sensitive", tuple(names))
        from explain.fairness import FairnessOptions

        try:
            FairnessOptions.from_config(self.fairness)  # raises on unknown names / values
        except TypeError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigTypeError(str(exc)) from None
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(str(exc)) from None

    def _with_aliases(self) -> dict[str, dict[str, Any]]:
        """:attr:`method_options` with the older per-method keys (each method's
        ``config_aliases``) copied in where given and not named there already."""
        from explain.attributions.registry import METHODS, method_info

        merged = {name: dict(opts) for name, opts in self.method_options.items()}
        for method in METHODS:
            for key, option in method_info(method).config_aliases.items():
                value = getattr(self, key)
                if value is not None:
                    merged.setdefault(method, {}).setdefault(option, value)
        return merged

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AuditConfig:
        """A config from a JSON-like mapping (an API request, a CLI's options).

        Raises
        ------
        ValueError
            For an unknown key or an out-of-range value.
        TypeError
            For a value of the wrong type.
        """
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ConfigTypeError(f"the audit config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown audit config key(s) {sorted(unknown)}; known: "
                             f"{sorted(known)}")
        values = dict(data)
        if values.get("methods") is not None and isinstance(values["methods"], list):
            values["methods"] = tuple(values["methods"])
        if isinstance(values.get("sensitive"), list):
            values["sensitive"] = tuple(values["sensitive"])
        for key in ("thresholds", "image_shortcuts", "quality", "method_options", "fairness"):
            if values.get(key) is None:
                values.pop(key, None)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON types (what report.json records under ``config``)."""
        out = dataclasses.asdict(self)
        out["methods"] = None if self.methods is None else list(self.methods)
        out["sensitive"] = None if self.sensitive is None else list(self.sensitive)
        return to_jsonable(out)


