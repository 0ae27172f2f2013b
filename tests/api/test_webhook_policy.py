"""Webhook SSRF: non-public hosts refused at creation and again after DNS at send time."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from api import webhook_policy as wp
from tests.api.conftest import bearer, make_app, new_key, upload

URL = "/api/v1/schedules"

PRIVATE = [
    "http://localhost/hook", "http://LOCALHOST./hook", "http://api.localhost/hook",
    "http://127.0.0.1/hook", "http://127.1.2.3:8080/hook", "http://[::1]/hook",
    "http://169.254.169.254/latest/meta-data", "http://10.0.0.5/hook",
    "http://192.168.1.1/hook", "http://172.16.0.1/hook", "http://0.0.0.0/hook",
    "http://[::]/hook", "http://224.0.0.1/hook", "http://[::ffff:127.0.0.1]/hook",
    "http://[fe80::1]/hook", "http://100.64.0.1/hook",
]
MALFORMED = ["http://example.com/a b", "http://example.com/a\r\nX-Evil: 1",
             "http://example.com/\x00", "http://exa mple.com/", "http://example.com/\tx"]


@pytest.fixture
def env(tmp_path, mlp_file, data_file):
    app = make_app(tmp_path)
    client = app.test_client()
    headers = bearer(new_key(app, "acme"))
    upload(client, "models", mlp_file, "mlp", headers)
    upload(client, "datasets", data_file, "rows", headers)
    yield client, headers
    app.extensions["xaudit_db"]["engine"].dispose()


def _body(url):
    return {"cron": "0 0 1 1 *", "model_name": "mlp", "dataset_name": "rows",
            "webhook_url": url}


@pytest.mark.parametrize("url", PRIVATE)
def test_private_hosts_are_refused_at_creation(env, url):
    client, headers = env
    r = client.post(URL, headers=headers, json=_body(url))
    assert r.status_code == 422, (url, r.json)
    assert r.json["error"]["code"] == "webhook_host_not_allowed"


@pytest.mark.parametrize("url", MALFORMED)
def test_spaces_and_control_characters_are_refused(env, url):
    client, headers = env
    r = client.post(URL, headers=headers, json=_body(url))
    assert r.status_code == 422, (url, r.json)
    assert r.json["error"]["code"] == "bad_webhook_url"


def test_public_hosts_and_operator_choices_are_accepted(env, tmp_path, mlp_file, data_file):
    client, headers = env
    assert client.post(URL, headers=headers,
                       json=_body("https://hooks.example.com/x")).status_code == 201
    assert client.post(URL, headers=headers,
                       json=_body("http://93.184.216.34/x")).status_code == 201
    # An operator may allow private receivers, by name or altogether.
    check = wp.check_url
    assert check("http://127.0.0.1:9/x", allow_private=True).private_ok
    assert check("http://hooks.internal/x", ["hooks.internal"]).private_ok
    with pytest.raises(wp.WebhookRefused):
        check("http://127.0.0.1/x", ["*.internal", "127.0.0.1.evil"])


def test_a_name_resolving_to_a_private_address_is_refused(monkeypatch):
    real = socket.getaddrinfo

    def fake(host, port, *a, **kw):
        if host == "rebind.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(wp.WebhookRefused):
        wp.check_url("http://rebind.example/x")
    with pytest.raises(wp.WebhookRefused, match="127.0.0.1"):
        wp.resolve_public("http://rebind.example/x")


def test_send_time_check_catches_dns_rebinding(monkeypatch):
    """Public when the schedule was made, 169.254.169.254 when it is sent: not sent."""
    answers = iter(["93.184.216.34", "169.254.169.254"])

    def fake(host, port, *a, **kw):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    wp.check_url("http://flip.example/x")
    with pytest.raises(wp.WebhookRefused, match="169.254.169.254"):
        wp.resolve_public("http://flip.example/x")


def test_the_post_goes_to_the_checked_address_with_the_original_host():
    from worker.webhooks import _post_pinned

    seen = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            seen["host"] = self.headers["Host"]
            seen["path"] = self.path
            seen["body"] = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        target = wp.check_url(f"http://receiver.invalid:{port}/hooks?a=1",
                              allow_private=True, resolve=False)
        resp = _post_pinned(target, "127.0.0.1", b"{}", {"Content-Type": "application/json"})
        assert resp.status_code == 204
        assert seen == {"host": f"receiver.invalid:{port}", "path": "/hooks?a=1",
                        "body": b"{}"}
    finally:
        server.shutdown()
        server.server_close()
