"""Audits of text and sequence models end to end: the kind, the text / sequence sections,
the shortcut findings on the planted sets and none on the clean twins, strings in."""

from __future__ import annotations

import numpy as np
import pytest

from explain.audit import run_audit
from explain.training import train_reference_model

FAST = {"seed": 0, "samples": 16,
        "quality": {"randomization": False, "stability": False}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = {}
    for name, arch in (("text_leaky", "pool"), ("text_leaky", "vectorize"),
                       ("sequence_spike", "conv1d")):
        for planted in (True, False):
            folder = tmp_path_factory.mktemp(f"{name}_{arch}_{planted}")
            res = train_reference_model(name, out=folder / "m.keras", arch=arch,
                                        shortcut=planted, verbose=0,
                                        save_test=folder / "test.npz")
            out[name, arch, planted] = res
    return out


def _codes(report):
    return [f["code"] for f in report["findings"]]


@pytest.mark.parametrize("arch", ["pool", "vectorize"])
def test_text_audit_names_the_leak_token(trained, arch):
    res = trained["text_leaky", arch, True]
    report = run_audit(res.model_path, res.test_path, FAST).report
    assert report["model"]["input_kind"] == "text"
    assert report["global_importance"]["kind"] == "text"
    assert report["global_importance"]["items"][0]["feature"] == "src_wire"
    found = [f for f in report["findings"] if f["code"] == "shortcut_token"]
    assert [f["evidence"]["token"] for f in found] == ["src_wire"]
    assert found[0]["evidence"]["class"] == "positive"
    text = report["text"]
    assert len(text["examples"]) == len(report["examples"])
    first = report["examples"][0]["index"]
    ids = np.load(res.test_path)["x"][first].astype(int)
    assert text["examples"][0]["tokens"] == [res.dataset.vocabulary[i] for i in ids if i]
    quality = report["explanation_quality"]["integrated_gradients"]
    assert quality["completeness"]["relative_gap"] < 0.01
    clean = trained["text_leaky", arch, False]
    assert "shortcut_token" not in _codes(run_audit(clean.model_path, clean.test_path,
                                                    FAST).report)


def test_text_audit_takes_raw_strings(trained, tmp_path):
    res = trained["text_leaky", "vectorize", True]
    test = np.load(res.test_path)
    vocab = res.dataset.vocabulary
    texts = np.array([" ".join(vocab[i] for i in row.astype(int) if i) for row in test["x"]])
    np.savez(tmp_path / "texts.npz", x=texts, y=test["y"])
    report = run_audit(res.model_path, tmp_path / "texts.npz", FAST).report
    assert "shortcut_token" in _codes(report)
    # a model taking ids needs the vocabulary to read strings
    ids_model = trained["text_leaky", "pool", True]
    from explain.errors import DataError

    with pytest.raises(DataError, match="vocabulary"):
        run_audit(ids_model.model_path, tmp_path / "texts.npz", FAST)
    np.savez(tmp_path / "texts_v.npz", x=texts, y=test["y"], vocabulary=np.array(vocab))
    report = run_audit(ids_model.model_path, tmp_path / "texts_v.npz", FAST).report
    assert "shortcut_token" in _codes(report)


def test_sequence_audit_names_the_spike(trained):
    res = trained["sequence_spike", "conv1d", True]
    report = run_audit(res.model_path, res.test_path, FAST).report
    assert report["model"]["input_kind"] == "sequence"
    seq = report["sequence"]
    assert len(seq["over_time"]) == 100 and len(seq["per_channel"]) == 2
    found = [f for f in report["findings"] if f["code"] == "shortcut_span"]
    assert len(found) == 1
    a, b = found[0]["evidence"]["span"]
    assert a < 10 and b > 5
    clean = trained["sequence_spike", "conv1d", False]
    assert "shortcut_span" not in _codes(run_audit(clean.model_path, clean.test_path,
                                                   FAST).report)


def test_reports_render_tokens_escaped_and_sequence_figures(trained, tmp_path):
    from reports.render import render_html

    res = trained["text_leaky", "pool", True]
    test = np.load(res.test_path)
    vocab = list(res.dataset.vocabulary)
    evil = "<img src=x onerror=alert(1)>"
    vocab[vocab.index("src_wire")] = evil
    np.savez(tmp_path / "evil.npz", x=test["x"], y=test["y"], vocabulary=np.array(vocab))
    result = run_audit(res.model_path, tmp_path / "evil.npz", FAST)
    assert result.report["text"]["classes"][1]["top_tokens"][0]["token"] == evil
    html = render_html(result)
    assert evil not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert 'id="text"' in html and html.count('class="tok"') > 20
    # padding is never shown: every shown token is a real one
    for ex in result.report["text"]["examples"]:
        assert "" not in ex["tokens"] and len(ex["tokens"]) == len(ex["positions"])

    seq = trained["sequence_spike", "conv1d", True]
    html = render_html(run_audit(seq.model_path, seq.test_path, FAST))
    assert 'id="sequence"' in html and "Importance over time" in html


def test_single_sigmoid_text_model_judges_both_classes(tmp_path):
    from explain._backend import keras
    from explain.datasets import load_bundled

    ds = load_bundled("text_leaky", n=800)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((24,), dtype="int32"),
                              keras.layers.Embedding(63, 16, mask_zero=True),
                              keras.layers.GlobalAveragePooling1D(),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy")
    model.fit(ds.x.astype(int), ds.y, epochs=25, verbose=0)
    model.save(tmp_path / "sig.keras")
    ds.to_npz(tmp_path / "sig.npz")
    report = run_audit(tmp_path / "sig.keras", tmp_path / "sig.npz", FAST).report
    assert [(f["evidence"]["token"], f["evidence"]["class"]) for f in report["findings"]
            if f["code"] == "shortcut_token"] == [("src_wire", "positive")]
    negative = report["text"]["classes"][0]
    assert negative["class"] == 0 and negative["top_tokens"][0]["token"] in (
        "bad", "awful", "poor", "terrible", "boring", "dull", "weak", "horrible",
        "annoying", "mediocre")
