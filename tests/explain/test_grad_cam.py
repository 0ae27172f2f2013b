"""Grad-CAM and Grad-CAM++: shapes, layer choice, model kinds, and agreement with theory
(CAM for a GAP head) and with tf-explain."""

import warnings

import numpy as np
import pytest

from explain._backend import keras, tf
from explain.attributions import grad_cam as gc
from explain.attributions.base import ModelFunction
from explain.attributions.registry import METHODS, attribute, explain
from tests import models

RNG = np.random.default_rng(0)
X16 = RNG.uniform(0, 1, size=(5, 16, 16, 3)).astype("float32")


def _corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _acts(model, layer_name, x):
    return keras.Model(model.inputs[0], model.get_layer(layer_name).output)(x).numpy()


def _pooled_cnn(s=0, heads=1):
    """Conv → pool → conv (8×8 map at 16×16 input) → GAP → softmax (+ a linear head)."""
    models.seed(s)
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.MaxPooling2D(name="pool")(h)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="last_conv")(h)
    g = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    cls = keras.layers.Dense(3, activation="softmax", name="cls")(g)
    if heads == 1:
        return keras.Model(inp, cls)
    reg = keras.layers.Dense(2, name="reg")(g)
    return keras.Model(inp, [cls, reg])


@pytest.fixture(scope="module")
def nested():
    # 64×64 input so the backbone's last map (out_relu) is 2×2, i.e. spatial.
    return models.nested_cnn(size=64)


def test_registered():
    assert "grad_cam" in METHODS and "grad_cam_plus_plus" in METHODS


@pytest.mark.parametrize("method", ["grad_cam", "grad_cam_plus_plus"])
def test_shape_at_input_resolution_and_raw_maps(method):
    m = _pooled_cnn()
    a = explain(m, X16, method)
    assert a.values.shape == (5, 16, 16) and a.values.dtype == np.float32
    assert a.extra["layer"] == "last_conv"
    assert a.extra["raw"].shape == (5, 8, 8)
    assert np.all(a.values >= 0) and np.all(a.extra["raw"] >= 0)
    assert a.values.max() > 0
    # values are the bilinear upsampling of the raw maps, with no per-example rescaling
    up = tf.image.resize(a.extra["raw"][..., None], (16, 16), method="bilinear")[..., 0]
    np.testing.assert_allclose(a.values, up.numpy(), rtol=1e-5, atol=1e-7)
    assert attribute(m, X16, method).shape == (5, 16, 16)


def test_equals_cam_for_a_gap_head():
    """With GAP → Dense and logits, d y_k / d A_ijc = W[c, k] / (h w) at every position, so
    Grad-CAM reduces to CAM: ReLU(sum_c W[c, k] A_c) / (h w) (Zhou et al. 2016)."""
    m = _pooled_cnn()
    targets = np.array([0, 1, 2, 0, 1])
    a = explain(m, X16, "grad_cam", target=targets, logits=True)
    acts = _acts(m, "last_conv", X16)
    w = m.get_layer("cls").get_weights()[0]
    cam = np.maximum(np.einsum("nhwc,cn->nhw", acts, w[:, targets]), 0) / (8 * 8)
    np.testing.assert_allclose(a.extra["raw"], cam, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(a.scores, ModelFunction(m, logits=True).target_scores(X16, targets),
                               rtol=1e-5, atol=1e-6)


def test_matches_tf_explain_raw_map():
    from tf_explain.core.grad_cam import GradCAM  # test-only dependency

    m = _pooled_cnn(s=3)
    x = RNG.uniform(0, 1, size=(6, 16, 16, 3)).astype("float32")
    for layer in ("conv1", "last_conv"):
        ours, ref = [], []
        for k in range(3):
            with warnings.catch_warnings():
                # tf-explain wraps the inputs in an extra list; Keras 3 only warns about it.
                warnings.simplefilter("ignore", UserWarning)
                outs, grads = GradCAM.get_gradients_and_filters(m, x, layer, k, False)
            cams = GradCAM.generate_ponderated_output(outs, grads)
            ref.append(np.maximum(np.stack([c.numpy() for c in cams]), 0))
            ours.append(explain(m, x, "grad_cam", target=k, layer=layer).extra["raw"])
        ours, ref = np.stack(ours), np.stack(ref)
        assert ours.shape == ref.shape == (3, 6) + ref.shape[2:]
        # a meaningful comparison needs maps that are not mostly clipped to zero
        assert np.mean(ref > 0) > 0.1
        assert _corr(ours, ref) > 0.99
        np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-5 * ref.max())


def test_auto_layer_small_cnn_and_candidates():
    m = models.small_cnn()
    assert gc.gradcam_candidate_layers(m) == ["conv1", "last_conv"]
    assert explain(m, X16, "grad_cam").extra["layer"] == "last_conv"


def test_auto_layer_inside_nested_backbone(nested):
    backbone = nested.layers[0].name
    x = RNG.uniform(0, 1, size=(2, 64, 64, 3)).astype("float32")
    candidates = gc.gradcam_candidate_layers(nested)
    assert candidates[-1] == f"{backbone}/out_relu"
    assert all(c.startswith(backbone + "/") for c in candidates)
    a = explain(nested, x, "grad_cam")
    assert a.extra["layer"] == f"{backbone}/out_relu"
    assert a.values.shape == (2, 64, 64) and a.extra["raw"].shape == (2, 2, 2)
    # the bare inner name and the path select the same layer
    b = explain(nested, x, "grad_cam", layer="out_relu")
    np.testing.assert_allclose(a.values, b.values)
    assert gc.find_layer(nested, "out_relu") is nested.layers[0].get_layer("out_relu")
    # an earlier inner layer gives a different, finer map
    c = explain(nested, x, "grad_cam", layer="block_13_expand_relu", logits=True)
    assert c.extra["raw"].shape == (2, 4, 4)


def test_explicit_layer():
    m = _pooled_cnn()
    a = explain(m, X16, "grad_cam", layer="conv1")
    assert a.extra["layer"] == "conv1" and a.extra["raw"].shape == (5, 16, 16)
    b = explain(m, X16, "grad_cam", layer="last_conv")
    assert not np.allclose(a.values, b.values)


def test_unknown_layer_lists_candidates():
    m = models.small_cnn()
    with pytest.raises(ValueError, match=r"unknown layer 'nope'.*\['conv1', 'last_conv'\]"):
        explain(m, X16, "grad_cam", layer="nope")
    with pytest.raises(ValueError, match="unknown layer"):
        gc.find_layer(m, "nope")
    with pytest.raises(ValueError, match=r"4-D output.*last_conv"):
        explain(m, X16, "grad_cam", layer="gap")
    with pytest.raises(TypeError, match="layer must be"):
        explain(m, X16, "grad_cam", layer=3)
    with pytest.raises(TypeError, match="normalize"):
        explain(m, X16, "grad_cam", normalize="yes")


def test_mlp_has_no_spatial_layer():
    m = models.mlp_classifier()
    x = RNG.normal(size=(3, 8)).astype("float32")
    for method in ("grad_cam", "grad_cam_plus_plus"):
        with pytest.raises(ValueError, match="convolutional/spatial layer"):
            explain(m, x, method)
    assert gc.gradcam_candidate_layers(m) == []


@pytest.mark.parametrize("method", ["grad_cam", "grad_cam_plus_plus"])
def test_batched_equals_unbatched(method):
    m = _pooled_cnn()
    whole = explain(m, X16, method, batch_size=128)
    for bs in (1, 2):
        part = explain(m, X16, method, batch_size=bs)
        np.testing.assert_allclose(part.values, whole.values, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(part.extra["raw"], whole.extra["raw"], rtol=1e-5, atol=1e-8)


def test_sequential_matches_functional():
    f = models.small_cnn()
    s = models.small_cnn(functional=False)
    s.set_weights(f.get_weights())
    for method in ("grad_cam", "grad_cam_plus_plus"):
        a, b = explain(f, X16, method), explain(s, X16, method)
        assert b.extra["layer"] == "last_conv"
        np.testing.assert_allclose(b.values, a.values, rtol=1e-5, atol=1e-9)
        assert b.values.max() > 0


def test_functional_model_around_a_nested_backbone():
    """The transfer-learning layout: Input → preprocessing → backbone(training=False) → head."""
    flat = _pooled_cnn()
    inner_in = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(inner_in)
    h = keras.layers.MaxPooling2D(name="pool")(h)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="last_conv")(h)
    backbone = keras.Model(inner_in, h, name="backbone")
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Rescaling(1.0)(inp)
    h = backbone(h, training=False)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(3, activation="softmax")(h)
    wrapped = keras.Model(inp, out)
    wrapped.set_weights(flat.get_weights())
    assert gc.gradcam_candidate_layers(wrapped) == [
        "rescaling", "backbone/conv1", "backbone/pool", "backbone/last_conv"]
    for logits in (False, True):
        a = explain(wrapped, X16, "grad_cam_plus_plus", logits=logits)
        b = explain(flat, X16, "grad_cam_plus_plus", logits=logits)
        assert a.extra["layer"] == "backbone/last_conv"
        np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-9)


def test_multi_output_head():
    m = _pooled_cnn(heads=2)
    targets = np.array([1, 0, 1, 0, 1])
    a = explain(m, X16, "grad_cam", output="reg", target=targets)
    acts = _acts(m, "last_conv", X16)
    w = m.get_layer("reg").get_weights()[0]
    cam = np.maximum(np.einsum("nhwc,cn->nhw", acts, w[:, targets]), 0) / 64
    np.testing.assert_allclose(a.extra["raw"], cam, rtol=1e-4, atol=1e-7)
    cls = explain(m, X16, "grad_cam", output=0, target=targets)
    assert not np.allclose(cls.values, a.values)


def test_logits_changes_scores_and_follows_retraining():
    m = _pooled_cnn()
    probs = explain(m, X16, "grad_cam", target=1)
    logits = explain(m, X16, "grad_cam", target=1, logits=True)
    assert np.all((probs.scores > 0) & (probs.scores < 1))
    assert not np.allclose(probs.values, logits.values)
    # a cached graph must see new weights of the head it explains
    dense = m.get_layer("cls")
    kernel, bias = dense.get_weights()
    dense.set_weights([-kernel, bias])
    again = explain(m, X16, "grad_cam", target=1, logits=True)
    acts = _acts(m, "last_conv", X16)
    cam = np.maximum(np.einsum("nhwc,c->nhw", acts, -kernel[:, 1]), 0) / 64
    np.testing.assert_allclose(again.extra["raw"], cam, rtol=1e-4, atol=1e-7)


def test_normalize_option():
    m = _pooled_cnn()
    raw = explain(m, X16, "grad_cam")
    norm = explain(m, X16, "grad_cam", normalize=True)
    peaks = norm.values.reshape(5, -1).max(axis=1)
    np.testing.assert_allclose(peaks, 1.0, rtol=1e-6)
    scale = raw.values.reshape(5, -1).max(axis=1)
    np.testing.assert_allclose(norm.values * scale[:, None, None], raw.values, rtol=1e-5,
                               atol=1e-9)
    np.testing.assert_allclose(norm.extra["raw"], raw.extra["raw"])


def _one_object_model():
    """A CNN whose class-0 evidence is 'a bright blob': filter 0 averages brightness."""
    models.seed(1)
    inp = keras.Input((16, 16, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="last_conv")
    h = conv(inp)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    k, b = conv.get_weights()
    k = np.random.default_rng(1).normal(scale=0.05, size=k.shape).astype("float32")
    k[..., 0] = 1.0 / 27.0
    b[:] = [-0.6, 0.0, 0.0, 0.0]  # fires only where the 3×3 mean exceeds 0.6
    conv.set_weights([k, b])
    w = np.zeros((4, 2), "float32")
    w[0, 0], w[1:, 0], w[:, 1] = 40.0, 0.2, -0.5
    model.layers[-1].set_weights([w, np.zeros(2, "float32")])
    return model


def test_grad_cam_plus_plus_agrees_on_a_single_object():
    m = _one_object_model()
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 0.4, size=(4, 16, 16, 3)).astype("float32")
    for i, (r, c) in enumerate([(1, 1), (2, 9), (9, 3), (10, 10)]):
        x[i, r : r + 4, c : c + 4] = 1.0
    gcam = explain(m, x, "grad_cam", target=0).values
    gpp = explain(m, x, "grad_cam_plus_plus", target=0).values
    assert np.all(gpp >= 0)
    for i, (r, c) in enumerate([(1, 1), (2, 9), (9, 3), (10, 10)]):
        assert _corr(gcam[i], gpp[i]) > 0.9
        inside = gpp[i, max(r - 1, 0) : r + 5, max(c - 1, 0) : c + 5].sum()
        assert inside / gpp[i].sum() > 0.9


def test_grad_cam_plus_plus_weights_closed_form():
    # one channel, 2 positions: A = [1, 3] (sum 4), g = [0.5, -1]
    acts = tf.constant([[[[1.0]], [[3.0]]]])
    grads = tf.constant([[[[0.5]], [[-1.0]]]])
    alpha = np.array([0.25 / (0.5 + 4 * 0.125), 1.0 / (2.0 - 4.0)])
    expected = float(alpha[0] * 0.5 + alpha[1] * 0.0)  # ReLU drops the negative gradient
    got = gc.grad_cam_plus_plus_weights(acts, grads).numpy()
    np.testing.assert_allclose(got, [[expected]], rtol=1e-6)
    np.testing.assert_allclose(gc.grad_cam_weights(acts, grads).numpy(), [[-0.25]])
