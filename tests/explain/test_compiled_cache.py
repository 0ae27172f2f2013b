"""The compiled-graph cache: reused across calls, and never stale after weights change."""

from __future__ import annotations

import numpy as np

from explain.attributions import base, explain
from tests import models as M


def _x(n: int = 4, d: int = 8) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)


def test_second_call_reuses_the_compiled_gradient():
    model = M.mlp_classifier()
    x = _x()
    explain(model, x, "integrated_gradients", steps=4)
    first = base.gradient_fn(base.ModelFunction(model))
    explain(model, x, "integrated_gradients", steps=4)
    assert base.gradient_fn(base.ModelFunction(model)) is first


def test_heads_and_logits_get_their_own_graphs():
    model = M.multi_output()
    fns = {base.gradient_fn(base.ModelFunction(model, output=o)) for o in (0, 1)}
    fns.add(base.gradient_fn(base.ModelFunction(model, output=0, logits=True)))
    assert len(fns) == 3


def test_logits_follow_new_weights_of_the_final_layer():
    model = M.mlp_classifier()
    x = _x()
    explain(model, x, "integrated_gradients", logits=True, steps=4)  # fills the cache
    last = model.layers[-1]
    kernel, bias = last.get_weights()
    last.set_weights([kernel * 3.0, bias + 1.0])
    cached = explain(model, x, "integrated_gradients", logits=True, steps=4, target=0)
    base._COMPILED.clear()
    fresh = explain(model, x, "integrated_gradients", logits=True, steps=4, target=0)
    np.testing.assert_allclose(cached.values, fresh.values, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(cached.scores, fresh.scores, rtol=1e-5, atol=1e-7)


def test_cache_is_bounded():
    for s in range(base._COMPILED_SIZE + 3):
        base.gradient_fn(base.ModelFunction(M.linear_regression(3, s=s)[0]))
    assert len(base._COMPILED) <= base._COMPILED_SIZE


def test_grad_cam_graphs_live_in_the_shared_cache():
    model = M.small_cnn(size=8)
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
    base._COMPILED.clear()
    first = explain(model, x, "grad_cam")
    cams = [k for k in base._COMPILED if k[0] == "grad_cam"]
    assert len(cams) == 1
    # Grad-CAM++ weighs the same split graph's pass: no second graph is built
    explain(model, x, "grad_cam_plus_plus")
    assert [k for k in base._COMPILED if k[0] == "grad_cam"] == cams
    again = explain(model, x, "grad_cam")
    np.testing.assert_array_equal(again.values, first.values)
