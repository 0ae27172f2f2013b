"""Causal fidelity: does removing (or adding) what an explanation calls important change
the model's output faster than removing (or adding) features at random?

:class:`Deletion` and :class:`Insertion` are thin variants of one :class:`CausalFidelity`
metric, as in Xplique.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from explain._backend import keras
from explain.attributions.base import (
    DEFAULT_BATCH_SIZE,
    ModelFunction,
    as_inputs,
    check_positive_int,
    resolve_targets,
)
from explain.metrics.base import Category, Direction, Metric, as_array

BASELINE_MODES = ("mean", "blur")


def _trapezoid(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    from scipy.integrate import trapezoid

    return trapezoid(y, x=x, axis=-1)


class CausalFidelity(Metric):
    """Deletion / insertion curve of the target score, its AUC, and the same for random
    feature orders.

    Features are ranked by attribution (largest first). *Deletion* starts from ``x`` and
    replaces the top-ranked features with the baseline; *insertion* starts from the
    baseline and puts the top-ranked features of ``x`` back. After each of ``steps``
    equal steps the model's target output is recorded, giving a curve over the fraction
    of features changed, ``0 .. 1``. The AUC is the trapezoid area under that curve
    (x axis in fractions, so the AUC is in units of the output). The deletion curve runs
    from ``f(x)`` to ``f(baseline)``, the insertion curve the other way.

    Images ``(N, H, W, C)`` are perturbed in square ``patch`` x ``patch`` cells, all
    channels together; a cell is ranked by the sum of its attributions (per-channel
    attributions and ``(N, H, W)`` maps such as Grad-CAM are both accepted). Other
    inputs are perturbed feature by feature.

    The same curve is computed for ``random_orders`` random orders (seeded) and
    averaged; the *gain* says how much better the explanation's order is than chance:
    ``random_auc - auc`` for deletion, ``auc - random_auc`` for insertion. The
    *normalized gain* divides the mean gain by the mean ``|f(x) - f(baseline)|``, the
    height the curve can travel, so it is scale-free (1 would be a perfect step).

    Score: the mean AUC over examples (deletion: lower is better; insertion: higher is
    better). Verdict: passes when ``normalized_gain > threshold`` (default 0.0: the
    explanation orders features better than chance on average). The detail also holds a
    one-sided Wilcoxon signed-rank p-value of the per-example gains.

    The definition matches Xplique's ``Deletion``/``Insertion`` (feature ranking,
    ``steps`` equal steps, trapezoid AUC over the steps, score ``f(x)[target]``), with
    patches for images, an explicit AUC x axis, and the random-order reference added.

    Parameters
    ----------
    model
        A Keras model with one input.
    inputs
        ``(N, ...)`` inputs the explanations are for.
    targets
        None (predicted class; output 0 for regression), an int, or ints ``(N,)``.
    steps
        Number of perturbation steps (capped at the number of features or patches).
    patch
        Image patch size: an int or ``(ph, pw)``; None picks the size of an 8 x 8 grid.
    baseline
        Value of a removed feature: a number, ``"mean"`` (per-feature mean of
        ``reference``), ``"blur"`` (Gaussian blur of the image, ``blur_sigma`` pixels),
        or an array of the input's shape without the batch axis.
    reference
        Reference data ``(M, ...)`` for ``baseline="mean"``.
    blur_sigma
        Blur width in pixels; None means ``max(H, W) / 16`` (at least 1).
    random_orders
        How many random orders to average for the reference curve (0 to skip it).
    seed
        Seed of the random orders.
    batch_size
        Rows per forward pass (perturbed copies of several examples share a batch).
    output, logits
        Which head to score and whether to score it pre-softmax (see ModelFunction).
    threshold
        Minimum normalized gain to pass (default 0.0).

    Ref. Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of
    Black-box Models", BMVC 2018.
    """

    category = Category.FAITHFULNESS
    default_threshold = 0.0
    mode: ClassVar[str] = ""

    def __init__(
        self,
        model: keras.Model,
        inputs: Any,
        targets: Any = None,
        *,
        steps: int = 10,
        patch: int | tuple[int, int] | None = None,
        baseline: float | str | np.ndarray = 0.0,
        reference: Any = None,
        blur_sigma: float | None = None,
        random_orders: int = 3,
        seed: int = 0,
        batch_size: int = 256,
        output: int | str | None = None,
        logits: bool = False,
        threshold: float | None = None,
    ):
        if self.mode not in ("deletion", "insertion"):
            raise TypeError("use Deletion or Insertion (CausalFidelity is their shared base)")
        super().__init__(threshold)
        self.mf = ModelFunction(model, output=output, logits=logits)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.inputs = as_inputs(model, inputs, name="inputs")
        self.targets = resolve_targets(self.mf, self.inputs, targets, min(self.batch_size,
                                                                          DEFAULT_BATCH_SIZE))
        self.random_orders = check_positive_int("random_orders", random_orders, minimum=0)
        self.seed = int(seed)
        self.is_image = self.inputs.ndim == 4
        self._setup_units(patch)
        self.steps = min(check_positive_int("steps", steps), self.n_units)
        self.baseline_spec = baseline if isinstance(baseline, str) else "array" if isinstance(
            baseline, np.ndarray) else float(baseline)
        self.baselines = self._make_baselines(baseline, reference, blur_sigma)

    # ------------------------------------------------------------------ setup

    def _setup_units(self, patch: int | tuple[int, int] | None) -> None:
        if not self.is_image:
            self.patch = None
            self.n_units = int(np.prod(self.inputs.shape[1:]))
            self.unit_of = None
            return
        h, w = self.inputs.shape[1:3]
        if patch is None:
            ph, pw = max(1, math.ceil(h / 8)), max(1, math.ceil(w / 8))
        elif isinstance(patch, (int, np.integer)) and not isinstance(patch, bool):
            ph = pw = check_positive_int("patch", patch)
        elif isinstance(patch, (tuple, list)) and len(patch) == 2:
            ph = check_positive_int("patch[0]", patch[0])
            pw = check_positive_int("patch[1]", patch[1])
        else:
            raise TypeError(f"patch must be an int, (ph, pw) or None; got {patch!r}")
        if ph > h or pw > w:
            raise ValueError(f"patch {ph}x{pw} is larger than the {h}x{w} images")
        self.patch = (ph, pw)
        n_cols = math.ceil(w / pw)
        rows = np.arange(h)[:, None] // ph
        cols = np.arange(w)[None, :] // pw
        # Unit (patch) index of every pixel; edge patches may be smaller.
        self.unit_of = (rows * n_cols + cols).astype(np.int64)
        self.n_units = int(math.ceil(h / ph) * n_cols)

    def _make_baselines(self, baseline: Any, reference: Any, blur_sigma: float | None
                        ) -> np.ndarray:
        x = self.inputs
        if isinstance(baseline, str):
            if baseline == "mean":
                if reference is None:
                    raise ValueError('baseline="mean" needs reference data (reference=...)')
                ref = np.asarray(reference, dtype=np.float32)
                if ref.ndim != x.ndim or ref.shape[1:] != x.shape[1:] or len(ref) == 0:
                    raise ValueError(
                        f"reference must have shape (M, {', '.join(map(str, x.shape[1:]))}), "
                        f"got {ref.shape}"
                    )
                return np.broadcast_to(ref.mean(axis=0), x.shape).astype(np.float32)
            if baseline == "blur":
                if not self.is_image:
                    raise ValueError('baseline="blur" is for images (N, H, W, C)')
                from scipy.ndimage import gaussian_filter

                sigma = (max(1.0, max(x.shape[1:3]) / 16) if blur_sigma is None
                         else float(blur_sigma))
                if not sigma > 0:
                    raise ValueError(f"blur_sigma must be > 0, got {blur_sigma!r}")
                # Blur within each image and channel, never across examples or channels.
                return gaussian_filter(x, sigma=(0, sigma, sigma, 0)).astype(np.float32)
            raise ValueError(
                f"baseline must be a number, an array, or one of {BASELINE_MODES}; "
                f"got {baseline!r}"
            )
        if isinstance(baseline, (int, float, np.number)) and not isinstance(baseline, bool):
            if not math.isfinite(float(baseline)):
                raise ValueError("baseline must be finite")
            return np.full(x.shape, float(baseline), dtype=np.float32)
        arr = np.asarray(baseline, dtype=np.float32)
        if arr.shape not in (x.shape[1:], x.shape):
            raise ValueError(
                f"baseline array must have shape {x.shape[1:]} or {x.shape}, got {arr.shape}"
            )
        return np.broadcast_to(arr, x.shape).astype(np.float32)

    # ------------------------------------------------------------------ ranking

    def unit_scores(self, explanations: Any) -> np.ndarray:
        """Attribution summed per feature (or per image patch): ``(N, n_units)``."""
        e = as_array(explanations)
        x = self.inputs
        if len(e) != len(x):
            raise ValueError(f"got {len(e)} explanations for {len(x)} inputs")
        if not self.is_image:
            if e.shape != x.shape:
                raise ValueError(f"explanations must have shape {x.shape}, got {e.shape}")
            return e.reshape(len(e), -1)
        if e.shape == x.shape:
            e = e.sum(axis=-1)
        elif e.shape != x.shape[:3]:
            raise ValueError(
                f"image explanations must have shape {x.shape} or {x.shape[:3]}, got {e.shape}"
            )
        flat = e.reshape(len(e), -1)
        ids = self.unit_of.ravel()
        out = np.zeros((len(e), self.n_units))
        for i in range(len(e)):
            out[i] = np.bincount(ids, weights=flat[i], minlength=self.n_units)
        return out

    # ------------------------------------------------------------------ curves

    def _counts(self) -> np.ndarray:
        return np.linspace(0, self.n_units, self.steps + 1).round().astype(np.int64)

    def curves(self, orders: np.ndarray) -> np.ndarray:
        """Target scores along the perturbation path of each order.

        Parameters
        ----------
        orders
            ``(N, O, n_units)`` unit indices, most important first, per example.

        Returns
        -------
        numpy.ndarray
            ``(N, O, steps + 1)`` float64 target scores.
        """
        x, b = self.inputs, self.baselines
        n, n_orders, _ = orders.shape
        counts = self._counts()
        # position[i, o, u]: the rank of unit u in order o of example i.
        position = np.empty_like(orders)
        np.put_along_axis(position, orders, np.arange(self.n_units)[None, None, :], axis=-1)
        rows_per_example = n_orders * len(counts)
        per_block = max(1, self.batch_size // rows_per_example)
        start, end = (x, b) if self.mode == "deletion" else (b, x)
        out = np.empty((n, n_orders, len(counts)))
        for lo in range(0, n, per_block):
            hi = min(n, lo + per_block)
            # switched[i, o, s, u]: unit u has been changed at step s.
            switched = position[lo:hi, :, None, :] < counts[None, None, :, None]
            if self.is_image:
                mask = switched[..., self.unit_of][..., None]  # (B, O, S+1, H, W, 1)
            else:
                mask = switched.reshape(switched.shape[:3] + x.shape[1:])
            s = start[lo:hi, None, None]
            rows = np.where(mask, end[lo:hi, None, None], s).astype(np.float32)
            rows = rows.reshape((-1,) + x.shape[1:])
            targets = np.repeat(self.targets[lo:hi], rows_per_example)
            scores = self.mf.target_scores(rows, targets, self.batch_size)
            out[lo:hi] = scores.reshape(hi - lo, n_orders, len(counts))
        return out

    def _compute(self, explanations: Any) -> tuple[float, dict[str, Any]]:
        units = self.unit_scores(explanations)
        n = len(units)
        # Stable sort on the negated scores: ties keep feature order, reproducibly.
        ranked = np.argsort(-units, axis=1, kind="stable")[:, None, :]
        rng = np.random.default_rng(self.seed)
        random = np.stack([
            np.stack([rng.permutation(self.n_units) for _ in range(self.random_orders)])
            for _ in range(n)
        ]) if self.random_orders else np.empty((n, 0, self.n_units), dtype=np.int64)
        curves = self.curves(np.concatenate([ranked, random], axis=1))
        fractions = self._counts() / self.n_units
        aucs = _trapezoid(curves, fractions)  # (N, O)
        auc = aucs[:, 0]
        detail: dict[str, Any] = {
            "mode": self.mode,
            "steps": self.steps,
            "n_features": self.n_units,
            "patch": list(self.patch) if self.patch else None,
            "baseline": self.baseline_spec,
            "fractions": fractions,
            "curve": curves[:, 0].mean(axis=0),
            "per_example_curves": curves[:, 0],
            "per_example_auc": auc,
            "mean_auc": float(auc.mean()),
            "targets": self.targets,
            "score_at_input": curves[:, 0, 0 if self.mode == "deletion" else -1],
            "score_at_baseline": curves[:, 0, -1 if self.mode == "deletion" else 0],
        }
        if self.random_orders:
            random_auc = aucs[:, 1:].mean(axis=1)
            gain = random_auc - auc if self.mode == "deletion" else auc - random_auc
            span = float(np.abs(detail["score_at_input"] - detail["score_at_baseline"]).mean())
            detail.update({
                "random_orders": self.random_orders,
                "random_curve": curves[:, 1:].mean(axis=(0, 1)),
                "random_auc": random_auc,
                "mean_random_auc": float(random_auc.mean()),
                "per_example_gain": gain,
                "gain": float(gain.mean()),
                "normalized_gain": float(gain.mean() / span) if span > 0 else float("nan"),
                "better_than_random_fraction": float((gain > 0).mean()),
                "wilcoxon_p": _wilcoxon_greater(gain),
            })
        return float(auc.mean()), detail

    def passes(self, score: float, detail: dict[str, Any] | None = None) -> bool:
        """Passes when the normalized gain over random orders exceeds the threshold."""
        if not detail or "normalized_gain" not in detail:
            return False
        gain = detail["normalized_gain"]
        return bool(math.isfinite(gain) and gain > self.threshold)


def _wilcoxon_greater(gain: np.ndarray) -> float | None:
    """One-sided p-value that the per-example gains are centred above zero."""
    from scipy.stats import wilcoxon

    if len(gain) < 2 or np.all(gain == 0):
        return None
    return float(wilcoxon(gain, alternative="greater").pvalue)


class Deletion(CausalFidelity):
    """Deletion AUC: the target score as top-ranked features are replaced by the
    baseline; lower is better. See :class:`CausalFidelity` for the definition and
    parameters; matches Xplique's ``Deletion``.

    Ref. Petsiuk, Das & Saenko, "RISE", BMVC 2018.
    """

    name = "deletion_auc"
    direction = Direction.LOWER
    mode = "deletion"


class Insertion(CausalFidelity):
    """Insertion AUC: the target score as top-ranked features are put back onto the
    baseline; higher is better. See :class:`CausalFidelity` for the definition and
    parameters; matches Xplique's ``Insertion``.

    Ref. Petsiuk, Das & Saenko, "RISE", BMVC 2018.
    """

    name = "insertion_auc"
    direction = Direction.HIGHER
    mode = "insertion"
