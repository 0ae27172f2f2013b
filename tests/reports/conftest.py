"""Fixtures for the report tests: hand-built audit results and their rendered HTML.

Rendering draws a few dozen figures, so each report is rendered once per session and
shared by the tests that only read it.
"""

from __future__ import annotations

import pytest

from reports import render_html
from tests.reports.builders import image_audit, regression_audit, tabular_audit


@pytest.fixture
def image_result():
    return image_audit()


@pytest.fixture
def tabular_result():
    return tabular_audit()


@pytest.fixture
def regression_result():
    return regression_audit()


@pytest.fixture(scope="session")
def image_html() -> str:
    return render_html(image_audit())


@pytest.fixture(scope="session")
def tabular_html() -> str:
    return render_html(tabular_audit())
