"""A zoo of hostile and broken model files, built on the fly for intake tests.

:func:`build_hostile_zoo` writes every file into a folder and returns, for each, the path,
the refusal code the intake must answer with, and a *marker* path: a file that the
hostile content creates if any of its code ever runs (a Lambda's bytecode, a custom
layer's ``__init__``/``from_config``, an unpickler). A correct intake refuses the file with
the expected code and the marker never appears.

Nothing here switches Keras' safe mode off: saving a Lambda layer or a custom layer needs
no unsafe flag, only loading would.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
import tarfile
import uuid
import warnings
import zipfile
from pathlib import Path

import h5py
import numpy as np

from explain._backend import keras

_MiB = 1024 * 1024


def _touch(marker: str) -> None:
    if marker:
        Path(marker).write_text("hostile code ran\n")


@keras.saving.register_keras_serializable(package="xaudit_hostile")
class Evil(keras.layers.Layer):
    """A registered custom layer that writes its marker whenever it is built from config."""

    def __init__(self, marker: str = "", **kwargs):
        super().__init__(**kwargs)
        self.marker = marker
        _touch(marker)

    def call(self, x):
        return x

    def get_config(self):
        return {**super().get_config(), "marker": self.marker}

    @classmethod
    def from_config(cls, config):
        _touch(config.get("marker", ""))
        return cls(**config)


class EvilUnregistered(Evil):
    """The same layer, never registered with Keras (saved under its module path)."""


@keras.saving.register_keras_serializable(package="xaudit_test")
class Scale(keras.layers.Layer):
    """A harmless custom layer, for allow-list tests: multiplies by ``factor``."""

    def __init__(self, factor: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = float(factor)

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


class PickleBomb:
    """Unpickling this writes the marker (what a loader that trusts pickle would do)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (_touch, (self.marker,))


def tiny_model(*middle: keras.layers.Layer) -> keras.Model:
    """Input(4) → middle layers → Dense(1): small enough to build in milliseconds."""
    return keras.Sequential([keras.Input((4,)), *middle, keras.layers.Dense(1, name="out")])


def lambda_layer(marker: str) -> keras.layers.Lambda:
    """A Lambda whose function writes ``marker`` each time it is called."""
    path = str(marker)  # reaches the bytecode as a closure cell, saved with it
    return keras.layers.Lambda(lambda x: (open(path, "w").close(), x)[1], name="evil_lambda")


def _build(make, path: Path, marker: Path) -> None:
    """Build a model (its construction may write the marker), save it, clear the marker."""
    model = make()
    model.save(path)
    marker.unlink(missing_ok=True)


def _rewrite_keras_config(src: Path, dst: Path, edit) -> None:
    """Copy a .keras archive, passing its config.json through ``edit(config)``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "config.json":
                data = json.dumps(edit(json.loads(data))).encode()
            zout.writestr(info.filename, data)


def _copy_with_extra_member(src: Path, dst: Path, info: zipfile.ZipInfo, data: bytes) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item.filename, zin.read(item.filename))
        zout.writestr(info, data)


def _rewrite_h5_config(src: Path, dst: Path, edit) -> None:
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        f.attrs["model_config"] = json.dumps(edit(config))


def build_hostile_zoo(folder: str | os.PathLike, *, include_savedmodel: bool = True
                      ) -> dict[str, tuple[Path, str, Path]]:
    """Write every hostile or broken model file into ``folder``.

    Parameters
    ----------
    folder
        Created if missing. Markers go to ``folder/markers``.
    include_savedmodel
        Also export a TensorFlow SavedModel (a directory, a zip, a tar.gz, and a zip
        named ``.keras``); exporting takes a few seconds.

    Returns
    -------
    dict
        ``name -> (path, expected_code, marker_path)``. ``path`` is a file, except
        ``savedmodel_dir`` (a directory; it cannot be uploaded as one file). No marker
        exists when this returns.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    markers = root / "markers"
    markers.mkdir(exist_ok=True)
    zoo: dict[str, tuple[Path, str, Path]] = {}

    def mk(name: str) -> Path:
        return markers / f"{name}.marker"

    def add(name: str, path: Path, code: str, marker: Path) -> None:
        zoo[name] = (path, code, marker)

    # A clean model and its files, the base for the crafted variants.
    good_keras, good_h5 = root / "base.keras", root / "base.h5"
    good = tiny_model(keras.layers.Dense(3, activation="relu", name="hidden"))
    good.save(good_keras)
    good.save(good_h5)

    # --- code-carrying layers ------------------------------------------------------------
    m = mk("lambda_keras")
    _build(lambda: tiny_model(lambda_layer(str(m))), root / "lambda.keras", m)
    add("lambda_keras", root / "lambda.keras", "unsafe_layer", m)

    # Keras ignores safe_mode for HDF5 (CVE-2025-9905): the marshalled bytecode would run.
    m = mk("lambda_h5")
    _build(lambda: tiny_model(lambda_layer(str(m))), root / "lambda.h5", m)
    add("lambda_h5", root / "lambda.h5", "unsafe_layer", m)

    # --- custom objects ------------------------------------------------------------------
    for name, cls, ext in [("custom_registered_keras", Evil, ".keras"),
                           ("custom_registered_h5", Evil, ".h5"),
                           ("custom_unregistered_keras", EvilUnregistered, ".keras")]:
        m = mk(name)
        _build(lambda cls=cls, m=m: tiny_model(cls(marker=str(m), name="evil")),
               root / f"{name}{ext}", m)
        add(name, root / f"{name}{ext}", "custom_object", m)

    # --- configs that attack the loader -------------------------------------------------
    # CVE-2025-9906: a Lambda that calls keras.config.enable_unsafe_deserialization while
    # the model is rebuilt, followed by a bytecode Lambda that safe mode would have stopped.
    m = mk("safe_mode_off_keras")
    _build(lambda: tiny_model(lambda_layer(str(m))), root / "_tmp_lambda.keras", m)

    def switch_off(config):
        layers = config["config"]["layers"]
        switch = json.loads(json.dumps(layers[1]))
        switch["config"]["name"] = "switch_off"
        switch["config"]["function"] = {
            "module": "keras.config", "class_name": "function",
            "config": "enable_unsafe_deserialization",
            "registered_name": "enable_unsafe_deserialization"}
        layers.insert(1, switch)
        return config

    _rewrite_keras_config(root / "_tmp_lambda.keras", root / "safe_mode_off.keras", switch_off)
    (root / "_tmp_lambda.keras").unlink()
    add("safe_mode_off_keras", root / "safe_mode_off.keras", "unsafe_config", m)

    def safe_mode_key(config):
        config["config"]["safe_mode"] = False
        return config

    _rewrite_keras_config(good_keras, root / "safe_mode_key.keras", safe_mode_key)
    add("safe_mode_key_keras", root / "safe_mode_key.keras", "unsafe_config",
        mk("safe_mode_key_keras"))

    # CVE-2025-1550: `module` fields that name system modules.
    def set_hidden(field, value):
        def edit(config):
            config["config"]["layers"][0]["config"][field] = value
            return config
        return edit

    for name, field, value, ext in [
        ("module_builtins_keras", "activation",
         {"module": "builtins", "class_name": "function", "config": "exec",
          "registered_name": None}, ".keras"),
        ("module_os_system_keras", "activation",
         {"module": "os", "class_name": "function", "config": "system",
          "registered_name": "system"}, ".keras"),
        ("module_subprocess_keras", "kernel_initializer",
         {"module": "subprocess", "class_name": "Popen",
          "config": {"args": ["touch", str(mk("module_subprocess_keras"))]},
          "registered_name": None}, ".keras"),
        ("module_posix_h5", "activation",
         {"module": "posix", "class_name": "function", "config": "system",
          "registered_name": None}, ".h5"),
    ]:
        out = root / f"{name}{ext}"
        if ext == ".keras":
            _rewrite_keras_config(good_keras, out, set_hidden(field, value))
        else:
            _rewrite_h5_config(good_h5, out, set_hidden(field, value))
        add(name, out, "unsafe_config", mk(name))

    # A built-in class name whose registered_name points at a registered custom layer:
    # Keras resolves registered_name first, so this would build Evil.
    m = mk("disguised_keras")

    def disguise(config):
        hidden = config["config"]["layers"][0]
        hidden["registered_name"] = "xaudit_hostile>Evil"
        hidden["config"]["marker"] = str(m)
        return config

    _rewrite_keras_config(good_keras, root / "disguised.keras", disguise)
    add("disguised_keras", root / "disguised.keras", "custom_object", m)

    # Serialized functions outside a Lambda layer: bytecode as an activation, and a
    # function from a non-Keras module.
    with zipfile.ZipFile(root / "lambda.keras") as zin:
        lam = json.loads(zin.read("config.json"))["config"]["layers"][1]["config"]["function"]
    _rewrite_keras_config(good_keras, root / "lambda_activation.keras",
                          set_hidden("activation", lam))
    add("lambda_activation_keras", root / "lambda_activation.keras", "unsafe_config",
        mk("lambda_keras"))
    _rewrite_keras_config(good_keras, root / "foreign_function.keras", set_hidden(
        "activation", {"module": "tests.hostile", "class_name": "function",
                       "config": "_touch", "registered_name": None}))
    add("foreign_function_keras", root / "foreign_function.keras", "unsafe_config",
        mk("foreign_function_keras"))

    # HDF5 external link: makes h5py read another file on the server.
    out = root / "external_link.h5"
    out.write_bytes(good_h5.read_bytes())
    with h5py.File(out, "r+") as f:
        f["leak"] = h5py.ExternalLink("/etc/passwd", "/")
    add("external_link_h5", out, "unsafe_config", mk("external_link_h5"))

    # --- archive attacks -----------------------------------------------------------------
    out = root / "zip_bomb.keras"
    with zipfile.ZipFile(good_keras) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in ("metadata.json", "config.json"):
            zout.writestr(item, zin.read(item))
        info = zipfile.ZipInfo("model.weights.h5")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zout.open(info, "w", force_zip64=True) as w:
            block = bytes(_MiB)
            for _ in range(64):  # 64 MiB of zeros, stored in ~64 KiB
                w.write(block)
    add("zip_bomb_keras", out, "archive_too_large", mk("zip_bomb_keras"))

    traversal_marker = root.parent / f"evil_traversal_{uuid.uuid4().hex}"
    _copy_with_extra_member(good_keras, root / "traversal.keras",
                            zipfile.ZipInfo(f"../{traversal_marker.name}"), b"pwned\n")
    add("traversal_keras", root / "traversal.keras", "archive_bad_member", traversal_marker)

    absolute_marker = Path("/tmp") / f"xaudit_evil_{uuid.uuid4().hex}"
    _copy_with_extra_member(good_keras, root / "absolute.keras",
                            zipfile.ZipInfo(str(absolute_marker)), b"pwned\n")
    add("absolute_keras", root / "absolute.keras", "archive_bad_member", absolute_marker)

    link = zipfile.ZipInfo("assets/passwd")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    _copy_with_extra_member(good_keras, root / "symlink.keras", link, b"/etc/passwd")
    add("symlink_keras", root / "symlink.keras", "archive_bad_member", mk("symlink_keras"))

    with zipfile.ZipFile(good_keras) as zin:
        config_bytes = zin.read("config.json")
    out = root / "duplicate.keras"
    with zipfile.ZipFile(good_keras) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item.filename, zin.read(item.filename))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
            zout.writestr("config.json", config_bytes)
    add("duplicate_keras", out, "archive_bad_member", mk("duplicate_keras"))

    _copy_with_extra_member(good_keras, root / "extra_member.keras",
                            zipfile.ZipInfo("evil.py"), b"print('pwned')\n")
    add("extra_member_keras", root / "extra_member.keras", "archive_bad_member",
        mk("extra_member_keras"))

    # --- broken files -------------------------------------------------------------------
    data = good_keras.read_bytes()
    (root / "truncated.keras").write_bytes(data[: len(data) // 2])
    add("truncated_keras", root / "truncated.keras", "corrupt_file", mk("truncated_keras"))
    data = good_h5.read_bytes()
    (root / "truncated.h5").write_bytes(data[: len(data) // 2])
    add("truncated_h5", root / "truncated.h5", "corrupt_file", mk("truncated_h5"))

    rng = np.random.default_rng(0)
    (root / "random.keras").write_bytes(rng.bytes(4096))
    add("random_keras", root / "random.keras", "corrupt_file", mk("random_keras"))
    (root / "random.h5").write_bytes(rng.bytes(4096))
    add("random_h5", root / "random.h5", "corrupt_file", mk("random_h5"))
    (root / "empty.keras").write_bytes(b"")
    add("empty_keras", root / "empty.keras", "corrupt_file", mk("empty_keras"))

    weights_only = root / "weights_only.weights.h5"
    good.save_weights(weights_only)
    renamed = root / "weights_only.h5"
    weights_only.rename(renamed)
    add("weights_only_h5", renamed, "corrupt_file", mk("weights_only_h5"))

    # --- wrong formats ------------------------------------------------------------------
    m = mk("pickle_pkl")
    (root / "model.pkl").write_bytes(pickle.dumps(PickleBomb(str(m))))
    add("pickle_pkl", root / "model.pkl", "unsupported_format", m)
    (root / "model.txt").write_text("this is not a model\n")
    add("text_txt", root / "model.txt", "unsupported_format", mk("text_txt"))
    (root / "keras_as.pkl").write_bytes(good_keras.read_bytes())
    add("keras_as_pkl", root / "keras_as.pkl", "unsupported_format", mk("keras_as_pkl"))
    (root / "h5_as.keras").write_bytes(good_h5.read_bytes())
    add("h5_as_keras", root / "h5_as.keras", "unsupported_format", mk("h5_as_keras"))
    (root / "keras_as.h5").write_bytes(good_keras.read_bytes())
    add("keras_as_h5", root / "keras_as.h5", "unsupported_format", mk("keras_as_h5"))

    # --- TensorFlow SavedModel (off unless the operator turns it on) ----------------------
    if include_savedmodel:
        _add_savedmodels(good, root, add, mk)

    # --- not a file ---------------------------------------------------------------------
    (root / "a_folder").mkdir(exist_ok=True)
    (root / "a_folder" / "config.json").write_text(json.dumps({}))
    add("plain_dir", root / "a_folder", "unsupported_format", mk("plain_dir"))

    good_keras.unlink()
    good_h5.unlink()
    # Building the Lambda and Evil models runs their code once, on purpose and here only.
    for p in markers.iterdir():
        p.unlink()
    return zoo


def _add_savedmodels(good: keras.Model, root: Path, add, mk) -> None:
    sm_dir = root / "savedmodel"
    good.export(str(sm_dir), verbose=False)
    add("savedmodel_dir", sm_dir, "unsupported_format", mk("savedmodel_dir"))
    out = root / "savedmodel.zip"
    with zipfile.ZipFile(out, "w") as zout:
        for p in sorted(sm_dir.rglob("*")):
            if p.is_file():
                zout.write(p, p.relative_to(root).as_posix())
    add("savedmodel_zip", out, "unsupported_format", mk("savedmodel_zip"))
    out = root / "savedmodel.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(sm_dir, arcname="savedmodel")
    add("savedmodel_targz", out, "unsupported_format", mk("savedmodel_targz"))
    # The same SavedModel zipped under a .keras name.
    (root / "savedmodel_as.keras").write_bytes((root / "savedmodel.zip").read_bytes())
    add("savedmodel_as_keras", root / "savedmodel_as.keras", "unsupported_format",
        mk("savedmodel_as_keras"))


def declared_model(edit) -> bytes:
    """A small real ``.keras`` archive whose ``config.json`` is passed through
    ``edit(config)`` (edited in place): the config declares something huge while the
    weights stay the small original's, so only a check of the config can refuse it
    cheaply. Shared by the budget tests, the API abuse tests and ``bench/abuse.py``."""
    import tempfile

    small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                              keras.layers.Dense(2, activation="softmax")])
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "src.keras", Path(tmp) / "declared.keras"
        small.save(src)

        def _edited(cfg):
            edit(cfg)
            return cfg

        _rewrite_keras_config(src, dst, _edited)
        return dst.read_bytes()


def set_input_shape(cfg: dict, shape: tuple[int, ...]) -> None:
    """Declare ``shape`` (without the batch axis) as the first layer's input."""
    cfg["config"]["layers"][0]["config"]["batch_shape"] = [None, *shape]


def wide_dense(n: int):
    """An edit declaring input (n,) and a first Dense of n units: n² parameters."""
    def edit(cfg):
        set_input_shape(cfg, (n,))
        cfg["config"]["layers"][1]["config"]["units"] = n
    return edit
