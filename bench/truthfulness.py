"""Truthfulness benchmark: does the audit flag planted shortcuts in place, and stay quiet
on clean twins?

Generates planted and clean models (``explain.synthetic``) over shortcut positions
(corners, edges, centre, bands along each edge), mark sizes and colours, architectures
(functional, Sequential, nested backbone, BatchNorm, grayscale, 64×64, binary heads) and
tables (binary softmax and sigmoid, multiclass, regression, 60+ features, leaks of
several strengths); trains each, audits it with ``explain.audit.run_audit`` and checks
the findings against the truth:

- a planted image counts as *flagged in place* when a ``shortcut_region`` finding's box
  overlaps the planted mark; a planted table when a ``dominant_feature`` finding names
  the leaked column;
- a clean model counts as a *false alarm* when it gets any ``shortcut_region`` (images)
  or ``dominant_feature`` (tables) finding.

The audit runs with its default methods and samples; the explanation-quality checks are
off (no shortcut rule reads them, and they are the slow part).

    python bench/truthfulness.py            # every case (~40-60 min on 2 CPU cores)
    python bench/truthfulness.py --fast     # a small subset (a few minutes)
    python bench/truthfulness.py --only planted_img_03,clean_img_05
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


@dataclass
class Case:
    name: str
    kind: str  # "image" or "table"
    planted: bool
    data: dict[str, Any]
    arch: str = "functional"
    head: str = "softmax"  # softmax or sigmoid (binary only)
    epochs: int = 10
    fast: bool = False
    note: str = field(default="")


def image_cases() -> list[Case]:
    """22 planted image models and their 22 clean twins (same data settings)."""
    settings = [
        # (position, band, mark, colour, arch, size, channels, n_classes, head, centred)
        ("top-left", False, 4, "white", "functional", 32, 3, 3, "softmax", False),
        ("top-right", False, 3, "red", "sequential", 32, 3, 3, "softmax", False),
        ("bottom-left", False, 4, "green", "batchnorm", 32, 3, 3, "softmax", False),
        ("bottom-right", False, 5, "yellow", "nested", 32, 3, 3, "softmax", False),
        ("top", False, 4, "white", "functional", 32, 3, 3, "softmax", True),
        ("bottom", False, 3, "blue", "sequential", 32, 3, 3, "softmax", False),
        ("left", False, 4, "red", "functional", 32, 3, 2, "sigmoid", False),
        ("right", False, 4, "white", "batchnorm", 32, 1, 3, "softmax", False),
        ("center", False, 4, "white", "functional", 32, 3, 3, "softmax", False),
        ("center", False, 3, "red", "sequential", 32, 3, 3, "softmax", True),
        ("center", False, 6, "green", "nested", 32, 3, 2, "softmax", False),
        ("center", False, 8, "white", "functional", 64, 3, 3, "softmax", True),
        ("top", True, 2, "white", "functional", 32, 3, 3, "softmax", False),
        ("bottom", True, 2, "yellow", "sequential", 32, 3, 3, "softmax", True),
        ("left", True, 3, "red", "batchnorm", 32, 3, 3, "softmax", False),
        ("right", True, 2, "white", "functional", 32, 1, 2, "sigmoid", False),
        ("top", True, 4, "green", "nested", 64, 3, 3, "softmax", False),
        ("bottom", True, 1, "white", "functional", 32, 3, 2, "softmax", True),
        ("top-left", False, 8, "black", "functional", 64, 3, 3, "softmax", False),
        ("bottom-right", False, 3, "white", "functional", 32, 1, 3, "softmax", False),
        ("right", False, 6, "blue", "sequential", 64, 3, 2, "sigmoid", False),
        ("left", True, 4, "black", "functional", 64, 1, 3, "softmax", True),
    ]
    out = []
    for i, (pos, band, mark, colour, arch, size, ch, k, head, centred) in enumerate(settings):
        data = dict(position=pos, band=band, mark=mark, colour=colour, size=size,
                    channels=ch, n_classes=k, centred=centred, seed=i)
        where = f"{'band ' if band else ''}{pos} {mark}px {colour}"
        desc = (f"{where}, {arch}, {size}px{' gray' if ch == 1 else ''}, {k} classes "
                f"{head}{', centred objects' if centred else ''}")
        for planted in (True, False):
            out.append(Case(name=f"{'planted' if planted else 'clean'}_img_{i:02d}",
                            kind="image", planted=planted, data=data, arch=arch,
                            head=head, fast=i in (0, 9, 13), note=desc,
                            epochs=8 if size == 64 else 10))
    return out


def table_cases() -> list[Case]:
    """Planted leaks and clean twins: binary softmax and sigmoid, multiclass, regression,
    60+ features, leak rates 0.95, 0.85 and 0.75."""
    settings = [
        ("binary", "softmax", 12, 0.95), ("binary", "sigmoid", 12, 0.95),
        ("multiclass", "softmax", 12, 0.95), ("regression", "linear", 12, 0.95),
        ("binary", "softmax", 64, 0.95), ("regression", "linear", 64, 0.9),
        ("binary", "sigmoid", 20, 0.85), ("multiclass", "softmax", 20, 0.85),
        ("binary", "softmax", 12, 0.75), ("regression", "linear", 20, 0.8),
    ]
    out = []
    for i, (task, head, nf, rate) in enumerate(settings):
        data = dict(task=task, n_features=nf, rate=rate, seed=100 + i)
        desc = f"{task} {head}, {nf} features, leak rate {rate}"
        for planted in (True, False):
            out.append(Case(name=f"{'planted' if planted else 'clean'}_tab_{i:02d}",
                            kind="table", planted=planted, data=data, head=head,
                            arch="mlp", epochs=30, fast=i in (0, 3), note=desc))
    return out


# ----------------------------------------------------------------------------- models


def build_image_model(arch: str, shape: tuple[int, ...], n_classes: int, head: str):
    from explain._backend import keras

    layers = keras.layers
    width = 1 if head == "sigmoid" else n_classes
    act = "sigmoid" if head == "sigmoid" else "softmax"
    big = shape[0] >= 64

    def trunk(h, bn: bool = False):
        h = layers.Rescaling(2.0, offset=-1.0)(h)
        for i, f in enumerate((16, 16, 32)):
            h = layers.Conv2D(f, 3, padding="same", use_bias=not bn, name=f"conv{i + 1}")(h)
            if bn:
                h = layers.BatchNormalization(momentum=0.9, name=f"bn{i + 1}")(h)
            h = layers.Activation("relu")(h)
            if i == 1 or (big and i == 0):
                h = layers.MaxPooling2D(2)(h)
        return h

    if arch == "sequential":
        seq = [keras.Input(shape), layers.Rescaling(2.0, offset=-1.0),
               layers.Conv2D(16, 3, padding="same", activation="relu")]
        if big:
            seq.append(layers.MaxPooling2D(2))
        seq += [layers.Conv2D(16, 3, padding="same", activation="relu"),
                layers.MaxPooling2D(2),
                layers.Conv2D(32, 3, padding="same", activation="relu", name="last_conv"),
                layers.GlobalAveragePooling2D(), layers.Dense(width, activation=act)]
        return keras.Sequential(seq)
    inp = keras.Input(shape)
    if arch == "nested":
        b_in = keras.Input(shape)
        backbone = keras.Model(b_in, trunk(b_in), name="backbone")
        h = backbone(inp)
    else:
        h = trunk(inp, bn=arch == "batchnorm")
    h = layers.GlobalAveragePooling2D()(h)
    out = layers.Dense(width, activation=act)(h)
    return keras.Model(inp, out)


def build_table_model(n_features: int, task: str, head: str, n_classes: int):
    from explain._backend import keras

    inp = keras.Input((n_features,))
    h = keras.layers.Normalization()(inp)
    h = keras.layers.Dense(32, activation="relu")(h)
    h = keras.layers.Dense(16, activation="relu")(h)
    if task == "regression":
        out = keras.layers.Dense(1)(h)
    elif head == "sigmoid":
        out = keras.layers.Dense(1, activation="sigmoid")(h)
    else:
        out = keras.layers.Dense(n_classes, activation="softmax")(h)
    model = keras.Model(inp, out)
    return model, model.layers[1]


def train_case(case: Case, folder: Path) -> tuple[Path, Any, dict[str, Any]]:
    """Train the case's model; returns (model path, held-out data, training facts)."""
    from explain._backend import keras
    from explain.datasets import Dataset
    from explain.synthetic import leaky_table, planted_images

    keras.utils.set_random_seed(case.data["seed"])
    if case.kind == "image":
        ds = planted_images(planted=case.planted, **case.data)
        model = build_image_model(case.arch, ds.x.shape[1:], len(ds.class_names), case.head)
        loss = ("binary_crossentropy" if case.head == "sigmoid"
                else "sparse_categorical_crossentropy")
        metrics = ["accuracy"]
    else:
        ds = leaky_table(planted=case.planted, **case.data)
        task = case.data["task"]
        k = 1 if task == "regression" else len(ds.class_names)
        model, norm = build_table_model(ds.x.shape[1], task, case.head, k)
        n_train = int(0.7 * len(ds.x))
        norm.adapt(ds.x[:n_train])
        loss = ("mse" if task == "regression" else "binary_crossentropy"
                if case.head == "sigmoid" else "sparse_categorical_crossentropy")
        metrics = [] if task == "regression" else ["accuracy"]
    n_train = int(0.7 * len(ds.x))
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss=loss, metrics=metrics)
    y_train = ds.y[:n_train]
    hist = model.fit(ds.x[:n_train], y_train, epochs=case.epochs, batch_size=32, verbose=0)
    path = folder / f"{case.name}.keras"
    model.save(path)
    test = Dataset(x=ds.x[n_train:], y=ds.y[n_train:], feature_names=ds.feature_names,
                   class_names=ds.class_names, kind=ds.kind, name=ds.name, meta=ds.meta)
    facts = {"train_loss": float(hist.history["loss"][-1])}
    if "accuracy" in hist.history:
        facts["train_accuracy"] = float(hist.history["accuracy"][-1])
    facts.update(_reliance(model, case, ds, n_train))
    return path, test, facts


def _reliance(model, case: Case, ds, n_train: int) -> dict[str, Any]:
    """Ground truth on the model, independent of the audit: does it use the mark/leak?

    Images: accuracy on the held-out target-class images with the mark against the same
    images with the mark painted over with the surrounding colour. Tables: accuracy (R²)
    with the leak column shuffled.
    """
    x, y = ds.x[n_train:], ds.y[n_train:]
    if case.kind == "image":
        from explain.image_shortcuts import inpaint

        box = ds.meta["mark_box"]
        has = np.asarray(ds.meta["per_row_mark"])[n_train:].astype(bool)
        if not has.any():
            return {}
        b = (box["y0"], box["y1"], box["x0"], box["x1"])
        p = _predict_labels(model, x[has], case)
        q = _predict_labels(model, inpaint(x[has], b), case)
        return {"acc_marked": float(np.mean(p == y[has])),
                "acc_mark_removed": float(np.mean(q == y[has]))}
    pos = ds.feature_names.index("leak")
    xs = x.copy()
    xs[:, pos] = np.random.default_rng(0).permutation(xs[:, pos])
    if case.data["task"] == "regression":
        from sklearn.metrics import r2_score

        pr = model.predict(x, verbose=0)[:, 0]
        ps = model.predict(xs, verbose=0)[:, 0]
        return {"r2": float(r2_score(y, pr)), "r2_leak_shuffled": float(r2_score(y, ps))}
    return {"acc": float(np.mean(_predict_labels(model, x, case) == y)),
            "acc_leak_shuffled": float(np.mean(_predict_labels(model, xs, case) == y))}


def _predict_labels(model, x, case: Case) -> np.ndarray:
    p = model.predict(x, verbose=0, batch_size=256)
    if p.shape[1] == 1:
        return (p[:, 0] >= 0.5).astype(int)
    return p.argmax(axis=1)


# ----------------------------------------------------------------------------- judge


def _overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return a["y0"] < b["y1"] and b["y0"] < a["y1"] and a["x0"] < b["x1"] and b["x0"] < a["x1"]


def judge(case: Case, test, report: dict[str, Any]) -> dict[str, Any]:
    findings = report["findings"]
    if case.kind == "image":
        hits = [f for f in findings if f["code"] == "shortcut_region"]
        truth = test.meta["mark_box"]
        in_place = [f for f in hits if _overlap(f["evidence"]["box"], truth)]
        found = [f"{f['evidence']['region']} {f['evidence'].get('classes')}" for f in hits]
    else:
        hits = [f for f in findings if f["code"] == "dominant_feature"]
        in_place = [f for f in hits if f["evidence"]["feature"] == "leak"]
        found = [f"{f['evidence']['feature']} share {f['evidence']['share']:.2f} "
                 f"({f['evidence']['judged_by']})" for f in hits]
    if case.planted:
        ok = bool(in_place)
    else:
        ok = not hits
    out = {"ok": ok, "found": found, "n_findings": len(hits)}
    if case.kind == "table":
        out["top_feature"] = _top_feature(report)
    return out


def _top_feature(report: dict[str, Any]) -> dict[str, Any] | None:
    """What the dominant_feature rule reads about the top feature (for tuning it)."""
    gi = report.get("global_importance") or {}
    items = gi.get("items") or []
    if len(items) < 2:
        return None
    total = sum(max(float(i["score"]), 0.0) for i in items) or 1.0
    perm = {p["feature"]: p for p in (gi.get("permutation") or {}).get("items") or []}
    top = items[0]["feature"]
    others = [float(p["drop"]) for f, p in perm.items() if f != top]
    drop = perm.get(top, {})
    return {"feature": top, "share": round(float(items[0]["score"]) / total, 4),
            "ratio": round(float(items[0]["score"]) / max(float(items[1]["score"]), 1e-12), 4),
            "drop": drop.get("drop"), "drop_lead": (
                round(float(drop["drop"]) / max(max(others), 1e-12), 4)
                if others and "drop" in drop else None),
            "alone": drop.get("alone")}


_CANDIDATE_KEYS = ("class", "region", "box", "method", "mass_share", "consistency",
                   "ablation_drop", "random_region_drop", "other_classes_drop",
                   "content_spread", "random_content_spread", "passed")


def _attention_at(maps, groups, truth: dict[str, int], settings) -> dict[str, Any]:
    """Per class and method, the attention values of the best candidate box overlapping the
    planted mark: what the attention gates saw there, whether or not it was nominated."""
    from explain.image_shortcuts import box_shares, candidate_boxes, overlaps

    first = next(iter(maps.values()))
    h, w = first.shape[1:3]
    t = (truth["y0"], truth["y1"], truth["x0"], truth["x1"])
    boxes = [b for _, b in candidate_boxes(h, w, settings) if overlaps(b, t)]
    area = np.array([(b[1] - b[0]) * (b[3] - b[2]) / (h * w) for b in boxes])
    out: dict[str, Any] = {}
    for method, m in maps.items():
        shares = box_shares(m, boxes)
        for g in np.unique(groups):
            s = shares[groups == g]
            mean = s.mean(axis=0)
            cons = (s >= settings.min_lift * area[None, :]).mean(axis=0)
            i = int(np.argmax(mean / area))
            out[f"{int(g)}/{method}"] = {"mass_share": round(float(mean[i]), 3),
                                         "consistency": round(float(cons[i]), 3),
                                         "lift": round(float(mean[i] / area[i]), 2)}
    return out


def run_case(case: Case, folder: Path) -> dict[str, Any]:
    import explain.image_shortcuts as image_shortcuts
    from explain.audit import run_audit

    t0 = time.perf_counter()
    path, test, facts = train_case(case, folder)
    t1 = time.perf_counter()
    # The audit reports only the shortcuts that passed; the bench also keeps every
    # candidate the test weighed (and, on planted images, the attention at the mark), so
    # a miss or a false alarm comes with the values that decided it. A wrapper around the
    # module function is the least intrusive way to see them.
    weighed: list[dict[str, Any]] = []
    attention: dict[str, Any] = {}
    original = image_shortcuts.find_shortcuts

    def recording(maps, map_groups, *args, **kwargs):
        found, tested = original(maps, map_groups, *args, **kwargs)
        weighed.extend(tested)
        if case.kind == "image" and case.planted:
            settings = inspect.signature(original).bind(
                maps, map_groups, *args, **kwargs).arguments.get("settings")
            attention.update(_attention_at(maps, np.asarray(map_groups),
                                           test.meta["mark_box"],
                                           settings or image_shortcuts.ShortcutSettings()))
        return found, tested

    image_shortcuts.find_shortcuts = recording
    try:
        result = run_audit(path, test, {"seed": 0, "quality": {
            "faithfulness": False, "randomization": False, "stability": False}})
    finally:
        image_shortcuts.find_shortcuts = original
    t2 = time.perf_counter()
    verdict = judge(case, test, result.report)
    row = {"case": case.name, "kind": case.kind, "planted": case.planted, "note": case.note,
           **verdict, "facts": facts, "train_s": round(t1 - t0, 1),
           "audit_s": round(t2 - t1, 1)}
    if case.kind == "image":
        truth = test.meta["mark_box"]
        row["candidates"] = [dict({k: c[k] for k in _CANDIDATE_KEYS},
                                  at_mark=_overlap(c["box"], truth)) for c in weighed]
        if case.planted:
            row["attention_at_mark"] = attention
    return row


def summarize(rows: list[dict[str, Any]]) -> str:
    lines = []
    for kind in ("image", "table", None):
        sel = [r for r in rows if kind is None or r["kind"] == kind]
        planted = [r for r in sel if r["planted"]]
        clean = [r for r in sel if not r["planted"]]
        label = kind or "all"
        if planted:
            k = sum(r["ok"] for r in planted)
            lines.append(f"{label:6s} flagged in place: {k}/{len(planted)} "
                         f"({k / len(planted):.0%})")
        if clean:
            k = sum(not r["ok"] for r in clean)
            lines.append(f"{label:6s} false alarms:     {k}/{len(clean)} "
                         f"({k / len(clean):.0%})")
    missed = [r for r in rows if not r["ok"]]
    if missed:
        lines.append("cases the audit got wrong:")
        for r in missed:
            what = "missed" if r["planted"] else "false alarm"
            lines.append(f"  {r['case']} ({what}; {r['note']}): found {r['found']}; "
                         f"model facts {r['facts']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fast", action="store_true", help="a small subset of the cases")
    ap.add_argument("--only", default=None, help="comma-separated case names")
    ap.add_argument("--kind", choices=("image", "table"), default=None)
    ap.add_argument("--json", default=None, help="write every case's result here")
    args = ap.parse_args(argv)
    cases = image_cases() + table_cases()
    if args.fast:
        cases = [c for c in cases if c.fast]
    if args.kind:
        cases = [c for c in cases if c.kind == args.kind]
    if args.only:
        wanted = set(args.only.split(","))
        cases = [c for c in cases if c.name in wanted]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            row = run_case(case, Path(tmp))
            rows.append(row)
            print(f"{row['case']:16s} {'ok ' if row['ok'] else 'BAD'} "
                  f"found={row['found']} facts={row['facts']} "
                  + (f"top={row['top_feature']} " if row.get("top_feature") else "")
                  + f"train {row['train_s']}s audit {row['audit_s']}s", flush=True)
    print(summarize(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
