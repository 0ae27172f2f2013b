"""Group fairness on the bundled lending twins: seeds × twins, what the audit measures and
finds.

For each seed, trains an MLP on the biased ``lending`` table (labels penalise group B; the
group is not an input but leaks through ``district_index``) and on its clean twin, audits
each on its held-out test split with ``sensitive`` = group and age, and prints one row per
(seed, twin):

- test accuracy; the demographic-parity difference and equalized-odds difference for
  ``group`` with their bootstrap intervals;
- ``district_index``: how well it predicts the group (AUC), its attribution share, and the
  demographic-parity difference with the column permuted;
- the largest lower interval end over the ``age`` gaps (an unrelated attribute: should
  stay below the threshold);
- the fairness findings (``group_disparity`` metrics, ``proxy_feature`` names).

The thresholds in :class:`explain.findings.FindingThresholds` were set from this table.
Run: ``python bench/fairness.py [--seeds 0,1,2,3,4] [--methods integrated_gradients]
[--markdown PATH]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from explain.audit import run_audit  # noqa: E402
from explain.datasets import LENDING_PROXY  # noqa: E402
from explain.findings import FindingThresholds  # noqa: E402
from explain.training import train_reference_model  # noqa: E402


def _gap(attr: dict, metric: str) -> str:
    d = next((d for d in attr["disparities"] if d["metric"] == metric), None)
    if d is None or d["value"] is None:
        return "-"
    lo, hi = d["interval"]
    return f"{d['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def run_one(seed: int, bias: bool, folder: Path, methods: list[str]) -> dict:
    t0 = time.perf_counter()
    res = train_reference_model("lending", out=folder / f"lending_{seed}_{bias}.keras",
                                seed=seed, shortcut=bias, verbose=0)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = run_audit(res.model_path, res.test,
                       {"seed": seed, "methods": methods, "sensitive": ["group", "age"]})
    audit_s = time.perf_counter() - t0
    report = result.report
    attrs = {a["name"]: a for a in report["fairness"]["attributes"]}
    group, age = attrs["group"], attrs["age"]
    proxy = next((p for p in group["proxies"] if p["feature"] == LENDING_PROXY), None)
    without = (proxy or {}).get("disparity_without") or {}
    age_lo = max((d["interval"][0] or 0.0) for d in age["disparities"]
                 if d["kind"] == "difference")
    findings = [f for f in report["findings"]
                if f["code"] in ("group_disparity", "proxy_feature", "disparity_drift")]
    disparities = sorted({f"{f['evidence']['attribute']}:{g['metric']}"
                          for f in findings if f["code"] == "group_disparity"
                          for g in f["evidence"]["flagged"]})
    proxies = sorted({f"{f['evidence']['attribute']}:{f['evidence']['feature']}"
                      for f in findings if f["code"] == "proxy_feature"})
    return {
        "seed": seed, "twin": "biased" if bias else "clean",
        "accuracy": report["performance"]["accuracy"],
        "dp": _gap(group, "demographic_parity_difference"),
        "eo": _gap(group, "equalized_odds_difference"),
        "auc": None if proxy is None else proxy["auc"],
        "share": None if proxy is None else proxy["attribution_share"],
        "dp_without": without.get("demographic_parity_difference"),
        "age_lo": age_lo,
        "disparities": disparities, "proxies": proxies,
        "train_s": train_s, "audit_s": audit_s,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--methods", default="integrated_gradients",
                    help="audit methods (comma-separated); the global importance uses IG")
    ap.add_argument("--markdown", default=None, help="also write the table here")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    methods = [m for m in args.methods.split(",") if m]
    th = FindingThresholds()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for bias in (True, False):
                rows.append(run_one(seed, bias, Path(tmp), methods))
                r = rows[-1]
                print(f"seed {seed} {r['twin']}: done in {r['train_s']:.0f}+"
                      f"{r['audit_s']:.0f}s", file=sys.stderr)

    def num(v, fmt=".3f"):
        return "-" if v is None else format(v, fmt)

    head = ("| seed | twin | test acc | group DP diff [95% CI] | group EO diff [95% CI] | "
            f"{LENDING_PROXY} AUC | its attr. share | DP diff, proxy permuted | "
            "age: max CI lower end | group_disparity | proxy_feature | train+audit s |")
    lines = [
        f"Thresholds: difference lower end >= {th.disparity_max_difference}, ratio upper "
        f"end < {th.disparity_min_ratio}, proxy AUC >= {th.proxy_min_auc} and share >= "
        f"{th.proxy_min_share}, min group {th.fairness_min_group}; methods "
        f"{', '.join(methods)}",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['twin']} | {r['accuracy']:.3f} | {r['dp']} | {r['eo']} | "
            f"{num(r['auc'])} | {num(r['share'])} | {num(r['dp_without'])} | "
            f"{r['age_lo']:.3f} | {', '.join(r['disparities']) or 'none'} | "
            f"{', '.join(r['proxies']) or 'none'} | {r['train_s']:.0f}+{r['audit_s']:.0f} |")
    ok_b = sum(1 for r in rows if r["twin"] == "biased" and r["disparities"]
               and f"group:{LENDING_PROXY}" in r["proxies"])
    ok_c = sum(1 for r in rows if r["twin"] == "clean" and not r["disparities"]
               and not r["proxies"])
    nb = sum(1 for r in rows if r["twin"] == "biased")
    lines += ["", f"biased twins with group_disparity and proxy_feature {LENDING_PROXY}: "
              f"{ok_b}/{nb}; clean twins with neither: {ok_c}/{len(rows) - nb}"]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
