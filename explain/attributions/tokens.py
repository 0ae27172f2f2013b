"""Attributions for text models: one score per token, ``(N, T)``.

A text model takes token ids ``(N, T)`` into an ``Embedding`` (or raw strings into a
``TextVectorization`` layer that feeds one). No gradient flows through integer ids, so
the gradient methods work on the embedding output instead and sum over the embedding
axis:

- ``integrated_gradients``: the straight path from a baseline embedding sequence to the
  input's, with the same quadrature and completeness gap as for any input. The baseline
  is the padding token's embedding at every position (``baseline="padding"``, the
  default), the zero vector at the real tokens (``"zeros"``), or the embedding of any
  token id (an int).
- ``saliency`` and ``smoothgrad``: gradient x (embedding - padding embedding), summed
  over the embedding axis (a plain gradient summed over the embedding axis has no
  meaning: its sign depends on the embedding basis). SmoothGrad adds its noise to the
  embeddings only.

The model-agnostic methods replace tokens by a mask id (``mask_id``, the padding id by
default): ``shap`` treats each real token as a player (exact Shapley values up to
``exact_max`` real tokens, antithetic permutation sampling beyond), ``occlusion`` masks
windows of ``window`` tokens. ``grad_cam`` runs on the last Conv1D or recurrent layer
with a time axis (see :mod:`explain.attributions.sequences`).

Padding positions (id 0, the ``Embedding``/``TextVectorization`` convention) get exactly
zero from every method.

How the embedding output is fed: while the model is traced, the ``Embedding`` layer's
``call`` returns the given embeddings instead of looking the ids up. The rest of the
model runs as Keras built it, so the padding mask (``mask_zero=True``), computed from the
ids, still reaches LSTM/GRU and pooling layers, and nested or functional models need no
surgery.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from explain._backend import keras, tf
from explain.attributions import _coalitions as co
from explain.attributions.base import (
    DEFAULT_BATCH_SIZE,
    Attribution,
    ModelFunction,
    as_inputs,
    check_bool,
    check_positive_int,
    completeness_gap,
    gather_targets,
    gradient_fn,
    resolve_targets_with_predictions,
    stream_chunks,
)
from explain.errors import InputError, InputTypeError

PAD_ID = 0
#: The token SHAP estimator enumerates every coalition up to this many real tokens.
EXACT_MAX = 10
#: Permutation pairs per row for token SHAP beyond ``EXACT_MAX`` real tokens.
DEFAULT_PERMUTATION_PAIRS = 64

#: Options each method accepts on a text model (besides batch_size, output, logits).
TOKEN_OPTIONS: dict[str, dict[str, Any]] = {
    "integrated_gradients": {"steps": 32, "baseline": "padding", "rule": "gausslegendre"},
    "saliency": {"absolute": False, "multiply_by_input": True},
    "smoothgrad": {"noise": 0.1, "samples": 25, "seed": 0, "multiply_by_input": True},
    "shap": {"estimator": "auto", "samples": None, "seed": 0, "mask_id": None,
             "exact_max": EXACT_MAX, "background": None},
    "occlusion": {"window": 1, "mask_id": None},
    "grad_cam": {"layer": None},
}


# --------------------------------------------------------------------------- the model


@dataclass
class TokenModel:
    """A text model seen from its token ids.

    Attributes
    ----------
    model
        The model as given (it may take strings).
    ids_model
        The model from token ids on (``model`` itself unless it holds a vectorizer).
    embedding
        The ``Embedding`` layer the ids feed.
    vectorizer
        The ``TextVectorization`` layer on the input, or None.
    length, dim, vocab_size
        Tokens per text, embedding width, vocabulary size.
    """

    model: Any
    ids_model: Any
    embedding: Any
    vectorizer: Any
    length: int
    dim: int
    vocab_size: int
    pad_id: int = PAD_ID

    def vocabulary(self) -> list[str] | None:
        """The vectorizer's vocabulary (index = token id), or None."""
        if self.vectorizer is None:
            return None
        return [str(t) for t in self.vectorizer.get_vocabulary()]

    def to_ids(self, x: Any, name: str = "x") -> np.ndarray:
        """``x`` as int64 token ids ``(N, T)``: strings go through the vectorizer.

        Raises
        ------
        TypeError, ValueError
            Strings for a model without a vectorizer; ids out of the vocabulary; a shape
            other than ``(N, T)``.
        """
        arr = np.asarray(x) if not isinstance(x, tf.Tensor) else x.numpy()
        if arr.dtype.kind in ("U", "S", "O"):
            if self.vectorizer is None:
                raise InputTypeError(
                    f"{name} holds strings but the model takes token ids and no vocabulary "
                    "was given; pass token ids, or a vocabulary to tokenize with")
            if arr.ndim != 1:
                raise InputError(f"{name} as text must be a 1-D array of strings, got shape "
                                 f"{arr.shape}")
            if len(arr) == 0:
                raise InputError(f"{name} is empty: it has no rows")
            arr = np.asarray(self.vectorizer(tf.constant(arr.astype(str))))
        arr = as_inputs(self.ids_model, arr, name=name)
        if np.any(arr != np.round(arr)) or arr.min() < 0 or arr.max() >= self.vocab_size:
            raise InputError(f"{name} must hold integer token ids in [0, "
                             f"{self.vocab_size - 1}] for this model's vocabulary")
        return arr.astype(np.int64)


_CACHE: dict[int, tuple[Any, TokenModel | None]] = {}
_CACHE_LOCK = threading.Lock()


def _consumers(model: Any, tensor: Any) -> list[Any]:
    found = []
    for layer in getattr(model, "layers", []):
        try:
            inp = layer.input
        except Exception:  # shared layers, several inputs
            continue
        ins = inp if isinstance(inp, (list, tuple)) else [inp]
        if any(i is tensor for i in ins):
            found.append(layer)
    return found


def _ids_model(model: Any, vectorizer: Any, length: int) -> Any:
    """The part of ``model`` after its vectorizer, taking int ids ``(N, length)``."""
    if isinstance(model, keras.Sequential):
        rest = [la for la in model.layers if la is not vectorizer]
        return keras.Sequential([keras.Input((length,), dtype="int64"), *rest])
    # A functional model: Keras cannot cut a graph at an inner tensor, so the layers after
    # the vectorizer are applied again to a new ids input; that needs them to be a chain.
    ids_in = keras.Input((length,), dtype="int64")
    h = ids_in
    current = vectorizer
    while True:
        nxt = _consumers(model, current.output)
        if not nxt:
            break
        if len(nxt) != 1:
            raise InputError("the layers after the TextVectorization layer branch; xaudit "
                             "takes string models whose layers after it form a chain")
        current = nxt[0]
        h = current(h)
    if not any(current.output is o for o in model.outputs) or len(model.outputs) != 1:
        raise InputError("the layers after the TextVectorization layer do not lead to the "
                         "model's output in a chain")
    return keras.Model(ids_in, h)


def token_model(model: Any) -> TokenModel | None:
    """The :class:`TokenModel` of ``model``, or None when it is not a text model (its one
    input does not feed an ``Embedding``, directly or through a ``TextVectorization``)."""
    attached = getattr(model, "_xaudit_token_model", None)
    if attached is not None:  # the ids model made for a string model
        return attached
    key = id(model)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit[0] is model:
            return hit[1]
    tm = _detect(model)
    with _CACHE_LOCK:
        _CACHE[key] = (model, tm)
        while len(_CACHE) > 16:
            _CACHE.pop(next(iter(_CACHE)))
    return tm


def text_layers(model: Any) -> tuple[Any, Any]:
    """``(vectorizer, embedding)``: the ``TextVectorization`` layer on the model's single
    input (or None) and the ``Embedding`` layer that the input (or the vectorizer) feeds
    (or None)."""
    inputs = getattr(model, "inputs", None)
    if not isinstance(model, keras.Model) or not inputs or len(inputs) != 1:
        return None, None
    if isinstance(model, keras.Sequential):
        # a loaded Sequential rebuilds its graph: follow the layer order, not the tensors
        def after(layer):
            layers = model.layers
            i = 0 if layer is None else layers.index(layer) + 1
            return [layers[i]] if i < len(layers) else []
    else:
        def after(layer):
            return _consumers(model, inputs[0] if layer is None else layer.output)
    consumers = after(None)
    vectorizer = None
    if len(consumers) == 1 and isinstance(consumers[0], keras.layers.TextVectorization):
        vectorizer = consumers[0]
        consumers = after(vectorizer)
    if len(consumers) != 1 or not isinstance(consumers[0], keras.layers.Embedding):
        return vectorizer, None
    return vectorizer, consumers[0]


def _detect(model: Any) -> TokenModel | None:
    vectorizer, emb = text_layers(model)
    if emb is None:
        return None
    first = model.inputs[0]
    if vectorizer is not None:
        length = getattr(vectorizer, "_output_sequence_length", None)
        if not length:
            raise InputError("the TextVectorization layer has no output_sequence_length; "
                             "xaudit needs a fixed number of tokens per text")
        ids_model = _ids_model(model, vectorizer, int(length))
        vocab = int(vectorizer.vocabulary_size())
    else:
        shape = tuple(first.shape)
        if len(shape) != 2 or shape[1] is None:
            return None
        length, ids_model, vocab = int(shape[1]), model, int(emb.input_dim)
    tm = TokenModel(model=model, ids_model=ids_model, embedding=emb,
                    vectorizer=vectorizer, length=int(length), dim=int(emb.output_dim),
                    vocab_size=vocab)
    if ids_model is not model:
        # Its layers are shared with the string model, so it cannot be read like a fresh
        # graph (a shared layer's input is the first graph's): it carries its description.
        ids_model._xaudit_token_model = tm
    return tm


# --------------------------------------------------------------------------- embedding space


class EmbeddingFunction(ModelFunction):
    """The model as a function of its embedding output.

    Its input is ``(N, T, D + 1)``: the embeddings, and the token ids in the last channel
    (they decide the padding mask; every path below keeps them fixed, so their gradient
    is never used).
    """

    space = "embedding"

    def __init__(self, mf: ModelFunction, tm: TokenModel):
        self.__dict__.update(mf.__dict__)
        self.embedding = tm.embedding
        self.input_shape = (None, tm.length, tm.dim + 1)

    def __call__(self, z, training: bool = False) -> tf.Tensor:
        z = tf.convert_to_tensor(z)
        return self.forward(z[..., :-1], tf.round(z[..., -1]), training=training)

    def forward(self, emb, ids, training: bool = False) -> tf.Tensor:
        """The model's outputs for embeddings ``emb`` ``(N, T, D)`` of tokens ``ids``."""
        ids = tf.cast(ids, "int32")
        emb = tf.cast(emb, self.embedding.compute_dtype)
        layer = self.embedding

        def fed(inputs, *args, **kwargs):
            return emb

        layer.call = fed  # read once, while the graph is traced
        try:
            return ModelFunction.__call__(self, ids, training=training)
        finally:
            del layer.call


def embedding_matrix(tm: TokenModel) -> np.ndarray:
    return np.asarray(tm.embedding.embeddings.numpy(), dtype=np.float32)


def _augmented(emb: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return np.concatenate([emb, ids[..., None].astype(np.float32)], axis=-1)


def _token_baseline(spec: Any, ids: np.ndarray, table: np.ndarray, pad_id: int) -> np.ndarray:
    """Baseline embeddings ``(N, T, D)``: padding stays the padding embedding always."""
    pad = table[pad_id]
    if isinstance(spec, str) and spec == "padding":
        base = np.broadcast_to(pad, (*ids.shape, table.shape[1])).copy()
    elif isinstance(spec, str) and spec == "zeros":
        base = np.zeros((*ids.shape, table.shape[1]), np.float32)
    elif isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if not 0 <= int(spec) < len(table):
            raise InputError(f"baseline token id must be in [0, {len(table) - 1}], got {spec}")
        base = np.broadcast_to(table[int(spec)], (*ids.shape, table.shape[1])).copy()
    else:
        raise InputError("on a text model, baseline must be 'padding', 'zeros' or a token id "
                         f"(whose embedding fills every position); got {spec!r:.60}")
    base[ids == pad_id] = pad
    return base.astype(np.float32)


def _sum_tokens(values: np.ndarray, ids: np.ndarray, pad_id: int) -> np.ndarray:
    out = values[..., :-1].astype(np.float64).sum(axis=-1)
    out[ids == pad_id] = 0.0
    return out.astype(np.float32)


class _TokenIGChunk:
    """One chunk of the (row, step) stream of token IG as one compiled call: gather the
    path points, forward + gradient, and each row's weighted sum of gradients.

    Recurrent layers run their own ``while`` loop; inside the one-graph IG loop used for
    other inputs, their gradients cost about twice the plain forward + backward (measured
    on Embedding + LSTM), so token IG walks its chunks from Python, one call each, as
    the plain cost does.
    """

    def __init__(self, ef: EmbeddingFunction):
        self.mf = ef

        # The ids travel beside the embeddings rather than as their last channel: the
        # gradient of a slice of the input costs a copy of it per pass.
        @tf.function(reduce_retracing=True)
        def run(z, base, ids, targets, alphas, weights, rows, steps, first, count):
            b = tf.gather(base, rows)
            points = b + tf.reshape(tf.gather(alphas, steps), (-1, 1, 1)) * (
                tf.gather(z, rows) - b)
            with tf.GradientTape() as tape:
                tape.watch(points)
                out = gather_targets(ef.forward(points, tf.gather(ids, rows)),
                                     tf.gather(targets, rows))
            g = tape.gradient(out, points)
            g = g * tf.reshape(tf.gather(weights, steps), (-1, 1, 1))
            return tf.math.unsorted_segment_sum(g, rows - first, count), out

        self.run = run


def _ig(tm, mf, ids, targets, batch_size, *, steps, baseline, rule):
    from explain.attributions.base import compiled
    from explain.attributions.integrated_gradients import rule_points

    steps = check_positive_int("steps", steps)
    alphas, weights = rule_points(rule, steps)
    # f(baseline) and f(x) ride along as two more points of weight 0 (alpha 0 and 1), so
    # they cost a few more rows of the same passes rather than passes of their own.
    known = mf.known_predictions(mf._ids_float)
    extra = [0.0] if known is not None else [0.0, 1.0]
    path_alphas = np.concatenate([alphas, extra]).astype(np.float32)
    path_weights = np.concatenate([weights, np.zeros(len(extra))]).astype(np.float32)
    per_row = len(path_alphas)
    table = embedding_matrix(tm)
    ef = EmbeddingFunction(mf, tm)
    emb = table[ids]
    base_emb = _token_baseline(baseline, ids, table, tm.pad_id)
    chunk = compiled(ef, "token_integrated_gradients", _TokenIGChunk)
    z_t, base_t = tf.constant(emb), tf.constant(base_emb)
    ids_t = tf.constant(ids, tf.int32)
    targets_t = tf.constant(targets, tf.int32)
    alphas_t = tf.constant(path_alphas, tf.float32)
    weights_t = tf.constant(path_weights, tf.float32)
    sums = np.zeros(emb.shape, np.float64)
    ends = np.zeros((len(ids), len(extra)))
    for rows, step in stream_chunks(len(ids), per_row, batch_size):
        first, last = int(rows[0]), int(rows[-1])
        part = chunk.run(z_t, base_t, ids_t, targets_t, alphas_t, weights_t,
                         tf.constant(rows, tf.int32), tf.constant(step, tf.int32),
                         tf.constant(first, tf.int32), tf.constant(last - first + 1, tf.int32))
        part, out = part
        # chunks are added in float64 so the result does not depend on where they were cut
        sums[first:last + 1] += part.numpy()
        at_end = step >= steps
        if at_end.any():
            ends[rows[at_end], step[at_end] - steps] = out.numpy()[at_end]
    values = (sums * (emb - base_emb)).sum(axis=-1)
    values[ids == tm.pad_id] = 0.0
    values = values.astype(np.float32)
    if known is not None:
        scores = known[np.arange(len(ids)), targets].astype(np.float32)
    else:
        scores = ends[:, 1].astype(np.float32)
    baseline_scores = ends[:, 0].astype(np.float32)
    return Attribution(values=values, method="integrated_gradients", targets=targets,
                       scores=scores, baseline_scores=baseline_scores,
                       completeness_gap=completeness_gap(values, scores, baseline_scores),
                       extra={"alphas": alphas, "weights": weights})


def _gradient_x_input(tm, mf, ids, targets, batch_size, *, noise=0.0, samples=1, seed=0,
                      absolute=False, multiply_by_input=True, method="saliency"):
    absolute = check_bool("absolute", absolute)
    multiply_by_input = check_bool("multiply_by_input", multiply_by_input)
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"noise must be a number >= 0, got {noise!r}")
    if not np.isfinite(noise) or noise < 0:
        raise InputError(f"noise must be a finite number >= 0, got {noise}")
    samples = check_positive_int("samples", samples)
    seed = check_positive_int("seed", seed, minimum=0)
    table = embedding_matrix(tm)
    emb = table[ids]
    ef = EmbeddingFunction(mf, tm)
    grad = gradient_fn(ef)
    z = _augmented(emb, ids)
    # SmoothGrad noise: a fraction of each row's embedding value range, embeddings only.
    sigma = noise * (emb.reshape(len(emb), -1).max(axis=1) - emb.reshape(len(emb), -1).min(axis=1))
    acc = np.zeros(emb.shape, np.float64)
    scores = np.zeros(len(ids), np.float32)
    for rows, draws in stream_chunks(len(ids), samples, batch_size):
        batch = z[rows].copy()
        if noise > 0:
            # draw d of every row uses the same noise, so a row's result does not depend
            # on which other rows were passed with it
            eps = np.stack([np.random.default_rng([seed, int(d)]).standard_normal(
                emb.shape[1:]) for d in draws])
            batch[..., :-1] += (eps * sigma[rows, None, None]).astype(np.float32)
        g, s = grad(batch, targets[rows])
        np.add.at(acc, rows, g.numpy()[..., :-1].astype(np.float64))
        if noise == 0:
            scores[rows] = s.numpy()
    acc /= samples
    if multiply_by_input:
        acc = acc * (emb - table[tm.pad_id])
    values = acc.sum(axis=-1)
    if absolute:
        values = np.abs(values)
    values[ids == tm.pad_id] = 0.0
    if noise > 0:
        scores = mf.target_scores(ids.astype(np.float32), targets, batch_size)
    return Attribution(values=values.astype(np.float32), method=method, targets=targets,
                       scores=scores)


def _saliency(tm, mf, ids, targets, batch_size, *, absolute, multiply_by_input):
    return _gradient_x_input(tm, mf, ids, targets, batch_size, absolute=absolute,
                             multiply_by_input=multiply_by_input)


def _smoothgrad(tm, mf, ids, targets, batch_size, *, noise, samples, seed, multiply_by_input):
    return _gradient_x_input(tm, mf, ids, targets, batch_size, noise=noise, samples=samples,
                             seed=seed, multiply_by_input=multiply_by_input,
                             method="smoothgrad")


# --------------------------------------------------------------------------- masking methods


def _mask_id(tm: TokenModel, mask_id: Any, mf: ModelFunction | None = None) -> int:
    """The id that replaces a masked token: ``mask_id``, or by default the padding id,
    unless the model's output on an all-padding text is not finite (average pooling over
    a fully masked text divides by zero); then the out-of-vocabulary id 1."""
    if mask_id is None:
        if mf is not None:
            empty = np.full((1, tm.length), tm.pad_id, np.float32)
            if not np.all(np.isfinite(mf.predict(empty, 1))) and tm.vocab_size > 1:
                return 1
        return tm.pad_id
    if isinstance(mask_id, bool) or not isinstance(mask_id, (int, np.integer)):
        raise InputTypeError(f"mask_id must be a token id (int), got {mask_id!r}")
    if not 0 <= int(mask_id) < tm.vocab_size:
        raise InputError(f"mask_id must be in [0, {tm.vocab_size - 1}], got {mask_id}")
    return int(mask_id)


def default_mask_id(model: Any) -> int:
    """The id that stands for a removed token in ``model``: the padding id, or the
    out-of-vocabulary id 1 when an all-padding text gives no finite output."""
    tm = token_model(model)
    if tm is None:
        raise ValueError("not a text model")
    return _mask_id(tm, None, ModelFunction(tm.ids_model))


def _scores_of(mf: ModelFunction, inputs: np.ndarray, targets: np.ndarray, batch_size: int
               ) -> np.ndarray:
    """``f(inputs)[i, targets[i]]`` float64, in forward passes of ``batch_size`` rows."""
    out = np.empty(len(inputs))
    for lo in range(0, len(inputs), batch_size):
        hi = min(lo + batch_size, len(inputs))
        pred = mf.predict(inputs[lo:hi].astype(np.float32), batch_size=hi - lo)
        out[lo:hi] = pred[np.arange(hi - lo), targets[lo:hi]]
    return out


def token_shap_values(mf: ModelFunction, ids: np.ndarray, targets: np.ndarray, *,
                      mask_id: int, pad_id: int = PAD_ID, estimator: str = "auto",
                      exact_max: int = EXACT_MAX, samples: int | None = None, seed: int = 0,
                      batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[np.ndarray, dict]:
    """Shapley values ``(N, T)`` of the real tokens of each row; an absent token is
    replaced by ``mask_id``; padding is no player and gets 0.

    Every row's coalitions (all of them up to ``exact_max`` real tokens, else the prefixes
    of ``samples // 2`` antithetic permutation pairs) go into one stream of forward
    passes of ``batch_size`` rows: rows of different lengths share batches.

    Returns
    -------
    values, info
        ``info`` holds ``estimator`` per row, ``model_rows`` (forward rows spent),
        ``v_empty`` and ``v_full`` ``(N,)``.
    """
    if estimator not in ("auto", "exact", "permutation"):
        raise InputError(f"unknown token SHAP estimator {estimator!r}; choose auto, exact "
                         "or permutation")
    exact_max = check_positive_int("exact_max", exact_max)
    if exact_max > co.MAX_EXACT_FEATURES:
        raise InputError(f"exact_max must be at most {co.MAX_EXACT_FEATURES}")
    n_pairs = DEFAULT_PERMUTATION_PAIRS if samples is None else max(
        1, check_positive_int("samples", samples) // 2)
    rng = np.random.default_rng(seed)
    plans = []
    inputs = []
    offset = 0
    for r in range(len(ids)):
        players = np.flatnonzero(ids[r] != pad_id)
        m = len(players)
        use_exact = estimator == "exact" or (estimator == "auto" and m <= exact_max)
        if estimator == "exact" and m > co.MAX_EXACT_FEATURES:
            raise InputError(f"row {r} has {m} real tokens; estimator='exact' allows at most "
                             f"{co.MAX_EXACT_FEATURES}: use 'permutation'")
        if m == 0:
            plans.append((players, "none", None, None, offset, 0))
            continue
        if use_exact:
            masks = co.all_coalitions(m)
            perms = index = None
        else:
            perms = co.antithetic_permutations(m, n_pairs, rng)
            masks, index = co.permutation_design(perms)
            # then the empty and the full coalition
            masks = np.concatenate([masks, np.zeros((1, m), bool), np.ones((1, m), bool)])
        rows = np.repeat(ids[r][None], len(masks), axis=0)
        sub = rows[:, players]
        sub[~masks] = mask_id
        rows[:, players] = sub
        inputs.append(rows)
        plans.append((players, "exact" if use_exact else "permutation", perms, index, offset,
                      len(masks)))
        offset += len(masks)
    stream = np.concatenate(inputs) if inputs else np.zeros((0, ids.shape[1]), np.int64)
    owner = np.concatenate([np.full(p[5], r) for r, p in enumerate(plans)]) if inputs else \
        np.zeros(0, np.int64)
    v = _scores_of(mf, stream, targets[owner], batch_size) if len(stream) else np.zeros(0)
    if not np.all(np.isfinite(v)):
        raise InputError(f"the model's output is not finite on texts whose tokens are masked "
                         f"with id {mask_id}; pass another mask_id")
    values = np.zeros(ids.shape, np.float64)
    v_empty = np.zeros(len(ids))
    v_full = np.zeros(len(ids))
    kinds = []
    for r, (players, kind, perms, index, start, count) in enumerate(plans):
        kinds.append(kind)
        if kind == "none":
            full = _scores_of(mf, ids[r : r + 1], targets[r : r + 1], 1)[0]
            v_empty[r] = v_full[r] = full
            continue
        vr = v[start : start + count]
        if kind == "exact":
            masks = co.all_coalitions(len(players))
            phi = co.exact_shapley(vr[None], masks)[0]
            v_empty[r], v_full[r] = vr[0], vr[-1]
        else:
            v_empty[r], v_full[r] = vr[-2], vr[-1]
            phi = co.permutation_solve(perms, index, vr[None, :-2], v_empty[r:r + 1],
                                       v_full[r:r + 1])[0]
        values[r, players] = phi
    return values.astype(np.float32), {"estimator": kinds, "model_rows": int(len(stream)),
                                       "v_empty": v_empty, "v_full": v_full}


def _shap(tm, mf, ids, targets, batch_size, *, estimator, samples, seed, mask_id,
          exact_max, background):
    if background is not None:
        raise InputError("on a text model SHAP masks tokens with mask_id (the padding id by "
                         "default); background does not apply")
    seed = check_positive_int("seed", seed, minimum=0)
    mask = _mask_id(tm, mask_id, mf)
    values, info = token_shap_values(mf, ids, targets, mask_id=mask, pad_id=tm.pad_id,
                                     estimator=estimator, exact_max=exact_max,
                                     samples=samples, seed=seed, batch_size=batch_size)
    scores = info["v_full"].astype(np.float32)
    base = info["v_empty"].astype(np.float32)
    return Attribution(values=values, method="shap", targets=targets, scores=scores,
                       baseline_scores=base,
                       completeness_gap=completeness_gap(values, scores, base),
                       extra={"estimator": info["estimator"], "mask_id": mask,
                              "model_rows": info["model_rows"]})


def _occlusion(tm, mf, ids, targets, batch_size, *, window, mask_id):
    window = check_positive_int("window", window)
    mask = _mask_id(tm, mask_id, mf)
    n, t = ids.shape
    full = _scores_of(mf, ids, targets, batch_size)
    starts = np.arange(0, t - window + 1) if t >= window else np.array([0])
    drops = np.zeros((n, t))
    counts = np.zeros((n, t))
    for rows, pos in stream_chunks(n, len(starts), batch_size):
        batch = ids[rows].copy()
        for k, p in enumerate(pos):
            batch[k, starts[p] : starts[p] + window] = mask
        s = _scores_of(mf, batch, targets[rows], batch_size)
        for k, (r, p) in enumerate(zip(rows, pos, strict=True)):
            sl = slice(starts[p], starts[p] + window)
            drops[r, sl] += full[r] - s[k]
            counts[r, sl] += 1
    values = drops / np.maximum(counts, 1)
    values[ids == tm.pad_id] = 0.0
    return Attribution(values=values.astype(np.float32), method="occlusion", targets=targets,
                       scores=full.astype(np.float32), extra={"mask_id": mask,
                                                              "window": window})


def _grad_cam(tm, mf, ids, targets, batch_size, *, layer):
    from explain.attributions.sequences import grad_cam_1d

    values, name = grad_cam_1d(tm.ids_model, ids.astype(np.float32), targets, layer=layer,
                               batch_size=batch_size, output=mf.output_index)
    values[ids == tm.pad_id] = 0.0
    return Attribution(values=values, method="grad_cam", targets=targets,
                       extra={"layer": name})


_IMPLS = {
    "integrated_gradients": _ig,
    "saliency": _saliency,
    "smoothgrad": _smoothgrad,
    "shap": _shap,
    "occlusion": _occlusion,
    "grad_cam": _grad_cam,
}


# --------------------------------------------------------------------------- entry point


def explain_tokens(tm: TokenModel, x: Any, method: str, target: Any,
                   options: dict[str, Any]) -> Attribution:
    """:func:`explain.attributions.registry.explain` for a text model.

    ``x``: token ids ``(N, T)`` or, for a model with a ``TextVectorization`` layer,
    strings ``(N,)``. Values are ``(N, T)``; ``extra["token_ids"]`` holds the ids.
    """
    if method not in _IMPLS:
        raise InputError(f"method {method!r} does not apply to text models; use one of "
                         f"{sorted(_IMPLS)}")
    opts = dict(options)
    requested = opts.pop("batch_size", None)
    output = opts.pop("output", None)
    logits = bool(opts.pop("logits", False))
    allowed = TOKEN_OPTIONS[method]
    unknown = set(opts) - set(allowed)
    if unknown:
        raise InputError(f"unknown option(s) {sorted(unknown)} for method {method!r} on a "
                         f"text model; allowed: {sorted(set(allowed) | {'batch_size', 'output', 'logits'})}")
    ids = tm.to_ids(x)
    mf = ModelFunction(tm.ids_model, output=output, logits=logits)
    batch_size = (max(16, min(4096, 2**20 // max(tm.length * (tm.dim + 1), 1)))
                  if requested is None else check_positive_int("batch_size", requested))
    ids_f = ids.astype(np.float32)
    targets, predictions = resolve_targets_with_predictions(mf, ids_f, target, batch_size)
    merged = {**allowed, **opts}
    mf._ids_float = ids_f
    with mf.predictions_known(ids_f, predictions):
        result = _IMPLS[method](tm, mf, ids, targets, batch_size, **merged)
    result.method = method
    result.targets = targets
    result.options = {**merged, "batch_size": batch_size, "output": mf.output_index,
                      "logits": mf.logits}
    result.values = np.asarray(result.values, dtype=np.float32)
    result.extra["token_ids"] = ids
    result.extra["space"] = "tokens"
    return result
