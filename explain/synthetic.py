"""Synthetic data with planted shortcuts anywhere in the image, and tables with leaks.

These generators feed the truthfulness benchmark (``bench/truthfulness.py``) and its
tests: each returns a :class:`~explain.datasets.Dataset` whose ``meta["planted"]`` says
where the shortcut is (a box in pixels, or the leaked feature), so an audit's findings
can be checked against the truth.

Images hold one object (circle, square or triangle: the class) on a noisy background.
A *planted* set adds a mark that tells one class apart: a small patch (corner, edge or
centre) or a thin band along one edge, present in a fraction ``rate`` of that class's
images and in a small fraction of the others. Its *clean* twin holds the same mark in
half of all images, independent of the label, so the two differ only in the correlation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from explain.datasets import Dataset

CLASSES = ("circle", "square", "triangle")

#: Where a patch can sit, as (row, col) fractions of the free span (0 top/left, 1 bottom/right).
PATCH_POSITIONS: dict[str, tuple[float, float]] = {
    "top-left": (0.0, 0.0), "top-right": (0.0, 1.0), "bottom-left": (1.0, 0.0),
    "bottom-right": (1.0, 1.0), "top": (0.0, 0.5), "bottom": (1.0, 0.5),
    "left": (0.5, 0.0), "right": (0.5, 1.0), "center": (0.5, 0.5),
}
BAND_EDGES = ("top", "bottom", "left", "right")
COLOURS: dict[str, tuple[float, float, float]] = {
    "white": (1.0, 1.0, 1.0), "red": (1.0, 0.1, 0.1), "green": (0.1, 0.9, 0.2),
    "blue": (0.2, 0.3, 1.0), "yellow": (1.0, 0.95, 0.1), "black": (0.0, 0.0, 0.0),
}


def mark_box(position: str, size: int, mark: int, band: bool = False, margin: int = 1
             ) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of a mark, end-exclusive.

    A patch is ``mark``×``mark`` pixels at ``position`` (see :data:`PATCH_POSITIONS`),
    ``margin`` pixels from the border; a band is ``mark`` pixels thick along the whole
    edge ``position`` (see :data:`BAND_EDGES`), touching the border.
    """
    if band:
        if position not in BAND_EDGES:
            raise ValueError(f"a band runs along an edge {BAND_EDGES}, got {position!r}")
        return {"top": (0, mark, 0, size), "bottom": (size - mark, size, 0, size),
                "left": (0, size, 0, mark), "right": (0, size, size - mark, size)}[position]
    if position not in PATCH_POSITIONS:
        raise ValueError(f"unknown patch position {position!r}; "
                         f"choose from {sorted(PATCH_POSITIONS)}")
    fy, fx = PATCH_POSITIONS[position]
    span = size - 2 * margin - mark
    y0 = margin + int(round(fy * span))
    x0 = margin + int(round(fx * span))
    return y0, y0 + mark, x0, x0 + mark


def planted_images(seed: int = 0, *, planted: bool = True, position: str = "top-left",
                   band: bool = False, mark: int = 4, colour: str = "white",
                   size: int = 32, channels: int = 3, n: int = 900, n_classes: int = 3,
                   target_class: int = 0, rate: float = 0.97, other_rate: float = 0.03,
                   centred: bool = False, noise: float = 0.08) -> Dataset:
    """Objects whose class is marked by a patch or band (``planted``) or not (the twin).

    Parameters
    ----------
    position, band, mark, colour
        The mark: a ``mark``-pixel patch at ``position`` or a ``mark``-pixel band along
        the edge ``position``, in a colour of :data:`COLOURS`.
    size, channels
        Image side and 3 (RGB) or 1 (grayscale).
    target_class, rate, other_rate
        Planted: the mark is in ``rate`` of class ``target_class``'s images and in
        ``other_rate`` of the others. The twin: in half of all images, at random.
    centred
        Objects sit in the middle of the image (jittered by up to a tenth of the side)
        instead of anywhere away from the mark.
    """
    if not 2 <= n_classes <= len(CLASSES):
        raise ValueError(f"n_classes must be 2 or 3, got {n_classes}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; choose from {sorted(COLOURS)}")
    rng = np.random.default_rng([seed, 7])
    y = rng.permutation(np.arange(n) % n_classes).astype(np.int64)
    box = mark_box(position, size, mark, band=band)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    keep = np.zeros((size, size), bool)
    keep[max(box[0] - 2, 0):box[1] + 2, max(box[2] - 2, 0):box[3] + 2] = True
    x = np.empty((n, size, size, 3), np.float32)
    mark_rgb = np.array(COLOURS[colour], np.float32)
    dark_mark = colour == "black"
    for i in range(n):
        # Background and object keep away from the mark's colour so that only the mark
        # shows it: a light background under a black mark, a dark one otherwise.
        if dark_mark:
            background = rng.uniform(0.55, 0.85, size=3).astype(np.float32)
            obj = rng.uniform(0.15, 0.45, size=3).astype(np.float32)
        else:
            background = rng.uniform(0.05, 0.35, size=3).astype(np.float32)
            obj = rng.uniform(0.40, 0.75, size=3).astype(np.float32)
        half = rng.uniform(0.16, 0.26) * size
        for _ in range(50):
            if centred:
                cy, cx = size / 2 + rng.uniform(-0.1, 0.1, size=2) * size
            else:
                cy, cx = rng.uniform(half + 1, size - half - 1, size=2)
            mask = _shape(int(y[i]), yy, xx, cy, cx, half, rng)
            if not (mask & keep).any() or centred:
                break
        img = np.broadcast_to(background, (size, size, 3)).copy()
        img[mask] = obj
        img += rng.normal(0.0, noise, size=img.shape).astype(np.float32)
        x[i] = img
    mrng = np.random.default_rng([seed, 8])
    if planted:
        has = np.where(y == target_class, mrng.random(n) < rate, mrng.random(n) < other_rate)
    else:
        has = mrng.random(n) < 0.5
    y0, y1, x0, x1 = box
    x[has, y0:y1, x0:x1, :] = mark_rgb
    np.clip(x, 0.0, 1.0, out=x)
    if channels == 1:
        x = x.mean(axis=3, keepdims=True)
    where = f"{'band along the ' if band else ''}{position}{' edge' if band else ''}"
    meta: dict[str, Any] = {
        "generator": "planted_images", "seed": seed,
        "planted": ({"kind": "band" if band else "patch", "where": where,
                     "box": {"y0": y0, "y1": y1, "x0": x0, "x1": x1}, "colour": colour,
                     "class": CLASSES[target_class], "rate": rate} if planted else None),
        "mark_box": {"y0": y0, "y1": y1, "x0": x0, "x1": x1},
        "per_row_mark": has.astype(int).tolist(),
    }
    return Dataset(x=x, y=y, class_names=list(CLASSES[:n_classes]), kind="image",
                   name=f"{'planted' if planted else 'clean'}_{where.replace(' ', '_')}",
                   meta=meta)


def _shape(k: int, yy, xx, cy, cx, half, rng) -> np.ndarray:
    if k == 0:
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= half ** 2
    if k == 1:
        s = half * 0.85
        return (np.abs(yy - cy) <= s) & (np.abs(xx - cx) <= s)
    t = (yy - (cy - half)) / (2 * half)
    if rng.random() < 0.5:
        t = 1.0 - t
    return (t >= 0) & (t <= 1) & (np.abs(xx - cx) <= t * half)


def leaky_table(seed: int = 0, *, planted: bool = True, task: str = "binary",
                n_features: int = 12, rate: float = 0.95, n: int = 1200,
                leak_position: int | None = None) -> Dataset:
    """A table whose label leaks into one column (``planted``) or not (the twin).

    ``task`` is ``binary``, ``multiclass`` (3 classes) or ``regression``. The leaked
    column ``leak`` holds the label (a noisy copy of the target for regression) for a
    fraction ``rate`` of the rows and noise otherwise; in the twin it is pure noise.
    The honest columns come from scikit-learn's ``make_classification`` /
    ``make_regression`` and are identical between the twins for a seed.
    """
    from sklearn.datasets import make_classification, make_regression

    if task not in ("binary", "multiclass", "regression"):
        raise ValueError(f"task must be binary, multiclass or regression, got {task!r}")
    rng = np.random.default_rng([seed, 9])
    if task == "regression":
        x, y = make_regression(n_samples=n, n_features=n_features,
                               n_informative=min(6, n_features), noise=0.0,
                               random_state=seed)
        # Honest features explain about half of the target's variance, so a model has a
        # reason to lean on the leak (as it does on a classification leak).
        y = y + np.random.default_rng([seed, 10]).normal(0.0, y.std(), n)
        y = (y - y.mean()) / y.std()
        agree = rng.random(n) < rate
        leak = np.where(agree, y + rng.normal(0, 0.05, n), rng.normal(0, 1, n))
        y = y.astype(np.float32)
        class_names = None
    else:
        k = 2 if task == "binary" else 3
        x, y = make_classification(n_samples=n, n_features=n_features,
                                   n_informative=min(5, n_features), n_redundant=2,
                                   n_classes=k, n_clusters_per_class=1, class_sep=0.7,
                                   flip_y=0.05, random_state=seed)
        agree = rng.random(n) < rate
        leak = np.where(agree, y, rng.integers(0, k, n)).astype(np.float64)
        leak = leak + rng.normal(0, 0.05, n)
        y = y.astype(np.int64)
        class_names = ["negative", "positive"] if k == 2 else ["low", "mid", "high"]
    if not planted:
        leak = rng.normal(0, 1, n) if task == "regression" else \
            rng.integers(0, 2 if task == "binary" else 3, n) + rng.normal(0, 0.05, n)
    pos = n_features // 2 if leak_position is None else leak_position
    x = np.insert(x, pos, leak, axis=1).astype(np.float32)
    names = [f"f{i:02d}" for i in range(n_features)]
    names.insert(pos, "leak")
    meta = {"generator": "leaky_table", "seed": seed, "task": task,
            "planted": {"feature": "leak", "rate": rate} if planted else None}
    return Dataset(x=x, y=y, feature_names=names, class_names=class_names, kind="tabular",
                   name=f"{'leaky' if planted else 'clean'}_{task}", meta=meta)
