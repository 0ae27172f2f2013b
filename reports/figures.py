"""The report's figures and image panels, returned as PNG data URIs.

Every function takes plain numbers or numpy arrays and returns ``data:image/png;base64,...``
text (or a list of titled panels holding such text) the HTML template puts in an
``<img src>``, so the report stays one self-contained file. Charts are drawn with
matplotlib; inputs and attribution maps are composed from pixels with matplotlib's
colormaps, so they stay sharp and cheap.
Figures are drawn on a private :class:`~matplotlib.figure.Figure` with the Agg canvas (never
pyplot's figure manager or a display, so rendering runs headless and leaves the process's
backend alone), at a modest resolution, and the PNG is
palette-quantised: a typical figure weighs 10-60 kB.

User-supplied strings (feature and class names) only ever reach a figure as rasterised
text, shortened, with mathtext parsing off so a ``$`` in a name is just a dollar sign.

Colour conventions, shared by every figure: red means an attribution pushes towards the
explained output and blue away from it (``RdBu_r``, symmetric around zero); unsigned maps
(Grad-CAM, mean ``|attribution|``) use ``inferno``.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

__all__ = [
    "class_map_panels",
    "colour_scale",
    "confusion_matrix_figure",
    "drift_figure",
    "drift_map_panels",
    "image_panels",
    "importance_figure",
    "method_title",
    "quality_curves_figure",
    "region_grid_figure",
    "reliability_figure",
    "residual_figure",
    "tabular_example_figure",
]

#: Dots per inch of every figure; with the figure sizes below a panel is ~150 px wide.
DPI = 96

_INK = "#1f2933"
_MUTED = "#7b8794"
_ACCENT = "#2563eb"
_SECOND = "#d97706"
_POSITIVE = "#c0392b"
_NEGATIVE = "#2c7fb8"

_STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "axes.edgecolor": _MUTED,
    "axes.labelcolor": _INK,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": _INK,
    "ytick.color": _INK,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "text.color": _INK,
    "text.parse_math": False,
    "figure.facecolor": "white",
}

# Known method names get their usual spelling; any other name is title-cased.
def method_title(method: str) -> str:
    """Return the display name of an attribution method (``grad_cam`` → ``Grad-CAM``), as
    its registration says; a name the registry does not know, title-cased."""
    from explain.attributions import METHODS, method_info

    if method in METHODS:
        return method_info(method).title
    return method.replace("_", " ").strip().title() or method


def _short(text: Any, limit: int = 22) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@contextmanager
def _figure(width: float, height: float) -> Iterator[Figure]:
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        yield fig


def clipped_texts(fig: Figure) -> list[str]:
    """Texts (labels, ticks, titles, legends) that reach outside the figure's canvas."""
    renderer = fig.canvas.get_renderer()
    fig.draw_without_rendering()
    bounds = fig.bbox
    out = []
    for text in fig.findobj(lambda a: hasattr(a, "get_text") and hasattr(a, "get_window_extent")):
        if not text.get_visible() or not str(text.get_text()).strip():
            continue
        box = text.get_window_extent(renderer)
        if (box.x0 < bounds.x0 - 0.5 or box.y0 < bounds.y0 - 0.5
                or box.x1 > bounds.x1 + 0.5 or box.y1 > bounds.y1 + 0.5):
            out.append(str(text.get_text()))
    return out


def _data_uri(fig: Figure) -> str:
    raw = io.BytesIO()
    # Constrained layout fits labels inside the canvas in almost every case; when a label
    # still reaches outside (very long names on a small figure), the canvas grows to hold
    # it ("tight" bounding box) instead of cutting the label off.
    fig.savefig(raw, format="png", dpi=DPI,
                **({"bbox_inches": "tight", "pad_inches": 0.04} if clipped_texts(fig) else {}))
    raw.seek(0)
    # A 256-colour palette keeps heatmaps smooth to the eye at a third of the bytes.
    image = Image.open(raw).convert("RGB").quantize(
        colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


# -- training -------------------------------------------------------------------------------


def learning_curve_figure(history: Mapping[str, Sequence[float]]) -> str | None:
    """Loss (left) and any other metric (right) per epoch, training against validation."""
    curves = {k: [float(v) for v in vals] for k, vals in history.items()
              if isinstance(vals, (list, tuple)) and vals
              and all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals)}
    if not curves:
        return None
    metrics = sorted({k.removeprefix("val_") for k in curves})
    metrics = ["loss"] + [m for m in metrics if m != "loss"][:1] if "loss" in metrics \
        else metrics[:2]
    with _figure(3.3 * len(metrics), 2.4) as fig:
        axes = fig.subplots(1, len(metrics), squeeze=False)[0]
        for ax, name in zip(axes, metrics, strict=True):
            for key, style, label in ((name, "-", "training"), (f"val_{name}", "--",
                                                                 "validation")):
                if key in curves:
                    ys = curves[key]
                    ax.plot(range(1, len(ys) + 1), ys, style, marker="o", markersize=2.5,
                            label=label)
            ax.set_xlabel("epoch")
            ax.set_ylabel(name.replace("_", " "))
            ax.legend(frameon=False, fontsize="small")
        return _data_uri(fig)


# -- performance ----------------------------------------------------------------------------


def confusion_matrix_figure(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> str:
    """Draw a confusion matrix, coloured by row share (recall) and annotated with counts.

    Parameters
    ----------
    matrix
        ``(K, K)`` counts, rows true classes, columns predicted classes.
    class_names
        ``K`` names (shortened on the axes).

    Returns
    -------
    str
        A PNG data URI.
    """
    counts = np.asarray(matrix, dtype=float)
    k = counts.shape[0]
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    side = min(5.0, 1.6 + 0.32 * k)
    with _figure(side + 0.6, side) as fig:
        ax = fig.add_subplot()
        im = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
        if k <= 15:
            for (i, j), value in np.ndenumerate(counts):
                ax.text(
                    j, i, f"{int(value)}", ha="center", va="center",
                    fontsize=7 if k > 8 else 8,
                    color="white" if shares[i, j] > 0.6 else _INK,
                )
        labels = [_short(name, 14) for name in class_names]
        if k <= 25:
            ax.set_xticks(range(k), labels, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
            ax.set_yticks(range(k), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for spine in ax.spines.values():
            spine.set_visible(False)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="share of true class")
        return _data_uri(fig)


def reliability_figure(bins: Sequence[Mapping[str, Any]], ece: float | None) -> str:
    """Draw a reliability diagram: accuracy against mean confidence per confidence bin.

    Parameters
    ----------
    bins
        ``[{confidence, accuracy, count}]``; empty bins (count 0 or null values) are skipped.
    ece
        Expected calibration error, shown in the title.

    Returns
    -------
    str
        A PNG data URI.
    """
    used = [
        b for b in bins
        if b.get("count") and b.get("confidence") is not None and b.get("accuracy") is not None
    ]
    width = 0.9 / max(len(bins), 1)
    with _figure(3.6, 3.4) as fig:
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], ls="--", color=_MUTED, lw=1, label="perfect calibration")
        if used:
            conf = np.array([b["confidence"] for b in used])
            acc = np.array([b["accuracy"] for b in used])
            ax.bar(conf, acc, width=width, color=_ACCENT, alpha=0.8, label="accuracy in bin")
            ax.vlines(conf, np.minimum(conf, acc), np.maximum(conf, acc), color=_POSITIVE, lw=2,
                      label="gap")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title("Reliability" + (f" (ECE {ece:.3f})" if ece is not None else ""))
        # Below the axes: inside, it would hide bars wherever the model is well calibrated.
        fig.legend(loc="outside lower center", ncols=3, fontsize=7)
        return _data_uri(fig)


def residual_figure(residuals: Mapping[str, Any]) -> str | None:
    """Draw the histogram of regression residuals (prediction minus target).

    Parameters
    ----------
    residuals
        The report's ``performance.residuals``; needs ``histogram`` ``{edges, counts}``.

    Returns
    -------
    str or None
        A PNG data URI, or None when there is no histogram to draw.
    """
    hist = residuals.get("histogram") if residuals else None
    if not hist or len(hist.get("edges", [])) != len(hist.get("counts", [])) + 1:
        return None
    edges = np.asarray(hist["edges"], dtype=float)
    counts = np.asarray(hist["counts"], dtype=float)
    with _figure(4.6, 2.6) as fig:
        ax = fig.add_subplot()
        ax.stairs(counts, edges, fill=True, color=_ACCENT, alpha=0.8)
        ax.axvline(0.0, color=_INK, lw=1, ls="--", label="zero error")
        if residuals.get("mean") is not None:
            ax.axvline(residuals["mean"], color=_POSITIVE, lw=1.5, label="mean residual")
        ax.set_xlabel("residual (prediction − target)")
        ax.set_ylabel("rows")
        ax.legend(loc="upper right")
        return _data_uri(fig)


# -- global importance ------------------------------------------------------------------------


def importance_figure(items: Sequence[Mapping[str, Any]], top: int = 15, xlabel: str = "importance") -> str:
    """Draw a horizontal bar chart of the highest-ranked features.

    Parameters
    ----------
    items
        ``[{feature, score}]`` sorted descending.
    top
        How many features to draw.
    xlabel
        Label of the score axis.

    Returns
    -------
    str
        A PNG data URI.
    """
    shown = list(items)[:top]
    names = [_short(item["feature"], 28) for item in shown][::-1]
    scores = np.array([item["score"] for item in shown], dtype=float)[::-1]
    with _figure(5.8, 0.6 + 0.24 * max(len(shown), 1)) as fig:
        ax = fig.add_subplot()
        colors = [_ACCENT if s >= 0 else _NEGATIVE for s in scores]
        ax.barh(range(len(shown)), scores, color=colors, height=0.7)
        ax.set_yticks(range(len(shown)), names)
        ax.axvline(0, color=_MUTED, lw=0.8)
        ax.set_xlabel(xlabel)
        ax.spines["left"].set_visible(False)
        ax.tick_params(axis="y", length=0)
        return _data_uri(fig)


def region_grid_figure(items: Sequence[Mapping[str, Any]], grid: Sequence[int]) -> str | None:
    """Draw the image region grid as a heatmap of each region's share of attribution.

    Parameters
    ----------
    items
        ``[{feature, score, cell: [row, col]}]``.
    grid
        ``[rows, cols]``.

    Returns
    -------
    str or None
        A PNG data URI, or None when the items carry no ``cell`` positions.
    """
    rows, cols = int(grid[0]), int(grid[1])
    values = np.full((rows, cols), np.nan)
    for item in items:
        cell = item.get("cell")
        if cell is None:
            return None
        values[cell[0], cell[1]] = item["score"]
    with _figure(0.6 + 0.75 * cols, 0.3 + 0.75 * rows) as fig:
        ax = fig.add_subplot()
        im = ax.imshow(values, cmap="inferno", vmin=0.0 if np.nanmin(values) >= 0 else None)
        vmax = np.nanmax(values) if np.isfinite(values).any() else 1.0
        for (i, j), value in np.ndenumerate(values):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if value > 0.6 * vmax else "white")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        return _data_uri(fig)


# -- local explanations ---------------------------------------------------------------------


def _robust_max(values: np.ndarray) -> float:
    # The 99.5th percentile, so one extreme pixel does not wash out the rest of the map.
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 1.0
    top = float(np.percentile(finite, 99.5))
    return top if top > 0 else float(finite.max()) or 1.0


def _display_image(x: np.ndarray) -> np.ndarray:
    """Return an ``(H, W)`` or ``(H, W, 3)`` float image in [0, 1] for imshow."""
    image = np.asarray(x, dtype=float)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[-1] > 3:
        image = image[..., :3]
    lo, hi = float(np.nanmin(image)), float(np.nanmax(image))
    # Inputs may be 0-1, 0-255 or standardised; only rescale what does not already fit.
    if lo < 0.0 or hi > 1.0:
        image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    return np.clip(np.nan_to_num(image), 0.0, 1.0)


def _grayscale(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else image @ np.array([0.299, 0.587, 0.114])


def tabular_example_figure(
    attributions: Mapping[str, np.ndarray],
    feature_names: Sequence[str],
    values: np.ndarray | None = None,
    top: int = 8,
) -> str:
    """Draw one tabular example: each method's largest signed attributions as bars.

    Parameters
    ----------
    attributions
        ``{method: (F,) signed attributions}``.
    feature_names
        ``F`` names.
    values
        ``(F,)`` the example's feature values, shown next to the names; optional.
    top
        Features per method, by absolute attribution.

    Returns
    -------
    str
        A PNG data URI.
    """
    panels = max(len(attributions), 1)
    with _figure(3.3 * panels, 0.55 + 0.22 * top) as fig:
        axes = fig.subplots(1, panels, squeeze=False)[0]
        for ax, (method, attr) in zip(axes, attributions.items(), strict=False):
            attr = np.asarray(attr, dtype=float)
            order = np.argsort(-np.abs(np.nan_to_num(attr)))[:top][::-1]
            labels = []
            for j in order:
                name = _short(feature_names[j] if j < len(feature_names) else f"x{j}", 16)
                if values is not None and j < len(values):
                    name = f"{name} = {float(values[j]):.3g}"
                labels.append(name)
            scores = attr[order]
            ax.barh(range(len(order)), scores, height=0.7,
                    color=[_POSITIVE if s >= 0 else _NEGATIVE for s in scores])
            ax.set_yticks(range(len(order)), labels)
            ax.axvline(0, color=_MUTED, lw=0.8)
            ax.set_title(method_title(method))
            ax.spines["left"].set_visible(False)
            ax.tick_params(axis="y", length=0)
        return _data_uri(fig)


# -- explanation quality ----------------------------------------------------------------------


def quality_curves_figure(entry: Mapping[str, Any]) -> str | None:
    """Draw deletion and insertion curves of a method against the random-order baseline.

    Parameters
    ----------
    entry
        One ``explanation_quality`` entry; reads ``deletion_curve``, ``insertion_curve``
        and their ``random_`` counterparts.

    Returns
    -------
    str or None
        A PNG data URI, or None when the entry has no curves.
    """
    pairs = [
        ("Deletion (lower is better)", entry.get("deletion_curve"),
         entry.get("random_deletion_curve"), "features removed"),
        ("Insertion (higher is better)", entry.get("insertion_curve"),
         entry.get("random_insertion_curve"), "features inserted"),
    ]
    pairs = [p for p in pairs if p[1]]
    if not pairs:
        return None
    with _figure(3.2 * len(pairs), 2.4) as fig:
        axes = fig.subplots(1, len(pairs), squeeze=False)[0]
        for ax, (title, curve, random_curve, xlabel) in zip(axes, pairs, strict=True):
            fractions = np.linspace(0.0, 1.0, len(curve))
            ax.plot(fractions, curve, color=_ACCENT, lw=1.8, label="attribution order")
            ax.fill_between(fractions, curve, alpha=0.12, color=_ACCENT)
            if random_curve:
                ax.plot(np.linspace(0.0, 1.0, len(random_curve)), random_curve, color=_MUTED,
                        lw=1.4, ls="--", label="random order")
            ax.set_title(title)
            ax.set_xlabel(f"share of {xlabel}")
            ax.set_ylabel("model score")
            ax.set_xlim(0, 1)
            ax.legend(loc="best")
        return _data_uri(fig)


# -- drift ----------------------------------------------------------------------------------


def drift_figure(items: Sequence[Mapping[str, Any]], top: int = 12) -> str:
    """Draw previous against current importance for the features that moved most.

    Parameters
    ----------
    items
        ``[{feature, previous_score, score, change}]``.
    top
        How many features, by absolute change.

    Returns
    -------
    str
        A PNG data URI.
    """
    ranked = sorted(items, key=lambda it: -abs(it.get("change") or 0.0))[:top][::-1]
    names = [_short(it["feature"], 24) for it in ranked]
    previous = np.array([it.get("previous_score") or 0.0 for it in ranked], dtype=float)
    current = np.array([it.get("score") or 0.0 for it in ranked], dtype=float)
    y = np.arange(len(ranked))
    with _figure(5.6, 0.7 + 0.3 * max(len(ranked), 1)) as fig:
        ax = fig.add_subplot()
        ax.barh(y + 0.2, previous, height=0.38, color=_MUTED, label="previous audit")
        ax.barh(y - 0.2, current, height=0.38, color=_SECOND, label="this audit")
        ax.set_yticks(y, names)
        ax.set_xlabel("importance")
        ax.legend(loc="lower right")
        ax.spines["left"].set_visible(False)
        ax.tick_params(axis="y", length=0)
        return _data_uri(fig)


def disparity_figure(disparities: Sequence[Mapping[str, Any]], threshold: float | None,
                     attribute: str) -> str | None:
    """Draw each across-group gap of one sensitive attribute with its interval.

    Parameters
    ----------
    disparities
        ``[{metric, kind, value, interval}]``; differences are drawn (the ratio is a
        different scale and stays in the table).
    threshold
        The difference threshold, drawn as a dashed line (None: no line).
    attribute
        The attribute's name, for the axis label.

    Returns
    -------
    str or None
        A PNG data URI, or None when there is no difference to draw.
    """
    rows = [d for d in disparities if d.get("kind") == "difference" and d.get("value") is not None]
    if not rows:
        return None
    rows = rows[::-1]
    names = [_short(str(d["metric"]).replace("_difference", "").replace("_", " "), 26)
             for d in rows]
    value = np.array([float(d["value"]) for d in rows])
    lo = np.array([float(d["interval"][0]) if d["interval"][0] is not None else v
                   for d, v in zip(rows, value, strict=True)])
    hi = np.array([float(d["interval"][1]) if d["interval"][1] is not None else v
                   for d, v in zip(rows, value, strict=True)])
    y = np.arange(len(rows))
    with _figure(5.6, 0.8 + 0.38 * len(rows)) as fig:
        ax = fig.add_subplot()
        over = lo >= threshold if threshold is not None else np.zeros(len(rows), bool)
        colours = [_POSITIVE if o else _ACCENT for o in over]
        ax.hlines(y, lo, hi, colors=colours, linewidth=2.2)
        ax.scatter(value, y, color=colours, zorder=3, s=28)
        if threshold is not None:
            ax.axvline(threshold, color=_MUTED, linestyle="--", linewidth=1,
                       label=f"threshold {threshold:g}")
            ax.legend(loc="lower right")
        ax.set_yticks(y, names)
        ax.set_xlim(0, max(float(hi.max()), threshold or 0.0) * 1.1 + 0.02)
        ax.set_xlabel(f"gap between {_short(attribute, 20)} groups (95% interval)")
        ax.spines["left"].set_visible(False)
        ax.tick_params(axis="y", length=0)
        return _data_uri(fig)


# -- pixel panels -----------------------------------------------------------------------------
# Image inputs and attribution maps are composed directly from pixels (matplotlib colormaps,
# PIL resampling) rather than drawn in a figure: crisper, a fraction of the time, and the
# titles stay HTML text the reader can select and a screen reader can read.

_INFERNO = matplotlib.colormaps["inferno"]
_DIVERGING = matplotlib.colormaps["RdBu_r"]


def _resize(array: np.ndarray, width: int, height: int, smooth: bool) -> np.ndarray:
    """Resample a float ``(h, w)`` or ``(h, w, 3)`` array to ``(height, width[, 3])``."""
    if array.shape[0] == height and array.shape[1] == width:
        return array
    if smooth:
        resample = Image.Resampling.BILINEAR
    elif array.shape[1] < width:
        resample = Image.Resampling.NEAREST  # upscaling a small input: keep its pixels visible
    else:
        resample = Image.Resampling.BOX
    channels = [array] if array.ndim == 2 else [array[..., c] for c in range(array.shape[-1])]
    out = [
        np.asarray(Image.fromarray(c.astype(np.float32)).resize((width, height), resample))
        for c in channels
    ]
    return out[0] if array.ndim == 2 else np.stack(out, axis=-1)


def _png_uri(rgb: np.ndarray) -> str:
    pixels = (np.clip(rgb, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    image = Image.fromarray(pixels).quantize(
        colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _panel_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Display ``(width, height)`` in pixels: ``size`` wide, aspect ratio kept."""
    return size, max(1, round(size * height / max(width, 1)))


def _as_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image


def _heat_rgb(heat: np.ndarray, base: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """Colour a map: unsigned maps as an inferno overlay on ``base``, signed maps in RdBu."""
    heat = np.nan_to_num(np.asarray(heat, dtype=float))
    if heat.min() >= 0:
        top = vmax if vmax is not None else _robust_max(heat)
        colour = _INFERNO(np.clip(heat / top, 0.0, 1.0))[..., :3]
        return 0.4 * _as_rgb(base) + 0.6 * colour
    limit = vmax if vmax is not None else _robust_max(np.abs(heat))
    colour = _DIVERGING(np.clip(0.5 + 0.5 * heat / limit, 0.0, 1.0))[..., :3]
    # A faint copy of the input keeps the map anchored to the picture.
    return 0.18 * _as_rgb(0.65 + 0.35 * base) + 0.82 * colour


def image_panels(
    x: np.ndarray, maps: Mapping[str, np.ndarray], size: int = 168
) -> list[dict[str, str]]:
    """Draw one image example: the input, then each method's map at the same size.

    Unsigned maps (Grad-CAM) are overlaid on the input in ``inferno``; signed maps are drawn
    red (towards the explained class) and blue (away from it) over a faint copy of it.

    Parameters
    ----------
    x
        The input, ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``.
    maps
        ``{method: (h, w) map}``; a map of another resolution is resampled to the input's.
    size
        Display width of each panel in pixels.

    Returns
    -------
    list of dict
        ``[{"title", "uri", "kind"}]``: the input first, then one panel per method; ``kind``
        is ``input``, ``unsigned`` or ``signed``.
    """
    image = _display_image(x)
    width, height = _panel_size(image.shape[0], image.shape[1], size)
    shown = _resize(image, width, height, smooth=False)
    base = _grayscale(shown)
    panels = [{"title": "input", "uri": _png_uri(_as_rgb(shown)), "kind": "input"}]
    for method, heat in maps.items():
        heat = _resize(np.asarray(heat, dtype=np.float32), width, height, smooth=True)
        panels.append(
            {
                "title": method_title(method),
                "uri": _png_uri(_heat_rgb(heat, base)),
                "kind": "unsigned" if np.nanmin(heat) >= 0 else "signed",
            }
        )
    return panels


def class_map_panels(
    maps: np.ndarray, class_names: Sequence[str] | None, size: int = 92,
    vmax: float | None = None,
) -> list[dict[str, str]]:
    """Draw per-class mean ``|attribution|`` maps on one colour scale shared by all classes.

    Parameters
    ----------
    maps
        ``(K, H, W)`` maps, one per class.
    class_names
        ``K`` names, or None to number the classes.
    size
        Display width of each panel in pixels.
    vmax
        Top of the colour scale; by default the 99.5th percentile of all maps.

    Returns
    -------
    list of dict
        ``[{"title", "uri", "kind"}]``, one per class.
    """
    maps = np.abs(np.nan_to_num(np.asarray(maps, dtype=np.float32)))
    top = vmax if vmax is not None else _robust_max(maps)
    width, height = _panel_size(maps.shape[1], maps.shape[2], size)
    panels = []
    for i, heat in enumerate(maps):
        name = class_names[i] if class_names is not None and i < len(class_names) else f"class {i}"
        colour = _INFERNO(np.clip(_resize(heat, width, height, smooth=True) / top, 0, 1))[..., :3]
        panels.append({"title": str(name), "uri": _png_uri(colour), "kind": "unsigned"})
    return panels


def drift_map_panels(
    previous: np.ndarray, current: np.ndarray, class_names: Sequence[str] | None, size: int = 92
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Draw previous and current per-class mean maps on one shared colour scale.

    Parameters
    ----------
    previous, current
        ``(K, H, W)`` per-class mean ``|attribution|`` maps of the previous and this audit.
    class_names
        ``K`` names, or None.
    size
        Display width of each panel in pixels.

    Returns
    -------
    tuple of two lists
        The previous and the current panels, as :func:`class_map_panels` returns them.
    """
    k = min(previous.shape[0], current.shape[0])
    both = np.abs(np.concatenate([previous[:k].ravel(), current[:k].ravel()]))
    top = _robust_max(both)
    return (
        class_map_panels(previous[:k], class_names, size, vmax=top),
        class_map_panels(current[:k], class_names, size, vmax=top),
    )


def colour_scale(kind: str, width: int = 120, height: int = 10) -> str:
    """A small horizontal colour bar (``unsigned``: inferno, ``signed``: RdBu) as a data URI."""
    ramp = np.linspace(0.0, 1.0, width)
    cmap = _INFERNO if kind == "unsigned" else _DIVERGING
    row = cmap(ramp)[..., :3]
    return _png_uri(np.repeat(row[None, :, :], height, axis=0))


# -- text and sequences ---------------------------------------------------------------------
def token_spans(tokens: Sequence[str], positions: Sequence[int], values: np.ndarray
                ) -> list[dict[str, str]]:
    """Each token with a background colour for its attribution: red towards the predicted
    class, blue away from it, opacity by size against the row's largest |value|.

    Returns ``[{text, style, title}]``; ``text`` is the token as given (the template
    escapes it), ``style`` and ``title`` hold only numbers formatted here.
    """
    vals = np.array([float(values[p]) if p < len(values) else 0.0 for p in positions])
    top = float(np.abs(vals).max()) if len(vals) else 0.0
    spans = []
    for text, v in zip(tokens, vals, strict=True):
        alpha = 0.0 if top <= 0 else min(1.0, abs(v) / top) * 0.85
        rgb = "214, 39, 40" if v >= 0 else "31, 119, 180"
        spans.append({"text": str(text), "style": f"background-color: rgba({rgb}, {alpha:.2f})",
                      "title": f"{v:+.4g}"})
    return spans


def sequence_example_figure(x: np.ndarray, strips: Mapping[str, np.ndarray]) -> str:
    """The signal of one example (one line per channel) with one attribution strip per
    method beneath it, on a shared time axis."""
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    n = len(strips)
    with _figure(6.4, 1.6 + 0.35 * n) as fig:
        grid = fig.add_gridspec(1 + n, 1, height_ratios=[4] + [1] * n)
        ax = fig.add_subplot(grid[0])
        for c in range(x.shape[1]):
            ax.plot(np.arange(len(x)), x[:, c], lw=0.9, label=f"channel {c}")
        if x.shape[1] > 1:
            ax.legend(loc="upper right", fontsize=6, frameon=False)
        ax.set_xlim(-0.5, len(x) - 0.5)
        ax.tick_params(labelbottom=False)
        for i, (method, strip) in enumerate(strips.items(), start=1):
            sub = fig.add_subplot(grid[i], sharex=ax)
            s = np.asarray(strip, dtype=float)[None, :]
            sub.imshow(s, aspect="auto", cmap="Reds", vmin=0, vmax=_robust_max(s),
                       extent=(-0.5, s.shape[1] - 0.5, 0, 1))
            sub.set_yticks([0.5], [_short(method_title(method), 14)])
            sub.tick_params(axis="y", length=0, labelsize=6)
            if i < n:
                sub.tick_params(labelbottom=False)
        fig.axes[-1].set_xlabel("time step")
        return _data_uri(fig)


def time_importance_figure(over_time: Sequence[float],
                           per_class: Mapping[str, Sequence[float]] | None = None) -> str:
    """Mean |attribution| at each time step, overall and per class."""
    with _figure(6.4, 2.2) as fig:
        ax = fig.add_subplot()
        ax.plot(np.arange(len(over_time)), over_time, color=_ACCENT, lw=1.4, label="all")
        for name, curve in (per_class or {}).items():
            ax.plot(np.arange(len(curve)), curve, lw=0.9, alpha=0.8, label=_short(name, 16))
        ax.set_xlabel("time step")
        ax.set_ylabel("mean |attribution|")
        ax.legend(loc="upper right", fontsize=6, frameon=False)
        return _data_uri(fig)
