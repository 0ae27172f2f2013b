"""The README's REST API example, request by request as written: its shell words expanded
by bash with the ids the uploads answered, its JSON bodies sent to the same paths (the
placeholder instance ``[[...]]`` replaced by a real row)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.api.conftest import upload

ROOT = Path(__file__).resolve().parents[2]


def _rest_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## REST API"):]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def _requests(block: str, env: dict[str, str]) -> list[tuple[str, str | None]]:
    """(path, body) of each curl in the block, shell words expanded by bash."""
    out = []
    for command in re.split(r"\n(?=\S)", block.replace("\\\n", " ")):
        if "curl" not in command or "localhost:8000" not in command:
            continue
        curl = command[command.index("curl"):].split(")")[0].split("|")[0]
        curl = curl.split("#")[0]
        words = subprocess.run(
            ["bash", "-c", f'printf "%s\\0" {curl[len("curl"):]}'], env=env,
            capture_output=True, text=True, check=True).stdout.split("\0")[:-1]
        body = words[words.index("-d") + 1] if "-d" in words else None
        path = next(w for w in words if "localhost:8000" in w).split("localhost:8000", 1)[1]
        out.append((path, body))
    return out


def test_readme_rest_example_runs_as_written(app, client, auth, mlp_file, data_file):
    block = _rest_block()
    assert '"model_id": 1' not in block  # ids are hex strings
    model = upload(client, "models", mlp_file, "shapes", auth).json["id"]
    data = upload(client, "datasets", data_file, "holdout", auth).json["id"]
    r = client.post("/api/v1/audits", headers=auth,
                    json={"model_id": model, "dataset_id": data, "config": {"samples": 4}})
    audit = r.json["id"]
    env = {"MODEL": model, "DATA": data, "AUDIT": audit, "KEY": "k", "PATH": "/usr/bin:/bin"}
    seen = []
    for path, body in _requests(block, env):
        if body is None:
            if path.endswith(("/models", "/datasets")):
                continue  # the uploads above, with this test's files
            r = client.get(path, headers=auth)
        else:
            payload = json.loads(body.replace("[[...]]", "[[0.1, 0.2, 0.3, 0.4]]"))
            if path.endswith("/audits"):
                payload["config"]["samples"] = 4  # a tiny model and 40 rows
            r = client.post(path, headers=auth, json=payload)
        assert r.status_code in (200, 201, 202), (path, body, r.get_json())
        seen.append(path)
    assert {"/api/v1/audits", f"/api/v1/audits/{audit}", f"/api/v1/audits/{audit}/report",
            "/api/v1/explain", "/api/v1/schedules"} <= set(seen), seen
