"""What a user sees from ``xaudit`` commands that load no model: they start without
TensorFlow, and a refused (hostile) model file answers one line, nothing else.

Each command runs in a fresh interpreter, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
XAUDIT = Path(sys.executable).parent / "xaudit"

#: Runs ``xaudit ARGS`` in this interpreter and writes which heavy modules it imported.
PROBE = """
import json, sys
from explain.cli import main
sys.argv = ["xaudit", *json.loads(sys.argv[1])]
try:
    main()
finally:
    with open({out!r}, "w") as fh:
        json.dump(sorted(m for m in ("tensorflow", "keras") if m in sys.modules), fh)
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("XAUDIT_") and k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update({"XAUDIT_DATA_DIR": str(tmp_path / "var"), "PYTHONPATH": str(ROOT),
                "CUDA_VISIBLE_DEVICES": ""})
    return env


def _probe(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    out = tmp_path / "imported.json"
    code = PROBE.format(out=str(out))
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(list(args))], cwd=ROOT,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    return proc, json.loads(out.read_text())


def _lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


def _traversal_keras(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.13.0"}))
        zf.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {}}))
        zf.writestr("../../evil.txt", b"pwned\n")
    return path


def test_help_and_keys_start_without_tensorflow(tmp_path):
    proc, heavy = _probe(tmp_path, "--help")
    assert proc.returncode == 0 and "audit" in proc.stdout
    assert heavy == []
    proc, heavy = _probe(tmp_path, "keys", "create", "--tenant", "acme")
    assert proc.returncode == 0, proc.stderr
    assert _lines(proc)[0].startswith("xa_") and len(_lines(proc)) == 1
    assert heavy == []


@pytest.mark.parametrize("name", ["traversal", "pickle", "garbage"])
def test_a_file_refused_from_its_bytes_starts_no_tensorflow(tmp_path, name):
    if name == "traversal":
        path = _traversal_keras(tmp_path / "model.keras")
    elif name == "pickle":
        path = tmp_path / "model.pkl"
        path.write_bytes(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.")
    else:
        path = tmp_path / "model.keras"
        path.write_bytes(os.urandom(4096))
    proc, heavy = _probe(tmp_path, "inspect", str(path))
    assert proc.returncode == 2
    lines = _lines(proc)
    assert len(lines) == 1 and lines[0].startswith("error ["), lines
    assert heavy == []


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    from tests.hostile import build_hostile_zoo

    return build_hostile_zoo(tmp_path_factory.mktemp("zoo"), include_savedmodel=False)


@pytest.mark.parametrize("name", ["lambda_keras", "lambda_h5", "disguised_keras",
                                  "zip_bomb_keras"])
def test_a_hostile_upload_through_inspect_prints_exactly_one_line(tmp_path, zoo, name):
    path, code, marker = zoo[name]
    proc = subprocess.run([str(XAUDIT), "inspect", str(path)], cwd=tmp_path,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert _lines(proc) == [line for line in _lines(proc) if line.startswith(f"error [{code}]")]
    assert len(_lines(proc)) == 1, proc.stdout + proc.stderr
    assert not marker.exists()
