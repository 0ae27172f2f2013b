"""SHAP speed and accuracy: xaudit's model-agnostic estimators against shap's explainers.

A 16-feature MLP (breast-cancer data, first 16 features, standardised), 50 background
rows, 20 explained rows. The reference is ``shap.ExactExplainer`` with the independent
masker over the same background; every estimator is scored by its largest absolute error
against it and its wall-clock time. shap's explainers get the model as a fast batched
function (the same batch size xaudit uses) and, for KernelExplainer, also as
``model.predict`` the way shap's documentation calls Keras models.

Run: ``python bench/shap_speed.py [--rows 20] [--background 50] [--batch-size 4096]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def build(seed: int = 0):
    from sklearn.datasets import load_breast_cancer

    from explain._backend import keras

    data = load_breast_cancer()
    x = data.data[:, :16].astype("float32")
    x = (x - x.mean(0)) / x.std(0)
    y = data.target
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((16,)),
        keras.layers.Dense(32, activation="tanh"),
        keras.layers.Dense(16, activation="tanh"),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:400], y[:400], epochs=30, batch_size=32, verbose=0)
    acc = model.evaluate(x[400:], y[400:], verbose=0)[1]
    return model, x, acc


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--background", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--keras-predict-rows", type=int, default=3,
                        help="rows for KernelExplainer on model.predict (it is slow)")
    args = parser.parse_args()

    import shap

    from explain.attributions import ModelFunction, explain

    warnings.filterwarnings("ignore")
    model, data, acc = build()
    bg = data[:args.background]
    x = data[400:400 + args.rows]
    target = 1
    mf = ModelFunction(model)
    bs = args.batch_size

    def f(z):
        return mf.predict(np.asarray(z, dtype=np.float32), bs)[:, target]

    def f_keras(z):
        return model.predict(z, verbose=0)[:, target]

    f(x)  # build the graph once so no row pays for tracing
    masker = shap.maskers.Independent(bg, max_samples=len(bg))
    ref, t_ref = timed(lambda: shap.ExactExplainer(f, masker)(x).values)

    rows = []

    def ours(name, **opts):
        res, t = timed(lambda: explain(model, x, "shap", target=target, background=bg,
                                       batch_size=bs, **opts))
        err = np.abs(res.values - ref).max()
        rows.append((f"xaudit shap {name}", t, err, np.abs(res.completeness_gap).max(),
                     res.extra["model_rows"] // args.rows))

    def theirs(name, fn, n_rows=args.rows, evals=None):
        vals, t = timed(fn)
        vals = np.asarray(vals)
        err = np.abs(vals - ref[:n_rows]).max()
        fx = f(x[:n_rows])
        gap = np.abs(vals.sum(1) - (fx - f(bg).mean())).max()
        rows.append((name, t * args.rows / n_rows, err, gap, evals))

    ours("kernel (default samples)", estimator="kernel")
    ours("auto (default)")
    ours("permutation (default)", estimator="permutation")
    ours("kernel samples=512", estimator="kernel", samples=512)

    ke = shap.KernelExplainer(f, bg)
    theirs("shap KernelExplainer (default)", lambda: ke.shap_values(x, silent=True),
           evals=(2 * 16 + 2048) * len(bg))
    theirs("shap KernelExplainer l1_reg=False", lambda: ke.shap_values(x, silent=True,
                                                                        l1_reg=False),
           evals=(2 * 16 + 2048) * len(bg))
    pe = shap.PermutationExplainer(f, masker)
    theirs("shap PermutationExplainer (default)", lambda: pe(x, silent=True).values,
           evals=500 * len(bg))
    if args.keras_predict_rows:
        k = args.keras_predict_rows
        ke2 = shap.KernelExplainer(f_keras, bg)
        theirs(f"shap KernelExplainer (default) on model.predict, {k} rows, scaled",
               lambda: ke2.shap_values(x[:k], silent=True), n_rows=k,
               evals=(2 * 16 + 2048) * len(bg))

    print(f"\nMLP 16 features, test accuracy {acc:.3f}; {args.rows} rows explained, "
          f"{len(bg)} background rows, batch_size {bs}")
    print(f"reference shap ExactExplainer: {t_ref:.1f} s; output range of the reference "
          f"values {np.ptp(ref):.4f}, f(x) spread {np.ptp(f(x)):.4f}")
    # Speed-ups against KernelExplainer fed the same fast batched function, and (last
    # column) against KernelExplainer on model.predict, the way shap's docs call Keras.
    base = next(r for r in rows if r[0] == "shap KernelExplainer (default)")[1]
    slow = next((r[1] for r in rows if "model.predict" in r[0]), float("nan"))
    print(f"{'estimator':62s} {'time s':>8s} {'x fast':>7s} {'x predict':>9s} {'max err':>9s} "
          f"{'max |gap|':>9s} {'model rows/row':>14s}")
    for name, t, err, gap, evals in rows:
        print(f"{name:62s} {t:8.2f} {base / t:7.1f} {slow / t:9.1f} {err:9.2e} {gap:9.2e} "
              f"{evals if evals is not None else '':>14}")


if __name__ == "__main__":
    main()
