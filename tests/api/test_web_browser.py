"""The web page in headless Chromium against a real `xaudit serve` (API + worker + beat).

A user pastes a key, uploads a model and a dataset, starts an audit, watches its progress
and opens the report. Along the way: hostile names (the model's Keras name, the upload's
file name, a dataset's feature name) show as text, API errors show their message, the
page logs no console error, and no request leaves 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import requests

from tests.worker.conftest import BIN, Procs, base_env, create_key, free_port, wait_healthy

pytestmark = [pytest.mark.browser, pytest.mark.slow]
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
HOSTILE = "<img src=x onerror=alert(1)>"
AUDIT_TIMEOUT_MS = 900_000


@pytest.fixture
def server(tmp_path):
    """`xaudit serve` on a free port, with no Redis (the embedded default); a key for it."""
    procs = Procs(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "data"
    env = base_env(data_dir)
    try:
        key = create_key(data_dir, "webtest", env)
        procs.start("serve", [str(BIN / "xaudit"), "serve", "--port", str(port)], env)
        wait_healthy(base, procs)
        yield base, key, procs
    finally:
        procs.stop_all()


@pytest.fixture
def files(tmp_path):
    """Two tiny MLPs saved under a hostile file name, the first also with a hostile Keras
    name, and a matching .npz whose first feature name is hostile."""
    from explain._backend import keras
    from tests.models import seed

    paths = []
    for folder, name in (("hostile", HOSTILE), ("plain", "mlp")):
        seed(0)
        inp = keras.Input((4,))
        h = keras.layers.Dense(8, activation="tanh")(inp)
        out = keras.layers.Dense(3, activation="softmax")(h)
        (tmp_path / folder).mkdir()
        path = tmp_path / folder / f"{HOSTILE}.keras"
        keras.Model(inp, out, name=name).save(path)
        paths.append(path)
    rng = np.random.default_rng(0)
    data_path = tmp_path / "plain" / "rows.npz"
    np.savez(data_path, x=rng.normal(size=(40, 4)).astype("float32"),
             y=rng.integers(0, 3, size=40),
             feature_names=np.array([HOSTILE, "income", "age", "tenure"]))
    return paths[0], paths[1], data_path


@pytest.fixture
def browser_page(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                     headless=True)
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 1300})
            yield context
        finally:
            with contextlib.suppress(Exception):
                browser.close()


def test_upload_audit_and_open_the_report_in_the_browser(server, files, browser_page,
                                                         tmp_path):
    base, key, procs = server
    hostile_model, model_path, data_path = files
    context = browser_page

    # Every request the page (or a page it opens) makes: anything not on 127.0.0.1 is
    # refused and recorded.
    requested: list[str] = []
    outside: list[str] = []

    def guard(route):
        url = route.request.url
        requested.append(url)
        host = urlparse(url).hostname
        if url.startswith(("blob:", "data:")) or host == "127.0.0.1":
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    context.route("**/*", guard)
    console_errors: list[str] = []
    dialogs: list[str] = []

    def watch(page):
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error"
                else None)
        page.on("pageerror", lambda e: console_errors.append(str(e)))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    context.on("page", watch)
    page = context.new_page()
    page.set_default_timeout(60_000)

    response = page.goto(base + "/")
    assert response.status == 200
    csp = dict(d.strip().split(" ", 1) for d in
               response.headers["content-security-policy"].split(";") if d.strip())
    assert csp["script-src"] == "'self'"  # no inline script, no inline handlers
    assert csp["connect-src"] == "'self'" and csp["default-src"] == "'none'"

    # Without a key, an upload explains what is missing.
    page.fill("#model-name", "mlp")
    page.set_input_files("#model-file", str(hostile_model))
    page.click("#model-form button[type=submit]")
    page.wait_for_selector("#message:not([hidden])")
    assert "API key" in page.text_content("#message")

    # A wrong key: the API's 401 message is shown.
    page.fill("#api-key", "xa_not-a-real-key")
    page.click("#key-form button[type=submit]")
    page.click("#model-form button[type=submit]")
    expect(page.locator("#message-title")).to_contain_text("401", timeout=120_000)
    assert "valid API key" in page.text_content("#message-text")

    # The right key, kept in sessionStorage and cleared from the input.
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")
    assert page.evaluate("sessionStorage.getItem('xaudit.apiKey')") == key
    assert page.input_value("#api-key") == ""
    assert "Using key" in page.text_content("#key-status")

    # A hostile *name* is refused by the API, and the refusal is shown as text.
    page.fill("#model-name", HOSTILE)
    page.click("#model-form button[type=submit]")
    expect(page.locator("#message-title")).to_contain_text("422", timeout=120_000)
    assert "invalid name" in page.text_content("#message-text")

    # Upload a model whose Keras name and file name are the hostile string.
    page.fill("#model-name", "mlp")
    page.click("#model-form button[type=submit]")
    expect(page.locator("#model-result")).to_contain_text("mlp version 1 stored", timeout=120_000)
    model_box = page.text_content("#model-result")
    assert model_box.count(HOSTILE) == 2  # the Keras name and the file name, as text
    assert "(N, 4)" in model_box

    # The model that is audited: version 2, a plain Keras name (TensorFlow refuses to
    # trace a model whose name is not a valid scope name), the same hostile file name.
    # It goes up with a background sample (the dataset's 40 rows), shown with the model.
    page.set_input_files("#model-file", str(model_path))
    page.set_input_files("#model-background", str(data_path))
    page.click("#model-form button[type=submit]")
    expect(page.locator("#model-result")).to_contain_text("mlp version 2 stored", timeout=120_000)
    assert HOSTILE in page.text_content("#model-result")
    assert re.search(r"background\s*40 rows", page.text_content("#model-result"))

    # Upload the dataset (a hostile feature name).
    page.fill("#dataset-name", "rows")
    page.set_input_files("#dataset-file", str(data_path))
    page.click("#dataset-form button[type=submit]")
    page.wait_for_selector("#dataset-result:not([hidden])")
    data_box = page.text_content("#dataset-result")
    assert "rows version 1 stored" in data_box and "40" in data_box
    assert HOSTILE in data_box

    # An unknown method: the API's 422 message, shown; nothing is started.
    page.fill("#audit-methods", "no_such_method")
    page.click("#start-audit")
    expect(page.locator("#message-title")).to_contain_text("unknown_method", timeout=120_000)
    assert "no_such_method" in page.text_content("#message-text")
    assert page.is_hidden("#audit-progress")

    # Start the audit and watch it until it is finished one way or the other.
    page.fill("#audit-methods", "integrated_gradients, saliency")
    page.click("#start-audit")
    page.wait_for_selector("#audit-progress:not([hidden])")
    audit_id = page.text_content("#audit-id")
    assert audit_id
    seen: list[tuple[str, float]] = []

    def finished() -> bool:
        status = page.get_attribute("#audit-progress", "data-status")
        seen.append((status, float(page.eval_on_selector("#audit-bar", "e => e.value"))))
        return status in ("succeeded", "failed")

    # Poll the page's own progress UI (bounded).
    for _ in range(AUDIT_TIMEOUT_MS // 500):
        if finished():
            break
        page.wait_for_timeout(500)
    else:
        pytest.fail(f"the page never showed a finished audit: {seen[-5:]}\n{procs.logs()}")

    # The page agrees with the API.
    api_view = requests.get(f"{base}/api/v1/audits/{audit_id}",
                            headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
    status = page.text_content("#audit-status")
    assert status == api_view["status"]
    bars = [value for _, value in seen]
    assert bars == sorted(bars), "progress went backwards"

    assert api_view["status"] == "succeeded", (api_view["error"], procs.logs()[-3000:])
    assert page.eval_on_selector("#audit-bar", "e => e.value") == 1
    assert page.text_content("#audit-percent") == "100%"
    page.wait_for_selector("#report-links:not([hidden])")
    assert page.get_attribute("#open-report", "href").startswith("blob:")
    with context.expect_page() as opened:
        page.click("#open-report")
    report = opened.value
    report.wait_for_load_state()
    report_text = report.text_content("body")
    assert HOSTILE in report_text  # the feature name, as text in the report too
    assert report.evaluate("document.querySelectorAll('img[src=x]').length") == 0
    report.screenshot(path=str(tmp_path / "report.png"), full_page=False)

    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 0

    # Chromium logs each deliberately provoked 4xx (no key, wrong key, bad name, unknown
    # method) as a failed resource load; anything else is a real console error.
    provoked = [m for m in console_errors if re.match(
        r"Failed to load resource: the server responded with a status of 4(01|22)", m)]
    console_errors = [m for m in console_errors if m not in provoked]
    assert len(provoked) <= 3, provoked

    # Hostile strings stayed text: no element was made from them, no script ran.
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    assert dialogs == []
    assert console_errors == [], console_errors
    assert outside == [], outside
    assert requested and all(
        u.startswith(("blob:", "data:")) or urlparse(u).hostname == "127.0.0.1"
        for u in requested)
    # The key is never in a URL.
    assert not any(key in u for u in requested)
    # Point a developer at the screenshots when they want to look.
    print(f"screenshots in {tmp_path}")
