"""Smoke test of ``bench/attributions.py --quick``: it runs and prints every table.

Times are never asserted: the machine running the suite is shared and noisy.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SECTIONS = (
    "### Machine",
    "### Integrated Gradients",
    "### Grad-CAM",
    "### Model-agnostic SHAP",
    "### Steps for a relative completeness gap",
    "### Peak memory of IG",
)


@pytest.mark.bench
def test_quick_bench_prints_every_table(tmp_path):
    md = tmp_path / "bench.md"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "attributions.py"), "--quick", "--markdown",
         str(md)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=840, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for heading in SECTIONS:
        assert heading in out, f"missing {heading!r} in:\n{out[-3000:]}"
    for row in ("| mlp ", "| small_cnn ", "| large_cnn "):
        assert row in out
    assert "shap KernelExplainer" in out and "shap PermutationExplainer" in out
    for rule in ("gausslegendre", "riemann_left", "riemann_trapezoid"):
        assert rule in out
    assert md.read_text().strip() == out.strip()
