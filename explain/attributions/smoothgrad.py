"""SmoothGrad: the gradient averaged over noisy copies of the input.

Noise is drawn per row from a generator seeded by ``(seed, row index, sample index)``, so a
row's result depends only on that row and the seed, never on ``batch_size`` or on which
other rows were passed. The noisy copies form one stream evaluated in chunks of at most
``batch_size`` rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from explain.attributions.base import (
    Attribution,
    ModelFunction,
    check_bool,
    check_positive_int,
    gradient_fn,
    stream_chunks,
)
from explain.attributions.registry import register
from explain.budget import MethodWork, WorkInputs, option_count
from explain.errors import InputError, InputTypeError


def noise_scale(x: np.ndarray, noise: float) -> np.ndarray:
    """Per-row noise standard deviation: ``noise * (max(x_i) - min(x_i))``, float32 ``(N,)``."""
    flat = x.reshape(len(x), -1)
    return (noise * (flat.max(axis=1) - flat.min(axis=1))).astype(np.float32)


def noisy_rows(x: np.ndarray, sigma: np.ndarray, rows: np.ndarray, samples: np.ndarray,
               seed: int) -> np.ndarray:
    """Noisy copy ``samples[k]`` of row ``rows[k]`` for every k, float32 ``(len(rows), ...)``."""
    out = x[rows].copy()
    for k, (row, sample) in enumerate(zip(rows, samples, strict=True)):
        rng = np.random.default_rng([seed, int(row), int(sample)])
        out[k] += (sigma[row] * rng.standard_normal(x.shape[1:])).astype(np.float32)
    return out


def _cost(options: Mapping[str, Any], inputs: WorkInputs) -> MethodWork:
    """A gradient per noisy copy, and the row's own forward pass."""
    return MethodWork(evaluations=option_count(options, "samples", 25) + 1, gradient=True)


@register(
    "smoothgrad",
    summary="Gradients averaged over Gaussian-noised copies of the input.",
    title="SmoothGrad",
    global_priority={"tabular": 1},
    cheap=True,
    sanity_checks={"randomization", "stability"},
    audit_options=lambda ctx: {"seed": ctx.config.seed},
    cost=_cost,
)
def smoothgrad(
    mf: ModelFunction,
    x: np.ndarray,
    targets: np.ndarray,
    *,
    batch_size: int,
    noise: float = 0.1,
    samples: int = 25,
    seed: int = 0,
    multiply_by_input: bool = False,
) -> Attribution:
    """Mean gradient of ``f(x + e)[target]`` over ``samples`` draws of Gaussian noise ``e``.

    Parameters
    ----------
    mf
        The model as a function of its input.
    x
        float32 ``(N, ...)``, already validated.
    targets
        int ``(N,)``.
    batch_size
        Maximum rows per forward pass, noisy copies included.
    noise
        Noise standard deviation as a fraction of each row's value range
        (``max - min``); 0 gives the plain gradient.
    samples
        Noisy copies per row.
    seed
        Seed of the noise; the same seed gives the same result.
    multiply_by_input
        Multiply the averaged gradient by the (noise-free) input.

    Returns
    -------
    Attribution
        ``values`` float32 ``x.shape``; ``scores`` ``f(x)[t]`` on the noise-free input.

    Ref. Smilkov, Thorat, Kim, Viegas & Wattenberg, "SmoothGrad: removing noise by adding
    noise", ICML 2017 workshop on visualization for deep learning.
    """
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"noise must be a number >= 0 (a fraction of the input range), got {noise!r}")
    if not np.isfinite(noise) or noise < 0:
        raise InputError(f"noise must be a finite number >= 0, got {noise}")
    samples = check_positive_int("samples", samples)
    seed = check_positive_int("seed", seed, minimum=0)
    multiply_by_input = check_bool("multiply_by_input", multiply_by_input)

    sigma = noise_scale(x, float(noise))
    grad = gradient_fn(mf)
    acc = np.zeros(x.shape, np.float64)
    for rows, draws in stream_chunks(len(x), samples, batch_size):
        g, _ = grad(noisy_rows(x, sigma, rows, draws, seed), targets[rows])
        g = g.numpy().astype(np.float64)
        # Rows in a chunk are sorted: sum each row's run of samples in stream order.
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        acc[rows[starts]] += np.add.reduceat(g, starts, axis=0)
    values = acc / samples
    if multiply_by_input:
        values = values * x
    return Attribution(values=values.astype(np.float32), method="smoothgrad", targets=targets,
                       scores=mf.target_scores(x, targets, batch_size))
