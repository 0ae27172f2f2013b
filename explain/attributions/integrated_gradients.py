"""Integrated Gradients: the gradient integrated along a straight path from a baseline.

The path integral is approximated by a quadrature rule chosen by name from one table
(:data:`RULES`). Every (row, baseline draw, step) triple is one element of a flat stream,
evaluated in chunks of at most ``batch_size`` rows, so memory is bounded by ``batch_size``
whatever N and ``steps`` are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.polynomial.legendre import leggauss
from scipy.ndimage import gaussian_filter

from explain._backend import tf
from explain.attributions.base import (
    Attribution,
    ModelFunction,
    check_positive_int,
    compiled,
    completeness_gap,
    gather_targets,
    gradient_fn,
    stream_chunks,
)
from explain.attributions.registry import AuditInputs, register
from explain.budget import MethodWork, WorkInputs, option_count
from explain.errors import InputError, InputTypeError

# --------------------------------------------------------------------------- quadrature rules


def _riemann(offset: float) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    def rule(n: int) -> tuple[np.ndarray, np.ndarray]:
        return (np.arange(n, dtype=np.float64) + offset) / n, np.full(n, 1.0 / n)

    return rule


def _trapezoid(n: int) -> tuple[np.ndarray, np.ndarray]:
    if n < 2:
        raise InputError(f"steps must be an integer >= 2 for rule 'riemann_trapezoid', got {n}")
    weights = np.full(n, 1.0 / (n - 1))
    weights[[0, -1]] *= 0.5
    return np.linspace(0.0, 1.0, n), weights


def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = leggauss(n)
    # leggauss integrates over [-1, 1]; map nodes and weights onto [0, 1].
    return (nodes + 1.0) / 2.0, weights / 2.0


#: Rule name -> ``n -> (alphas, weights)``: points on the path in [0, 1] and their weights
#: (which sum to 1).
RULES: dict[str, Callable[[int], tuple[np.ndarray, np.ndarray]]] = {
    "gausslegendre": _gauss_legendre,
    "riemann_left": _riemann(0.0),
    "riemann_right": _riemann(1.0),
    "riemann_middle": _riemann(0.5),
    "riemann_trapezoid": _trapezoid,
}


def rule_points(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature points and weights of ``rule`` with ``steps`` points.

    Parameters
    ----------
    rule
        A key of :data:`RULES`.
    steps
        Number of points (>= 1; >= 2 for ``riemann_trapezoid``).

    Returns
    -------
    alphas, weights
        float32 arrays ``(steps,)``: positions in [0, 1] along the path and their weights,
        which sum to 1.
    """
    if not isinstance(rule, str) or rule not in RULES:
        raise InputError(f"rule must be one of {sorted(RULES)}, got {rule!r}")
    alphas, weights = _cached_points(rule, check_positive_int("steps", steps))
    return alphas.copy(), weights.copy()


@lru_cache(maxsize=64)
def _cached_points(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    # Gauss-Legendre nodes cost about a millisecond to find, as much as a small model's
    # whole IG call, so each (rule, steps) is computed once.
    alphas, weights = RULES[rule](steps)
    return alphas.astype(np.float32), weights.astype(np.float32)


# --------------------------------------------------------------------------- numeric core


@tf.function(reduce_retracing=True)
def interpolate_path(x: tf.Tensor, baseline: tf.Tensor, alphas: tf.Tensor) -> tf.Tensor:
    """Points ``baseline + alpha * (x - baseline)``, one per row.

    Parameters
    ----------
    x, baseline
        float32 ``(M, ...)``.
    alphas
        float32 ``(M,)``: the position of each row along its path.

    Returns
    -------
    tf.Tensor
        float32 ``(M, ...)``.
    """
    shape = tf.concat([[-1], tf.ones([tf.rank(x) - 1], tf.int32)], axis=0)
    return baseline + tf.reshape(alphas, shape) * (x - baseline)


def _row_shape(t: tf.Tensor) -> tf.Tensor:
    return tf.concat([[-1], tf.ones([tf.rank(t) - 1], tf.int32)], axis=0)


@tf.function(reduce_retracing=True)
def _step_sums(grads: tf.Tensor, weights: tf.Tensor, segments: tf.Tensor,
               n_segments: tf.Tensor) -> tf.Tensor:
    """``sum weight * grad`` over the rows of each segment, float32 ``(n_segments, ...)``."""
    return tf.math.unsorted_segment_sum(
        grads * tf.reshape(weights, _row_shape(grads)), segments, n_segments)


class _FixedBaselineIG:
    """The whole of IG for fixed baselines as one compiled graph, cached per model.

    One call walks the flat (row, step) stream in a sequential ``tf.while_loop`` over
    chunks of at most ``batch_size`` rows (path points gathered in-graph, forward +
    input-gradient, per-row weighted sums), then ``f(x)`` and ``f(baseline)`` in chunks of
    the same bound. A tabular model thus costs one graph dispatch per call instead of a
    few per chunk, and memory stays bounded by ``batch_size`` whatever N and ``steps`` are.
    """

    def __init__(self, mf: ModelFunction):
        self.mf = mf
        self._fn = tf.function(self._run, reduce_retracing=True)

    def __call__(self, x: tf.Tensor, base: tf.Tensor, targets: tf.Tensor, alphas: tf.Tensor,
                 weights: tf.Tensor, batch_size: int, *, shared: bool, x_scores: bool
                 ) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor]:
        """Values float32 ``x.shape``, ``f(x)[t]`` (None unless ``x_scores``), ``f(base)[t]``.

        ``base`` is ``(1, ...)`` shared by every row (``shared``) or ``(N, ...)``.
        """
        return self._fn(x, base, targets, alphas, weights,
                        tf.constant(batch_size, tf.int32), shared, x_scores)

    def _scores(self, inputs: tf.Tensor, targets: tf.Tensor, batch_size: tf.Tensor
                ) -> tf.Tensor:
        """``f(inputs)[i, targets[i]]`` float32 ``(M,)``, in chunks of ``batch_size`` rows."""
        n = tf.shape(inputs)[0]
        n_chunks = (n + batch_size - 1) // batch_size
        parts = tf.TensorArray(tf.float32, size=n_chunks, infer_shape=False)

        def body(c, parts):
            lo = c * batch_size
            hi = tf.minimum(lo + batch_size, n)
            out = gather_targets(self.mf(inputs[lo:hi]), targets[lo:hi])
            return c + 1, parts.write(c, out)

        _, parts = tf.while_loop(lambda c, _: c < n_chunks, body, (0, parts),
                                 parallel_iterations=1)
        return parts.concat()

    def _run(self, x, base, targets, alphas, weights, batch_size, shared, x_scores):
        mf = self.mf
        n = tf.shape(x)[0]
        n_steps = tf.shape(alphas)[0]
        total = n * n_steps
        shape = _row_shape(x)
        deltas = x - base
        n_chunks = (total + batch_size - 1) // batch_size
        sums = tf.TensorArray(tf.float32, size=n_chunks, infer_shape=False)
        owners = tf.TensorArray(tf.int32, size=n_chunks, infer_shape=False)

        def body(c, sums, owners):
            flat = tf.range(c * batch_size, tf.minimum((c + 1) * batch_size, total))
            rows, steps = flat // n_steps, flat % n_steps
            b = base if shared else tf.gather(base, rows)
            points = b + tf.reshape(tf.gather(alphas, steps), shape) * tf.gather(deltas, rows)
            with tf.GradientTape() as tape:
                tape.watch(points)
                out = gather_targets(mf(points), tf.gather(targets, rows))
            g = tape.gradient(out, points, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            # A row's weighted gradients are summed here and multiplied by its x - baseline
            # once at the end; the stream is row-major, so a chunk's rows are contiguous.
            first, last = rows[0], rows[-1]
            part = tf.math.unsorted_segment_sum(
                g * tf.reshape(tf.gather(weights, steps), shape), rows - first,
                last - first + 1)
            return c + 1, sums.write(c, part), owners.write(c, tf.range(first, last + 1))

        _, sums, owners = tf.while_loop(lambda c, *_: c < n_chunks, body, (0, sums, owners),
                                        parallel_iterations=1)
        # Chunks are added in float64 so the result does not depend on where they were cut.
        per_row = tf.math.unsorted_segment_sum(tf.cast(sums.concat(), tf.float64),
                                               owners.concat(), n)
        values = tf.cast(per_row * tf.cast(deltas, tf.float64), tf.float32)
        f_x = self._scores(x, targets, batch_size) if x_scores else None
        if shared:
            f_base = tf.gather(mf(base)[0], targets)
        else:
            f_base = self._scores(base, targets, batch_size)
        return values, f_x, f_base


# --------------------------------------------------------------------------- baselines


class _Baselines:
    """Baselines drawn on demand: ``rows(i, b)`` is baseline ``b`` of input row ``i``.

    Built lazily per chunk so that random baselines never take N x samples memory, and
    so row ``i``'s baselines do not depend on which other rows were passed.
    """

    def __init__(self, x: np.ndarray, spec: Any, samples: int, seed: int,
                 blur_sigma: Any):
        self.x = x
        self.samples = 1
        self._fixed: np.ndarray | None = None
        self._uniform = False
        samples = check_positive_int("baseline_samples", samples)
        seed = _check_seed(seed)
        if isinstance(spec, str):
            if spec == "zeros":
                self._fixed = np.zeros((1, *x.shape[1:]), np.float32)
            elif spec == "blur":
                self._fixed = _blurred(x, blur_sigma)
            elif spec == "uniform":
                self.samples = samples
                self.seed = seed
                self.low = x.reshape(len(x), -1).min(axis=1)
                self.high = x.reshape(len(x), -1).max(axis=1)
                self._uniform = True
            else:
                raise InputError(
                    "baseline must be 'zeros', 'blur', 'uniform', a number, or an array of "
                    f"shape {x.shape[1:]} or {x.shape}; got {spec!r}"
                )
        elif isinstance(spec, (int, float, np.integer, np.floating)) and not isinstance(
            spec, (bool, np.bool_)
        ):
            if not np.isfinite(spec):
                raise InputError(f"baseline must be a finite number, got {spec!r}")
            self._fixed = np.full((1, *x.shape[1:]), spec, np.float32)
        else:
            self._fixed = _baseline_array(spec, x)

    @property
    def fixed(self) -> np.ndarray | None:
        """The baseline array, ``(1, ...)`` or ``(N, ...)``; None for random draws."""
        return None if self._uniform else self._fixed

    def rows(self, i: np.ndarray, b: np.ndarray) -> np.ndarray:
        if not self._uniform:
            return self._fixed[i] if len(self._fixed) > 1 else np.repeat(self._fixed, len(i), 0)
        out = np.empty((len(i), *self.x.shape[1:]), np.float32)
        pairs, inverse = np.unique(np.stack([i, b], axis=1), axis=0, return_inverse=True)
        for k, (row, draw) in enumerate(pairs):
            rng = np.random.default_rng([self.seed, int(row), int(draw)])
            out[inverse.reshape(-1) == k] = rng.uniform(
                self.low[row], self.high[row], self.x.shape[1:]
            ).astype(np.float32)
        return out


def _check_seed(seed: Any) -> int:
    return check_positive_int("seed", seed, minimum=0)


def _baseline_array(spec: Any, x: np.ndarray) -> np.ndarray:
    try:
        arr = np.asarray(spec)
    except Exception as exc:  # ragged nested lists
        raise InputTypeError(f"baseline array could not be converted: {exc}") from None
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise InputTypeError(f"baseline must be numeric, got dtype {arr.dtype}")
    if arr.shape == x.shape[1:]:
        arr = arr[None]
    elif arr.shape != x.shape:
        raise InputError(
            f"baseline array must have shape {x.shape[1:]} (one for all rows) or {x.shape} "
            f"(one per row), got {arr.shape}"
        )
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise InputError("baseline contains NaN or Inf")
    return arr


def _blurred(x: np.ndarray, sigma: Any) -> np.ndarray:
    if x.ndim < 3:
        raise InputError(
            f"baseline='blur' needs image (N, H, W, C) or sequence (N, T, F) inputs; "
            f"got shape {x.shape}"
        )
    blur_axes = x.shape[1:-1]
    if sigma is None:
        # An eighth of the smallest blurred extent removes detail but keeps coarse layout.
        sigma = max(1.0, min(blur_axes) / 8.0)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"blur_sigma must be a positive number or None, got {sigma!r}")
    if not np.isfinite(sigma) or sigma <= 0:
        raise InputError(f"blur_sigma must be a positive number, got {sigma}")
    # Blur the spatial (or time) axes only; channels / features are never mixed.
    sigmas = (0.0, *([float(sigma)] * len(blur_axes)), 0.0)
    return gaussian_filter(x, sigma=sigmas, mode="nearest").astype(np.float32)


# --------------------------------------------------------------------------- the method


#: Integration steps when the caller gives none.
DEFAULT_STEPS = 32


def _audit_options(ctx: AuditInputs) -> dict[str, Any]:
    # listed in the report's options; the config's method_options (or its older
    # ig_steps) win
    opts: dict[str, Any] = {"steps": DEFAULT_STEPS}
    if ctx.kind == "tabular":
        # Zero is rarely a neutral row for raw tabular features (an age of 0, an income
        # of 0); the mean row is.
        opts["baseline"] = ctx.x.mean(axis=0).astype(np.float32)
    return opts


#: Baselines drawn at random, ``baseline_samples`` paths a row. "gaussian" and "noise"
#: are not baselines this method takes; they count as random so the estimate errs high.
_RANDOM_BASELINES = ("uniform", "gaussian", "noise")


def _cost(options: Mapping[str, Any], inputs: WorkInputs) -> MethodWork:
    """A gradient per step of each path, and the row's own forward pass."""
    per_row = option_count(options, "steps", DEFAULT_STEPS)
    if str(options.get("baseline", "zeros")) in _RANDOM_BASELINES:
        per_row *= option_count(options, "baseline_samples", 8)
    return MethodWork(evaluations=per_row + 1, gradient=True)


@register(
    "integrated_gradients",
    completeness=True,
    completeness_tolerance=0.01,
    summary="Gradients integrated along the straight path from a baseline to the input.",
    title="Integrated Gradients",
    global_priority={"tabular": 0, "image": 1},
    cheap=True,
    sanity_checks={"randomization", "stability"},
    audit_options=_audit_options,
    cost=_cost,
    config_aliases={"ig_steps": "steps"},
)
def integrated_gradients(
    mf: ModelFunction,
    x: np.ndarray,
    targets: np.ndarray,
    *,
    batch_size: int,
    steps: int = DEFAULT_STEPS,
    baseline: Any = "zeros",
    rule: str = "gausslegendre",
    baseline_samples: int = 8,
    seed: int = 0,
    blur_sigma: float | None = None,
) -> Attribution:
    """Integrated Gradients of ``f(x)[target]`` with respect to ``x``.

    Parameters
    ----------
    mf
        The model as a function of its input.
    x
        float32 ``(N, ...)``, already validated.
    targets
        int ``(N,)``.
    batch_size
        Maximum rows per forward pass, interpolation steps included.
    steps
        Quadrature points along the path.
    baseline
        ``"zeros"``; a number; ``"blur"`` (Gaussian blur of the input over its spatial
        or time axes, ``blur_sigma`` in pixels, default an eighth of the smaller extent);
        ``"uniform"`` (``baseline_samples`` uniform draws within each row's value range,
        seeded by ``seed``, attributions averaged); or an array of shape ``x.shape[1:]``
        or ``x.shape``.
    rule
        Quadrature rule, a key of :data:`RULES`.

    Returns
    -------
    Attribution
        ``values`` float32 ``x.shape``; ``scores`` ``f(x)[t]``; ``baseline_scores``
        ``f(baseline)[t]`` (mean over baseline draws); ``completeness_gap``
        ``sum(values) - (scores - baseline_scores)``.

    Ref. Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017.
    """
    alphas, weights = rule_points(rule, steps)
    bases = _Baselines(x, baseline, baseline_samples, seed, blur_sigma)
    known = mf.known_predictions(x)
    if bases.fixed is not None:
        fixed = bases.fixed
        fused = compiled(mf, "integrated_gradients", _FixedBaselineIG)
        values_t, scores_t, base_scores_t = fused(
            tf.convert_to_tensor(x), tf.convert_to_tensor(fixed),
            tf.convert_to_tensor(targets, tf.int32), tf.constant(alphas), tf.constant(weights),
            batch_size, shared=len(fixed) == 1, x_scores=known is None)
        values = values_t.numpy()
        scores = (scores_t.numpy() if known is None
                  else known[np.arange(len(x)), targets].astype(np.float32))
        baseline_scores = base_scores_t.numpy()
    else:
        values = _random_baselines_ig(mf, x, targets, bases, alphas, weights, batch_size)
        scores = mf.target_scores(x, targets, batch_size)
        baseline_scores = _baseline_scores(mf, bases, targets, batch_size)
    return Attribution(
        values=values,
        method="integrated_gradients",
        targets=targets,
        scores=scores,
        baseline_scores=baseline_scores,
        completeness_gap=completeness_gap(values, scores, baseline_scores),
        extra={"alphas": alphas, "weights": weights, "baseline_draws": bases.samples},
    )


def _random_baselines_ig(mf: ModelFunction, x: np.ndarray, targets: np.ndarray,
                         bases: _Baselines, alphas: np.ndarray, weights: np.ndarray,
                         batch_size: int) -> np.ndarray:
    """IG averaged over random baseline draws, drawn chunk by chunk on the host."""
    n_draws = bases.samples
    per_row = n_draws * len(alphas)
    grad = gradient_fn(mf)
    acc = np.zeros(x.shape, np.float64)
    alphas_t, weights_t = tf.constant(alphas), tf.constant(weights / n_draws)
    targets_t = tf.constant(targets, tf.int32)
    x_t = tf.convert_to_tensor(x)
    for rows, copies in stream_chunks(len(x), per_row, batch_size):
        draws, step = copies // len(alphas), copies % len(alphas)
        rows_t, step_t = tf.constant(rows, tf.int32), tf.constant(step, tf.int32)
        bs = bases.rows(rows, draws)
        points = interpolate_path(tf.gather(x_t, rows_t), tf.convert_to_tensor(bs),
                                  tf.gather(alphas_t, step_t))
        g, _ = grad(points, tf.gather(targets_t, rows_t))
        # A (row, draw) pair has one x - baseline, so its weighted gradients are summed
        # first and multiplied by it once; chunks are sorted, so pairs are contiguous.
        pair = rows * n_draws + draws
        pairs, first_of, local = np.unique(pair, return_index=True, return_inverse=True)
        sums = _step_sums(g, tf.gather(weights_t, step_t),
                          tf.constant(local.reshape(-1), tf.int32),
                          tf.constant(len(pairs), tf.int32)).numpy()
        contrib = sums.astype(np.float64) * (x[rows[first_of]] - bs[first_of])
        np.add.at(acc, rows[first_of], contrib)
    return acc.astype(np.float32)


def _baseline_scores(mf: ModelFunction, bases: _Baselines, targets: np.ndarray,
                     batch_size: int) -> np.ndarray:
    """``mean_b f(baseline_b)[t]`` per row, evaluated in chunks of ``batch_size``."""
    n = len(targets)
    if bases.fixed is not None and len(bases.fixed) == 1:
        # One baseline shared by every row: one forward pass, not N copies of it.
        return mf.predict(bases.fixed, 1)[0, targets].astype(np.float32)
    total = np.zeros(n, np.float64)
    for rows, draws in stream_chunks(n, bases.samples, batch_size):
        s = mf.target_scores(bases.rows(rows, draws), targets[rows], batch_size)
        np.add.at(total, rows, s.astype(np.float64))
    return (total / bases.samples).astype(np.float32)
