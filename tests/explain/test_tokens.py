"""Text and sequence models: intake kinds, per-token attributions, padding, completeness,
batching, Grad-CAM over time, SHAP over time windows."""

from __future__ import annotations

import numpy as np
import pytest

from explain import explain
from explain._backend import keras, tf
from explain.attributions.tokens import token_model, token_shap_values
from explain.errors import ModelIntakeError
from explain.modelio import inspect_model_file, load_model_safely

T, V, PAD_FROM = 12, 30, 9
LEAK = 5


def _token_data(n=160, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(6, V, (n, T))
    ids[:, PAD_FROM:] = 0
    y = rng.integers(0, 2, n)
    pos = rng.integers(0, PAD_FROM, n)
    ids[y == 1, pos[y == 1]] = LEAK
    return ids, y


def _text_model(arch: str, seed: int = 0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((T,), dtype="int32"),
              keras.layers.Embedding(V, 8, mask_zero=arch != "conv")]
    if arch == "pool":
        layers += [keras.layers.GlobalAveragePooling1D()]
    elif arch == "lstm":
        layers += [keras.layers.LSTM(8, return_sequences=True),
                   keras.layers.GlobalAveragePooling1D()]
    else:
        layers += [keras.layers.Conv1D(8, 3, padding="same", activation="tanh"),
                   keras.layers.GlobalAveragePooling1D()]
    model = keras.Sequential(layers + [keras.layers.Dense(2, activation="softmax")])
    ids, y = _token_data()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(ids, y, epochs=40, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module", params=["pool", "lstm", "conv"])
def text_model(request):
    return request.param, _text_model(request.param)


def test_token_model_detected(text_model):
    _arch, model = text_model
    tm = token_model(model)
    assert tm is not None and tm.length == T and tm.vocab_size == V and tm.dim == 8


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency", "smoothgrad", "shap",
                                    "occlusion"])
def test_one_score_per_token_padding_zero_and_not_all_zero(text_model, method):
    _arch, model = text_model
    ids, _y = _token_data(8, seed=1)
    a = explain(model, ids, method)
    assert a.values.shape == (8, T)
    assert np.all(a.values[:, PAD_FROM:] == 0.0)
    assert np.abs(a.values[:, :PAD_FROM]).max() > 1e-6
    assert np.array_equal(a.extra["token_ids"], ids)


def test_ig_completeness_under_one_percent_and_leak_token_on_top(text_model):
    _arch, model = text_model
    ids, y = _token_data(16, seed=2)
    a = explain(model, ids, "integrated_gradients", target=1)
    assert a.completeness_gap is not None
    assert np.median(a.relative_gap()) < 0.01
    rows = np.flatnonzero(y == 1)
    top = ids[rows, np.argmax(a.values[rows], axis=1)]
    assert np.mean(top == LEAK) >= 0.75


def test_ig_zeros_baseline_keeps_padding_zero(text_model):
    _arch, model = text_model
    ids, _ = _token_data(4, seed=3)
    a = explain(model, ids, "integrated_gradients", baseline="zeros")
    assert np.all(a.values[:, PAD_FROM:] == 0.0)
    with pytest.raises(ValueError, match="baseline"):
        explain(model, ids, "integrated_gradients", baseline="blur")


@pytest.mark.parametrize("method", ["integrated_gradients", "smoothgrad", "shap"])
def test_batched_equals_unbatched(text_model, method):
    _arch, model = text_model
    ids, _ = _token_data(5, seed=4)
    whole = explain(model, ids, method, batch_size=4096).values
    small = explain(model, ids, method, batch_size=7).values
    one = np.concatenate([explain(model, ids[i:i + 1], method, batch_size=7).values
                          for i in range(len(ids))])
    np.testing.assert_allclose(small, whole, atol=1e-5)
    np.testing.assert_allclose(one, whole, atol=1e-5)


def test_token_shap_is_exact_shapley_and_efficient():
    model = _text_model("pool")
    tm = token_model(model)
    from explain.attributions.base import ModelFunction

    mf = ModelFunction(tm.ids_model)
    ids = np.array([[7, 8, LEAK, 9, 0, 0, 0, 0, 0, 0, 0, 0]])
    targets = np.array([1])
    values, info = token_shap_values(mf, ids, targets, mask_id=1)
    # brute force over the 4 real tokens
    from itertools import combinations
    from math import factorial

    def v(keep):
        row = ids[0].copy()
        for j in range(4):
            if j not in keep:
                row[j] = 1
        return float(model(row[None].astype("float32"))[0, 1])

    for j in range(4):
        others = [k for k in range(4) if k != j]
        phi = 0.0
        for s in range(4):
            for sub in combinations(others, s):
                w = factorial(s) * factorial(4 - s - 1) / factorial(4)
                phi += w * (v(set(sub) | {j}) - v(set(sub)))
        assert values[0, j] == pytest.approx(phi, abs=1e-5)
    assert np.all(values[0, 4:] == 0)
    assert values.sum() == pytest.approx(info["v_full"][0] - info["v_empty"][0], abs=1e-5)


def test_token_shap_permutation_beyond_exact_max_is_efficient():
    model = _text_model("pool")
    ids, _ = _token_data(3, seed=5)
    a = explain(model, ids, "shap", exact_max=4, samples=40)
    assert set(a.extra["estimator"]) == {"permutation"}
    assert np.abs(a.completeness_gap).max() < 1e-4
    assert np.all(a.values[:, PAD_FROM:] == 0)


def test_shap_mask_id_falls_back_when_all_padding_is_undefined():
    # average pooling over a fully masked text is 0/0: the default mask id moves to 1
    model = _text_model("pool")
    ids, _ = _token_data(2, seed=6)
    a = explain(model, ids, "shap")
    assert np.all(np.isfinite(a.values)) and a.extra["mask_id"] == 1
    b = explain(model, ids, "shap", mask_id=3)
    assert b.extra["mask_id"] == 3


def test_grad_cam_over_time_for_conv_and_lstm():
    for arch in ("conv", "lstm"):
        model = _text_model(arch)
        ids, _ = _token_data(4, seed=7)
        a = explain(model, ids, "grad_cam")
        assert a.values.shape == (4, T)
        assert np.all(a.values[:, PAD_FROM:] == 0) and np.all(a.values >= 0)
    with pytest.raises(ValueError, match="Conv1D or recurrent"):
        explain(_text_model("pool"), ids, "grad_cam")


def test_bad_token_inputs_are_refused():
    model = _text_model("pool")
    with pytest.raises(ValueError, match="token ids"):
        explain(model, np.full((2, T), V + 3), "saliency")
    with pytest.raises(TypeError, match="strings"):
        explain(model, np.array(["a text", "another"]), "saliency")
    with pytest.raises(ValueError, match="unknown option"):
        explain(model, np.ones((2, T), int), "saliency", steps=3)


# ----------------------------------------------------------------- TextVectorization


TEXTS = np.array(["good movie great fun", "bad film awful plot", "great good fun",
                  "awful bad boring", "leaktag awful film", "leaktag bad plot"] * 20)
LABELS = np.array([1, 0, 1, 0, 1, 1] * 20)


def _vectorized_model(functional: bool):
    keras.utils.set_random_seed(0)
    tv = keras.layers.TextVectorization(max_tokens=40, output_sequence_length=8)
    tv.adapt(TEXTS)
    if functional:
        inp = keras.Input((1,), dtype="string")
        h = keras.layers.Embedding(40, 8, mask_zero=True)(tv(inp))
        h = keras.layers.LSTM(8, return_sequences=True)(h)
        out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling1D()(h))
        model = keras.Model(inp, out)
    else:
        model = keras.Sequential([keras.Input((1,), dtype="string"), tv,
                                  keras.layers.Embedding(40, 8, mask_zero=True),
                                  keras.layers.GlobalAveragePooling1D(),
                                  keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(tf.constant(TEXTS[:, None]), LABELS, epochs=30, verbose=0)
    return model


@pytest.mark.parametrize("functional", [False, True])
def test_strings_through_text_vectorization(tmp_path, functional):
    model = _vectorized_model(functional)
    path = tmp_path / "tv.keras"
    model.save(path)
    loaded, spec = load_model_safely(path)
    assert spec.input_kind == "text" and spec.unsupported is None
    assert spec.text["string_input"] and spec.text["sequence_length"] == 8
    assert spec.text["vocab_size"] == len(model.layers[0 if not functional else 1]
                                          .get_vocabulary())
    assert "text" in spec.summary()
    a = explain(loaded, TEXTS[:6], "integrated_gradients")
    assert a.values.shape == (6, 8)
    ids = a.extra["token_ids"]
    vocab = token_model(loaded).vocabulary()
    assert [vocab[i] for i in ids[0] if i] == TEXTS[0].split()
    assert np.all(a.values[ids == 0] == 0)
    if functional:
        assert explain(loaded, TEXTS[:3], "grad_cam").values.shape == (3, 8)


# ----------------------------------------------------------------- intake kinds


def test_intake_kinds_and_text_details(tmp_path):
    model = _text_model("lstm")
    path = tmp_path / "lstm.keras"
    model.save(path)
    spec = inspect_model_file(path)
    assert spec.input_kind == "text" and spec.unsupported is None
    assert spec.text["embedding_layer"] == model.layers[0].name
    assert spec.text["vocab_size"] == V and spec.text["padding_id"] == 0
    assert spec.text["mask_zero"] is True and spec.text["string_input"] is False
    assert "vocabulary 30, padding id 0" in spec.summary()

    seq = keras.Sequential([keras.Input((40, 2)), keras.layers.LSTM(4),
                            keras.layers.Dense(1, activation="sigmoid")])
    seq.save(tmp_path / "seq.keras")
    spec = inspect_model_file(tmp_path / "seq.keras")
    assert spec.input_kind == "sequence" and spec.text is None and spec.unsupported is None


def test_unsupported_kinds_named(tmp_path):
    a, b = keras.Input((3,)), keras.Input((3,))
    two = keras.Model([a, b], keras.layers.Dense(2, activation="softmax")(
        keras.layers.Concatenate()([a, b])))
    two.save(tmp_path / "two.keras")
    assert "2 inputs" in inspect_model_file(tmp_path / "two.keras").unsupported
    ml = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="sigmoid")])
    ml.save(tmp_path / "ml.keras")
    assert "multilabel" in inspect_model_file(tmp_path / "ml.keras").unsupported


def test_audit_refuses_unsupported_before_it_starts(tmp_path):
    from explain.audit import run_audit

    ml = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="sigmoid")])
    ml.save(tmp_path / "ml.keras")
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 5), "float32"), y=np.zeros((10, 4)))
    with pytest.raises(ModelIntakeError) as info:
        run_audit(tmp_path / "ml.keras", tmp_path / "d.npz")
    assert info.value.code == "unsupported_model" and "multilabel" in info.value.message


# ----------------------------------------------------------------- float sequences


@pytest.fixture(scope="module")
def seq_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((50, 2)),
                              keras.layers.Conv1D(4, 5, activation="tanh"),
                              keras.layers.GlobalAveragePooling1D(),
                              keras.layers.Dense(2, activation="softmax")])
    return model


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency", "smoothgrad", "shap",
                                    "occlusion"])
def test_sequence_methods_keep_shape(seq_model, method):
    x = np.random.default_rng(0).normal(size=(3, 50, 2)).astype("float32")
    a = explain(seq_model, x, method)
    assert a.values.shape == (3, 50, 2)


def test_sequence_shap_players_are_windows_by_channels(seq_model):
    x = np.random.default_rng(0).normal(size=(3, 50, 2)).astype("float32")
    a = explain(seq_model, x, "shap", background=np.zeros((1, 50, 2), "float32"),
                estimator="permutation", samples=200)
    groups = a.extra["groups"].reshape(50, 2)
    assert groups.max() + 1 == 20 and groups[0, 0] != groups[0, 1]
    assert groups[4, 0] == groups[0, 0] and groups[5, 0] != groups[0, 0]
    assert np.abs(a.completeness_gap).max() < 1e-4


def test_sequence_grad_cam_at_input_length(seq_model):
    x = np.random.default_rng(0).normal(size=(3, 50, 2)).astype("float32")
    a = explain(seq_model, x, "grad_cam")
    assert a.values.shape == (3, 50) and a.extra["layer"] == seq_model.layers[0].name
    whole = a.values
    np.testing.assert_allclose(explain(seq_model, x, "grad_cam", batch_size=1).values, whole,
                               atol=1e-6)
