"""Attribution speed, accuracy and memory: xaudit side by side with tf-explain and shap.

One run measures, on a small CNN, a MobileNetV2-size CNN and an MLP on scikit-learn's
breast-cancer data:

1. Integrated Gradients (ours, Gauss-Legendre, 50 steps) against tf-explain's
   ``IntegratedGradients`` and against the plain cost of the same number of rows of
   forward + backward passes at the same batch size (a ``tf.function`` with a
   ``GradientTape`` on prepared batches: the floor any IG implementation pays).
2. Grad-CAM (ours) against tf-explain's ``GradCAM`` (explicit ``layer_name``) and one
   forward + backward pass.
3. Model-agnostic SHAP (our default estimator) against ``shap.KernelExplainer`` and
   ``shap.PermutationExplainer`` at the same background, scored against
   ``shap.ExactExplainer`` (16 features, so the exact values are computable).
4. Quadrature rules: the fewest steps each rule needs for a relative completeness gap
   below 1 % on every example.
5. Peak memory (RSS) of IG on the large CNN at two batch sizes and two numbers of images,
   each in a fresh subprocess.
6. Token IG (``tokig``) on an Embedding + LSTM text model against the plain cost of
   steps x (forward + backward) of the same layers on embeddings.
7. Token SHAP (``tokshap``) on a short text (10 tokens, so exact values are computable)
   against ``shap.PermutationExplainer`` with the same masking (an absent token takes the
   mask id), both scored against ``shap.ExactExplainer`` with that masking.

Every timing excludes tracing (one warm-up call first) and is the median of ``--repeats``
runs. Run: ``python bench/attributions.py [--quick] [--only ig,cam,...] [--markdown PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from explain._backend import keras, tf  # noqa: E402
from explain.attributions import ModelFunction, explain  # noqa: E402
from explain.attributions.base import (  # noqa: E402
    gather_targets,
    gradient_fn,
    resolve_targets,
)
from explain.attributions.integrated_gradients import RULES  # noqa: E402

STEP_GRID = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160,
             192, 256, 320, 384, 512)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    quick: bool
    repeats: int
    steps: int = 50
    small_size: int = 32
    large_size: int = 224
    large_alpha: float = 1.0
    ig_rows: dict | None = None  # model -> (rows, batch_size)
    cam_rows: dict | None = None
    shap_rows: int = 20
    shap_background: int = 50
    rule_rows: int = 16
    mem_size: int = 128
    mem_images: int = 64
    mem_batches: tuple[int, int] = (16, 64)


def settings(quick: bool, repeats: int | None) -> Settings:
    if quick:
        return Settings(
            quick=True, repeats=repeats or 1, steps=8, small_size=16, large_size=32,
            large_alpha=0.35,
            ig_rows={"mlp": (32, 64), "small_cnn": (8, 32), "large_cnn": (2, 8)},
            cam_rows={"small_cnn": (8, 8), "large_cnn": (4, 4)},
            shap_rows=2, shap_background=10, rule_rows=4,
            mem_size=32, mem_images=8, mem_batches=(4, 16),
        )
    return Settings(
        quick=False, repeats=repeats or 3,
        ig_rows={"mlp": (512, 4096), "small_cnn": (64, 256), "large_cnn": (2, 50)},
        cam_rows={"small_cnn": (256, 256), "large_cnn": (16, 16)},
    )


# --------------------------------------------------------------------------- models


def build_mlp():
    """The 16-feature breast-cancer MLP of ``bench/shap_speed.py`` (trained 30 epochs)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from shap_speed import build

    model, x, acc = build()
    return model, x, acc


def build_small_cnn(size: int) -> keras.Model:
    """Three conv layers (the last named ``last_conv``), pooling, softmax over 10 classes."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 3))
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="last_conv")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inp, out)
    # Keras starts biases at zero, which makes a ReLU network positively homogeneous: its
    # logits are then linear along a path from a zero baseline and every quadrature rule
    # is exact. Random biases give the path the curvature a trained network has.
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0.0, 0.2, layer.bias.shape).astype("float32"))
    return model


def build_large_cnn(size: int, alpha: float = 1.0) -> keras.Model:
    """MobileNetV2 (``weights=None``, functional); Grad-CAM layer ``out_relu``."""
    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV2(weights=None, input_shape=(size, size, 3),
                                          alpha=alpha)


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32)


# --------------------------------------------------------------------------- timing


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one untimed warm-up (tracing) call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def plain_cost(model: keras.Model, shape: tuple[int, ...], rows: int, batch_size: int,
               repeats: int) -> float:
    """Time of ``rows`` rows of forward + input-gradient at ``batch_size``, nothing else."""
    mf = ModelFunction(model)

    @tf.function
    def fb(x, t):
        with tf.GradientTape() as tape:
            tape.watch(x)
            s = gather_targets(mf(x), t)
        return tape.gradient(s, x)

    rng = np.random.default_rng(1)
    sizes = [batch_size] * (rows // batch_size) + ([rows % batch_size] if rows % batch_size
                                                   else [])
    batches = {b: (tf.constant(rng.random((b, *shape), dtype=np.float32)),
                   tf.zeros(b, tf.int32)) for b in set(sizes)}

    def run():
        for b in sizes:
            fb(*batches[b]).numpy()

    return median_time(run, repeats)


# --------------------------------------------------------------------------- 1. IG


def bench_ig(models: dict, cfg: Settings) -> list[dict]:
    from tf_explain.core.integrated_gradients import IntegratedGradients as TfxIG

    out = []
    for name, (model, data) in models.items():
        n, bs = cfg.ig_rows[name]
        x = data[:n]
        rows = n * cfg.steps
        # tf-explain has no batch size: one call holds (images x steps) rows. Calls are
        # grouped so one holds at most max(batch_size, steps) rows, as a user bounding
        # memory would do.
        per_call = max(1, max(bs, cfg.steps) // cfg.steps)

        def ours(x=x, model=model, bs=bs):
            return explain(model, x, "integrated_gradients", target=0, steps=cfg.steps,
                           batch_size=bs)

        def tfx(x=x, model=model, per_call=per_call):
            parts = []
            for i in range(0, len(x), per_call):
                path = TfxIG.generate_interpolations(x[i:i + per_call], cfg.steps)
                parts.append(TfxIG.get_integrated_gradients(path, model, 0,
                                                            cfg.steps).numpy())
            return parts

        t_plain = plain_cost(model, x.shape[1:], rows, bs, cfg.repeats)
        t_ours = median_time(ours, cfg.repeats)
        t_tfx = median_time(tfx, cfg.repeats)
        out.append({"model": name, "rows": f"{n} x {cfg.steps}", "batch": bs,
                    "tfx_call": per_call * cfg.steps, "plain": t_plain, "ours": t_ours,
                    "tfx": t_tfx, "ours/plain": t_ours / t_plain, "tfx/ours": t_tfx / t_ours})
    return out


# --------------------------------------------------------------------------- 2. Grad-CAM


def bench_cam(models: dict, cfg: Settings) -> list[dict]:
    from tf_explain.core.grad_cam import GradCAM

    layers = {"small_cnn": "last_conv", "large_cnn": "out_relu"}
    out = []
    for name, layer in layers.items():
        model, data = models[name]
        n, bs = cfg.cam_rows[name]
        x = data[:n]
        def ours(x=x, model=model, bs=bs, layer=layer):
            return explain(model, x, "grad_cam", target=0, layer=layer, batch_size=bs)

        def tfx_core(x=x, model=model, layer=layer):
            acts, grads = GradCAM.get_gradients_and_filters(model, x, layer, 0, False)
            return [c.numpy() for c in GradCAM.generate_ponderated_output(acts, grads)]

        def tfx_full(x=x, model=model, layer=layer):
            return GradCAM().explain((x, None), model, 0, layer_name=layer, use_guided_grads=False)

        t_plain = plain_cost(model, x.shape[1:], n, bs, cfg.repeats)
        t_ours = median_time(ours, cfg.repeats)
        t_core = median_time(tfx_core, cfg.repeats)
        t_full = median_time(tfx_full, cfg.repeats)
        out.append({"model": name, "rows": n, "batch": bs, "layer": layer, "plain": t_plain,
                    "ours": t_ours, "tfx_core": t_core, "tfx_full": t_full,
                    "ours/plain": t_ours / t_plain, "tfx/ours": t_core / t_ours})
    return out


# --------------------------------------------------------------------------- 3. SHAP


def bench_shap(mlp: keras.Model, data: np.ndarray, cfg: Settings) -> dict:
    import shap

    bg = data[:cfg.shap_background]
    x = data[400:400 + cfg.shap_rows]
    target, bs = 1, 4096
    mf = ModelFunction(mlp)

    def f(z):
        return mf.predict(np.asarray(z, dtype=np.float32), bs)[:, target]

    f(x)
    masker = shap.maskers.Independent(bg, max_samples=len(bg))
    t0 = time.perf_counter()
    exact = shap.ExactExplainer(f, masker)(x).values
    t_exact = time.perf_counter() - t0

    def score(values: np.ndarray) -> tuple[float, float]:
        err = np.abs(np.asarray(values) - exact)
        return float(err.max()), float(err.mean())

    rows = []
    res = explain(mlp, x, "shap", target=target, background=bg, batch_size=bs)
    t = median_time(lambda: explain(mlp, x, "shap", target=target, background=bg,
                                    batch_size=bs), cfg.repeats)
    rows.append((f"xaudit shap (default: {res.extra['estimator']}, "
                 f"{res.extra['model_rows'] // len(x)} forward passes per row)", t,
                 *score(res.values)))
    ke = shap.KernelExplainer(f, bg)
    t = median_time(lambda: ke.shap_values(x, silent=True), cfg.repeats)
    rows.append(("shap KernelExplainer (default nsamples)", t,
                 *score(ke.shap_values(x, silent=True))))
    pe = shap.PermutationExplainer(f, masker)
    t = median_time(lambda: pe(x, silent=True), cfg.repeats)
    rows.append(("shap PermutationExplainer (default)", t, *score(pe(x, silent=True).values)))
    # The way shap's documentation calls a Keras model: too slow for every row, so a few
    # rows are timed once and the time scaled to all rows.
    k = 1 if cfg.quick else 2
    mlp.predict(x[:1], verbose=0)
    ke2 = shap.KernelExplainer(lambda z: mlp.predict(z, verbose=0)[:, target], bg)
    t0 = time.perf_counter()
    vals = ke2.shap_values(x[:k], silent=True)
    t = (time.perf_counter() - t0) * len(x) / k
    err = np.abs(np.asarray(vals) - exact[:k])
    rows.append((f"shap KernelExplainer on model.predict ({k} rows timed, scaled)", t,
                 float(err.max()), float(err.mean())))
    small = 256
    t = median_time(lambda: explain(mlp, x, "shap", target=target, background=bg,
                                    batch_size=bs, estimator="kernel", samples=small),
                    cfg.repeats)
    res = explain(mlp, x, "shap", target=target, background=bg, batch_size=bs,
                  estimator="kernel", samples=small)
    rows.append((f"xaudit shap kernel, samples={small} (not the default)", t,
                 *score(res.values)))
    return {"rows": rows, "exact_time": t_exact, "n": len(x), "background": len(bg),
            "range": float(np.ptp(exact))}


# --------------------------------------------------------------------------- 6-7. tokens


def build_text_lstm(vocab: int, length: int, dim: int, units: int) -> tuple[keras.Model,
                                                                           keras.Model]:
    """An Embedding + LSTM classifier, and the same layers after the Embedding as a model
    of the embeddings (what the plain forward + backward cost runs on)."""
    keras.utils.set_random_seed(0)
    emb = keras.layers.Embedding(vocab, dim)
    lstm = keras.layers.LSTM(units)
    head = keras.layers.Dense(2, activation="softmax")
    ids = keras.Input((length,), dtype="int32")
    model = keras.Model(ids, head(lstm(emb(ids))))
    e = keras.Input((length, dim))
    return model, keras.Model(e, head(lstm(e)))


def bench_token_ig(cfg: Settings) -> dict:
    vocab, length, dim, units = 2000, 64, 64, 64
    n, bs = (8, 256) if cfg.quick else (32, 512)
    model, on_embeddings = build_text_lstm(vocab, length, dim, units)
    ids = np.random.default_rng(0).integers(1, vocab, (n, length))

    def ours():
        return explain(model, ids, "integrated_gradients", target=0, steps=cfg.steps,
                       batch_size=bs)

    res = ours()
    # The two are timed in alternation, one run each per round, and the ratio is the
    # median of the rounds' ratios: on a shared machine the load drifts within seconds,
    # which two separate medians would read as a difference between the two.
    pairs = []
    for _ in range(max(3, cfg.repeats)):
        t_plain = plain_cost(on_embeddings, (length, dim), n * cfg.steps, bs, 1)
        t_ours = median_time(ours, 1)
        pairs.append((t_plain, t_ours))
    t_plain = statistics.median(p for p, _ in pairs)
    t_ours = statistics.median(o for _, o in pairs)
    return {"shape": f"ids ({n}, {length}) -> Embedding({vocab}, {dim}) -> LSTM({units})",
            "rows": f"{n} x {cfg.steps}", "batch": bs, "plain": t_plain, "ours": t_ours,
            "ours/plain": statistics.median(o / p for p, o in pairs),
            "gap": float(np.median(res.relative_gap()))}


def bench_token_shap(cfg: Settings) -> dict:
    import shap

    from explain.attributions.tokens import token_model

    vocab, length, n = 500, 10, (6 if cfg.quick else 20)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((length,), dtype="int32"),
                              keras.layers.Embedding(vocab, 16),
                              keras.layers.Conv1D(16, 3, padding="same", activation="relu"),
                              keras.layers.GlobalMaxPooling1D(),
                              keras.layers.Dense(2, activation="softmax")])
    x = np.random.default_rng(0).integers(2, vocab, (n, length))
    mask_id, target, bs = 1, 1, 4096
    mf = ModelFunction(token_model(model).ids_model)

    def f(z):
        return mf.predict(np.asarray(z, dtype=np.float32), bs)[:, target]

    f(x)
    masker = shap.maskers.Independent(np.full((1, length), mask_id), max_samples=1)
    t0 = time.perf_counter()
    exact = shap.ExactExplainer(f, masker)(x).values
    t_exact = time.perf_counter() - t0

    def err(values) -> float:
        return float(np.abs(np.asarray(values) - exact).max())

    rows = []

    def ours(**opts):
        return explain(model, x, "shap", target=target, mask_id=mask_id, batch_size=bs,
                       **opts)

    res = ours()
    rows.append(("xaudit token shap (default: exact up to 10 tokens)",
                 median_time(ours, cfg.repeats), err(res.values),
                 res.extra["model_rows"] // n))
    pe = shap.PermutationExplainer(f, masker)
    pe_vals = pe(x, silent=True).values
    t_pe = median_time(lambda: pe(x, silent=True), cfg.repeats)
    pe_err = err(pe_vals)
    rows.append(("shap PermutationExplainer (default max_evals)", t_pe, pe_err,
                 None))
    # our permutation estimator at the error of shap's: the fewest pairs that reach it
    for pairs in (2, 4, 8, 16, 32, 64, 128):
        res = ours(exact_max=1, samples=2 * pairs)
        if err(res.values) <= pe_err:
            break
    t_perm = median_time(lambda pairs=pairs: ours(exact_max=1, samples=2 * pairs),
                         cfg.repeats)
    rows.append((f"xaudit token shap, antithetic permutations ({pairs} pairs, not the "
                 "default)", t_perm, err(res.values), res.extra["model_rows"] // n))
    return {"rows": rows, "n": n, "length": length, "exact_time": t_exact,
            "range": float(np.ptp(exact))}


# --------------------------------------------------------------------------- 4. rules


def steps_needed(model: keras.Model, x: np.ndarray, rule: str, tol: float = 0.01,
                 batch_size: int = 1024) -> int | None:
    """Fewest steps in :data:`STEP_GRID` with every row's relative gap below ``tol``."""
    for steps in STEP_GRID:
        if rule == "riemann_trapezoid" and steps < 2:
            continue
        res = explain(model, x, "integrated_gradients", rule=rule, steps=steps,
                      logits=True, batch_size=batch_size)
        if float(res.relative_gap().max()) < tol:
            return steps
    return None


def tfx_rule_steps_needed(model: keras.Model, x: np.ndarray, tol: float = 0.01) -> int | None:
    """Fewest steps for tf-explain's quadrature (its source: the plain mean of the gradients
    at ``k / (n - 1)``, k = 0..n-1, zero baseline), emulated on the same logits."""
    mf = ModelFunction(model, logits=True)
    targets = resolve_targets(mf, x, None)
    grad = gradient_fn(mf)
    rise = mf.target_scores(x, targets) - mf.target_scores(np.zeros_like(x), targets)
    for steps in STEP_GRID[1:]:
        alphas = np.linspace(0.0, 1.0, steps, dtype=np.float32)
        points = (alphas[None, :, None] * x.reshape(len(x), 1, -1)).reshape(-1, *x.shape[1:])
        g, _ = grad.batched(points, np.repeat(targets, steps), 1024)
        total = (g.reshape(len(x), steps, -1).mean(axis=1) * x.reshape(len(x), -1)).sum(1)
        if float((np.abs(total - rise) / np.maximum(np.abs(rise), 1e-8)).max()) < tol:
            return steps
    return None


def bench_rules(models: dict, cfg: Settings) -> list[dict]:
    out = []
    for name in ("mlp", "small_cnn"):
        model, data = models[name]
        x = data[:cfg.rule_rows] if name == "small_cnn" else data[400:400 + cfg.rule_rows]
        need = {rule: steps_needed(model, x, rule) for rule in RULES}
        need["tf-explain's rule"] = tfx_rule_steps_needed(model, x)
        out.append({"model": name, "rows": len(x), "need": need})
    return out


# --------------------------------------------------------------------------- 5. memory


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(size: int, alpha: float, n: int, steps: int, batch_size: int) -> None:
    """Run in a fresh process: peak RSS growth of one IG call, printed as JSON."""
    model = build_large_cnn(size, alpha)
    x = images(n, size)
    explain(model, x[:1], "integrated_gradients", steps=1, batch_size=1)  # trace only
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
    before = _rss_kib("VmRSS")
    t0 = time.perf_counter()
    explain(model, x, "integrated_gradients", steps=steps, batch_size=batch_size)
    took = time.perf_counter() - t0
    peak = _rss_kib("VmHWM")
    print(json.dumps({"before_mib": before / 1024, "peak_mib": peak / 1024,
                      "delta_mib": (peak - before) / 1024, "seconds": took}))


def bench_memory(cfg: Settings) -> list[dict]:
    settings_ = [(cfg.mem_images, cfg.mem_batches[0]), (cfg.mem_images, cfg.mem_batches[1]),
                 (cfg.mem_images // 4, cfg.mem_batches[1])]
    out = []
    for n, bs in settings_:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child",
               str(cfg.mem_size), str(cfg.large_alpha), str(n), str(cfg.steps), str(bs)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"memory run failed ({proc.returncode}): {proc.stderr[-2000:]}")
        out.append({"images": n, "batch": bs, "rows": n * cfg.steps, **json.loads(lines[-1])})
    return out


# --------------------------------------------------------------------------- report


def machine_info() -> list[str]:
    import shap
    import tf_explain

    cpu = next((ln.split(":", 1)[1].strip() for ln in
                Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")),
               platform.processor())
    return [
        f"CPU: {cpu}; cores usable: {len(os.sched_getaffinity(0))} (os.cpu_count "
        f"{os.cpu_count()}); load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        f"Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras "
        f"{keras.__version__}, shap {shap.__version__}, tf-explain {tf_explain.__version__}, "
        f"numpy {np.__version__}",
    ]


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
            for r in rows]
    return [line, sep, *body]


def verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def verdicts(rows: list[dict], ok: Callable[[dict], bool]) -> str:
    return ", ".join(f"{r['model']} {verdict(ok(r))}" for r in rows)


def _render_tokens(tok_ig: dict | None, tok_shap: dict | None) -> list[str]:
    md: list[str] = []
    if tok_ig is not None:
        r = tok_ig
        md += ["### Token Integrated Gradients vs plain steps x (forward + backward) on "
               "embeddings", ""]
        md += table(["model", "rows (N x steps)", "batch", "plain F+B s", "xaudit token IG s",
                     "xaudit / plain (median of paired runs)", "median relative gap"],
                    [[r["shape"], r["rows"], str(r["batch"]), f"{r['plain']:.3f}",
                      f"{r['ours']:.3f}", f"{r['ours/plain']:.2f}x", f"{r['gap']:.1e}"]])
        md += ["", f"Target xaudit / plain <= 1.15x: {verdict(r['ours/plain'] <= 1.15)}.", ""]
    if tok_shap is not None:
        s = tok_shap
        md += [f"### Token SHAP, {s['n']} texts of {s['length']} tokens, masked tokens take "
               "the mask id", "",
               f"Reference: shap.ExactExplainer with the same masking ({s['exact_time']:.2f} "
               f"s); spread of the exact values {s['range']:.3f}.", ""]
        t_pe = s["rows"][1][1]
        md += table(["estimator", "time s", "PermutationExplainer time / this",
                     "max abs err", "forward rows per text"],
                    [[name, f"{t:.3f}", f"{t_pe / t:.1f}x", f"{e:.1e}",
                      "—" if k is None else str(k)] for name, t, e, k in s["rows"]])
        ours, pe, perm = s["rows"]
        md += ["", f"Target >= 10x faster than PermutationExplainer at equal or lower error: "
               f"default {verdict(ours[2] <= pe[2] and t_pe / ours[1] >= 10)} "
               f"({t_pe / ours[1]:.0f}x), permutation estimator "
               f"{verdict(perm[2] <= pe[2] and t_pe / perm[1] >= 10)} "
               f"({t_pe / perm[1]:.0f}x). Both call the model through the same compiled "
               "function in batches of 4096 rows.", ""]
    return md


def render(cfg: Settings, info: list[str], ig, cam, shp, rules, mem, model_notes,
           tok_ig=None, tok_shap=None) -> str:
    md = ["### Machine", "", *(f"- {ln}" for ln in info), *(f"- {ln}" for ln in model_notes),
          f"- timings: median of {cfg.repeats} run(s) after one warm-up (tracing) call"
          + (" — QUICK smoke run, sizes reduced" if cfg.quick else ""), ""]

    if ig is not None:
        md += _render_ig(cfg, ig)
    if cam is not None:
        md += _render_cam(cam)
    if shp is not None:
        md += _render_shap(shp)
    if rules is not None:
        md += _render_rules(rules, ig or [])
    if mem is not None:
        md += _render_mem(cfg, mem)
    md += _render_tokens(tok_ig, tok_shap)
    return "\n".join(md)


def _render_ig(cfg: Settings, ig: list[dict]) -> list[str]:
    md = ["### Integrated Gradients (Gauss-Legendre, "
          f"{cfg.steps} steps) vs tf-explain vs plain forward+backward", ""]
    md += table(
        ["model", "rows (N x steps)", "batch", "plain F+B s", "xaudit IG s", "tf-explain IG s",
         "xaudit / plain", "tf-explain / xaudit"],
        [[r["model"], r["rows"], f"{r['batch']} (tf-explain {r['tfx_call']})",
          f"{r['plain']:.3f}", f"{r['ours']:.3f}", f"{r['tfx']:.3f}",
          f"{r['ours/plain']:.2f}x", f"{r['tfx/ours']:.2f}x"] for r in ig])
    md += ["", "Targets: xaudit / plain <= 1.15x: "
           + verdicts(ig, lambda r: r["ours/plain"] <= 1.15) + "; tf-explain / xaudit >= 5x: "
           + verdicts(ig, lambda r: r["tfx/ours"] >= 5) + ".", ""]
    return md


def _render_cam(cam: list[dict]) -> list[str]:
    md = ["### Grad-CAM vs tf-explain GradCAM vs one forward+backward", ""]
    md += table(
        ["model", "images", "batch", "layer", "plain F+B s", "xaudit s", "tf-explain core s",
         "tf-explain explain() s", "xaudit / plain", "tf-explain core / xaudit"],
        [[r["model"], str(r["rows"]), str(r["batch"]), r["layer"], f"{r['plain']:.3f}",
          f"{r['ours']:.3f}", f"{r['tfx_core']:.3f}", f"{r['tfx_full']:.3f}",
          f"{r['ours/plain']:.2f}x", f"{r['tfx/ours']:.2f}x"] for r in cam])
    md += ["", "Target xaudit / plain <= 1.3x: "
           + verdicts(cam, lambda r: r["ours/plain"] <= 1.3) + ".", ""]
    return md


def _render_shap(shp: dict) -> list[str]:
    md = [f"### Model-agnostic SHAP, MLP with 16 features, {shp['n']} rows, "
           f"{shp['background']} background rows", "",
           f"Reference: shap.ExactExplainer ({shp['exact_time']:.1f} s); spread of the exact "
           f"values {shp['range']:.3f}.", ""]
    kernel_t = shp["rows"][1][1]
    md += table(["estimator", "time s", "KernelExplainer time / this", "max abs err",
                 "mean abs err"],
                [[name, f"{t:.3f}", f"{kernel_t / t:.1f}x", f"{mx:.2e}", f"{mn:.2e}"]
                 for name, t, mx, mn in shp["rows"]])
    ours, kern, docs = shp["rows"][0], shp["rows"][1], shp["rows"][3]
    md += ["", f"Targets: error <= KernelExplainer's: {verdict(ours[2] <= kern[2])} (max), "
           f"{verdict(ours[3] <= kern[3])} (mean); >= 50x faster: "
           f"{verdict(kern[1] / ours[1] >= 50)} against KernelExplainer on the same batched "
           f"function ({kern[1] / ours[1]:.0f}x), {verdict(docs[1] / ours[1] >= 50)} against "
           f"KernelExplainer on model.predict ({docs[1] / ours[1]:.0f}x). Every xaudit and "
           "shap estimator above except the model.predict row calls the model through the "
           "same compiled function in batches of 4096 rows.", ""]
    return md


def _render_rules(rules: list[dict], ig: list[dict]) -> list[str]:
    md = ["### Steps for a relative completeness gap < 1% on every row (logits)", ""]
    names = [*RULES, "tf-explain's rule"]
    rows = []
    for r in rules:
        gl = r["need"]["gausslegendre"]
        cells = []
        for rule in names:
            k = r["need"][rule]
            if k is None:
                cells.append(f"> {STEP_GRID[-1]}")
            elif rule == "gausslegendre" or gl is None:
                cells.append(str(k))
            else:
                cells.append(f"{k} ({k / gl:.1f}x)")
        rows.append([r["model"], str(r["rows"]), *cells])
    md += table(["model", "rows", *names], rows)
    def fewer(r: dict, rule: str) -> bool:
        gl, k = r["need"]["gausslegendre"], r["need"][rule]
        return gl is not None and (k is None or k >= 3 * gl)

    md += ["", "Steps are model evaluations per row; (Nx) = steps over Gauss-Legendre's. "
           "Target >= 3x fewer for Gauss-Legendre than each Riemann rule: "
           + "; ".join(f"{r['model']}: " + ", ".join(f"{rule} {verdict(fewer(r, rule))}"
                                                     for rule in names[1:])
                       for r in rules) + ".", ""]
    per_step = {r["model"]: r["tfx/ours"] for r in ig}
    for r in rules:
        gl, tx = r["need"]["gausslegendre"], r["need"]["tf-explain's rule"]
        if gl is not None and tx is not None and r["model"] in per_step:
            md.append(f"- {r['model']}, equal accuracy: tf-explain's rule needs {tx / gl:.1f}x "
                      f"the steps of Gauss-Legendre; times its cost per step relative to "
                      f"xaudit ({per_step[r['model']]:.2f}x) that is ~"
                      f"{tx / gl * per_step[r['model']]:.1f}x xaudit's time for a < 1% gap.")
    md.append("")
    return md


def _render_mem(cfg: Settings, mem: list[dict]) -> list[str]:
    md = [f"### Peak memory of IG, large CNN at {cfg.mem_size}x{cfg.mem_size}, "
           f"{cfg.steps} steps (fresh process each, RSS)", ""]
    md += table(["images", "batch_size", "rows (N x steps)", "RSS before MiB",
                 "peak RSS growth MiB", "time s"],
                [[str(r["images"]), str(r["batch"]), str(r["rows"]), f"{r['before_mib']:.0f}",
                  f"{r['delta_mib']:.0f}", f"{r['seconds']:.1f}"] for r in mem])
    a, b, c = mem
    per_row = (b["delta_mib"] - a["delta_mib"]) / max(1, b["batch"] - a["batch"])
    md += ["", f"Peak growth follows batch_size ({a['batch']} -> {b['batch']}: "
           f"{a['delta_mib']:.0f} -> {b['delta_mib']:.0f} MiB) and not N x steps "
           f"({c['rows']} -> {b['rows']} rows at batch {b['batch']}: {c['delta_mib']:.0f} -> "
           f"{b['delta_mib']:.0f} MiB). At ~{per_row:.1f} MiB per row of batch, one pass over "
           f"all {b['rows']} rows (tf-explain's way) would need ~{per_row * b['rows'] / 1024:.1f}"
           " GiB.", ""]
    return md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--only", default=None, metavar="SECTIONS",
                        help="comma-separated sections to run (ig, cam, shap, rules, mem, "
                             "tokig, tokshap); default all")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="also write the tables as markdown to this file")
    parser.add_argument("--memory-child", nargs=5, metavar=("SIZE", "ALPHA", "N", "STEPS",
                                                            "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        size, alpha, n, steps, bs = args.memory_child
        memory_child(int(size), float(alpha), int(n), int(steps), int(bs))
        return

    all_sections = ("ig", "cam", "shap", "rules", "mem", "tokig", "tokshap")
    only = all_sections if args.only is None else tuple(args.only.split(","))
    if unknown := sorted(set(only) - set(all_sections)):
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(all_sections)}")
    warnings.filterwarnings("ignore")
    cfg = settings(args.quick, args.repeats)
    t_start = time.perf_counter()
    info = machine_info()
    needs_models = bool(set(only) & {"ig", "cam", "shap", "rules"})
    mlp, tab, acc = build_mlp() if needs_models else (None, None, float("nan"))
    small = build_small_cnn(cfg.small_size)
    large = build_large_cnn(cfg.large_size, cfg.large_alpha) if needs_models else None
    n_img = max(max(v[0] for v in cfg.cam_rows.values()), cfg.ig_rows["small_cnn"][0],
                cfg.rule_rows)
    models = {
        "mlp": (mlp, tab),
        "small_cnn": (small, images(n_img, cfg.small_size)),
        "large_cnn": (large, images(max(cfg.cam_rows["large_cnn"][0],
                                        cfg.ig_rows["large_cnn"][0]), cfg.large_size, 1)),
    }
    notes = [] if not needs_models else [
        f"mlp: breast-cancer first 16 features, standardised, Dense 32-16-2 tanh/softmax, "
        f"trained 30 epochs (test accuracy {acc:.3f})",
        f"small_cnn: 3 conv layers + softmax over 10 classes on {cfg.small_size}x"
        f"{cfg.small_size}x3, random weights and biases, random images",
        f"large_cnn: keras.applications.MobileNetV2(weights=None, alpha={cfg.large_alpha}) on "
        f"{cfg.large_size}x{cfg.large_size}x3, functional, random weights, random images",
    ]
    if {"tokig", "tokshap"} & set(only):
        notes.append("text models: random weights, random token ids (see sections 6 and 7)")
    sections = dict.fromkeys(all_sections)
    for key, fn in [("ig", lambda: bench_ig(models, cfg)),
                    ("cam", lambda: bench_cam(models, cfg)),
                    ("shap", lambda: bench_shap(mlp, tab, cfg)),
                    ("rules", lambda: bench_rules(models, cfg)),
                    ("mem", lambda: bench_memory(cfg)),
                    ("tokig", lambda: bench_token_ig(cfg)),
                    ("tokshap", lambda: bench_token_shap(cfg))]:
        if key not in only:
            continue
        t0 = time.perf_counter()
        sections[key] = fn()
        print(f"[{key} done in {time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)
    info.append(f"load average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
                f"whole run {time.perf_counter() - t_start:.0f} s")
    text = render(cfg, info, sections["ig"], sections["cam"], sections["shap"],
                  sections["rules"], sections["mem"], notes, sections["tokig"],
                  sections["tokshap"])
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
