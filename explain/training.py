"""Train reference models on the bundled data sets: the Keras fit / evaluate / save workflow.

:func:`train_reference_model` splits a bundled set (stratified train / validation / test),
builds a small model (an MLP for tables, a CNN for images), fits it with early stopping,
evaluates it on the held-out test split and saves

- ``MODEL.keras`` — the model. Tabular models standardise their inputs with a
  ``keras.layers.Normalization`` layer adapted on the training split, so the saved model
  takes raw features and an audit needs no separate preprocessing step.
- ``MODEL.keras.json`` — a sidecar: data set name and SHA-256, split seed, epochs run,
  validation and test metrics, class and feature names, planted-shortcut facts, versions.
- optionally the held-out test split as ``.npz`` (``save_test``), the data an audit of
  the model should run on.

Training is deterministic for a seed (:func:`keras.utils.set_random_seed`).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from explain._backend import keras, tf
from explain.datasets import BUNDLED, Dataset, load_bundled
from explain.evaluation import evaluate_model, predict_proba

__all__ = [
    "DEFAULT_EPOCHS",
    "PLANTED_OPTION",
    "TrainResult",
    "build_cnn",
    "build_mlp",
    "split_dataset",
    "train_reference_model",
]

#: Epoch budget per data set (early stopping may end sooner). Chosen so every set trains
#: in seconds on two CPU cores and clears its accuracy floor.
DEFAULT_EPOCHS = {
    "breast_cancer": 60,
    "wine": 40,
    "digits": 20,
    "shapes": 12,
    "tabular_leaky": 30,
    "lending": 30,
    "text_leaky": 25,
    "sequence_spike": 25,
}

#: The data-set option that switches a planted shortcut on or off.
PLANTED_OPTION = {"shapes": "shortcut", "tabular_leaky": "leak", "lending": "bias",
                  "text_leaky": "leak", "sequence_spike": "spike"}

#: Architectures by data kind for ``arch`` (the first is the default).
ARCHITECTURES = {
    "text": ("pool", "lstm", "gru", "conv", "vectorize"),
    "sequence": ("conv1d", "lstm"),
}


def build_text_model(arch: str, vocabulary: list[str], length: int, n_classes: int,
                     dim: int = 16, name: str = "text") -> keras.Model:
    """Token ids (or strings, ``arch="vectorize"``) → Embedding (padding id 0 masked) →
    average pooling / LSTM / GRU / Conv1D → softmax.

    ``vectorize`` puts a ``TextVectorization`` layer with ``vocabulary`` (whitespace
    split, no standardization, so ids equal the vocabulary index) in front, taking one
    string per row.
    """
    vocab_size = len(vocabulary)
    if arch == "vectorize":
        inp = keras.Input((1,), dtype="string", name="text")
        tv = keras.layers.TextVectorization(
            vocabulary=[w for w in vocabulary[2:]], standardize=None, split="whitespace",
            output_sequence_length=length, name="vectorize")
        h = keras.layers.Embedding(vocab_size, dim, mask_zero=True, name="embedding")(tv(inp))
        h = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    else:
        inp = keras.Input((length,), dtype="int32", name="tokens")
        h = keras.layers.Embedding(vocab_size, dim, mask_zero=arch != "conv",
                                   name="embedding")(inp)
        if arch == "pool":
            h = keras.layers.GlobalAveragePooling1D(name="pool")(h)
        elif arch in ("lstm", "gru"):
            rnn = keras.layers.LSTM if arch == "lstm" else keras.layers.GRU
            h = rnn(16, return_sequences=True, name=arch)(h)
            h = keras.layers.GlobalAveragePooling1D(name="pool")(h)
        elif arch == "conv":
            h = keras.layers.Conv1D(16, 3, padding="same", activation="relu", name="conv")(h)
            h = keras.layers.GlobalMaxPooling1D(name="pool")(h)
        else:
            raise ValueError(f"unknown text architecture {arch!r}; choose from "
                             f"{', '.join(ARCHITECTURES['text'])}")
    out = keras.layers.Dense(n_classes, activation="softmax", name="probs")(h)
    return keras.Model(inp, out, name=f"{name}_{arch}")


def build_sequence_model(arch: str, shape: tuple[int, ...], n_classes: int,
                         name: str = "sequence") -> keras.Model:
    """Float sequences ``(T, F)`` → Conv1D stack or LSTM → softmax."""
    inp = keras.Input(shape, name="signal")
    if arch == "conv1d":
        h = keras.layers.Conv1D(16, 5, padding="same", activation="relu", name="conv_1")(inp)
        h = keras.layers.Conv1D(16, 5, padding="same", activation="relu", name="last_conv")(h)
        h = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    elif arch == "lstm":
        h = keras.layers.LSTM(16, return_sequences=True, name="lstm")(inp)
        h = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    else:
        raise ValueError(f"unknown sequence architecture {arch!r}; choose from "
                         f"{', '.join(ARCHITECTURES['sequence'])}")
    out = keras.layers.Dense(n_classes, activation="softmax", name="probs")(h)
    return keras.Model(inp, out, name=f"{name}_{arch}")

TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.15
PATIENCE = 5


@dataclass
class TrainResult:
    """What :func:`train_reference_model` produced.

    Attributes
    ----------
    model
        The trained model (best validation weights restored).
    model_path, sidecar_path
        Where the ``.keras`` file and its JSON sidecar were written.
    test_path
        Where the held-out test split was written, or ``None``.
    test
        The held-out test split as a :class:`~explain.datasets.Dataset`.
    dataset
        The full data set that was split.
    epochs_run
        Epochs actually run (early stopping may stop before the budget).
    best_epoch
        1-based epoch whose weights were kept.
    validation_metrics, test_metrics
        :func:`explain.evaluation.evaluate_model` on the validation and test splits.
    history
        Per-epoch ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``.
    seconds
        Wall time of the fit.
    sidecar
        The sidecar contents.
    """

    model: Any
    model_path: Path
    sidecar_path: Path
    test_path: Path | None
    test: Dataset
    dataset: Dataset
    epochs_run: int
    best_epoch: int
    validation_metrics: dict[str, Any]
    test_metrics: dict[str, Any]
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    sidecar: dict[str, Any] = field(default_factory=dict)

    @property
    def test_accuracy(self) -> float:
        return float(self.test_metrics["accuracy"])


# --------------------------------------------------------------------------- data


def split_dataset(dataset: Dataset, seed: int = 0, test_fraction: float = TEST_FRACTION,
                  validation_fraction: float = VALIDATION_FRACTION
                  ) -> tuple[Dataset, Dataset, Dataset]:
    """Stratified train / validation / test split, deterministic for ``seed``.

    ``validation_fraction`` is a fraction of what remains after the test split.
    """
    from sklearn.model_selection import train_test_split

    if dataset.y is None:
        raise ValueError(f"{dataset.name} has no labels to train on")
    idx = np.arange(dataset.n)
    rest, test = train_test_split(idx, test_size=test_fraction, random_state=seed,
                                  stratify=dataset.y)
    train, val = train_test_split(rest, test_size=validation_fraction, random_state=seed,
                                  stratify=dataset.y[rest])
    return dataset.subset(train), dataset.subset(val), dataset.subset(test)


# --------------------------------------------------------------------------- models


def build_mlp(train_x: np.ndarray, n_classes: int, hidden: tuple[int, ...] = (32, 16),
              name: str = "mlp") -> keras.Model:
    """A ReLU MLP with a softmax head that standardises its raw inputs itself.

    The first layer, ``standardize``, is a Normalization layer adapted on ``train_x``
    (training rows only, so no test statistics leak into the model).
    """
    norm = keras.layers.Normalization(axis=-1, name="standardize")
    norm.adapt(train_x)
    inp = keras.Input((train_x.shape[1],), name="features")
    h = norm(inp)
    for i, units in enumerate(hidden, start=1):
        h = keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(h)
    out = keras.layers.Dense(n_classes, activation="softmax", name="probs")(h)
    return keras.Model(inp, out, name=name)


def build_cnn(input_shape: tuple[int, ...], n_classes: int, filters: int = 16,
              name: str = "cnn") -> keras.Model:
    """conv-conv-pool-conv-GAP-dense: a small CNN whose last conv layer is ``last_conv``.

    Expects pixels in [0, 1] (all bundled image sets are scaled so).

    Grad-CAM and the region-based image checks look for ``last_conv`` by name.
    """
    inp = keras.Input(input_shape, name="image")
    # Pixels arrive in [0, 1]; centring them on 0 makes the first epochs count (measured:
    # the clean shapes set goes from ~0.5 to ~0.95 validation accuracy in 12 epochs).
    h = keras.layers.Rescaling(2.0, offset=-1.0, name="center")(inp)
    h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name="conv1")(h)
    h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Conv2D(2 * filters, 3, padding="same", activation="relu",
                            name="last_conv")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(n_classes, activation="softmax", name="probs")(h)
    return keras.Model(inp, out, name=name)


class _EpochBar(keras.callbacks.Callback):
    """One tqdm bar over epochs, with the latest loss and accuracy as its postfix."""

    def __init__(self, total: int, desc: str):
        super().__init__()
        self.total = total
        self.desc = desc
        self.bar = None

    def on_train_begin(self, logs=None):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, desc=self.desc, unit="epoch", file=sys.stderr,
                        dynamic_ncols=True)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()
                              if k in ("loss", "accuracy", "val_loss", "val_accuracy")})
        self.bar.update(1)

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------- training


def train_reference_model(
    dataset_name: str,
    *,
    out: str | Path,
    epochs: int | None = None,
    seed: int = 0,
    shortcut: bool | None = None,
    save_test: str | Path | None = None,
    verbose: int = 1,
    batch_size: int | None = None,
    dataset_options: dict[str, Any] | None = None,
    arch: str | None = None,
) -> TrainResult:
    """Train, evaluate and save a reference model on a bundled data set.

    Parameters
    ----------
    dataset_name
        A name in :data:`explain.datasets.BUNDLED`.
    out
        Path of the ``.keras`` file; the sidecar goes to ``out + ".json"``.
    epochs
        Epoch budget (default :data:`DEFAULT_EPOCHS` for the set); early stopping on the
        validation loss (patience 5) may stop sooner and restores the best weights.
    seed
        Seeds the data set, the split, the initial weights and the shuffling.
    shortcut
        For ``shapes`` (the watermark), ``tabular_leaky`` (the leaked column) and
        ``lending`` (labels that penalise a group, leaking through a proxy): plant the
        shortcut (``True``, the default) or train on the clean twin (``False``).
        Other sets have no planted shortcut and refuse ``False``.
    save_test
        If given, write the held-out test split there: ``.npz``, or ``.csv`` for a
        tabular set (its label in a column named ``label``).
    verbose
        0: silent; 1: a progress bar over epochs on stderr; 2: Keras' one line per epoch.
    batch_size
        Rows per step (default 32 for tables, 64 for images).
    dataset_options
        Extra options for the data set builder (e.g. ``{"n": 600}`` for ``shapes``).
    arch
        For text and sequence sets, the architecture (:data:`ARCHITECTURES`): text
        ``pool`` (default), ``lstm``, ``gru``, ``conv``, ``vectorize`` (strings in);
        sequences ``conv1d`` (default), ``lstm``.

    Returns
    -------
    TrainResult
    """
    if dataset_name not in BUNDLED:
        raise ValueError(f"no bundled data set named {dataset_name!r}; choose from "
                         f"{', '.join(BUNDLED)}")
    out = Path(out)
    if out.suffix != ".keras":
        raise ValueError(f"the model file must end in .keras, got {out.name!r}")
    epochs = DEFAULT_EPOCHS.get(dataset_name, 20) if epochs is None else int(epochs)
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose}")

    options = dict(dataset_options or {})
    planted = PLANTED_OPTION.get(dataset_name)
    if shortcut is not None:
        if planted is None:
            if not shortcut:
                raise ValueError(f"{dataset_name} has no planted shortcut to switch off; "
                                 f"sets with one: {', '.join(PLANTED_OPTION)}")
        else:
            options[planted] = bool(shortcut)

    keras.utils.set_random_seed(seed)
    dataset = load_bundled(dataset_name, seed=seed, **options)
    train, val, test = split_dataset(dataset, seed=seed)
    n_classes = len(dataset.class_names) if dataset.class_names else int(dataset.y.max()) + 1
    task = "binary" if n_classes == 2 else "multiclass"

    # Seed again right before building, so the initial weights do not depend on how
    # many random draws the data set builder made.
    keras.utils.set_random_seed(seed)
    train_x, val_x = train.x, val.x
    if dataset.kind in ARCHITECTURES:
        arch = ARCHITECTURES[dataset.kind][0] if arch is None else arch
        if arch not in ARCHITECTURES[dataset.kind]:
            raise ValueError(f"unknown {dataset.kind} architecture {arch!r}; choose from "
                             f"{', '.join(ARCHITECTURES[dataset.kind])}")
    elif arch is not None:
        raise ValueError(f"arch applies to text and sequence data sets; {dataset_name} is "
                         f"{dataset.kind}")
    if dataset.kind == "text":
        model = build_text_model(arch, dataset.vocabulary, dataset.x.shape[1], n_classes,
                                 name=dataset_name)
        if arch == "vectorize":
            from explain._backend import tf

            vocab = dataset.vocabulary

            def as_text(ids):
                return tf.constant([[" ".join(vocab[int(i)] for i in row if i)]
                                    for row in ids])

            train_x, val_x = as_text(train.x), as_text(val.x)
        lr = 1e-2
        bs = batch_size or 32
    elif dataset.kind == "sequence":
        model = build_sequence_model(arch, dataset.x.shape[1:], n_classes, name=dataset_name)
        lr = 3e-3
        bs = batch_size or 32
    elif dataset.kind == "image":
        model = build_cnn(dataset.x.shape[1:], n_classes, name=f"{dataset_name}_cnn")
        lr = 3e-3
        bs = batch_size or 64
    else:
        model = build_mlp(train.x, n_classes, name=f"{dataset_name}_mlp")
        lr = 3e-3
        bs = batch_size or 32
    # Several steps per call into the graph: with batches this small, the Python side of
    # each step costs as much as the step itself (measured ~1.5x faster on breast_cancer).
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], steps_per_execution=8)

    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=PATIENCE,
                                      restore_best_weights=True),
    ]
    if verbose == 1:
        callbacks.append(_EpochBar(epochs, desc=f"train {dataset.name}"))
    t0 = time.perf_counter()
    fit = model.fit(train_x, train.y, validation_data=(val_x, val.y), epochs=epochs,
                    batch_size=bs, shuffle=True, callbacks=callbacks,
                    verbose=2 if verbose == 2 else 0)
    seconds = time.perf_counter() - t0
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    epochs_run = len(history.get("loss", []))
    best_epoch = int(np.argmin(history["val_loss"])) + 1 if history.get("val_loss") else \
        epochs_run

    scorer = model
    if dataset.kind == "text" and arch == "vectorize":
        from explain.attributions.tokens import token_model

        scorer = token_model(model).ids_model  # the held-out sets are token ids
    val_metrics = evaluate_model(None, None, val.y, task, dataset.class_names,
                                 predictions=predict_proba(scorer, val.x))
    test_metrics = evaluate_model(None, None, test.y, task, dataset.class_names,
                                  predictions=predict_proba(scorer, test.x))

    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    test_path = None
    if save_test is not None:
        # A .csv for tables (label column "label", sensitive columns before it), else .npz.
        test_path = (test.to_csv(save_test) if Path(save_test).suffix.lower() == ".csv"
                     else test.to_npz(save_test))

    sidecar = _sidecar(dataset_name, dataset, train, val, test, task, seed, epochs,
                       epochs_run, best_epoch, seconds, val_metrics, test_metrics,
                       model, test_path)
    # The per-epoch curves, for the report's learning-curve plot.
    sidecar["training"]["history"] = history
    sidecar_path = out.with_name(out.name + ".json")
    sidecar_path.write_text(json.dumps(sidecar, indent=2, sort_keys=False))
    return TrainResult(
        model=model, model_path=out, sidecar_path=sidecar_path, test_path=test_path,
        test=test, dataset=dataset, epochs_run=epochs_run, best_epoch=best_epoch,
        validation_metrics=val_metrics, test_metrics=test_metrics, history=history,
        seconds=seconds, sidecar=sidecar,
    )


def _sidecar(dataset_name, dataset, train, val, test, task, seed, epochs, epochs_run,
             best_epoch, seconds, val_metrics, test_metrics, model, test_path) -> dict:
    from explain import __version__

    # Per-row facts (e.g. where each watermark sits) belong to the data, not the model.
    meta = {k: v for k, v in dataset.meta.items() if k != "per_row"}
    return {
        "xaudit_version": __version__,
        "dataset": {
            "name": dataset.name,
            "bundled_name": dataset_name,
            "sha256": dataset.sha256,
            "rows": dataset.n,
            "kind": dataset.kind,
            "meta": meta,
        },
        "task": task,
        "input_shape": [None, *[int(d) for d in dataset.x.shape[1:]]],
        "class_names": dataset.class_names,
        "feature_names": dataset.feature_names,
        "split": {
            "seed": seed,
            "stratified": True,
            "test_fraction": TEST_FRACTION,
            "validation_fraction_of_rest": VALIDATION_FRACTION,
            "train_rows": train.n,
            "validation_rows": val.n,
            "test_rows": test.n,
            "test_sha256": test.sha256,
            "test_path": None if test_path is None else str(test_path),
        },
        "training": {
            "epochs_requested": epochs,
            "epochs_run": epochs_run,
            "best_epoch": best_epoch,
            "early_stopping": {"monitor": "val_loss", "patience": PATIENCE,
                               "restore_best_weights": True},
            "seconds": round(seconds, 3),
            "parameters": int(model.count_params()),
        },
        "validation": val_metrics,
        "test": test_metrics,
        "environment": {
            "python": platform.python_version(),
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
        },
    }
