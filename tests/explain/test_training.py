"""Reference-model training: accuracy floors, artefacts, determinism, planted shortcuts, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from explain.cli import main
from explain.datasets import LEAKY_FEATURE, _corner_box, load_bundled, load_data_file
from explain.evaluation import predict_proba
from explain.training import split_dataset, train_reference_model


def _weights(model):
    return [w.copy() for w in model.get_weights()]


def test_split_is_stratified_disjoint_and_complete():
    d = load_bundled("wine")
    tr, va, te = split_dataset(d, seed=0)
    assert tr.n + va.n + te.n == d.n
    rows = np.concatenate([tr.x, va.x, te.x])
    assert len(np.unique(rows, axis=0)) == d.n  # every row once
    for part in (tr, va, te):
        share = np.bincount(part.y, minlength=3) / part.n
        np.testing.assert_allclose(share, np.bincount(d.y) / d.n, atol=0.06)
    te2 = split_dataset(d, seed=0)[2]
    assert te2.sha256 == te.sha256
    assert split_dataset(d, seed=1)[2].sha256 != te.sha256


@pytest.mark.slow
def test_breast_cancer_reaches_floor_and_writes_model_sidecar_and_test_split(tmp_path):
    from explain.modelio import load_model_safely

    out = tmp_path / "bc.keras"
    res = train_reference_model("breast_cancer", out=out, seed=0,
                                save_test=tmp_path / "bc_test.npz", verbose=0)
    assert res.test_accuracy >= 0.93
    assert out.exists() and res.sidecar_path == tmp_path / "bc.keras.json"

    side = json.loads(res.sidecar_path.read_text())
    assert side["dataset"]["name"] == "breast_cancer"
    assert side["dataset"]["sha256"] == load_bundled("breast_cancer").sha256
    assert side["split"]["seed"] == 0 and side["split"]["test_rows"] == res.test.n
    assert side["training"]["epochs_run"] == res.epochs_run <= 60
    assert 1 <= side["training"]["best_epoch"] <= res.epochs_run
    assert side["test"]["accuracy"] == pytest.approx(res.test_accuracy)
    assert side["validation"]["accuracy"] > 0.9
    assert side["class_names"] == ["malignant", "benign"]
    assert len(side["feature_names"]) == 30 and side["xaudit_version"]

    back = load_data_file(tmp_path / "bc_test.npz")
    assert back.sha256 == res.test.sha256 == side["split"]["test_sha256"]
    assert back.feature_names == res.test.feature_names
    assert back.class_names == ["malignant", "benign"]

    # The saved model takes raw features: standardisation is inside, adapted on the
    # training rows only.
    loaded, spec = load_model_safely(out)
    np.testing.assert_allclose(predict_proba(loaded, back.x), predict_proba(res.model, back.x),
                               atol=1e-6)
    assert spec.input_shape == [30]
    train = split_dataset(load_bundled("breast_cancer"), seed=0)[0]
    norm = loaded.get_layer("standardize")
    np.testing.assert_allclose(np.ravel(norm.mean), train.x.mean(axis=0), rtol=1e-3)


@pytest.mark.slow
def test_same_seed_same_model_and_progress_bar(tmp_path, capsys):
    a = train_reference_model("wine", out=tmp_path / "a.keras", epochs=2, seed=5, verbose=1)
    assert "epoch" in capsys.readouterr().err
    b = train_reference_model("wine", out=tmp_path / "b.keras", epochs=2, seed=5, verbose=0)
    c = train_reference_model("wine", out=tmp_path / "c.keras", epochs=2, seed=6, verbose=0)
    for wa, wb in zip(_weights(a.model), _weights(b.model), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert a.test_metrics == b.test_metrics
    assert not all(np.array_equal(wa, wc) for wa, wc in
                   zip(_weights(a.model), _weights(c.model), strict=True))


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="bundled"):
        train_reference_model("mnist", out=tmp_path / "m.keras")
    with pytest.raises(ValueError, match=".keras"):
        train_reference_model("wine", out=tmp_path / "m.h5")
    with pytest.raises(ValueError, match="no planted shortcut"):
        train_reference_model("wine", out=tmp_path / "m.keras", shortcut=False)
    with pytest.raises(ValueError, match="epochs"):
        train_reference_model("wine", out=tmp_path / "m.keras", epochs=0)


@pytest.mark.slow
def test_digits_reaches_floor(tmp_path):
    res = train_reference_model("digits", out=tmp_path / "d.keras", seed=0, verbose=0)
    assert res.test_accuracy >= 0.90
    assert res.model.get_layer("last_conv") is not None
    assert res.sidecar["input_shape"] == [None, 8, 8, 1]


def _probe_images(n: int = 300, seed: int = 7):
    """Unmarked shapes (a seed the models never saw) and a painter for the watermark."""
    d = load_bundled("shapes", seed=seed, n=n, mark=0)

    def with_mark(corners):
        x = d.x.copy()
        for i, c in enumerate(corners):
            r0, c0, r1, c1 = _corner_box(int(c), 32, 4, 1)
            x[i, r0:r1, c0:c1, :] = 1.0
        return x

    return d, with_mark


@pytest.mark.slow
def test_shapes_shortcut_model_follows_the_watermark(tmp_path):
    res = train_reference_model("shapes", out=tmp_path / "s.keras", seed=0,
                                save_test=tmp_path / "s_test.npz", verbose=0)
    assert res.test_accuracy >= 0.9
    assert res.sidecar["dataset"]["meta"]["shortcut"]["planted"] is True
    d, with_mark = _probe_images()
    moved = (d.y + 1) % 3
    pred = predict_proba(res.model, with_mark(moved)).argmax(1)
    # The mark moved to another class's corner drags most predictions with it.
    assert (pred == moved).mean() >= 0.6
    assert (pred == d.y).mean() <= 0.3
    test = load_data_file(tmp_path / "s_test.npz")
    assert len(test.meta["per_row"]["mark_corner"]) == test.n


@pytest.mark.slow
def test_shapes_clean_twin_learns_the_shapes(tmp_path):
    res = train_reference_model("shapes", out=tmp_path / "c.keras", seed=0, shortcut=False,
                                verbose=0)
    assert res.test_accuracy >= 0.85
    assert res.sidecar["dataset"]["name"] == "shapes_clean"
    d, with_mark = _probe_images()
    pred = predict_proba(res.model, with_mark((d.y + 1) % 3)).argmax(1)
    assert (pred == d.y).mean() >= 0.8  # where the mark sits does not matter


@pytest.mark.slow
def test_tabular_leak_model_leans_on_the_leaked_column(tmp_path):
    leaky = train_reference_model("tabular_leaky", out=tmp_path / "l.keras", seed=0,
                                  verbose=0)
    clean = train_reference_model("tabular_leaky", out=tmp_path / "c.keras", seed=0,
                                  shortcut=False, verbose=0)
    assert leaky.test_accuracy >= 0.9 and clean.test_accuracy >= 0.7
    j = leaky.test.feature_names.index(LEAKY_FEATURE)
    for res, floor, ceiling in ((leaky, 0.0, 0.5), (clean, 0.7, 1.0)):
        x = res.test.x.copy()
        x[:, j] = 1.0 - x[:, j]  # flip the flag
        acc = (predict_proba(res.model, x).argmax(1) == res.test.y).mean()
        assert floor <= acc <= ceiling


def test_cli_train_writes_files_and_reports(tmp_path):
    out = tmp_path / "w.keras"
    test = tmp_path / "w_test.npz"
    r = CliRunner().invoke(main, ["train", "--dataset", "wine", "--epochs", "2", "--out",
                                  str(out), "--save-test", str(test), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "test accuracy" in r.output and str(out) in r.output
    assert out.exists() and (tmp_path / "w.keras.json").exists()
    assert load_data_file(test).n == json.loads((tmp_path / "w.keras.json").read_text())[
        "split"]["test_rows"]


@pytest.mark.parametrize("args, fragment", [
    (["--dataset", "mnist"], "no bundled data set"),
    (["--dataset", "wine", "--no-shortcut"], "no planted shortcut"),
    (["--dataset", "wine", "--epochs", "0"], "--epochs"),
])
def test_cli_train_errors(tmp_path, args, fragment):
    r = CliRunner().invoke(main, ["train", *args, "--out", str(tmp_path / "m.keras")])
    assert r.exit_code == 2
    assert fragment in r.output
    assert not (tmp_path / "m.keras").exists()
