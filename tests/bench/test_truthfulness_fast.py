"""``bench/truthfulness.py --fast``: a few planted and clean models (images and tables)
trained, audited and judged against the planted truth."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_fast_truthfulness_subset_flags_planted_and_spares_clean(tmp_path):
    out = tmp_path / "rows.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "truthfulness.py"), "--fast", "--json",
         str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500,
        check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    planted = [r for r in rows if r["planted"]]
    clean = [r for r in rows if not r["planted"]]
    assert len(planted) == len(clean) == 5
    assert {r["kind"] for r in rows} == {"image", "table"}
    # The printed summary matches the rows.
    flagged = sum(r["ok"] for r in planted)
    alarms = sum(not r["ok"] for r in clean)
    assert re.search(rf"all +flagged in place: {flagged}/5", proc.stdout), proc.stdout
    assert re.search(rf"all +false alarms: +{alarms}/5", proc.stdout), proc.stdout
    # Every fast case is one the full benchmark gets right on this code.
    assert flagged == 5, [r for r in planted if not r["ok"]]
    assert alarms == 0, [r for r in clean if not r["ok"]]
