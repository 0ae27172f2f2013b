"""Saliency: the gradient of the target score with respect to the input.

With ``multiply_by_input=True`` it is gradient x input, which weighs sensitivity by how
much of each feature is present.
"""

from __future__ import annotations

import numpy as np

from explain.attributions.base import Attribution, ModelFunction, check_bool, gradient_fn
from explain.attributions.registry import register
from explain.budget import ONE_GRADIENT


@register(
    "saliency",
    summary="Gradient of the target score with respect to the input (optionally x input).",
    title="Saliency",
    global_priority={"tabular": 2},
    cheap=True,
    sanity_checks={"randomization", "stability"},
    cost=lambda options, inputs: ONE_GRADIENT,
)
def saliency(
    mf: ModelFunction,
    x: np.ndarray,
    targets: np.ndarray,
    *,
    batch_size: int,
    multiply_by_input: bool = False,
    absolute: bool = False,
) -> Attribution:
    """Vanilla gradient (or gradient x input) of ``f(x)[target]``.

    Parameters
    ----------
    mf
        The model as a function of its input.
    x
        float32 ``(N, ...)``, already validated.
    targets
        int ``(N,)``.
    batch_size
        Maximum rows per forward pass.
    multiply_by_input
        Return ``gradient * x`` instead of the gradient.
    absolute
        Return the absolute value (magnitude only), as in the original saliency maps.

    Returns
    -------
    Attribution
        ``values`` float32 ``x.shape``; ``scores`` ``f(x)[t]``.

    Ref. Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks", ICLR 2014
    workshop; gradient x input: Shrikumar et al., "Learning Important Features Through
    Propagating Activation Differences", ICML 2017.
    """
    multiply_by_input = check_bool("multiply_by_input", multiply_by_input)
    absolute = check_bool("absolute", absolute)
    grads, scores = gradient_fn(mf).batched(x, targets, batch_size)
    values = grads * x if multiply_by_input else grads
    if absolute:
        values = np.abs(values)
    return Attribution(values=values.astype(np.float32), method="saliency", targets=targets,
                       scores=scores)
