"""Walking a Keras model's layers, into nested sub-models: the one walker behind the
model summary and Grad-CAM's layer choice (:mod:`explain.modelio`), Grad-CAM itself
(:mod:`explain.attributions.grad_cam`), the intake's layer-name check and the
randomization check's weighted layers (:mod:`explain.metrics.sanity`).

TensorFlow is imported on first use, not on import (the intake reads this module before
it knows a file is worth loading).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from explain._lazytf import keras

__all__ = ["is_model", "layer_chains", "layer_path"]


def is_model(layer: Any) -> bool:
    """A Keras model (functional, Sequential or subclassed) nested as a layer."""
    return isinstance(layer, keras.Model)


def layer_chains(model: Any, descend: Callable[[Any], bool] = is_model,
                 ) -> Iterator[tuple[Any, ...]]:
    """Every layer of ``model`` in its ``layers`` order, as the chain
    ``(outer, ..., layer)`` from a top-level layer down to it.

    A layer for which ``descend(layer)`` holds is yielded itself, then its own layers
    (depth first). ``len(chain) - 1`` is the nesting depth and :func:`layer_path` the name
    Grad-CAM's ``layer`` option and the model summary use.

    Parameters
    ----------
    model
        A Keras model (anything without ``layers`` has none).
    descend
        Which layers to walk into (default: nested Keras models).

    Returns
    -------
    Iterator of tuple
        Chains of layers, outermost first.
    """
    def walk(parent: Any, prefix: tuple) -> Iterator[tuple[Any, ...]]:
        for layer in getattr(parent, "layers", None) or []:
            chain = (*prefix, layer)
            yield chain
            if descend(layer):
                yield from walk(layer, chain)

    return walk(model, ())


def layer_path(chain: tuple[Any, ...]) -> str:
    """``"outer/inner"``: a chain's layer names joined by ``/``."""
    # Keras forbids "/" in layer names, so it is a safe separator for nested paths.
    return "/".join(layer.name for layer in chain)
