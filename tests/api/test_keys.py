"""Revoking API keys: over the API (a tenant's own keys) and from the operator's CLI."""

from __future__ import annotations

from click.testing import CliRunner

from tests.api.conftest import bearer, make_app, new_key


def test_tenant_lists_and_revokes_its_keys(app, client):
    first = new_key(app, "acme")
    second = new_key(app, "acme")
    other = new_key(app, "globex")
    listed = client.get("/api/v1/keys", headers=bearer(first))
    assert listed.status_code == 200
    items = listed.json["items"]
    assert len(items) == 2 and {k["prefix"] for k in items} == {first[:10], second[:10]}
    assert all(first not in str(k) and second not in str(k) for k in items)
    second_id = next(k["id"] for k in items if k["prefix"] == second[:10])
    other_id = client.get("/api/v1/keys", headers=bearer(other)).json["items"][0]["id"]

    # Another tenant's key cannot be revoked (nor told apart from a missing one).
    assert client.delete(f"/api/v1/keys/{other_id}", headers=bearer(first)).status_code == 404
    assert client.get("/api/v1/models", headers=bearer(other)).status_code == 200

    assert client.delete(f"/api/v1/keys/{second_id}", headers=bearer(first)).status_code == 204
    r = client.get("/api/v1/models", headers=bearer(second))
    assert r.status_code == 401
    assert client.get("/api/v1/models", headers=bearer(first)).status_code == 200
    revoked = [k for k in client.get("/api/v1/keys", headers=bearer(first)).json["items"]
               if k["id"] == second_id]
    assert revoked[0]["revoked_at"] is not None
    # A key may revoke itself: the next request with it is refused.
    first_id = next(k["id"] for k in items if k["prefix"] == first[:10])
    assert client.delete(f"/api/v1/keys/{first_id}", headers=bearer(first)).status_code == 204
    assert client.get("/api/v1/models", headers=bearer(first)).status_code == 401


def test_cli_lists_and_revokes_keys(tmp_path, monkeypatch):
    from explain.cli import main

    data = tmp_path / "var"
    monkeypatch.setenv("XAUDIT_DATA_DIR", str(data))
    monkeypatch.delenv("XAUDIT_DATABASE_URL", raising=False)
    runner = CliRunner()
    made = runner.invoke(main, ["keys", "create", "--tenant", "acme"])
    assert made.exit_code == 0, made.output
    token = made.output.strip().splitlines()[-1]
    listed = runner.invoke(main, ["keys", "list", "--tenant", "acme"])
    assert listed.exit_code == 0 and token[:10] in listed.output and "active" in listed.output
    assert token not in listed.output
    app = make_app(tmp_path)  # same DATA_DIR → same SQLite database
    client = app.test_client()
    assert client.get("/api/v1/models", headers=bearer(token)).status_code == 200

    gone = runner.invoke(main, ["keys", "revoke", token[:10]])
    assert gone.exit_code == 0, gone.output
    assert client.get("/api/v1/models", headers=bearer(token)).status_code == 401
    assert "REVOKED" in runner.invoke(main, ["keys", "list"]).output
    missing = runner.invoke(main, ["keys", "revoke", "nope"])
    assert missing.exit_code != 0 and "no API key" in missing.output
    assert "Traceback" not in missing.output
    app.extensions["xaudit_db"]["engine"].dispose()
