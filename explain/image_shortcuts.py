"""Shortcut detection in images that does not depend on where the shortcut is.

A shortcut is a small region that decides the prediction by itself: a watermark, a tag, a
ruler, a bright band along one edge. Any small square (corner, edge, centre) and any thin
band along an edge is a candidate. A candidate is a shortcut for a class when

1. **attention**: the class's attribution maps put an outsized share of their mass in it
   (mass share at least ``min_mass_share`` and ``min_lift`` times its share of the area),
2. **consistency**: it is hot in most of the class's examples (at least
   ``min_consistency`` of them hold ``min_lift`` times its area share there), so the
   model looks at one *place*, not at an object that moves around, and
3. **behaviour**: removing it (filling it with the colour of its surroundings, per
   image) lowers the class's predicted probability far more than removing random regions
   of the same shape (``min_drop`` absolute, ``min_drop_ratio`` times the random
   reference), and far more than removing it from the images of the other classes
   (``min_specificity`` times): a tag marks one class, while the middle of an image
   that every class's object fills matters to every class.

4. **fixed pattern**: its content varies across the class's images no more than random
   regions of the same shape do (``max_spread_ratio``): a watermark or band is the same
   pixels every time, while the part of an object that falls into a box changes with
   the object's colour, shape and position.

Tests 3 and 4 are what tell a centred watermark from a centred object: both attract
attention in the middle, and removing either can hurt one class more than the others
(measured on the bundled ``shapes`` twins: blanking the middle of clean triangle images
drops their probability by 0.17-0.23, 5-10× the random reference), but only the mark is
the same in every image (content spread 0.05-0.14 against 0.14-0.20 for random boxes;
a triangle's middle: 0.23-0.24 against 0.14-0.17).

:func:`find_shortcuts` returns, per detected shortcut, the evidence a reviewer needs: the
box, the mass share, the consistency, the ablation drop, the random-region reference
and the drop on the other classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from explain.errors import ConfigError, ConfigTypeError

ALL_CLASSES = -1


@dataclass(frozen=True)
class ShortcutSettings:
    """The knobs of :func:`find_shortcuts` (see the module docstring for the tests).

    ``square_fractions`` are the sides of square candidates as fractions of the image
    side; ``band_fractions`` the thicknesses of edge bands; ``stride_fraction`` the step
    between square candidates. ``candidates_per_group`` boxes per class and method go on
    to the ablation test; each is compared with ``random_regions`` random boxes of its
    shape; at most ``max_rows`` images per class are ablated.
    """

    square_fractions: tuple[float, ...] = (0.125, 0.1875, 0.25)
    band_fractions: tuple[float, ...] = (0.0625, 0.125)
    stride_fraction: float = 1 / 16
    # The attention gates (mass share, lift, consistency) only choose the boxes that go on
    # to the fixed-pattern and ablation tests, which judge. Measured with
    # bench/truthfulness.py --kind image: planted_img_01 (a 3 px red mark that a Sequential
    # CNN leans on only partly: accuracy on marked images 0.90, 0.52 with it painted over)
    # holds 0.079 (IG), 0.088 (Grad-CAM) and 0.105 (SHAP) of its class's mass at the mark,
    # hot in 0.36 of the examples (4 of 11). At the former 0.12 / 0.5 it never reached the
    # ablation, which it passes (drop 0.110, random regions 0.002, other classes -0.006).
    # With 0.07 / 0.35: 22/22 planted images flagged in place, 0/22 clean twins flagged;
    # on the clean twins 12-21 101 of 117 tested boxes were nominated only by the lower
    # gates, none passed, and the largest ablation drop of a fixed-pattern box was 0.017
    # (clean_img_21, centre), against min_drop 0.08.
    min_mass_share: float = 0.07
    min_lift: float = 3.0
    min_consistency: float = 0.35
    min_examples: int = 3
    candidates_per_group: int = 4
    min_drop: float = 0.08
    min_drop_ratio: float = 3.0
    min_specificity: float = 2.0
    max_spread_ratio: float = 1.0
    random_regions: int = 8
    max_rows: int = 96
    seed: int = 0

    @classmethod
    def from_config(cls, overrides: Mapping[str, Any] | None, seed: int = 0
                    ) -> ShortcutSettings:
        """Defaults with an audit config's ``image_shortcuts`` overrides applied.

        ``seed`` is the audit's own seed, not an override. Raises ConfigError for an
        unknown name or an out-of-range value and ConfigTypeError for a wrong type, the
        way :meth:`explain.findings.FindingThresholds.from_config` does.
        """
        if overrides is None:
            return cls(seed=seed)
        if not isinstance(overrides, Mapping):
            raise ConfigTypeError(f"config image_shortcuts must be a mapping of settings, "
                                  f"got {overrides!r:.200}")
        unknown = set(overrides) - set(_SETTING_RANGES)
        if unknown:
            raise ConfigError(f"unknown image shortcut setting(s) {sorted(unknown)}; known: "
                              f"{sorted(_SETTING_RANGES)}")
        kinds = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, value in overrides.items():
            low, high = _SETTING_RANGES[name]
            kind = kinds[name]
            if kind.startswith("tuple"):
                if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence)
                        or not all(_is_number(v) for v in value)):
                    raise ConfigTypeError(f"image_shortcuts.{name} must be a list of "
                                          f"numbers, got {value!r:.200}")
                if not value:
                    raise ConfigError(f"image_shortcuts.{name} is empty")
                items = tuple(float(v) for v in value)
            elif kind == "int":
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                    raise ConfigTypeError(f"image_shortcuts.{name} must be an integer, "
                                          f"got {value!r:.200}")
                items = (int(value),)
            else:
                if not _is_number(value):
                    raise ConfigTypeError(f"image_shortcuts.{name} must be a number, "
                                          f"got {value!r:.200}")
                items = (float(value),)
            bad = [v for v in items if not (low <= v <= high)]
            if bad:
                raise ConfigError(f"image_shortcuts.{name} must lie in [{low}, {high}], "
                                  f"got {value!r:.200}")
            values[name] = items if kind.startswith("tuple") else items[0]
        return cls(**values, seed=seed)


def _is_number(value: Any) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float, np.integer,
                                                                np.floating))
            and bool(np.isfinite(value)))


#: What an audit config may override, with the closed range each setting must lie in.
#: Fractions and shares are of the image side, area or examples; the sizes bound the
#: ablation work (predictions on up to ``max_rows × (1 + random_regions)`` images per
#: candidate). ``seed`` is left out: the audit's own seed sets it.
_SETTING_RANGES: dict[str, tuple[float, float]] = {
    "square_fractions": (0.01, 0.99),
    "band_fractions": (0.01, 0.5),
    "stride_fraction": (0.01, 1.0),
    "min_mass_share": (0.0, 1.0),
    "min_lift": (0.0, 1000.0),
    "min_consistency": (0.0, 1.0),
    "min_examples": (1, 10_000),
    "candidates_per_group": (1, 64),
    "min_drop": (0.0, 1.0),
    "min_drop_ratio": (0.0, 1000.0),
    "min_specificity": (0.0, 1000.0),
    "max_spread_ratio": (0.0, 1000.0),
    "random_regions": (1, 256),
    "max_rows": (1, 100_000),
}


Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (end-exclusive)


def candidate_boxes(h: int, w: int, settings: ShortcutSettings = ShortcutSettings()
                    ) -> list[tuple[str, Box]]:
    """Every candidate region: squares of several sizes everywhere, and edge bands."""
    out: list[tuple[str, Box]] = []
    side = min(h, w)
    seen: set[Box] = set()
    for f in settings.square_fractions:
        s = max(2, int(round(f * side)))
        if s >= side:
            continue
        stride = max(1, int(round(settings.stride_fraction * side)))
        ys = sorted(set(range(0, h - s + 1, stride)) | {h - s})
        xs = sorted(set(range(0, w - s + 1, stride)) | {w - s})
        for y0 in ys:
            for x0 in xs:
                box = (y0, y0 + s, x0, x0 + s)
                if box not in seen:
                    seen.add(box)
                    out.append(("square", box))
    for f in settings.band_fractions:
        t = max(1, int(round(f * side)))
        for box in ((0, t, 0, w), (h - t, h, 0, w), (0, h, 0, t), (0, h, w - t, w)):
            if box not in seen:
                seen.add(box)
                out.append(("band", box))
    return out


def box_shares(maps: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """Share of each example's mass inside each box: ``(n, n_boxes)``."""
    m = np.abs(np.asarray(maps, np.float64))
    n, h, w = m.shape
    integral = np.zeros((n, h + 1, w + 1))
    integral[:, 1:, 1:] = m.cumsum(axis=1).cumsum(axis=2)
    b = np.asarray(boxes, np.int64)
    y0, y1, x0, x1 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    sums = (integral[:, y1, x1] - integral[:, y0, x1] - integral[:, y1, x0]
            + integral[:, y0, x0])
    total = integral[:, h, w]
    return sums / np.where(total > 0, total, 1.0)[:, None]


def region_name(box: Box, h: int, w: int, shape: str = "square") -> str:
    """A human name for a box: corner, edge, centre, or a band along an edge."""
    y0, y1, x0, x1 = box
    if shape == "band":
        if x1 - x0 == w:
            return "band along the top edge" if y0 == 0 else "band along the bottom edge"
        return "band along the left edge" if x0 == 0 else "band along the right edge"
    cy, cx = (y0 + y1) / 2 / h, (x0 + x1) / 2 / w
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else "middle"
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "center"
    if row == "middle" and col == "center":
        return "center"
    if row == "middle":
        return f"{col} edge"
    if col == "center":
        return f"{row} edge"
    return f"{row}-{col} corner"


def overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def inpaint(x: np.ndarray, box: Box) -> np.ndarray:
    """``x`` with ``box`` filled, per image and channel, by the mean of a ring around it.

    The ring is as wide as half the box's shorter side (at least 2 pixels), clipped to
    the image. A mark on a background becomes background; the uniform interior of a
    large object stays the object's colour.
    """
    y0, y1, x0, x1 = box
    n, h, w = x.shape[:3]
    r = max(2, min(y1 - y0, x1 - x0) // 2)
    ring = np.zeros((h, w), bool)
    ring[max(0, y0 - r):min(h, y1 + r), max(0, x0 - r):min(w, x1 + r)] = True
    ring[y0:y1, x0:x1] = False
    if not ring.any():  # the box is the whole image
        fill = x.reshape(n, -1, x.shape[-1]).mean(axis=1)
    else:
        fill = x[:, ring, :].mean(axis=1)
    out = x.copy()
    out[:, y0:y1, x0:x1, :] = fill[:, None, None, :]
    return out


def _random_boxes(box: Box, h: int, w: int, k: int, rng: np.random.Generator) -> list[Box]:
    bh, bw = box[1] - box[0], box[3] - box[2]
    out: list[Box] = []
    for _ in range(50 * k):
        y0 = int(rng.integers(0, h - bh + 1))
        x0 = int(rng.integers(0, w - bw + 1))
        cand = (y0, y0 + bh, x0, x0 + bw)
        if not overlaps(cand, box):
            out.append(cand)
        if len(out) == k:
            break
    return out


def _content_spread(x: np.ndarray, box: Box) -> float:
    """How much a box's content varies across images: mean per-pixel std."""
    y0, y1, x0, x1 = box
    return float(x[:, y0:y1, x0:x1, :].std(axis=0).mean())


class _Prober:
    """Class probabilities of ablated images, batched."""

    def __init__(self, predict_proba, batch_size: int = 256):
        self.predict_proba = predict_proba
        self.batch_size = batch_size

    def drop(self, x: np.ndarray, classes: np.ndarray, base: np.ndarray, box: Box
             ) -> float:
        """Mean drop of each image's probability of ``classes`` when ``box`` is removed."""
        if len(x) == 0:
            return 0.0
        p = self.predict_proba(inpaint(x, box))
        return float(np.mean(base - p[np.arange(len(x)), classes]))


def find_shortcuts(
    maps: Mapping[str, np.ndarray],
    map_groups: np.ndarray,
    x: np.ndarray,
    x_groups: np.ndarray,
    predict_proba,
    settings: ShortcutSettings | None = None,
    class_names: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Shortcut regions per class, judged by attention and by what the model does.

    Parameters
    ----------
    maps
        Method → non-negative attribution maps ``(n, H, W)`` of the explained examples.
    map_groups
        int ``(n,)``: the predicted class of each explained example.
    x
        Images ``(N, H, W, C)`` to ablate (e.g. the audit's rows), with
    x_groups
        their predicted classes ``(N,)``.
    predict_proba
        ``f(images) -> (N, K)`` class probabilities.

    Returns
    -------
    (list of dict, list of dict)
        The detected shortcuts (the best box per class) and every candidate that went to
        the ablation test (``passed`` says which cleared it). Each has ``class``, ``region``,
        ``shape``, ``box``, ``methods`` and the evidence: ``mass_share``,
        ``area_share``, ``consistency``, ``ablation_drop``, ``random_region_drop``,
        ``other_classes_drop``, ``flip_rate`` and ``examples``.
    """
    st = settings or ShortcutSettings()
    rng = np.random.default_rng(st.seed)
    map_groups = np.asarray(map_groups)
    x_groups = np.asarray(x_groups)
    first = next(iter(maps.values()))
    h, w = first.shape[1:3]
    cands = candidate_boxes(h, w, st)
    boxes = [b for _, b in cands]
    shapes = [s for s, _ in cands]
    areas = np.array([(b[1] - b[0]) * (b[3] - b[2]) / (h * w) for b in boxes])
    shares = {m: box_shares(v, boxes) for m, v in maps.items()}
    prober = _Prober(predict_proba)

    # Attention: candidates per class, from every method.
    tested: dict[tuple[int, Box], dict[str, Any]] = {}
    for g in np.unique(map_groups):
        idx = np.flatnonzero(map_groups == g)
        if len(idx) < st.min_examples:
            continue
        for method, sh in shares.items():
            s = sh[idx]
            mean = s.mean(axis=0)
            lift = mean / areas
            consistency = (s >= st.min_lift * areas[None, :]).mean(axis=0)
            ok = (mean >= st.min_mass_share) & (lift >= st.min_lift) & (
                consistency >= st.min_consistency)
            order = [int(i) for i in np.argsort(-lift) if ok[i]]
            picked: list[int] = []
            for i in order:
                if all(not overlaps(boxes[i], boxes[j]) for j in picked):
                    picked.append(i)
                if len(picked) == st.candidates_per_group:
                    break
            for i in picked:
                key = (int(g), boxes[i])
                entry = tested.setdefault(key, {
                    "group": int(g), "box_index": i, "methods": {}})
                entry["methods"][method] = {"mass_share": float(mean[i]),
                                            "consistency": float(consistency[i])}

    # Behaviour: ablate each candidate in the class's images, against random boxes and
    # against the other classes' images.
    base_cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    hits: list[dict[str, Any]] = []
    for (g, box), entry in tested.items():
        if g not in base_cache:
            rows = np.flatnonzero(x_groups == g)
            if len(rows) > st.max_rows:
                rows = np.sort(rng.choice(rows, st.max_rows, replace=False))
            other = np.flatnonzero(x_groups != g)
            if len(other) > st.max_rows:
                other = np.sort(rng.choice(other, st.max_rows, replace=False))
            xg, xo = x[rows], x[other]
            pg = predict_proba(xg)[:, g] if len(xg) else np.zeros(0)
            po = predict_proba(xo) if len(xo) else np.zeros((0, 1))
            base_cache[g] = (xg, xo, pg, po)
        xg, xo, pg, po = base_cache[g]
        if len(xg) < st.min_examples:
            continue
        rboxes = _random_boxes(box, h, w, st.random_regions, rng)
        # The cheap test first: a box whose content varies across the class's images
        # more than random boxes of its shape do is an object, not a fixed mark.
        spread = _content_spread(xg, box)
        random_spread = (float(np.mean([_content_spread(xg, b) for b in rboxes]))
                         if rboxes else spread)
        fixed_pattern = spread <= st.max_spread_ratio * random_spread
        drop = random_drop = other_drop = flip = float("nan")
        if fixed_pattern:
            ablated = predict_proba(inpaint(xg, box))
            drop = float(np.mean(pg - ablated[:, g]))
            flip = float(np.mean(ablated.argmax(axis=1) != g))
            randoms = [prober.drop(xg, np.full(len(xg), g), pg, b) for b in rboxes]
            random_drop = float(np.mean(randoms)) if randoms else 0.0
            if len(xo):
                oc = po.argmax(axis=1)
                other_drop = prober.drop(xo, oc, po[np.arange(len(xo)), oc], box)
            else:
                other_drop = 0.0
        i = entry["box_index"]
        best_method = max(entry["methods"], key=lambda m: entry["methods"][m]["mass_share"])
        ev = entry["methods"][best_method]
        passed = bool(fixed_pattern and drop >= st.min_drop
                      and drop >= st.min_drop_ratio * max(random_drop, 0.0)
                      and drop >= st.min_specificity * max(other_drop, 0.0))
        y0, y1, x0, x1 = box
        hit = {
            "group": g,
            "class": (str(class_names[g]) if class_names is not None
                      and 0 <= g < len(class_names) else str(g)),
            "region": region_name(box, h, w, shapes[i]),
            "shape": shapes[i],
            "box": {"y0": int(y0), "y1": int(y1), "x0": int(x0), "x1": int(x1)},
            "methods": sorted(entry["methods"]),
            "method": best_method,
            "mass_share": round(ev["mass_share"], 4),
            "area_share": round(float(areas[i]), 4),
            "consistency": round(ev["consistency"], 4),
            "ablation_drop": round(drop, 4),
            "random_region_drop": round(random_drop, 4),
            "other_classes_drop": round(other_drop, 4),
            "flip_rate": round(flip, 4),
            "content_spread": round(spread, 4),
            "random_content_spread": round(random_spread, 4),
            "examples": int(np.sum(map_groups == g)),
            "ablated_rows": int(len(xg)),
            "passed": bool(passed),
        }
        hits.append(hit)
    # A method backs a box when it nominated that box or one overlapping it for the class.
    nominated: dict[int, list[tuple[Box, str]]] = {}
    for (g, box), entry in tested.items():
        nominated.setdefault(g, []).extend((box, m) for m in entry["methods"])
    for hit in hits:
        b = hit["box"]
        own = (b["y0"], b["y1"], b["x0"], b["x1"])
        hit["methods"] = sorted({m for box, m in nominated.get(hit["group"], [])
                                 if overlaps(box, own)})
    # One shortcut per class: the passing box with the largest drop.
    best: dict[int, dict[str, Any]] = {}
    for hit in hits:
        if not hit["passed"]:
            continue
        cur = best.get(hit["group"])
        if cur is None or hit["ablation_drop"] > cur["ablation_drop"]:
            best[hit["group"]] = hit
    return [best[g] for g in sorted(best)], hits
