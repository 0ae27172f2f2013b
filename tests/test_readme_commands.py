"""Every command the README shows, run as a user would run it: the shell blocks go to bash
in a fresh directory with the virtualenv's ``xaudit`` on PATH, the REST calls go to a real
``xaudit serve`` (embedded: SQLite, filesystem broker, its own workers).

What the test changes, and only that:

- ``localhost:8000`` becomes the free port the test's server listens on;
- the command-line synopsis drops its optional ``[...]`` parts (it is a synopsis; the
  other blocks pass those options for real), and its ``serve`` / ``worker | beat`` lines
  are the long-running processes, exercised by starting ``xaudit serve`` as written;
- the placeholder instance ``[[...]]`` becomes a real row of ``test.npz``;
- ``curl`` fails on an HTTP error (``--fail-with-body``) so a 4xx answer fails the test,
  and a GET of a report first waits until the audit has finished (a user reads the
  status line first);
- the Python block's ``model``, ``x`` and ``images`` are the command-line section's files.

The claims printed beside the commands are checked too: the findings the outputs show are
the findings the commands print.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from explain.report_schema import validate_report
from tests.worker.conftest import Procs, base_env, free_port, wait_for, wait_healthy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _bash_blocks() -> dict[str, list[str]]:
    """The ```bash blocks under each ``## `` heading (the top one under "")."""
    out: dict[str, list[str]] = {}
    heading = ""
    for part in re.split(r"^(## .*)$", README, flags=re.M):
        if part.startswith("## "):
            heading = part[3:].strip()
            continue
        out.setdefault(heading, []).extend(re.findall(r"```bash\n(.*?)```", part, re.S))
    return out


BLOCKS = _bash_blocks()


def _commands(block: str) -> list[str]:
    """One string per shell command: continuation lines joined, comment lines dropped."""
    joined = block.replace("\\\n", " ")
    commands, current = [], ""
    for line in joined.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if current and line[:1].isspace():  # a JSON body spread over lines
            current += "\n" + line
            continue
        if current:
            commands.append(current)
        current = line
    if current:
        commands.append(current)
    return commands


def _env(workdir: Path) -> dict[str, str]:
    env = base_env(workdir / "var")
    env["PATH"] = f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def _bash(script: str, workdir: Path, env: dict[str, str], timeout: int = 900) -> str:
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=workdir, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, (
        f"README command failed (exit {out.returncode}):\n{script}\n--- stdout\n"
        f"{out.stdout[-3000:]}\n--- stderr\n{out.stderr[-3000:]}")
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    return out.stdout


def _section(heading_prefix: str) -> list[str]:
    found = [blocks for h, blocks in BLOCKS.items() if h.startswith(heading_prefix)]
    assert found and found[0], f"no bash block under '## {heading_prefix}' in the README"
    return found[0]


def _drop_optional(command: str) -> str:
    """``[--opt VALUE]`` (nested brackets too) removed from a synopsis line."""
    previous = None
    while previous != command:
        previous = command
        command = re.sub(r"\s*\[[^\[\]]*\]", "", command)
    return command


def _expected_findings(block_after: str) -> list[str]:
    return re.findall(r"\[(?:critical|warning)\] (\w+):", block_after)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("readme")


@pytest.fixture(scope="module")
def env(workdir):
    return _env(workdir)


def test_make_targets_are_the_readme_commands():
    """`make demo` is `xaudit demo --out report.html` in the virtualenv, `make test` the
    staged suite (dry runs: the real ones are this suite, and `xaudit demo` below)."""
    (top,) = BLOCKS[""]
    assert [c.split()[:2] for c in _commands(top)] == [["make", "demo"], ["make", "test"]]
    demo = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True)
    assert demo.returncode == 0, demo.stderr
    assert ".venv/bin/xaudit demo --out report.html" in demo.stdout
    test = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True)
    assert test.returncode == 0 and "pytest" in test.stdout and "ruff check" in test.stdout


@pytest.fixture(scope="module")
def cli_files(workdir, env):
    """The command-line synopsis, every line but the long-running services, run as written
    with its optional parts left out."""
    (block,) = _section("Command line")
    ran = []
    for command in _commands(block):
        command = _drop_optional(command.split("  #")[0]).strip()
        if re.match(r"xaudit (serve|worker|beat)\b", command):
            continue
        out = _bash(command, workdir, env)
        ran.append((command, out))
    assert [c.split()[1] for c, _ in ran] == ["demo", "train", "train", "inspect", "audit",
                                              "explain", "keys"]
    for name in ("report.html", "m.keras", "test.npz", "t.keras", "report.json", "attr.npy"):
        assert (workdir / name).stat().st_size > 0, name
    assert ran[-1][1].strip().startswith("xa_")  # the API key, printed once
    return ran


def test_command_line_section(cli_files, workdir):
    report = validate_report(json.loads((workdir / "report.json").read_text()))
    assert report["verdict"]["level"] in {"pass", "review", "fail"}
    attr = np.load(workdir / "attr.npy")
    test = np.load(workdir / "test.npz")
    assert attr.shape[1:] == test["x"].shape[1:] and np.abs(attr).sum() > 0
    demo_out = cli_files[0][1]
    assert "shortcut_region" in demo_out  # the demo names a planted watermark


def test_fairness_section_commands_and_printed_findings(workdir, env):
    (block,) = _section("Group fairness")[:1]
    out = _bash(block, workdir, env)
    shown = _expected_findings(README[README.index(block):][:3000])
    assert shown, "the README shows the findings the audit prints"
    for code in shown:
        assert f"] {code}:" in out, (code, out[-3000:])
    # The clean twin, from the sentence after the output.
    clean = re.search(r"`(xaudit audit lender_clean\.keras[^`]*)`", README).group(1)
    out = _bash(clean, workdir, env)
    assert "group_disparity" not in out and "proxy_feature" not in out, out[-3000:]


def _text_block() -> str:
    return next(b for b in _section("A text model") if "text_leaky" in b)


def test_text_section_command_line(workdir, env):
    block = _text_block()
    local = "\n".join(c for c in _commands(block) if not c.startswith(("curl", "TEXT=")))
    out = _bash(local, workdir, env)
    for code in _expected_findings(block):
        assert f"] {code}:" in out, (code, out[-3000:])
    assert "src_wire" in out  # `xaudit explain` names the planted tag in row 1


def test_python_section(cli_files, workdir, env):
    (block,) = re.findall(r"```python\n(.*?)```", README[README.index("## Python API"):], re.S)[:1]
    preamble = (
        "import numpy as np, keras\n"
        "model = keras.saving.load_model('m.keras', safe_mode=True)\n"
        "x = images = np.load('test.npz')['x'][:8]\n")
    script = workdir / "readme_python.py"
    script.write_text(preamble + block, encoding="utf-8")
    out = subprocess.run([sys.executable, str(script)], cwd=workdir, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    html = (workdir / "report.html").read_text(encoding="utf-8")
    assert "<html" in html.lower()


# The harness around the REST blocks: curl fails on an HTTP error, and a report is read
# once its audit has finished (bounded: 15 minutes on a loaded machine).
CURL_HARNESS = r"""
curl() {
  local a
  for a in "$@"; do case "$a" in */report) _wait_finished "${a%/report}" ;; esac; done
  command curl -sS --fail-with-body "$@"; echo
}
_wait_finished() {
  local i s
  for i in $(seq 900); do
    s=$(command curl -sS --fail-with-body -H "Authorization: Bearer $KEY" "$1" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["status"])')
    case "$s" in succeeded) return 0 ;; failed) echo "audit failed: $1" >&2; return 1 ;; esac
    sleep 1
  done
  echo "audit never finished: $1" >&2; return 1
}
"""


def test_rest_sections_against_a_real_server(cli_files, workdir, env, tmp_path):
    # the fairness and text blocks' files (their own tests made them; make them if run alone)
    if not (workdir / "lender.keras").exists():
        _bash(_section("Group fairness")[0], workdir, env)
    if not (workdir / "text.keras").exists():
        _bash("xaudit train --dataset text_leaky --arch vectorize --out text.keras --quiet",
              workdir, env)
    port = free_port()
    procs = Procs(tmp_path)
    try:
        serve_env = {**env, "XAUDIT_HEALTHZ_REQUIRE_WORKER": "true"}
        with open(tmp_path / "serve.log", "wb") as fh:
            proc = subprocess.Popen([str(BIN / "xaudit"), "serve", "--port", str(port)],
                                    cwd=workdir, env=serve_env, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        procs.procs.append((proc, tmp_path / "serve.log"))
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, procs)

        row = np.load(workdir / "test.npz")["x"][:1].tolist()
        (workdir / "row.json").write_text(json.dumps(row))
        rest = _section("REST API")[0].replace("[[...]]", "'\"$(cat row.json)\"'")
        fairness_service = _section("Group fairness")[1]
        text_service = "\n".join(c for c in _commands(_text_block())
                                 if c.startswith(("curl", "TEXT=")))
        script = "\n".join([CURL_HARNESS, rest, fairness_service, text_service,
                            'printf "%s" "$KEY" > key.txt'])
        script = script.replace("localhost:8000", f"localhost:{port}")
        out = _bash(script, workdir, env)
        assert '"tokens"' in out and "src_wire" in out  # the text /explain answer

        key = (workdir / "key.txt").read_text()
        auth = {"Authorization": f"Bearer {key}"}

        def audits_done():
            items = requests.get(f"{base}/api/v1/audits", headers=auth, timeout=10).json()["items"]
            return items if all(a["status"] in ("succeeded", "failed") for a in items) else None

        items = wait_for(audits_done, 900, step=2, what="the README's audits to finish")
        assert len(items) == 2 and {a["status"] for a in items} == {"succeeded"}, items
        fairness = next(a for a in items if a is not items[-1])  # newest first: the lending one
        report = requests.get(f"{base}/api/v1/audits/{fairness['id']}/report.json",
                              headers=auth, timeout=30).json()
        assert "fairness" in report and report["fairness"]
        schedules = requests.get(f"{base}/api/v1/schedules", headers=auth, timeout=10).json()
        assert len(schedules["items"]) == 2
    except BaseException:
        print(procs.logs())
        raise
    finally:
        procs.stop_all()
