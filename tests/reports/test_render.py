"""Rendering: one self-contained, escaped, readable HTML file, and report.json."""

from __future__ import annotations

import base64
import copy
import io
import json
import re
from importlib import resources

import numpy as np
import pytest
from PIL import Image

from explain.result import AuditResult
from reports import CSP, render_html, render_json, validate_report
from tests.reports.builders import image_audit, regression_audit, tabular_audit
from tests.reports.html_checks import parse

SCRIPT = "<script>alert(1)</script>"
ATTRIBUTE = '"><img src=x onerror=alert(1)>'
HOSTILE = [SCRIPT, ATTRIBUTE]

SECTIONS = ["summary", "model", "performance", "global-importance", "local", "quality",
            "findings", "drift", "reproducibility"]
MAX_BYTES = 3 * 1024 * 1024


def _png(uri: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(uri[len(prefix):])))
    image.load()
    return image


# -- structure ------------------------------------------------------------------------------


def test_image_report_has_every_section_in_order(image_html):
    doc = parse(image_html)
    assert [i for i in doc.ids if i in SECTIONS] == SECTIONS
    assert [a["href"] for a in doc.of("a") if a["href"].lstrip("#") in SECTIONS] == [
        f"#{s}" for s in SECTIONS
    ]


def test_tabular_report_has_no_drift_section(tabular_html):
    doc = parse(tabular_html)
    assert "drift" not in doc.ids
    assert [i for i in doc.ids if i in SECTIONS] == [s for s in SECTIONS if s != "drift"]


def test_summary_shows_verdict_headline_and_top_findings(image_html):
    result = image_audit()
    text = parse(image_html).visible_text
    assert result.report["verdict"]["headline"] in text
    summary = image_html[image_html.index('id="summary"'):image_html.index('id="model"')]
    assert 'class="verdict verdict-fail"' in summary
    links = re.findall(r'href="#finding-([a-z0-9_]+)"', summary)
    assert links == result.report["verdict"]["top_findings"]
    for code in links:
        assert f'id="finding-{code}"' in image_html


def test_findings_are_ordered_by_severity_with_evidence(image_html):
    findings = image_html[image_html.index('id="findings"'):image_html.index('id="drift"')]
    codes = re.findall(r'<article class="finding finding-(\w+)" id="finding-([a-z0-9_]+)"', findings)
    assert codes == [("critical", "spurious_region"), ("warning", "unfaithful_method"),
                     ("info", "calibration_overconfident")]
    doc = parse(findings)
    text = doc.visible_text
    # Evidence: scalars in a definition list, a list of records as a table.
    assert "expected share 0.110" in text
    assert len(doc.of("dl")) >= 3 and len(doc.of("table")) == 1
    assert "grad_cam 0.410" in text and "12 40 77" in text


def test_local_examples_put_misclassified_first_and_respect_max_examples():
    result = image_audit(n_examples=12)
    html = render_html(result, max_examples=5)
    shown = [int(i) for i in re.findall(r'<article class="example" id="example-(\d+)"', html)]
    assert len(shown) == 5
    by_index = {e["index"]: e for e in result.report["examples"]}
    reasons = [by_index[i]["reason"] for i in shown]
    assert reasons == ["misclassified"] * 4 + ["least_confident"]
    assert "Showing 5 of 12" in parse(html).visible_text
    local = html[html.index('id="local"'):html.index('id="quality"')]
    # Each example: the input and one panel per method, captioned as text.
    assert len(parse(local).of("img")) == 5 * 4 + 2  # + the two colour-scale legends
    for caption in ("input", "Grad-CAM", "Integrated Gradients", "SHAP"):
        assert local.count(f"<figcaption>{caption}</figcaption>") == 5


def test_max_examples_zero_and_negative():
    result = tabular_audit()
    assert 'class="example"' not in render_html(result, max_examples=0)
    with pytest.raises(ValueError):
        render_html(result, max_examples=-1)


def test_quality_section_lists_every_check_with_badges(image_html):
    quality = image_html[image_html.index('id="quality"'):image_html.index('id="findings"')]
    result = image_audit()
    checks = sum(len(e["checks"]) for e in result.report["explanation_quality"].values())
    assert quality.count("<tr>") - 1 * 3 - 1 - 3 == checks  # minus header rows, agreement
    assert quality.count("badge-fail") == 3  # SHAP fails: two checks and the method
    assert "not gated" in quality
    assert len(parse(quality).of("img")) == 3  # one curve figure per method


def test_figures_are_real_pngs_of_modest_size(image_html):
    for attrs in parse(image_html).of("img"):
        image = _png(attrs["src"])
        assert image.width <= 1100 and image.height <= 1100
        assert attrs.get("alt")


def test_regression_report_shows_residuals_not_classification_figures():
    html = render_html(regression_audit())
    performance = html[html.index('id="performance"'):html.index('id="global-importance"')]
    assert "Residual histogram" in performance
    assert "Confusion matrix" not in performance and "Reliability" not in performance
    text = parse(html).visible_text
    assert "R²" in text and "largest error" in text


def test_arrays_that_do_not_match_the_report_are_refused():
    result = tabular_audit(n_examples=10)
    arrays = dict(result.arrays)
    arrays["maps.shap"] = arrays["maps.shap"][:7]
    with pytest.raises(ValueError, match=r"maps.shap has 7 rows for 10 examples"):
        render_html(AuditResult(result.report, arrays))


def test_invalid_reports_are_not_rendered():
    result = tabular_audit()
    result.report["findings"][0]["severity"] = "severe"
    with pytest.raises(ValueError, match="severity"):
        render_html(result)
    with pytest.raises(ValueError, match="severity"):
        render_json(result)


def test_render_json_is_the_validated_report(tabular_result):
    text = render_json(tabular_result)
    assert json.loads(text) == validate_report(tabular_result.report)
    assert text == tabular_result.to_json()


# -- safety: escaping and self-containment ---------------------------------------------------


def _hostile_image_result() -> AuditResult:
    classes = [SCRIPT, ATTRIBUTE] + [f"class {i}" for i in range(8)]
    result = image_audit(model_name=SCRIPT, dataset_name=ATTRIBUTE, class_names=classes,
                         n_examples=8)
    r = result.report
    r["title"] = f"Audit {SCRIPT} {ATTRIBUTE}"
    r["verdict"]["headline"] = ATTRIBUTE
    r["model"]["layers"][1]["name"] = SCRIPT
    r["model"]["gradcam_layers"] = [ATTRIBUTE]
    r["model"]["training"] = {SCRIPT: ATTRIBUTE, "nested": {"deeper": [{ATTRIBUTE: SCRIPT}]}}
    r["findings"][0]["message"] = SCRIPT
    r["findings"][0]["evidence"] = {
        SCRIPT: ATTRIBUTE,
        "list": [SCRIPT, ATTRIBUTE],
        "rows": [{"name": SCRIPT, "value": 1}, {"name": ATTRIBUTE, "value": 2}],
        "deep": {"a": {"b": {"c": {"d": {"e": {"f": SCRIPT}}}}}},
    }
    r["config"][ATTRIBUTE] = SCRIPT
    r["environment"]["platform"] = SCRIPT
    r["drift"]["previous_audit"] = ATTRIBUTE
    r["drift"]["items"][0]["feature"] = SCRIPT
    r["explanation_quality"][SCRIPT] = copy.deepcopy(r["explanation_quality"]["shap"])
    r["explanation_quality"][SCRIPT]["checks"][0]["metric"] = ATTRIBUTE
    r["agreement"].append({"a": SCRIPT, "b": ATTRIBUTE, "global_rank_correlation": 0.1,
                           "local_rank_correlation": None})
    r["performance"][ATTRIBUTE] = SCRIPT
    for item in r["global_importance"]["items"][:2]:
        item["feature"] = SCRIPT if item is r["global_importance"]["items"][0] else ATTRIBUTE
    return result


def _hostile_tabular_result() -> AuditResult:
    features = [SCRIPT, ATTRIBUTE] + [f"f{i}" for i in range(6)]
    return tabular_audit(model_name=ATTRIBUTE, dataset_name=SCRIPT, feature_names=features,
                         class_names=[SCRIPT, ATTRIBUTE])


@pytest.mark.parametrize("build", [_hostile_image_result, _hostile_tabular_result])
def test_user_strings_are_escaped_everywhere(build):
    result = build()
    html = render_html(result)
    assert "<script" not in html.lower()
    doc = parse(html)
    tags = {tag for tag, _ in doc.tags}
    assert not tags & {"script", "iframe", "object", "embed", "link", "base", "form", "svg"}
    assert len(doc.of("style")) == 1
    for tag, attrs in doc.tags:
        assert not [a for a in attrs if a.lower().startswith("on")], (tag, attrs)
    for attrs in doc.of("img"):
        assert attrs["src"].startswith("data:image/png;base64,"), attrs
        _png(attrs["src"])
    # The hostile strings are still shown, as text.
    for text in HOSTILE:
        assert text in doc.visible_text


def test_templates_never_mark_data_safe():
    templates = resources.files("reports").joinpath("templates")
    for entry in templates.iterdir():
        source = entry.read_text("utf-8")
        assert not re.search(r"\|\s*safe\b", source), entry.name
        assert "autoescape false" not in source, entry.name


def _references(html: str) -> list[str]:
    doc = parse(html)
    return [v for _, attrs in doc.tags for k, v in attrs.items()
            if k in ("src", "href", "action", "srcset", "poster", "data") and v is not None]


@pytest.mark.parametrize("fixture", ["image_html", "tabular_html"])
def test_report_is_self_contained(fixture, request):
    html = request.getfixturevalue(fixture)
    for ref in _references(html):
        assert ref.startswith("#") or ref.startswith("data:image/png;base64,"), ref
        assert "//" not in ref.split(",", 1)[0]
    assert "http://" not in html and "https://" not in html
    assert "url(" not in html and "@import" not in html
    metas = parse(html).of("meta")
    csp = [m for m in metas if (m.get("http-equiv") or "").lower() == "content-security-policy"]
    assert [m["content"] for m in csp] == [CSP]
    assert "default-src 'none'" in CSP and "img-src data:" in CSP


def test_report_is_printable(image_html):
    style = image_html[image_html.index("<style>"):image_html.index("</style>")]
    print_css = style[style.index("@media print"):]
    assert "break-before: page" in print_css
    assert "break-inside: avoid" in print_css
    assert "max-width" in style


def test_default_image_report_stays_under_three_megabytes(image_html):
    assert len(image_html.encode("utf-8")) <= MAX_BYTES


def test_large_images_do_not_grow_the_report():
    result = image_audit(n_examples=8, size=224, with_drift=False)
    html = render_html(result)
    assert len(html.encode("utf-8")) <= MAX_BYTES
    local = html[html.index('id="local"'):html.index('id="quality"')]
    widths = {_png(a["src"]).width for a in parse(local).of("img") if "colour scale" not in a["alt"]}
    assert widths == {168}


def test_grayscale_and_lower_resolution_maps_render():
    result = image_audit(n_examples=8, size=32, with_drift=False)
    arrays = dict(result.arrays)
    arrays["examples_x"] = arrays["examples_x"].mean(axis=-1, keepdims=True) * 255.0
    arrays["maps.grad_cam"] = arrays["maps.grad_cam"][:, ::4, ::4]  # Grad-CAM at feature-map size
    html = render_html(AuditResult(result.report, arrays))
    local = html[html.index('id="local"'):html.index('id="quality"')]
    panels = [a for a in parse(local).of("img") if a["alt"].startswith("Row ")]
    assert len(panels) == 8 * 4
    assert {(_png(a["src"]).width, _png(a["src"]).height) for a in panels} == {(168, 168)}
    # The input panel is grey: red, green and blue agree in every pixel.
    first = np.asarray(_png(panels[0]["src"]).convert("RGB")).astype(int)
    assert np.abs(first[..., 0] - first[..., 1]).max() <= 1
