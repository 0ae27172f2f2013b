"""The upload page's sensitive-columns field, in headless Chromium against `xaudit serve`:
a CSV with sensitive columns is uploaded, audited, and its report has the fairness
section naming the proxy."""

from __future__ import annotations

import pytest

from tests.api.test_web_browser import browser_page, server  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest.importorskip("playwright.sync_api")


@pytest.fixture
def lending_files(tmp_path):
    from explain.training import train_reference_model

    res = train_reference_model("lending", out=tmp_path / "lender.keras", seed=1, verbose=0)
    test = res.test
    data = test.to_csv(tmp_path / "loans.csv", label="approved")
    return res.model_path, data


def test_sensitive_columns_from_the_upload_page(server, browser_page, lending_files,  # noqa: F811
                                                tmp_path):
    from playwright.sync_api import expect

    base, key, procs = server
    model_path, data_path = lending_files
    page = browser_page.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + "/")
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")

    page.fill("#model-name", "lender")
    page.set_input_files("#model-file", str(model_path))
    page.click("#model-form button[type=submit]")
    expect(page.locator("#model-result")).to_contain_text("lender version 1 stored",
                                                          timeout=120_000)

    # Without the sensitive columns the text column cannot be a model input.
    page.fill("#dataset-name", "loans")
    page.set_input_files("#dataset-file", str(data_path))
    page.fill("#dataset-label", "approved")
    page.click("#dataset-form button[type=submit]")
    expect(page.locator("#message-title")).to_contain_text("non_numeric", timeout=120_000)

    page.fill("#dataset-sensitive", "group, age")
    page.click("#dataset-form button[type=submit]")
    expect(page.locator("#dataset-result")).to_contain_text("loans version 1 stored",
                                                            timeout=120_000)
    box = page.text_content("#dataset-result")
    assert "sensitive" in box and "group, age" in box

    page.fill("#audit-methods", "integrated_gradients")
    page.click("#start-audit")
    page.wait_for_selector("#audit-progress:not([hidden])")
    for _ in range(1800):
        if page.get_attribute("#audit-progress", "data-status") in ("succeeded", "failed"):
            break
        page.wait_for_timeout(500)
    status = page.get_attribute("#audit-progress", "data-status")
    assert status == "succeeded", (page.text_content("#message"), procs.logs()[-3000:])
    page.wait_for_selector("#report-links:not([hidden])")
    with browser_page.expect_page() as opened:
        page.click("#open-report")
    report = opened.value
    report.wait_for_load_state()
    section = report.locator("#fairness")
    expect(section).to_contain_text("Group fairness")
    expect(section).to_contain_text("district_index")
    assert report.locator("#finding-group_disparity").count() >= 1
    assert report.locator("#finding-proxy_feature").count() == 1
    section.screenshot(path=str(tmp_path / "fairness.png"))
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert errors == []
