"""Model-parameter randomization sanity check: an explanation that survives the
destruction of the model's weights is not explaining the model."""

from __future__ import annotations

from typing import Any

import numpy as np

from explain._backend import keras
from explain.attributions.base import (
    DEFAULT_BATCH_SIZE,
    ModelFunction,
    as_inputs,
    resolve_targets,
)
from explain.layers import is_model, layer_chains
from explain.metrics.base import (
    Category,
    Direction,
    Explainer,
    Metric,
    as_array,
    check_explainer,
    is_spatial,
    run_explainer,
    safe_spearman,
)

LAYER_MODES = ("cascade", "independent")


def weighted_leaf_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Layers that hold weights, nested models flattened, input to output order."""
    return [chain[-1] for chain in layer_chains(model)
            if not is_model(chain[-1]) and chain[-1].weights]


def clone_with_weights(model: keras.Model) -> keras.Model:
    """An independent copy of ``model`` (same architecture and weights, new variables)."""
    try:
        clone = keras.models.clone_model(model)
    except Exception as exc:  # subclassed models cannot be cloned from their config
        raise TypeError(
            "the randomization check needs a model that keras.models.clone_model can copy "
            f"(functional or Sequential): {exc}"
        ) from None
    clone.set_weights(model.get_weights())
    return clone


def _shuffle_layer(layer: keras.layers.Layer, rng: np.random.Generator) -> None:
    # Every entry of every weight tensor is permuted: the values keep their distribution
    # (so BatchNorm variances stay positive) but lose their learned arrangement.
    layer.set_weights([
        rng.permutation(w.ravel()).reshape(w.shape) for w in layer.get_weights()
    ])


def _degenerate(maps: np.ndarray) -> np.ndarray:
    from explain.findings import degenerate_examples

    return degenerate_examples(maps)


class ModelParameterRandomization(Metric):
    """Similarity of attributions before and after randomizing the model's weights.

    The model is cloned (the caller's model is never modified); the clone's weighted
    layers are randomized starting from the output: with ``layers="cascade"`` each step
    randomizes one more layer on top of the previous ones, with ``"independent"`` each
    step randomizes one layer alone. Randomizing a layer permutes every entry of each of
    its weight tensors (seeded). ``max_layers`` limits the per-layer steps to the top
    layers; a final step ``"all"`` always randomizes every weighted layer (nested models
    included). After each step attributions are recomputed with the same method and
    options, for the same targets, and compared per example with the original ones by
    Spearman rank correlation. An original map that is zero or constant counts as 1.0
    (fully similar): it explains nothing, so it cannot pass.

    Two correlations are computed per example: on raw values and on absolute values.
    The **score is the mean absolute-value correlation after full randomization** (the
    ``"all"`` step): a sign flip alone does not count as decorrelation, so this is the
    conservative choice. Grad-CAM maps are compared on absolute values only. The raw
    correlations and the per-layer curve are in the detail.

    A trustworthy method decorrelates, so lower is better. Verdict: passes when
    ``score < threshold`` (default 0.5: after full randomization, less than half of the
    rank structure remains).

    The definition matches Quantus ``ModelParameterRandomisation`` (top-down cascading
    randomization, Spearman similarity per layer), except that Quantus permutes a
    weight tensor along its first axis only while this check permutes all entries, so a
    3x3 convolution kernel is truly scrambled.

    Parameters
    ----------
    model
        A functional or Sequential Keras model with one input.
    inputs
        ``(N, ...)`` inputs to explain.
    targets
        None (predicted class of the original model), an int, or ints ``(N,)``; the same
        targets are explained on every randomized model.
    method
        A registered method name, or a callable ``explainer(model, x, targets)``
        returning attributions (array or Attribution).
    method_options
        Options for a named method (``steps``, ``batch_size``, ...).
    layers
        ``"cascade"`` or ``"independent"``.
    max_layers
        How many top weighted layers get their own step (None: all of them).
    seed
        Seed of the weight permutations.
    threshold
        Pass when the score is below it (default 0.5).

    Ref. Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018.
    """

    name = "model_randomization"
    category = Category.RANDOMISATION
    direction = Direction.LOWER
    default_threshold = 0.5

    def __init__(
        self,
        model: keras.Model,
        inputs: Any,
        targets: Any = None,
        *,
        method: Explainer = "saliency",
        method_options: dict[str, Any] | None = None,
        layers: str = "cascade",
        max_layers: int | None = None,
        seed: int = 0,
        threshold: float | None = None,
    ):
        super().__init__(threshold)
        if not isinstance(model, keras.Model):
            raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
        if layers not in LAYER_MODES:
            raise ValueError(f"layers must be one of {LAYER_MODES}, got {layers!r}")
        if max_layers is not None and (isinstance(max_layers, bool)
                                       or not isinstance(max_layers, (int, np.integer))
                                       or max_layers < 0):
            raise ValueError(f"max_layers must be None or an int >= 0, got {max_layers!r}")
        self.model = model
        self.method = method
        self.method_options = check_explainer(method, method_options)
        self.layers = layers
        self.max_layers = max_layers
        self.seed = int(seed)
        self.inputs = as_inputs(model, inputs, name="inputs")
        opts = self.method_options
        mf = ModelFunction(model, output=opts.get("output"), logits=bool(opts.get("logits")))
        self.targets = resolve_targets(mf, self.inputs, targets,
                                       opts.get("batch_size", DEFAULT_BATCH_SIZE))

    def _explain(self, model: keras.Model) -> np.ndarray:
        return run_explainer(self.method, model, self.inputs, self.targets,
                             self.method_options)

    def _compare(self, original: np.ndarray, randomized: np.ndarray, spatial: bool
                 ) -> dict[str, np.ndarray | None]:
        if randomized.shape != original.shape:
            raise ValueError(
                f"attributions of the randomized model have shape {randomized.shape}, "
                f"the original ones {original.shape}"
            )
        abs_corr = np.array([safe_spearman(np.abs(o), np.abs(r))
                             for o, r in zip(original, randomized, strict=True)])
        raw_corr = None if spatial else np.array([
            safe_spearman(o, r) for o, r in zip(original, randomized, strict=True)])
        # A zero or constant original map ranks nothing, so it cannot show that it depends
        # on the model: it counts as fully similar (1.0), a failure, never as the 0.0 a
        # rank correlation with a constant gives.
        flat = _degenerate(original)
        abs_corr[flat] = 1.0
        if raw_corr is not None:
            raw_corr[flat] = 1.0
        return {"abs": abs_corr, "raw": raw_corr}

    def _compute(self, explanations: Any) -> tuple[float, dict[str, Any]]:
        original = (self._explain(self.model) if explanations is None
                    else as_array(explanations))
        if len(original) != len(self.inputs):
            raise ValueError(f"got {len(original)} explanations for {len(self.inputs)} inputs")
        spatial = is_spatial(self.method, original, self.inputs)
        clone = clone_with_weights(self.model)
        leaves = weighted_leaf_layers(clone)
        if not leaves:
            raise ValueError("the model has no weights to randomize")
        top_down = leaves[::-1]
        n_steps = len(top_down) if self.max_layers is None else min(self.max_layers,
                                                                   len(top_down))
        saved = {id(layer): layer.get_weights() for layer in leaves}
        rng = np.random.default_rng(self.seed)
        # Each layer gets one fixed permutation, reused by every step that randomizes it,
        # so cascade and independent steps are comparable.
        layer_seeds = {id(layer): int(s) for layer, s in
                       zip(leaves, rng.integers(0, 2**31 - 1, size=len(leaves)), strict=True)}

        def randomize(layer: keras.layers.Layer) -> None:
            _shuffle_layer(layer, np.random.default_rng(layer_seeds[id(layer)]))

        steps: list[dict[str, Any]] = []
        for k, layer in enumerate(top_down[:n_steps]):
            if self.layers == "independent" and k > 0:
                top_down[k - 1].set_weights(saved[id(top_down[k - 1])])
            randomize(layer)
            steps.append({"layer": layer.name, "randomized_layers": k + 1 if
                          self.layers == "cascade" else 1,
                          **self._compare(original, self._explain(clone), spatial)})
        # The cascade's last step already randomized everything when it reached the bottom.
        if not (self.layers == "cascade" and n_steps == len(top_down)):
            for layer in leaves:
                layer.set_weights(saved[id(layer)])
                randomize(layer)
            steps.append({"layer": "all", "randomized_layers": len(leaves),
                          **self._compare(original, self._explain(clone), spatial)})
        final = steps[-1]
        score = float(final["abs"].mean())
        detail = {
            "method": self.method if isinstance(self.method, str) else getattr(
                self.method, "__name__", type(self.method).__name__),
            "layers": self.layers,
            "score_uses": "abs",
            "n_weighted_layers": len(leaves),
            "per_example_abs": final["abs"],
            "per_example_raw": final["raw"],
            "mean_raw": None if final["raw"] is None else float(final["raw"].mean()),
            "curve": [{
                "layer": s["layer"],
                "randomized_layers": s["randomized_layers"],
                "spearman_abs": float(s["abs"].mean()),
                "spearman_raw": None if s["raw"] is None else float(s["raw"].mean()),
            } for s in steps],
        }
        return score, detail
