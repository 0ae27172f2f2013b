"""Cost of a full audit, stage by stage: tables and images, at two sample sizes.

Trains the two bundled reference models with planted shortcuts (``tabular_leaky``: an MLP
on 11 features; ``shapes``: a CNN on 32×32 RGB images), then audits each on its held-out
test split with the default configuration at two numbers of explained examples
(``--samples``, default 24 and 96), and prints:

1. wall-clock seconds per pipeline stage (:data:`explain.audit.STAGES`), the HTML
   rendering, and the total, with the growth factor from the small to the large sample;
2. the size of what an audit produces: the HTML report, report.json and arrays.npz.

Each kind gets one untimed warm-up audit and rendering first, so the numbers are the
steady state of a worker that has audited before (TensorFlow traces its graphs and
matplotlib loads its fonts once per process).
Run: ``python bench/audit.py [--quick] [--samples 24,96] [--markdown PATH]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from explain.audit import STAGES, run_audit  # noqa: E402
from explain.training import train_reference_model  # noqa: E402
from reports import render_html, render_json  # noqa: E402

KINDS = {"tabular": "tabular_leaky", "image": "shapes"}


def train(folder: Path, quick: bool) -> dict[str, tuple[Path, object, float]]:
    out = {}
    for kind, name in KINDS.items():
        t0 = time.perf_counter()
        res = train_reference_model(name, out=folder / f"{name}.keras", seed=0,
                                    shortcut=True, epochs=3 if quick else None, verbose=0)
        out[kind] = (res.model_path, res.test, time.perf_counter() - t0)
    return out


def audit_once(model_path: Path, data, samples: int, folder: Path) -> dict:
    result = run_audit(model_path, data, {"samples": samples, "seed": 0})
    t0 = time.perf_counter()
    html = render_html(result)
    render_s = time.perf_counter() - t0
    text = render_json(result)
    saved = result.save(folder / f"saved_{samples}")
    return {
        "timings": dict(result.report["timings"]),
        "render_html": render_s,
        "html_kib": len(html.encode("utf-8")) / 1024,
        "json_kib": len(text.encode("utf-8")) / 1024,
        "npz_kib": (saved / "arrays.npz").stat().st_size / 1024,
        "examples": len(result.report["examples"]),
        "rows": result.report["dataset"]["rows"],
        "findings": sorted({f["code"] for f in result.report["findings"]}),
    }


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
            *[line(r) for r in rows]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="3 training epochs and 8 / 16 examples: a smoke run")
    parser.add_argument("--samples", default=None,
                        help="two comma-separated example counts (default 24,96)")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="also write the tables to this file")
    args = parser.parse_args()
    text = args.samples or ("8,16" if args.quick else "24,96")
    sizes = [int(s) for s in text.split(",")]
    if len(sizes) != 2 or min(sizes) < 2:
        parser.error("--samples takes two counts of at least 2, e.g. 24,96")

    lines = ["### Machine", "",
             f"{platform.platform()}, Python {platform.python_version()}, "
             f"{os.cpu_count()} CPU cores, no GPU", ""]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        trained = train(folder, args.quick)
        results: dict[tuple[str, int], dict] = {}
        for kind, (model_path, data, _) in trained.items():
            # Warm-up: graph tracing and the first matplotlib figure are paid once.
            render_html(run_audit(model_path, data.subset(range(min(40, data.n))),
                                  {"samples": 4, "seed": 0, "shap_samples": 96}))
            for n in sizes:
                results[kind, n] = audit_once(model_path, data, n, folder / kind)
                print(f"audited {kind} with {n} examples", file=sys.stderr, flush=True)

    cols = [(k, n) for k in KINDS for n in sizes]
    head = ["stage", *[f"{k} n={n}" for k, n in cols],
            *[f"{k} ×" for k in KINDS]]

    def growth(kind: str, value) -> str:
        small, big = value(results[kind, sizes[0]]), value(results[kind, sizes[1]])
        return f"{big / small:.1f}" if small > 0.005 else "-"

    rows = []
    stages = [name for name, _ in STAGES]
    for stage in stages:
        def value(r, stage=stage):
            return r["timings"].get(stage, 0.0)

        rows.append([stage, *[f"{value(results[c]):.2f}" for c in cols],
                     *[growth(k, value) for k in KINDS]])

    def render_value(r):
        return r["render_html"]

    def total(r):
        return sum(r["timings"].values()) + r["render_html"]

    rows.append(["render_html", *[f"{render_value(results[c]):.2f}" for c in cols],
                 *[growth(k, render_value) for k in KINDS]])
    rows.append(["**total**", *[f"**{total(results[c]):.1f}**" for c in cols],
                 *[growth(k, total) for k in KINDS]])
    lines += ["### Seconds per stage (default config; data = held-out test split)", ""]
    lines += table(head, rows)
    rows_info = ", ".join(f"{k}: {results[k, sizes[0]]['rows']} rows, trained in "
                          f"{trained[k][2]:.0f}s" for k in KINDS)
    lines += ["", f"Audited data: {rows_info}. ×: growth from n={sizes[0]} to n={sizes[1]}.",
              ""]

    size_head = ["output", *[f"{k} n={n}" for k, n in cols]]
    size_rows = [
        ["report.html (KiB)", *[f"{results[c]['html_kib']:.0f}" for c in cols]],
        ["report.json (KiB)", *[f"{results[c]['json_kib']:.0f}" for c in cols]],
        ["arrays.npz (KiB)", *[f"{results[c]['npz_kib']:.0f}" for c in cols]],
        ["findings", *[", ".join(results[c]["findings"]) or "none" for c in cols]],
    ]
    lines += ["### What an audit writes", ""] + table(size_head, size_rows)
    out = "\n".join(lines)
    print(out)
    if args.markdown is not None:
        args.markdown.write_text(out + "\n")


if __name__ == "__main__":
    main()
