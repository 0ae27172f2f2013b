"""Method knowledge lives in the registry: outside ``explain/attributions`` nothing
compares a value with a method's name. The places listed in ``NOT_YET`` still do; each is
named so that a new one fails this test."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Branches on method names not yet moved into the registry: (file, method names).
NOT_YET: set[tuple[str, str]] = set()


def _constants(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return set().union(*(_constants(e) for e in node.elts)) if node.elts else set()
    return set()


def _branches(methods: set[str]) -> set[tuple[str, str]]:
    found = set()
    for pkg in ("explain", "api", "worker", "reports"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            rel = f.relative_to(ROOT).as_posix()
            if rel.startswith("explain/attributions/"):
                continue  # a method's own module, and the registry
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                names: set[str] = set()
                if isinstance(node, ast.Compare):
                    for part in (node.left, *node.comparators):
                        names |= _constants(part)
                elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "get"
                      and node.args):
                    names = _constants(node.args[0])
                found |= {(rel, m) for m in names & methods}
    return found


def test_no_branch_on_a_method_name_outside_its_module():
    from explain.attributions import METHODS

    assert _branches(set(METHODS)) - NOT_YET == set()


def test_the_registry_carries_what_the_audit_and_report_need():
    from explain.attributions import METHODS, method_info
    from explain.metrics import COMPLETENESS_TOLERANCE
    from reports.figures import method_title

    ig, shap, cam = (method_info(m) for m in ("integrated_gradients", "shap", "grad_cam"))
    assert ig.options == set(ig.defaults) and ig.defaults["steps"] == 32  # the signature
    assert COMPLETENESS_TOLERANCE == {"integrated_gradients": 0.01, "shap": 0.05}
    assert method_title("grad_cam") == "Grad-CAM" == cam.title
    assert "randomization" in ig.sanity_checks and not shap.sanity_checks
    for m in METHODS:
        info = method_info(m)
        assert info.completeness == (info.completeness_tolerance is not None)
        assert info.title and info.summary
    from explain.audit.importance import global_method

    assert global_method(["shap", "saliency", "integrated_gradients"], "tabular") == \
        "integrated_gradients"
    assert global_method(["shap", "integrated_gradients", "grad_cam"], "image") == "grad_cam"
    assert global_method(["shap", "occlusion"], "tabular") == "shap"


def test_validate_refuses_options_a_method_does_not_take():
    import pytest

    from explain.attributions import method_info
    from explain.errors import InputError

    method_info("saliency").validate({"absolute": True, "batch_size": 8})
    with pytest.raises(InputError, match="steps"):
        method_info("saliency").validate({"steps": 8})


def test_older_config_keys_are_aliases_of_method_options():
    import dataclasses

    from explain.attributions import METHODS, method_info
    from explain.audit import AuditConfig

    fields = {f.name for f in dataclasses.fields(AuditConfig)}
    aliases = {k: (m, o) for m in METHODS for k, o in method_info(m).config_aliases.items()}
    assert aliases == {"ig_steps": ("integrated_gradients", "steps"),
                       "shap_samples": ("shap", "samples")}
    assert set(aliases) <= fields
    assert AuditConfig().method_options == {}
    cfg = AuditConfig.from_dict({"ig_steps": 64, "shap_samples": 96,
                                 "method_options": {"shap": {"estimator": "kernel"}}})
    assert cfg.method_options == {"integrated_gradients": {"steps": 64},
                                  "shap": {"estimator": "kernel", "samples": 96}}
    # method_options naming the option itself wins over the older key
    wins = AuditConfig.from_dict({"ig_steps": 64,
                                  "method_options": {"integrated_gradients": {"steps": 8}}})
    assert wins.method_options == {"integrated_gradients": {"steps": 8}}
    assert AuditConfig.from_dict(cfg.to_dict()) == cfg  # a stored plan reads back the same
