"""Attributions find a planted signal: a small CNN learns that a bright patch (placed in a
random quadrant of a noisy image) means class 1; Integrated Gradients, Grad-CAM and SHAP
must each put most of their mass in the quadrant that holds the patch.

Mass is the absolute attribution summed over colour channels (Grad-CAM maps are already
non-negative). Chance is 25% (four equal quadrants); the test asks for more than 50% on
average over the class-1 images, for every method.
"""

import numpy as np
import pytest

from explain._backend import keras
from explain.attributions.registry import explain
from tests import models

SIZE = 24
HALF = SIZE // 2
PATCH = 6
THRESHOLD = 0.5  # mean share of attribution mass in the planted quadrant (chance: 0.25)

pytestmark = pytest.mark.slow


def planted_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise images; label 1 iff a bright PATCH×PATCH square sits inside one quadrant.

    Returns images ``(n, SIZE, SIZE, 3)``, labels ``(n,)`` and the patch quadrant
    ``(n,)`` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right; -1 without a patch).
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 0.5, size=(n, SIZE, SIZE, 3)).astype("float32")
    y = rng.integers(0, 2, size=n)
    quadrant = np.where(y == 1, rng.integers(0, 4, size=n), -1)
    for i in np.flatnonzero(y):
        r0, c0 = (quadrant[i] // 2) * HALF, (quadrant[i] % 2) * HALF
        r = r0 + rng.integers(0, HALF - PATCH + 1)
        c = c0 + rng.integers(0, HALF - PATCH + 1)
        x[i, r : r + PATCH, c : c + PATCH] = rng.uniform(0.9, 1.0)
    return x, y.astype("int64"), quadrant


def quadrant_share(maps: np.ndarray, quadrant: np.ndarray) -> np.ndarray:
    """Share of each map's total mass ``(N, H, W)`` (non-negative) inside its quadrant."""
    shares = []
    for m, q in zip(maps, quadrant, strict=True):
        r0, c0 = (q // 2) * HALF, (q % 2) * HALF
        shares.append(m[r0 : r0 + HALF, c0 : c0 + HALF].sum() / max(m.sum(), 1e-12))
    return np.asarray(shares)


@pytest.fixture(scope="module")
def trained():
    models.seed(0)
    x, y, _ = planted_images(800, seed=0)
    inp = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.MaxPooling2D(name="pool")(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="last_conv")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(2, activation="softmax")(h)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=8, batch_size=32, verbose=0, shuffle=True)
    xt, yt, qt = planted_images(200, seed=1)
    acc = float(np.mean(np.argmax(model.predict(xt, verbose=0), axis=1) == yt))
    assert acc > 0.95, f"the reference model did not learn the planted signal (acc={acc})"
    patch = yt == 1
    return model, x, xt[patch][:24], qt[patch][:24]


def test_grad_cam_finds_the_planted_quadrant(trained):
    model, _, x, quadrant = trained
    for method in ("grad_cam", "grad_cam_plus_plus"):
        maps = explain(model, x, method, target=1).values
        share = quadrant_share(maps, quadrant)
        assert share.mean() > THRESHOLD, (method, share.mean())


def test_integrated_gradients_finds_the_planted_quadrant(trained):
    model, _, x, quadrant = trained
    attr = explain(model, x, "integrated_gradients", target=1).values
    share = quadrant_share(np.abs(attr).sum(axis=-1), quadrant)
    assert share.mean() > THRESHOLD, share.mean()


def test_shap_finds_the_planted_quadrant(trained):
    model, x_train, x, quadrant = trained
    # KernelSHAP over the default 8×8 region grid costs ~2k coalitions × 16 background
    # rows per image: 8 images keep the test to tens of seconds on 2 cores.
    background = x_train[:16]
    attr = explain(model, x[:8], "shap", target=1, background=background,
                   batch_size=4096).values
    share = quadrant_share(np.abs(attr).sum(axis=-1), quadrant[:8])
    assert share.mean() > THRESHOLD, share.mean()
