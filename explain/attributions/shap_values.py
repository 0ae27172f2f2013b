"""SHAP values: Shapley values of the model output with an interventional background.

The value of a coalition S of features for row x is the model's expected output when the
features in S keep x's values and the others take a background row's values, averaged
over the background (the "independent masker" that shap's Exact, Permutation and Kernel
explainers use with a background set)::

    v(S) = mean_b f(x_S, b_rest)[target]

so ``sum(values) = f(x)[target] - mean_b f(b)[target]``; every result reports this gap.

Estimators (option ``estimator``)
---------------------------------
``"auto"`` (default)
    ``"exact"`` when the number of players M (features, feature groups or image regions)
    is at most 10; else ``"sampled"`` when the background has several rows, ``"kernel"``
    when it has one (the default for images).
``"exact"``
    Enumerates all 2^M coalitions (M <= 14) and applies the Shapley weights in closed
    form. Matches ``shap.ExactExplainer`` with ``shap.maskers.Independent(background,
    max_samples=len(background))``.
``"kernel"``
    KernelSHAP with one coalition design shared by all rows: complete enumeration of the
    cheap sizes, stratified paired sampling of the rest, weighted least squares with the
    efficiency constraint exact. ``samples`` coalitions per row (default ``2M + 2048``);
    when ``2^M - 2 <= samples`` the coalitions are enumerated and ``"exact"`` runs.
``"permutation"``
    Antithetic permutation sampling (each permutation and its reverse), about
    ``samples`` coalitions per row; additive by construction.
``"sampled"``
    Monte Carlo over orderings *and* background rows: antithetic permutations, each
    ordering walked with a single background row (the rows dealt out in shuffled rounds,
    every row at least once), so one marginal contribution costs one forward pass instead
    of B. Per background row the contributions telescope to ``f(x) - f(b)``; averaging
    per row first and then uniformly over the background keeps efficiency exact, and a
    linear model's values are exact. ``samples`` is the number of forward passes per
    explained row (default ``250 M``, about 250 / (1 - 1/M) orderings), raised to
    at least one ordering per background row.
``"gradient"``
    Expected gradients (= shap's GradientExplainer): ``samples`` (default 200) draws per
    row of a background row and a point on the straight path to x. Needs gradients.
``"deep"``
    shap's DeepExplainer (DeepLIFT rescale rule against the background), where it
    supports the model; otherwise a ValueError pointing to ``"gradient"``.

The model-agnostic estimators exact, kernel and permutation cost ``rows x coalitions x
background rows`` forward passes (``"sampled"``: ``rows x samples``), in calls of at most ``batch_size`` rows: raise
``batch_size`` (e.g. 4096 for small models) for speed, shrink the background for less work.

Background (option ``background``)
----------------------------------
An array ``(B, ...)`` of rows shaped like the input: pass a sample of the training data
(50-100 rows is typical). Since ``attribute`` receives no separate data set, an int ``B``
samples B rows of ``x`` itself (seeded), and the default (None) is ``min(50, N)`` rows
of ``x`` for tabular inputs, and for images a single image filled with the per-channel mean
colour of ``x`` (a masked region is "greyed out" to the mean colour). With a background
taken from ``x`` and only one row to explain, every SHAP value is zero: pass a background.

Images
------
Players are regions (``groups``): ``"grid"`` (default; ``grid`` x ``grid`` cells, grid 8
for images of at least 16 pixels a side, else 4), ``"superpixels"`` (``grid``^2 regions per
image from a deterministic k-means on position and colour), or an int array ``(H, W)`` of
region ids. A region's Shapley value is spread evenly over its pixels and channels, so
the per-pixel values still sum to ``f(x) - E[f(b)]``. Tabular inputs can merge columns
with ``feature_groups`` (an int array, one group id per feature).

``extra`` holds ``estimator`` (the one that ran), ``groups`` (the region map ``(H, W)``,
``(N, H, W)`` for superpixels, or the feature-to-group map), ``group_values`` ``(N, M)``,
``background_rows`` and ``model_rows`` (forward passes spent on coalitions).

Ref. Lundberg & Lee 2017 (SHAP, KernelSHAP); Covert & Lee 2021 (paired sampling, exact
efficiency); Mitchell et al. 2022 (antithetic permutations); Erion et al. 2021 (expected
gradients); Shrikumar et al. 2017 (DeepLIFT).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from explain._backend import keras
from explain.attributions import _coalitions as co
from explain.attributions._grouping import Grouping, image_groups, tabular_groups
from explain.attributions.base import (
    Attribution,
    ModelFunction,
    check_positive_int,
    completeness_gap,
    gradient_fn,
    spatial_axes,
)
from explain.attributions.registry import AuditInputs, register
from explain.budget import MethodWork, WorkInputs, option_count
from explain.errors import InputError, InputTypeError

#: ``auto`` enumerates exactly up to this many players.
AUTO_EXACT_MAX = 10
DEFAULT_BACKGROUND_ROWS = 50
DEFAULT_GRADIENT_SAMPLES = 200
#: Forward passes per explained row and player for ``"sampled"`` by default.
SAMPLED_PER_PLAYER = 250


def default_samples(m: int) -> int:
    """Coalitions per row for kernel and permutation by default: ``2M + 2048``."""
    return 2 * m + 2048


# --------------------------------------------------------------------------- option checks


def _resolve_background(background: Any, x: np.ndarray, rng: np.random.Generator,
                        image: bool) -> np.ndarray:
    n = len(x)
    if background is None:
        if image:
            return np.broadcast_to(x.mean(axis=(0, 1, 2), keepdims=True), (1, *x.shape[1:])
                                   ).astype(np.float32)
        rows = min(DEFAULT_BACKGROUND_ROWS, n)
        return x[np.sort(rng.choice(n, rows, replace=False))]
    if isinstance(background, (int, np.integer)) and not isinstance(background, bool):
        if not 1 <= background <= n:
            raise InputError(
                f"background={background} samples that many rows of x, which has {n} rows; "
                f"pass an int in [1, {n}] or an array of background rows"
            )
        return x[np.sort(rng.choice(n, int(background), replace=False))]
    try:
        bg = np.asarray(background)
    except Exception as exc:
        raise InputTypeError(f"background must be an int or a numeric array: {exc}") from None
    if bg.dtype == object or not (np.issubdtype(bg.dtype, np.number)
                                  or np.issubdtype(bg.dtype, np.bool_)):
        raise InputTypeError(f"background must be an int or a numeric array, got dtype {bg.dtype}")
    if bg.shape == x.shape[1:]:
        bg = bg[None]
    if bg.shape[1:] != x.shape[1:] or bg.ndim != x.ndim:
        raise InputError(
            f"background must have shape (B, {', '.join(str(d) for d in x.shape[1:])}) to "
            f"match the input, got {bg.shape}"
        )
    if len(bg) == 0:
        raise InputError("background is empty: it needs at least one row")
    bg = bg.astype(np.float32)
    if not np.all(np.isfinite(bg)):
        raise InputError("background contains NaN or Inf")
    return bg


def _resolve_grouping(x: np.ndarray, groups: Any, grid: Any, feature_groups: Any) -> Grouping:
    if spatial_axes((None, *x.shape[1:])) is not None:
        if feature_groups is not None:
            raise InputError("feature_groups is for tabular inputs; for images use groups")
        return image_groups(x, groups, grid)
    if groups is not None or grid is not None:
        raise InputError(
            "groups and grid apply to image inputs (N, H, W, C); for other inputs use "
            "feature_groups"
        )
    if x.ndim == 3 and feature_groups is None:
        # a float sequence (T, F): players are time windows x channels, like image regions
        from explain.attributions.sequences import sequence_groups

        feature_groups = sequence_groups(x.shape[1:])
    return tabular_groups(x.shape[1:], feature_groups)


# --------------------------------------------------------------------------- the game


class _MaskedGame:
    """``v(S)`` for every explained row and coalition, in calls of <= batch_size rows."""

    def __init__(self, mf: ModelFunction, x: np.ndarray, targets: np.ndarray,
                 background: np.ndarray, grouping: Grouping, batch_size: int):
        self.mf = mf
        self.x = x.reshape(len(x), -1)
        self.bg = background.reshape(len(background), -1)
        self.shape = x.shape[1:]
        self.targets = targets
        self.grouping = grouping
        self.batch_size = batch_size
        self.model_rows = 0
        self.f_bg: np.ndarray | None = None  # (N, B) f(b)[target], set by the caller
        el = grouping.elements
        self._identity = el.ndim == 1 and np.array_equal(el, np.arange(len(el)))

    def _compose(self, keep_f: np.ndarray, coal: np.ndarray, row: np.ndarray,
                 bgi: np.ndarray) -> np.ndarray:
        """Flat model inputs: row ``row[i]`` of x where coalition ``coal[i]`` keeps the
        element, background row ``bgi[i]`` elsewhere (``keep_f``: the coalitions as 0/1
        float32, ``(C, M)``)."""
        el = self.grouping.elements
        keep = np.take(keep_f, coal, axis=0)
        if el.ndim == 2:
            keep = np.take_along_axis(keep, np.take(el, row, axis=0), axis=1)
        elif not self._identity:
            keep = np.take(keep, el, axis=1)
        # x * 1 + b * 0 is exactly x (inputs are finite) and much faster than np.where
        out = np.take(self.x, row, axis=0)
        out *= keep
        keep -= 1
        keep *= -1
        base = np.take(self.bg, bgi, axis=0)
        base *= keep
        out += base
        return out

    def values(self, masks: np.ndarray) -> np.ndarray:
        """``(N, C)`` float64 values of the coalitions ``masks`` ``(C, M)``."""
        n, c, b = len(self.x), len(masks), len(self.bg)
        total = n * c * b
        acc = np.zeros(n * c)
        keep_f = masks.astype(np.float32)
        for start in range(0, total, self.batch_size):
            idx = np.arange(start, min(total, start + self.batch_size))
            row, rest = np.divmod(idx, c * b)
            coal, bgi = np.divmod(rest, b)
            batch = self._compose(keep_f, coal, row, bgi).reshape((len(idx), *self.shape))
            out = self.mf.predict(batch, batch_size=len(idx))
            acc += np.bincount(row * c + coal, weights=out[np.arange(len(idx)), self.targets[row]],
                               minlength=n * c)
        self.model_rows += total
        return acc.reshape(n, c) / b

    def single_values(self, masks: np.ndarray, bg_index: np.ndarray, per: int) -> np.ndarray:
        """``(N, C)`` float64 ``f(x_S, b_rest)`` with a single background row per coalition:
        row ``bg_index[n, c // per]`` for explained row n and coalition ``masks[c]``."""
        n, c = len(self.x), len(masks)
        total = n * c
        out = np.empty(total)
        keep_f = masks.astype(np.float32)
        drop_f = 1 - keep_f
        walk = np.arange(c) // per
        el = self.grouping.elements
        for start in range(0, total, self.batch_size):
            stop = min(total, start + self.batch_size)
            pieces = []
            # the batch is a run of coalitions of consecutive rows: build it row by row
            # from slices (x * 1 + b * 0 is exactly x: inputs are finite)
            for r in range(start // c, (stop - 1) // c + 1):
                lo, hi = max(start - r * c, 0), min(stop - r * c, c)
                keep, drop = keep_f[lo:hi], drop_f[lo:hi]
                if el.ndim == 2:
                    keep, drop = np.take(keep, el[r], axis=1), np.take(drop, el[r], axis=1)
                elif not self._identity:
                    keep, drop = np.take(keep, el, axis=1), np.take(drop, el, axis=1)
                piece = np.take(self.bg, np.take(bg_index[r], walk[lo:hi]), axis=0)
                piece *= drop
                piece += self.x[r] * keep
                pieces.append(piece)
            batch = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
            pred = self.mf.predict(batch.reshape((stop - start, *self.shape)),
                                   batch_size=stop - start)
            row = np.arange(start, stop) // c
            out[start:stop] = pred[np.arange(stop - start), self.targets[row]]
        self.model_rows += total
        return out.reshape(n, c)


# --------------------------------------------------------------------------- estimators
# Each takes (game, v_empty, v_full, rng, samples) and returns (N, M) Shapley values of
# the players. shap has no batched counterpart of these (its explainers evaluate one row's
# coalitions at a time), which is why they are written here.


def _exact(game: _MaskedGame, v_empty, v_full, rng, samples) -> np.ndarray:
    m = game.grouping.m
    if m > co.MAX_EXACT_FEATURES:
        raise InputError(
            f"estimator='exact' enumerates 2^M coalitions and allows at most "
            f"{co.MAX_EXACT_FEATURES} players; this input has M={m}. Use estimator='kernel' "
            f"or 'permutation', or fewer groups (feature_groups / grid)"
        )
    coalitions = co.all_coalitions(m)
    inner = game.values(coalitions[1:-1])
    v_all = np.concatenate([v_empty[:, None], inner, v_full[:, None]], axis=1)
    return co.exact_shapley(v_all, coalitions)


def _kernel(game: _MaskedGame, v_empty, v_full, rng, samples) -> np.ndarray:
    m = game.grouping.m
    masks, weights = co.kernel_design(m, samples, rng)
    return co.kernel_solve(masks, weights, game.values(masks), v_empty, v_full)


def _permutation(game: _MaskedGame, v_empty, v_full, rng, samples) -> np.ndarray:
    m = game.grouping.m
    n_pairs = max(1, int(round(samples / (2 * (m - 1)))))
    perms = co.antithetic_permutations(m, n_pairs, rng)
    coalitions, index = co.permutation_design(perms)
    return co.permutation_solve(perms, index, game.values(coalitions), v_empty, v_full)


def _sampled(game: _MaskedGame, v_empty, v_full, rng, samples) -> np.ndarray:
    m, b, n = game.grouping.m, len(game.bg), len(game.x)
    perms, bg_index = co.background_permutations(m, b, samples, rng)
    bg_index = np.broadcast_to(bg_index[None], (n, len(bg_index)))
    v = game.single_values(co.permutation_prefixes(perms), bg_index, m - 1)
    contrib = co.chain_contributions(perms, bg_index, v, game.f_bg, v_full)
    return co.background_average(contrib, bg_index, b)


_AGNOSTIC: dict[str, Callable[..., np.ndarray]] = {
    "exact": _exact,
    "kernel": _kernel,
    "permutation": _permutation,
    "sampled": _sampled,
}


def _expected_gradients(mf: ModelFunction, x: np.ndarray, targets: np.ndarray,
                        background: np.ndarray, samples: int, rng: np.random.Generator,
                        batch_size: int) -> np.ndarray:
    """Expected gradients ``(N, ...)``: mean over draws of ``(x - b) * grad f(b + a (x - b))``.

    Background rows are drawn in shuffled rounds (each row as evenly often as ``samples``
    allows) and the path points are stratified over (0, 1), which removes most of the
    sampling noise; when ``samples`` is a multiple of B a linear model's result is exact.

    Ref. Erion et al. 2021 (expected gradients).
    """
    n, b = len(x), len(background)
    rounds = -(-samples // b)
    bg_idx = np.stack([
        np.concatenate([rng.permutation(b) for _ in range(rounds)])[:samples] for _ in range(n)
    ])
    alphas = (rng.permuted(np.tile(np.arange(samples), (n, 1)), axis=1)
              + rng.random((n, samples))) / samples
    xf, bf = x.reshape(n, -1), background.reshape(b, -1)
    total = np.zeros_like(xf, dtype=np.float64)
    grad = gradient_fn(mf)
    for start in range(0, n * samples, batch_size):
        idx = np.arange(start, min(n * samples, start + batch_size))
        row, k = np.divmod(idx, samples)
        base = bf[bg_idx[row, k]]
        delta = xf[row] - base
        point = (base + alphas[row, k][:, None].astype(np.float32) * delta).astype(np.float32)
        g, _ = grad(point.reshape((len(idx), *x.shape[1:])), targets[row])
        np.add.at(total, row, delta * g.numpy().reshape(len(idx), -1))
    return (total / samples).reshape(x.shape)


def _head_model(mf: ModelFunction) -> keras.Model:
    """A single-input, single-output (N, K) Keras model of the explained head."""
    model = mf.model
    if mf.logits:
        inp = keras.Input(mf.input_shape[1:])
        try:
            out = mf._forward(inp)
        except Exception as exc:
            raise InputError(
                f"estimator='deep' could not build the pre-activation head of this model "
                f"({type(exc).__name__}: {exc}); use estimator='gradient' or logits=False"
            ) from None
        head = keras.Model(inp, out)
    elif mf.n_heads > 1:
        head = keras.Model(model.inputs, model.outputs[mf.output_index])
    else:
        head = model
    if len(head.outputs[0].shape) != 2:
        head = keras.Model(head.inputs, keras.layers.Flatten()(head.outputs[0]))
    return head


def _deep(mf: ModelFunction, x: np.ndarray, targets: np.ndarray, background: np.ndarray,
          batch_size: int) -> np.ndarray:
    """shap's DeepExplainer on the explained head, values for each row's target ``(N, ...)``.

    Ref. Shrikumar et al. 2017 (DeepLIFT); Lundberg & Lee 2017 (DeepSHAP).
    """
    import shap

    head = _head_model(mf)
    tf_log = logging.getLogger("tensorflow")
    level = tf_log.level
    try:
        with warnings.catch_warnings():
            # Keras 3 warns that shap passes a list where the model expects one tensor, and
            # shap warns about TF >= 2.4 graph mode; neither changes the result.
            warnings.filterwarnings("ignore", message="The structure of `inputs`")
            warnings.filterwarnings("ignore", message="Your TensorFlow version is newer")
            tf_log.setLevel(logging.ERROR)  # shap retraces its gradient graph per output
            explainer = shap.DeepExplainer(head, background)
            parts = []
            for start in range(0, len(x), batch_size):
                sv = np.asarray(explainer.shap_values(x[start:start + batch_size],
                                                      check_additivity=False))
                t = targets[start:start + batch_size]
                parts.append(np.take_along_axis(
                    sv.reshape(len(t), -1, sv.shape[-1]), t[:, None, None], axis=2)[..., 0])
    except Exception as exc:
        raise InputError(
            f"estimator='deep' is not supported for this model (shap's DeepExplainer "
            f"failed: {type(exc).__name__}: {str(exc)[:200]}); use estimator='gradient'"
        ) from None
    finally:
        tf_log.setLevel(level)
        _undo_deep_explainer_patch()
    return np.concatenate(parts).reshape(x.shape)


def _undo_deep_explainer_patch() -> None:
    """Put back TensorFlow's gradient recorder if shap's DeepExplainer left its own.

    DeepExplainer swaps TensorFlow's eager ``record_gradient`` for one that records
    ``shap_<op>`` gradients and swaps it back only when the model call succeeds. After a
    model it cannot handle, every later gradient in the process (Grad-CAM, IG, ...) then
    fails with "gradient registry has no entry for: shap_...". No public API exposes the
    recorder, so this reaches into the same TensorFlow modules shap patches.
    """
    try:
        from tensorflow.python.eager import backprop, execute
    except ImportError:  # pragma: no cover - a TensorFlow without these modules
        return
    original = getattr(backprop, "_record_gradient", None) or getattr(
        backprop, "record_gradient", None)
    current = getattr(execute, "record_gradient", None)
    if original is not None and current is not original and \
            getattr(current, "__module__", "").startswith("shap"):
        execute.record_gradient = original


ESTIMATORS = ("auto", "exact", "kernel", "permutation", "sampled", "gradient", "deep")


# --------------------------------------------------------------------------- the method


#: Coalitions per image for the kernel estimator in an audit whose config does not say.
AUDIT_IMAGE_SAMPLES = 512


def _audit_options(ctx: AuditInputs) -> dict[str, Any]:
    cfg = ctx.config
    # SHAP's forward passes are on tiny perturbed copies; large batches are cheap.
    opts: dict[str, Any] = {"seed": cfg.seed, "batch_size": cfg.batch_size * 16}
    # samples given in the config (method_options, or its older shap_samples) win
    if ctx.kind == "image":
        # 64 regions: the estimator's default (2M + 2048 coalitions a row) costs 29 s for
        # 24 images of 32×32 on two cores; 512 cost 7.8 s and name the same regions (see
        # bench/audit.py).
        opts["samples"] = AUDIT_IMAGE_SAMPLES
    if ctx.kind in ("tabular", "sequence"):
        rows = min(cfg.background, len(ctx.x))
        opts["background"] = ctx.x[np.sort(ctx.rng.choice(len(ctx.x), rows, replace=False))]
    return opts


#: Players the cost model assumes for an image (the default 8 x 8 grid of regions).
_IMAGE_PLAYERS = 64
#: Estimators that differentiate the model (the others only run it forward).
_GRADIENT_ESTIMATORS = ("gradient", "deep", "expected_gradients")


def _cost(options: Mapping[str, Any], inputs: WorkInputs) -> MethodWork:
    """Forward passes per row: coalitions x background rows (kernel, exact), the
    sampled estimator's ``samples``, or a gradient per sample (expected gradients) or per
    background row (DeepSHAP); plus the coalition design (one float64 mask per coalition
    and player)."""
    players = (min(inputs.features, _IMAGE_PLAYERS) if inputs.input_rank >= 2
               else inputs.features)
    bg = options.get("background")
    bg_rows = (option_count({"b": bg}, "b", DEFAULT_BACKGROUND_ROWS)
               if not isinstance(bg, list) else max(len(bg), 1))
    estimator = str(options.get("estimator", "auto"))
    design = 0
    if estimator in ("gradient", "expected_gradients"):
        per_row = option_count(options, "samples", DEFAULT_GRADIENT_SAMPLES)
    elif estimator == "deep":
        per_row = bg_rows
    else:
        samples = option_count(options, "samples", default_samples(players))
        if estimator == "sampled" or (estimator == "auto" and players > AUTO_EXACT_MAX
                                      and bg_rows > 1):
            per_row = option_count(options, "samples", SAMPLED_PER_PLAYER * players)
        else:
            per_row = samples * bg_rows
        design = int(min(per_row, samples * bg_rows) * players * 8)
    return MethodWork(evaluations=per_row,
                      gradient=str(options.get("estimator")) in _GRADIENT_ESTIMATORS,
                      design_bytes=design)


@register(
    "shap",
    completeness=True,
    completeness_tolerance=0.05,
    gradient_based=False,
    summary="Shapley values against a background (exact, kernel, permutation, sampled, "
            "expected gradients or DeepSHAP)",
    title="SHAP",
    global_priority={"image": 2},
    data_background=True,
    audit_options=_audit_options,
    cost=_cost,
    config_aliases={"shap_samples": "samples"},
)
def _shap(mf: ModelFunction, x: np.ndarray, targets: np.ndarray, *, batch_size: int,
          estimator: str = "auto", background: Any = None, samples: int | None = None,
          seed: int = 0, groups: Any = None, grid: int | None = None,
          feature_groups: Any = None) -> Attribution:
    """SHAP values of ``f(x)[target]`` against a background; see the module docstring.

    Returns an :class:`Attribution` with values of ``x.shape``, ``scores = f(x)[t]``,
    ``baseline_scores = E_b f(b)[t]`` and the completeness gap.

    Ref. Lundberg & Lee 2017.
    """
    if not isinstance(estimator, str) or estimator not in ESTIMATORS:
        raise InputError(f"unknown SHAP estimator {estimator!r}; choose one of {list(ESTIMATORS)}")
    seed = check_positive_int("seed", seed, minimum=0)
    rng = np.random.default_rng(seed)
    image = spatial_axes((None, *x.shape[1:])) is not None
    bg = _resolve_background(background, x, rng, image)
    grouping = _resolve_grouping(x, groups, grid, feature_groups)
    m = grouping.m
    if estimator == "auto":
        estimator = "exact" if m <= AUTO_EXACT_MAX else "sampled" if len(bg) > 1 else "kernel"
    if samples is not None:
        samples = check_positive_int("samples", samples)
    if estimator == "kernel":
        samples = default_samples(m) if samples is None else samples
        if samples < m + 1:
            raise InputError(f"samples must be at least M + 1 = {m + 1} for the kernel "
                             f"estimator, got {samples}")
        if samples >= 2**m - 2:
            estimator = "exact"
    elif estimator == "permutation":
        samples = default_samples(m) if samples is None else samples
    elif estimator == "sampled":
        samples = SAMPLED_PER_PLAYER * m if samples is None else samples
    elif estimator == "gradient":
        samples = DEFAULT_GRADIENT_SAMPLES if samples is None else samples

    f_x = mf.predict(x, batch_size)
    f_bg_rows = mf.predict(bg, batch_size).astype(np.float64)
    f_bg = f_bg_rows.mean(axis=0)
    scores = f_x[np.arange(len(x)), targets].astype(np.float32)
    baseline = f_bg[targets].astype(np.float32)

    model_rows = 0
    if estimator in _AGNOSTIC:
        if m == 1:
            group_values = (scores.astype(np.float64) - f_bg[targets])[:, None]
        else:
            game = _MaskedGame(mf, x, targets, bg, grouping, batch_size)
            game.f_bg = f_bg_rows[:, targets].T  # (N, B): f(b)[target of each row]
            group_values = _AGNOSTIC[estimator](
                game, f_bg[targets], f_x[np.arange(len(x)), targets].astype(np.float64),
                rng, samples)
            model_rows = game.model_rows
        values = grouping.spread(group_values).reshape(x.shape)
    else:
        if estimator == "gradient":
            values = _expected_gradients(mf, x, targets, bg, samples, rng, batch_size)
            model_rows = len(x) * samples
        else:
            values = _deep(mf, x, targets, bg, batch_size)
        group_values = grouping.collect(values.reshape(len(x), -1))

    values = values.astype(np.float32)
    if len(bg) == 1 and background is None and not image and len(x) == 1:
        warnings.warn("the SHAP background was taken from the single row explained, so every "
                      "value is zero; pass background=<rows of training data>", stacklevel=3)
    return Attribution(
        values=values,
        method="shap",
        targets=targets,
        scores=scores,
        baseline_scores=baseline,
        completeness_gap=completeness_gap(values, scores, baseline),
        extra={
            "estimator": estimator,
            "groups": grouping.group_map,
            "group_values": group_values.astype(np.float32),
            "background_rows": len(bg),
            "model_rows": model_rows,
            "samples": samples,
        },
    )
