"""Models xaudit cannot audit are refused at upload (422 unsupported_model, nothing
stored); text and sequence models are accepted with their kind in the spec."""

from __future__ import annotations

from explain._backend import keras
from tests.api.conftest import state, upload


def test_multilabel_and_two_input_models_refused_at_upload(app, client, auth, tmp_path):
    ml = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="sigmoid")])
    ml.save(tmp_path / "ml.keras")
    a, b = keras.Input((3,)), keras.Input((3,))
    two = keras.Model([a, b], keras.layers.Dense(2, activation="softmax")(
        keras.layers.Concatenate()([a, b])))
    two.save(tmp_path / "two.keras")
    before = state(app)
    for name, words in (("ml", "multilabel"), ("two", "2 inputs")):
        resp = upload(client, "models", tmp_path / f"{name}.keras", name, auth)
        assert resp.status_code == 422, resp.get_json()
        err = resp.get_json()["error"]
        assert err["code"] == "unsupported_model" and words in err["message"]
    assert state(app) == before


def test_text_model_accepted_with_its_kind(client, auth, tmp_path):
    model = keras.Sequential([keras.Input((10,), dtype="int32"),
                              keras.layers.Embedding(50, 4, mask_zero=True),
                              keras.layers.GlobalAveragePooling1D(),
                              keras.layers.Dense(2, activation="softmax")])
    model.save(tmp_path / "text.keras")
    resp = upload(client, "models", tmp_path / "text.keras", "text", auth)
    assert resp.status_code == 201, resp.get_json()
    spec = resp.get_json()["spec"]
    assert spec["input_kind"] == "text"
    assert spec["text"]["vocab_size"] == 50 and spec["text"]["padding_id"] == 0
