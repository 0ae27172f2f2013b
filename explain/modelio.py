"""Safe intake of uploaded Keras models: inspect the file first, load it second.

An uploaded model is hostile until proven otherwise. Keras model files can carry code
(``Lambda`` layers hold marshalled Python bytecode; configs name classes and modules to
import), and several Keras releases have had holes in their own defences:

- CVE-2025-1550: a ``config.json`` whose ``module`` fields made Keras import arbitrary
  Python modules (``os``, ``subprocess``, ``builtins``) and call into them, even with
  ``safe_mode=True``.
- CVE-2025-9905: Keras ignored ``safe_mode`` for legacy HDF5 (``.h5``) files, so a
  ``Lambda`` layer's bytecode ran on load.
- CVE-2025-9906: a config that calls ``keras.config.enable_unsafe_deserialization`` while
  the model is being rebuilt switches safe mode off for the rest of the load.

So this module never hands a file to Keras until it has checked it itself: size, format
(from the bytes, not only the name), zip member names and compression ratios, HDF5
links, and the whole model config, walked recursively. Only a file that passes every
check reaches ``keras.saving.load_model(..., safe_mode=True, compile=False)``, and
whatever Keras raises then is reported as a corrupt file rather than a traceback.

Public API: :func:`load_model_safely`, :func:`inspect_model_file`, :func:`sha256_file`,
:class:`IntakePolicy`, :class:`ModelSpec`. Every refusal is a
:class:`explain.errors.ModelIntakeError` with one of the codes in :data:`REFUSAL_CODES`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import types
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from explain._lazytf import keras, tf
from explain.errors import ModelIntakeError
from explain.layers import layer_chains, layer_path

__all__ = [
    "REFUSAL_CODES",
    "HeadSpec",
    "InputSpec",
    "IntakePolicy",
    "LayerSummary",
    "ModelSpec",
    "inspect_model_file",
    "load_model_safely",
    "sha256_file",
]

#: Every ``code`` a :class:`ModelIntakeError` raised here can carry.
REFUSAL_CODES = (
    "unsafe_layer",        # a layer that carries or loads code (Lambda, TFSMLayer, ...)
    "custom_object",       # a class or function that is not a Keras built-in, not allow-listed
    "unsafe_config",       # an attempt to switch safe mode off, import a system module, run bytecode
    "archive_too_large",   # the archive or HDF5 file expands past the caps (zip bombs)
    "archive_bad_member",  # a zip member that a Keras archive does not have, or a dangerous one
    "unsupported_format",  # not a .keras / .h5 model (SavedModel, pickle, wrong extension)
    "corrupt_file",        # truncated, empty, random bytes, or Keras could not rebuild it
    "not_found",           # no such file
    "file_too_large",      # the file itself is over the size cap
    "model_too_large",     # the config declares a model over the budget (explain.budget)
    "unsupported_model",   # a safe model of a kind xaudit cannot audit (several inputs, ...)
)

_MiB = 1024 * 1024

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or an empty archive
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_GZIP_MAGIC = b"\x1f\x8b"
_KERAS_EXTS = (".keras",)
_H5_EXTS = (".h5", ".hdf5")
_ARCHIVE_EXTS = (".zip", ".tar", ".tar.gz", ".tgz")

# The members `keras.saving.save_model` writes into a `.keras` archive. Anything else is
# not something Keras needs, and is refused rather than ignored.
_KERAS_MEMBERS = frozenset({"metadata.json", "config.json", "model.weights.h5",
                            "model.weights.npz"})
_KERAS_MEMBER_DIRS = ("assets/",)

_TRUE = frozenset({"1", "true", "yes", "on"})


# ====================================================================== policy


@dataclass(frozen=True)
class IntakePolicy:
    """Operator settings for model intake.

    Parameters
    ----------
    max_file_bytes
        Largest model file accepted, in bytes (``file_too_large`` above it).
    max_uncompressed_bytes
        Largest total a ``.keras`` archive may expand to, and the largest total size the
        datasets of an HDF5 file may declare (``archive_too_large`` above it). ``None``
        means twice ``max_file_bytes``.
    max_compression_ratio
        Largest uncompressed/compressed ratio of one zip member that is larger than
        ``ratio_floor_bytes``. Keras stores members uncompressed (ratio 1), so a member
        that expands a hundredfold is a decompression bomb, not a model.
    ratio_floor_bytes
        Members smaller than this are not ratio-checked (small JSON compresses well).
    max_config_bytes
        Largest model config (``config.json`` / HDF5 ``model_config``) accepted.
    allow_savedmodel
        Accept TensorFlow SavedModel directories (and zip/tar archives of one). **Risky:**
        a SavedModel graph is a program. Its ops can read and write files on the server
        (``ReadFile``, ``WriteFile``, ``MatchingFiles``), and it can hold arbitrary
        TensorFlow ops; none of it can be inspected the way a Keras config can. Turn it on
        only when every uploader is trusted. Loaded with ``keras.layers.TFSMLayer``.
    allowed_custom_objects
        Names of custom classes/functions the operator trusts. An entry matches an
        object's registered name (``"package>Name"``), its ``module.ClassName``, or its
        bare class name. The objects must also be importable: registered with
        ``keras.saving.register_keras_serializable`` in the serving process, or listed
        in ``custom_objects``.
    custom_objects
        Extra objects passed to Keras as ``custom_objects`` when loading. Only names
        also allowed by ``allowed_custom_objects`` can be used by a file.
    """

    max_file_bytes: int = 500 * _MiB
    max_uncompressed_bytes: int | None = None
    max_compression_ratio: float = 100.0
    ratio_floor_bytes: int = 16 * _MiB
    max_config_bytes: int = 32 * _MiB
    allow_savedmodel: bool = False
    allowed_custom_objects: frozenset[str] = frozenset()
    custom_objects: Mapping[str, Any] = field(default_factory=dict)
    #: An :class:`explain.budget.BudgetPolicy`: when set, a model over its caps is refused
    #: (``model_too_large``) from its config, before Keras builds anything.
    budget: Any = None

    def __post_init__(self) -> None:
        if self.max_file_bytes <= 0:
            raise ValueError("max_file_bytes must be positive")
        if self.max_uncompressed_bytes is not None and self.max_uncompressed_bytes <= 0:
            raise ValueError("max_uncompressed_bytes must be positive")
        if self.max_compression_ratio < 1:
            raise ValueError("max_compression_ratio must be at least 1")
        object.__setattr__(self, "allowed_custom_objects",
                           frozenset(self.allowed_custom_objects))

    @property
    def uncompressed_cap(self) -> int:
        """The effective cap on the expanded size of an archive or HDF5 file."""
        if self.max_uncompressed_bytes is not None:
            return self.max_uncompressed_bytes
        return 2 * self.max_file_bytes

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> IntakePolicy:
        """Build a policy from the environment.

        Reads ``XAUDIT_MAX_MODEL_BYTES`` (an integer), ``XAUDIT_ALLOW_SAVEDMODEL``
        (``1``/``true``/``yes``/``on``) and ``XAUDIT_ALLOWED_CUSTOM_OBJECTS``
        (comma-separated names). Unset variables keep their defaults.

        Raises
        ------
        ValueError
            If ``XAUDIT_MAX_MODEL_BYTES`` is not a positive integer.
        """
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}
        raw = env.get("XAUDIT_MAX_MODEL_BYTES", "").strip()
        if raw:
            try:
                kwargs["max_file_bytes"] = int(raw)
            except ValueError:
                raise ValueError(
                    f"XAUDIT_MAX_MODEL_BYTES must be an integer number of bytes, got {raw!r}"
                ) from None
        raw = env.get("XAUDIT_ALLOW_SAVEDMODEL", "").strip().lower()
        if raw:
            kwargs["allow_savedmodel"] = raw in _TRUE
        raw = env.get("XAUDIT_ALLOWED_CUSTOM_OBJECTS", "")
        names = frozenset(n.strip() for n in raw.split(",") if n.strip())
        if names:
            kwargs["allowed_custom_objects"] = names
        from explain.budget import BudgetPolicy

        kwargs["budget"] = BudgetPolicy.from_env(env)
        return cls(**kwargs)


# ====================================================================== spec


@dataclass
class InputSpec:
    """One model input: its name, shape without the batch axis, and dtype."""

    name: str
    shape: list[int | None]
    dtype: str


@dataclass
class HeadSpec:
    """One model output (head).

    ``task`` is read from the final activation and width: sigmoid with width 1 →
    ``binary``, softmax → ``multiclass``, sigmoid with width > 1 → ``multilabel``,
    anything else (linear, relu, ...) → ``regression``; ``unknown`` when the producing
    layer cannot be seen (SavedModel).
    """

    name: str
    shape: list[int | None]
    activation: str
    task: str
    width: int | None


@dataclass
class LayerSummary:
    """One layer: ``name`` is a path (``outer/inner``) for layers inside nested models."""

    name: str
    class_name: str
    output_shape: list | None
    params: int
    depth: int


@dataclass
class ModelSpec:
    """What xaudit knows about an accepted model; JSON-safe through :meth:`to_dict`.

    Attributes
    ----------
    format
        ``keras``, ``h5`` or ``savedmodel``.
    sha256, file_size
        Of the uploaded file (for a SavedModel directory: a digest of its sorted files).
    model_name, keras_version
        The model's name; the Keras version that saved it, when recorded.
    inputs, input_shape, input_kind
        All inputs; the first input's shape without the batch axis; and its kind:
        ``image`` (H, W, C with C in 1..4), ``text`` (token ids into an ``Embedding``,
        or strings into a ``TextVectorization`` layer), ``sequence`` (float (T, F)),
        ``tabular`` (F,), or ``other``.
    outputs, task, final_activation
        Every head; the first head's task and activation.
    n_params
        Total parameter count.
    layers
        Every layer, nested models expanded as ``outer/inner``.
    gradcam_layers, gradcam_default
        Layers with a 4-D spatial output (batch, H, W, C) with H, W > 1, nested ones as
        ``outer/inner``: the names the Grad-CAM ``layer`` option accepts, and the one it
        uses by default (the last). For text and sequence models: the Conv1D / recurrent
        layers with a time axis (Grad-CAM over time).
    text
        For ``text`` models: ``embedding_layer``, ``vocab_size``, ``padding_id``,
        ``mask_zero``, ``sequence_length``, ``string_input`` and ``vectorizer_layer`` (the
        ``TextVectorization`` layer's name when the model takes raw strings); else None.
    unsupported
        Why xaudit cannot audit this model (several inputs, a multilabel head, ...), or
        None. Intake accepts such a model for inspection; upload and audit refuse it.
    """

    format: str
    sha256: str
    file_size: int
    model_name: str
    keras_version: str | None
    inputs: list[InputSpec]
    input_shape: list[int | None]
    input_kind: str
    outputs: list[HeadSpec]
    task: str
    final_activation: str
    n_params: int
    layers: list[LayerSummary]
    gradcam_layers: list[str]
    gradcam_default: str | None
    spec_version: int = 1
    #: Per-example cost from the config (:meth:`explain.budget.ModelCost.to_dict`), when
    #: the intake had a budget policy.
    cost: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    unsupported: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (lists, strings, numbers, ``None``)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def summary(self) -> str:
        """A readable multi-line description (what ``xaudit inspect`` prints)."""

        def shape(dims: list | None) -> str:
            if dims is None:
                return "?"
            if dims and isinstance(dims[0], list):
                return ", ".join(shape(d) for d in dims)
            inner = ", ".join("None" if d is None else str(d) for d in dims)
            return f"({inner},)" if len(dims) == 1 else f"({inner})"

        lines = [
            f"model       {self.model_name}  [{self.format}, {self.file_size:,} bytes"
            + (f", Keras {self.keras_version}" if self.keras_version else "") + "]",
            f"sha256      {self.sha256}",
        ]
        for spec in self.inputs:
            lines.append(f"input       {spec.name} {shape(spec.shape)} {spec.dtype}")
        lines.append(f"input kind  {self.input_kind}")
        if self.text:
            t = self.text
            via = (f"strings -> {t['vectorizer_layer']} -> " if t.get("string_input")
                   else "token ids -> ")
            lines.append(f"text        {via}{t['embedding_layer']}, vocabulary "
                         f"{t['vocab_size']:,}, padding id {t['padding_id']}"
                         + (" (masked)" if t.get("mask_zero") else "")
                         + f", length {t.get('sequence_length') or 'variable'}")
        if self.unsupported:
            lines.append(f"auditable   no: {self.unsupported}")
        for head in self.outputs:
            lines.append(f"output      {head.name} {shape(head.shape)} {head.activation}"
                         f" -> {head.task}")
        lines.append(f"task        {self.task}")
        lines.append(f"parameters  {self.n_params:,}")
        if self.gradcam_layers:
            shown = self.gradcam_layers if len(self.gradcam_layers) <= 8 else (
                self.gradcam_layers[:3] + ["..."] + self.gradcam_layers[-4:])
            lines.append(f"grad-cam    {', '.join(shown)} (default {self.gradcam_default})")
        else:
            lines.append("grad-cam    no spatial layer" if self.input_kind not in
                         ("text", "sequence") else "grad-cam    no layer with a time axis")
        lines.append("layers")
        width = max((len(la.name) + 2 * la.depth for la in self.layers), default=4)
        for la in self.layers:
            name = "  " * la.depth + la.name
            lines.append(f"  {name:<{width}}  {la.class_name:<24} "
                         f"{shape(la.output_shape):<22} {la.params:>10,}")
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Rebuild a spec from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            If a field is missing or unknown.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ModelSpec fields: {sorted(unknown)}")
        try:
            kwargs = dict(data)
            kwargs["inputs"] = [InputSpec(**d) for d in data["inputs"]]
            kwargs["outputs"] = [HeadSpec(**d) for d in data["outputs"]]
            kwargs["layers"] = [LayerSummary(**d) for d in data["layers"]]
            kwargs["input_shape"] = list(data["input_shape"])
            kwargs["gradcam_layers"] = list(data["gradcam_layers"])
            return cls(**kwargs)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a ModelSpec: {exc}") from None


# ====================================================================== public API


def sha256_file(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_MiB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_model_safely(
    path: str | os.PathLike, *, policy: IntakePolicy | None = None
) -> tuple[keras.Model, ModelSpec]:
    """Check an uploaded model file, then load it with Keras in safe mode.

    Parameters
    ----------
    path
        A ``.keras`` archive or ``.h5`` file (a SavedModel directory or archive only when
        ``policy.allow_savedmodel``). The extension must match the content.
    policy
        Caps and allow-lists; :meth:`IntakePolicy.from_env` when ``None``.

    Returns
    -------
    model : keras.Model
        The model, not compiled.
    spec : ModelSpec
        Inputs, heads, task, layers, Grad-CAM candidates, digest of the file.

    Raises
    ------
    ModelIntakeError
        With ``code`` one of :data:`REFUSAL_CODES`. Every check runs before any Keras
        deserialization code sees the file.
    """
    policy = IntakePolicy.from_env() if policy is None else policy
    p = Path(os.fspath(path))
    if not p.exists() and not p.is_symlink():
        raise ModelIntakeError(f"no such model file: {p.name}", code="not_found")
    if p.is_dir():
        return _load_directory(p, policy)
    if not p.is_file():
        raise ModelIntakeError(f"{p.name} is not a regular file", code="unsupported_format")

    size = p.stat().st_size
    if size > policy.max_file_bytes:
        raise ModelIntakeError(
            f"the model file is {size:,} bytes; the limit is {policy.max_file_bytes:,}",
            code="file_too_large",
        )
    if size == 0:
        raise ModelIntakeError("the model file is empty", code="corrupt_file")

    kind = _sniff(p)
    name = p.name.lower()
    if name.endswith(_KERAS_EXTS):
        _require_kind(p, kind, "zip", "a .keras file must be a Keras zip archive")
        keras_version, cost = _check_keras_archive(p, policy)
        model = _keras_load(p, policy)
        fmt = "keras"
    elif name.endswith(_H5_EXTS):
        _require_kind(p, kind, "hdf5", "an .h5 file must be an HDF5 file")
        keras_version, cost = _check_h5_file(p, policy)
        model = _keras_load(p, policy)
        fmt = "h5"
    elif name.endswith(_ARCHIVE_EXTS) and kind in ("zip", "tar", "gzip"):
        # Only a SavedModel would come as a generic archive. Refuse it without opening it
        # (a gzip stream must be decompressed just to list its members).
        if not policy.allow_savedmodel:
            raise _savedmodel_refusal()
        model = _load_savedmodel_archive(p, kind, policy)
        fmt, keras_version, cost = "savedmodel", None, None
    else:
        what = {"zip": "a zip archive", "hdf5": "an HDF5 file", "tar": "a tar archive",
                "gzip": "a gzip file", "pickle": "a Python pickle"}.get(kind, "unknown content")
        raise ModelIntakeError(
            f"{p.name}: unsupported model format ({what}); upload a Keras 3 .keras archive "
            "or a legacy .h5 file",
            code="unsupported_format",
        )
    spec = _build_spec(model, fmt=fmt, sha256=sha256_file(p), file_size=size,
                       keras_version=keras_version)
    spec.cost = cost
    return model, spec


def inspect_model_file(path: str | os.PathLike, policy: IntakePolicy | None = None) -> ModelSpec:
    """Load a model file safely (see :func:`load_model_safely`) and return its spec."""
    _model, spec = load_model_safely(path, policy=policy)
    return spec


# ====================================================================== format sniffing


def _sniff(path: Path) -> str:
    """What the bytes say the file is: zip, hdf5, tar, gzip, pickle or unknown."""
    with open(path, "rb") as fh:
        head = fh.read(512 + 8)
        if head[:4] in _ZIP_MAGICS:
            return "zip"
        if head[:8] == _HDF5_MAGIC:
            return "hdf5"
        # HDF5 allows a user block before the superblock, at 512, 1024, 2048, ... bytes.
        offset = 512
        while offset <= min(path.stat().st_size - 8, 64 * 1024):
            fh.seek(offset)
            if fh.read(8) == _HDF5_MAGIC:
                return "hdf5"
            offset *= 2
    if head[:2] == _GZIP_MAGIC:
        return "gzip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "pickle"
    return "unknown"


def _require_kind(path: Path, kind: str, expected: str, message: str) -> None:
    if kind == expected:
        return
    if kind != "unknown":
        raise ModelIntakeError(f"{path.name}: {message}, but its content is {kind}",
                               code="unsupported_format")
    raise ModelIntakeError(f"{path.name}: {message}; the file is corrupt or truncated",
                           code="corrupt_file")


# ====================================================================== .keras archives


def _check_member_name(name: str) -> None:
    """Refuse names that could escape an extraction folder or hide from a reader."""
    if not name or "\x00" in name or "\\" in name:
        raise ModelIntakeError(f"archive member {name!r} has an invalid name",
                               code="archive_bad_member")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ModelIntakeError(f"archive member {name!r} has an absolute path",
                               code="archive_bad_member")
    if ".." in name.split("/"):
        raise ModelIntakeError(f"archive member {name!r} points outside the archive (..)",
                               code="archive_bad_member")


def _check_zip_entries(zf: zipfile.ZipFile, archive_size: int, policy: IntakePolicy,
                       allowed: Any = None) -> list[zipfile.ZipInfo]:
    """Names, types, duplicates, sizes and ratios of every member, from the central
    directory only (nothing is decompressed)."""
    infos = zf.infolist()
    seen: set[str] = set()
    total = 0
    stored = 0
    for info in infos:
        name = info.filename
        _check_member_name(name)
        if name in seen:
            # Two members with one name: a reader and a checker may see different ones.
            raise ModelIntakeError(f"archive member {name!r} appears twice",
                                   code="archive_bad_member")
        seen.add(name)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise ModelIntakeError(f"archive member {name!r} is a symbolic link",
                                   code="archive_bad_member")
        if info.flag_bits & 0x1:
            raise ModelIntakeError(f"archive member {name!r} is encrypted",
                                   code="archive_bad_member")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ModelIntakeError(
                f"archive member {name!r} uses an unexpected compression method",
                code="archive_bad_member")
        if allowed is not None and not allowed(name):
            raise ModelIntakeError(
                f"archive member {name!r} is not part of a Keras model archive "
                "(expected config.json, metadata.json, model.weights.h5, assets/...)",
                code="archive_bad_member")
        total += info.file_size
        stored += info.compress_size
        if total > policy.uncompressed_cap:
            raise ModelIntakeError(
                f"the archive expands to more than {policy.uncompressed_cap:,} bytes",
                code="archive_too_large")
        if (info.file_size > policy.ratio_floor_bytes
                and info.file_size > policy.max_compression_ratio * max(info.compress_size, 1)):
            raise ModelIntakeError(
                f"archive member {name!r} expands {info.file_size / max(info.compress_size, 1):,.0f}"
                f" times ({info.file_size:,} bytes): a decompression bomb",
                code="archive_too_large")
    if stored > archive_size:
        # Members whose compressed data overlap each other (a known zip-bomb trick).
        raise ModelIntakeError("archive members overlap each other",
                               code="archive_bad_member")
    return infos


def _is_keras_member(name: str) -> bool:
    return name in _KERAS_MEMBERS or name.startswith(_KERAS_MEMBER_DIRS)


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise ModelIntakeError(f"{path.name} is not a readable zip archive ({exc})",
                               code="corrupt_file") from None


def _read_member(zf: zipfile.ZipFile, name: str, cap: int) -> bytes:
    try:
        with zf.open(name) as fh:
            data = fh.read(cap + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise ModelIntakeError(f"archive member {name!r} cannot be read ({exc})",
                               code="corrupt_file") from None
    if len(data) > cap:
        raise ModelIntakeError(f"archive member {name!r} is larger than {cap:,} bytes",
                               code="archive_too_large")
    return data


def _parse_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ModelIntakeError(f"{what} is not valid JSON ({exc})"[:300],
                               code="corrupt_file") from None


def _check_budget(config: Any, policy: IntakePolicy) -> dict[str, Any] | None:
    """The model's per-example cost from its config; ``model_too_large`` over a cap."""
    if policy.budget is None:
        return None
    from explain.budget import check_model

    return check_model(config, policy.budget).to_dict()


def _check_keras_archive(path: Path, policy: IntakePolicy) -> tuple[str | None, Any]:
    """Every check on a ``.keras`` archive; returns the saving Keras version if recorded,
    and the model's cost (see :func:`_check_budget`)."""
    with _open_zip(path) as zf:
        names = {i.filename for i in zf.infolist()}
        if any(n.rsplit("/", 1)[-1] in ("saved_model.pb", "saved_model.pbtxt") for n in names):
            raise ModelIntakeError(
                f"{path.name} holds a TensorFlow SavedModel, not a Keras model; save it with "
                "model.save('model.keras')", code="unsupported_format")
        _check_zip_entries(zf, path.stat().st_size, policy, allowed=_is_keras_member)
        if "config.json" not in names:
            raise ModelIntakeError("the archive has no config.json: not a Keras model",
                                   code="corrupt_file")
        config = _parse_json(_read_member(zf, "config.json", policy.max_config_bytes),
                             "config.json")
        if not isinstance(config, dict):
            raise ModelIntakeError("config.json does not describe a model",
                                   code="corrupt_file")
        _ConfigAudit(policy).check(config, where="config.json")
        cost = _check_budget(config, policy)
        version = None
        if "metadata.json" in names:
            meta = _parse_json(_read_member(zf, "metadata.json", _MiB), "metadata.json")
            _ConfigAudit(policy).check(meta, where="metadata.json")
            if isinstance(meta, dict) and isinstance(meta.get("keras_version"), str):
                version = meta["keras_version"]
        if "model.weights.h5" in names:
            try:
                with zf.open("model.weights.h5") as raw, h5py.File(raw, "r") as h5:
                    _check_hdf5_structure(h5, policy, "model.weights.h5")
            except ModelIntakeError:
                raise
            except Exception as exc:  # h5py raises OSError, KeyError, ValueError, ...
                raise ModelIntakeError(f"model.weights.h5 is not a readable HDF5 file ({exc})",
                                       code="corrupt_file") from None
    return version, cost


# ====================================================================== .h5 files


def _attr_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _check_h5_file(path: Path, policy: IntakePolicy) -> tuple[str | None, Any]:
    """Every check on a legacy ``.h5`` model; returns the saving Keras version."""
    try:
        h5 = h5py.File(path, "r")
    except Exception as exc:  # h5py raises OSError for truncated and foreign files
        raise ModelIntakeError(f"{path.name} is not a readable HDF5 file ({exc})",
                               code="corrupt_file") from None
    with h5:
        try:
            raw_config = _attr_text(h5.attrs.get("model_config"))
            raw_training = _attr_text(h5.attrs.get("training_config"))
            version = _attr_text(h5.attrs.get("keras_version"))
        except Exception as exc:
            raise ModelIntakeError(f"{path.name}: unreadable HDF5 attributes ({exc})",
                                   code="corrupt_file") from None
        if raw_config is None:
            raise ModelIntakeError(
                f"{path.name} holds no model config (a weights-only file?); upload a whole "
                "saved model", code="corrupt_file")
        if len(raw_config) > policy.max_config_bytes:
            raise ModelIntakeError("the model config is too large", code="archive_too_large")
        # Keras ignores safe_mode for HDF5 models (CVE-2025-9905), so this walk is the only
        # thing between a Lambda layer's marshalled bytecode and the interpreter.
        config = _parse_json(raw_config.encode(), "the model config")
        if not isinstance(config, dict):
            raise ModelIntakeError("the model config does not describe a model",
                                   code="corrupt_file")
        _ConfigAudit(policy).check(config, where="model_config")
        cost = _check_budget(config, policy)
        if raw_training is not None:
            training = _parse_json(raw_training.encode()[: policy.max_config_bytes + 1],
                                   "the training config")
            _ConfigAudit(policy).check(training, where="training_config")
        _check_hdf5_structure(h5, policy, path.name)
    return version, cost


def _check_hdf5_structure(h5: h5py.File, policy: IntakePolicy, where: str) -> None:
    """Refuse HDF5 content that reaches outside the file or declares huge datasets.

    External links, external raw storage and virtual datasets make h5py read other
    files on the server; a tiny chunked dataset can declare terabytes that a reader
    then allocates.
    """
    bad: list[str] = []

    def on_link(name: str, link: Any) -> None:
        if isinstance(link, h5py.ExternalLink):
            bad.append(name)

    h5.visititems_links(on_link)
    if bad:
        raise ModelIntakeError(f"{where}: link {bad[0]!r} points to another file",
                               code="unsafe_config")

    declared = 0

    def on_item(name: str, obj: Any) -> None:
        nonlocal declared
        if isinstance(obj, h5py.Dataset):
            if obj.external or obj.is_virtual:
                bad.append(name)
            declared += int(obj.size or 0) * int(obj.dtype.itemsize or 0)

    h5.visititems(on_item)
    if bad:
        raise ModelIntakeError(f"{where}: dataset {bad[0]!r} reads its data from other files",
                               code="unsafe_config")
    if declared > policy.uncompressed_cap:
        raise ModelIntakeError(
            f"{where}: datasets declare {declared:,} bytes, over the {policy.uncompressed_cap:,}"
            " byte cap", code="archive_too_large")


# ====================================================================== config walk

# Markers Keras uses for values that are not Python objects to import.
_VALUE_MARKERS = frozenset({"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__",
                            "__ellipsis__", "__slice__"})
# Serialized Python functions: Keras rebuilds these from bytecode.
_CODE_MARKERS = frozenset({"__lambda__", "__python_function__"})
# Built-in layers whose job is to run code or load a program from a path.
_CODE_LAYERS = frozenset({"Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer",
                          "FlaxLayer"})
# Keras sub-packages whose functions may appear in a model config (activations, losses).
_FUNCTION_PACKAGES = frozenset({"activations", "losses", "metrics", "ops", "initializers",
                                "regularizers", "constraints"})
# Keras APIs that act on the process rather than on tensors; Keras' own list plus the
# modules that hold them.
_NON_MODELING_MODULES = ("keras.config", "keras.saving", "keras.backend", "keras.src.saving",
                         "keras.src.backend.config", "keras.src.legacy.saving")
_KERAS_PACKAGES = ("keras", "keras_hub", "keras_cv", "keras_nlp")
_MAX_DEPTH = 400


_CLASSES: dict[str, Any] = {}


def _classes(which: str) -> Any:
    """``safe_bases``, ``code_layers`` or ``tfsm_layer``: Keras classes the checks compare
    against. Captured once, the checks must not depend on names that can be rebound
    later: at import when Keras is already loaded, else on the first check that needs
    them, before any model file is deserialised (so a command that refuses a file from
    its bytes never imports TensorFlow)."""
    if not _CLASSES:
        _CLASSES["safe_bases"] = (
            keras.layers.Layer, keras.Operation, keras.initializers.Initializer,
            keras.regularizers.Regularizer, keras.constraints.Constraint,
            keras.optimizers.Optimizer, keras.optimizers.schedules.LearningRateSchedule,
            keras.losses.Loss, keras.metrics.Metric, keras.DTypePolicy)
        _CLASSES["code_layers"] = tuple(
            getattr(keras.layers, n) for n in sorted(_CODE_LAYERS) if hasattr(keras.layers, n))
        _CLASSES["tfsm_layer"] = keras.layers.TFSMLayer
    return _CLASSES[which]


if "keras" in sys.modules:
    _classes("safe_bases")


_BUILTIN_NAMES: frozenset[str] | None = None


def _builtin_class_names() -> frozenset[str]:
    """Names of Keras built-in classes, for legacy configs that carry no ``module``."""
    global _BUILTIN_NAMES
    if _BUILTIN_NAMES is None:
        names = {"Functional"}
        for mod in (keras, keras.layers, keras.models, keras.initializers,
                    keras.regularizers, keras.constraints, keras.optimizers,
                    keras.optimizers.schedules, keras.losses, keras.metrics,
                    keras.dtype_policies):
            for attr in dir(mod):
                obj = getattr(mod, attr, None)
                if (isinstance(obj, type) and issubclass(obj, _classes("safe_bases"))
                        and obj.__module__.startswith("keras.")):
                    names.add(attr)
        _BUILTIN_NAMES = frozenset(names - _CODE_LAYERS)
    return _BUILTIN_NAMES


def _resolve_keras(module: str, name: str) -> Any:
    """Find ``module.name`` inside the already-imported Keras package, importing nothing.

    Returns ``None`` when the path does not lead through Keras modules to an attribute.
    """
    parts = module.split(".")
    if parts[0] != "keras":
        return None
    obj: Any = keras
    for part in parts[1:]:
        obj = getattr(obj, part, None)
        if not isinstance(obj, types.ModuleType):
            return None
    return getattr(obj, name, None)


def _module_root(module: str) -> str:
    return module.split(".", 1)[0]


def _is_system_module(module: str) -> bool:
    root = _module_root(module)
    return root in sys.stdlib_module_names or root in ("builtins", "__builtin__", "posix", "nt")


def _iter_nodes(tree: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Every dict, list item and string in a JSON tree, with its path; iterative so a
    deeply nested config cannot exhaust the interpreter stack."""
    stack: list[tuple[str, Any, int]] = [(where, tree, 0)]
    while stack:
        path, node, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise ModelIntakeError(f"{where} is nested more than {_MAX_DEPTH} levels deep",
                                   code="corrupt_file")
        yield path, node
        if isinstance(node, dict):
            for key, value in reversed(list(node.items())):
                stack.append((f"{path}.{key}", value, depth + 1))
        elif isinstance(node, list):
            for i in range(len(node) - 1, -1, -1):
                stack.append((f"{path}[{i}]", node[i], depth + 1))


def _describe(path: str, node: Mapping) -> str:
    name = node.get("config", {}).get("name") if isinstance(node.get("config"), dict) else None
    label = f"{node.get('class_name')!s}" + (f" {name!r}" if name else "")
    return f"{label} at {path}" if len(path) < 160 else f"{label} at ...{path[-150:]}"


class _ConfigAudit:
    """Walks a model config (JSON) and refuses anything Keras could turn into code.

    Three passes so the most telling reason is reported: attempts to switch safe mode
    off or reach system modules (``unsafe_config``), then code-carrying layers
    (``unsafe_layer``), then everything that is not a Keras built-in (``custom_object``,
    or ``unsafe_config`` for serialized functions).
    """

    def __init__(self, policy: IntakePolicy):
        self.policy = policy
        self.allowed = policy.allowed_custom_objects
        registered = keras.saving.get_custom_objects()
        # Names this process could resolve as custom objects without any import:
        # registered classes/functions plus the operator's custom_objects mapping.
        self.resolvable = set(registered) | set(policy.custom_objects)

    def check(self, tree: Any, where: str) -> None:
        nodes = list(_iter_nodes(tree, where))
        for path, node in nodes:
            self._switches_safety_off(path, node)
        for path, node in nodes:
            if isinstance(node, dict):
                self._code_layer(path, node)
        admitted: set[str] = set()
        for path, node in nodes:
            if isinstance(node, dict) and self._builtin_only(path, node):
                # An allow-listed object's own names may appear as plain strings too.
                admitted.update(v for v in (node.get("registered_name"), node.get("class_name"),
                                            node.get("config")) if isinstance(v, str))
        for path, node in nodes:
            if (isinstance(node, str) and node in self.resolvable
                    and node not in self.allowed and node not in admitted):
                raise ModelIntakeError(
                    f"the config refers to the custom object {node!r} at {path}; "
                    "it is not on the operator's allow-list", code="custom_object")

    # -- pass 1
    def _switches_safety_off(self, path: str, node: Any) -> None:
        if isinstance(node, str):
            if "enable_unsafe_deserialization" in node:
                # CVE-2025-9906: a config that calls this during rebuilding turns safe
                # mode off for every layer after it.
                raise ModelIntakeError(
                    f"the config tries to switch Keras safe mode off (at {path})",
                    code="unsafe_config")
            return
        if not isinstance(node, dict):
            return
        for key in node:
            if isinstance(key, str) and key.lower().lstrip("_") == "safe_mode":
                raise ModelIntakeError(
                    f"the config carries a safe_mode setting (at {path}); refused",
                    code="unsafe_config")
            if isinstance(key, str) and "enable_unsafe_deserialization" in key:
                raise ModelIntakeError(
                    f"the config tries to switch Keras safe mode off (at {path})",
                    code="unsafe_config")
        module = node.get("module")
        if isinstance(module, str) and _is_system_module(module):
            # CVE-2025-1550: Keras imported whatever `module` named (os, subprocess,
            # builtins) and called into it while rebuilding the model.
            raise ModelIntakeError(
                f"the config references the system module {module!r} "
                f"({_describe(path, node)}); refused", code="unsafe_config")

    # -- pass 2
    def _code_layer(self, path: str, node: Mapping) -> None:
        class_name = node.get("class_name")
        registered = node.get("registered_name")
        names = {n.rsplit(">", 1)[-1] for n in (class_name, registered) if isinstance(n, str)}
        hit = names & _CODE_LAYERS
        module = node.get("module")
        if not hit and isinstance(module, str) and isinstance(class_name, str):
            resolved = _resolve_keras(module, class_name)
            if isinstance(resolved, type) and issubclass(resolved, _classes("code_layers")):
                hit = {class_name}
        if hit:
            raise ModelIntakeError(
                f"the model contains a {sorted(hit)[0]} layer ({_describe(path, node)}), "
                "which carries or loads executable code; rebuild the model with built-in "
                "layers only", code="unsafe_layer")

    # -- pass 3
    def _is_allowed(self, node: Mapping) -> bool:
        if not self.allowed:
            return False
        class_name = node.get("class_name")
        registered = node.get("registered_name")
        module = node.get("module")
        candidates = {registered}
        if class_name == "function":
            candidates.add(node.get("config") if isinstance(node.get("config"), str) else None)
        else:
            candidates.add(class_name)
            if isinstance(module, str):
                candidates.add(f"{module}.{class_name}")
        return bool({c for c in candidates if isinstance(c, str)} & self.allowed)

    def _builtin_only(self, path: str, node: Mapping) -> bool:
        """Refuse an object that is not a Keras built-in; True if it was allow-listed."""
        has_object_keys = any(k in node for k in ("class_name", "module", "registered_name"))
        if not has_object_keys:
            return False
        class_name = node.get("class_name")
        module = node.get("module")
        registered = node.get("registered_name")
        if not isinstance(class_name, str):
            raise ModelIntakeError(f"malformed object at {path} (no class_name)",
                                   code="corrupt_file")
        if module is not None and not isinstance(module, str):
            raise ModelIntakeError(f"malformed module field at {path}", code="corrupt_file")
        if registered is not None and not isinstance(registered, str):
            raise ModelIntakeError(f"malformed registered_name at {path}", code="corrupt_file")

        if class_name in _VALUE_MARKERS and registered in (None, class_name) and module is None:
            return False
        if class_name in _CODE_MARKERS or (class_name.startswith("__")
                                           and class_name != "__typespec__"):
            raise ModelIntakeError(
                f"the config holds a serialized Python function ({class_name} at {path}); "
                "refused", code="unsafe_config")
        if self._is_allowed(node):
            return True

        if class_name == "function":
            fn_name = node.get("config")
            if (isinstance(fn_name, str) and isinstance(module, str)
                    and self._is_keras_function(module, fn_name)
                    and registered in (None, fn_name)):
                return False
            raise ModelIntakeError(
                f"the config holds a reference to the function {module}.{fn_name} at {path}, "
                "which is not a Keras built-in; refused", code="unsafe_config")

        if class_name == "__typespec__":
            spec_name = node.get("spec_name")
            if isinstance(module, str) and isinstance(spec_name, str):
                resolved = _resolve_keras(module, spec_name)
                if isinstance(resolved, type):
                    return False
            raise self._custom(path, node)

        if module is None:
            # Legacy (.h5 / Keras 2) configs name built-ins by class name alone.
            if class_name in _builtin_class_names() and registered in (None, class_name):
                return False
            raise self._custom(path, node)
        if _module_root(module) not in _KERAS_PACKAGES:
            raise self._custom(path, node)
        api_name = f"{module}.{class_name}"
        if module.startswith(_NON_MODELING_MODULES):
            raise ModelIntakeError(
                f"the config calls {api_name} at {path}, which is not a modeling API",
                code="unsafe_config")
        resolved = _resolve_keras(module, class_name)
        if not (isinstance(resolved, type) and issubclass(resolved, _classes("safe_bases"))
                and resolved.__module__.startswith("keras.")):
            raise self._custom(path, node)
        # Keras looks `registered_name` up among registered custom objects before the
        # built-in, so a built-in class name with a foreign registered name is a custom
        # object in disguise.
        if registered not in (None, class_name):
            raise self._custom(path, node)
        return False

    @staticmethod
    def _is_keras_function(module: str, fn_name: str) -> bool:
        parts = module.split(".")
        if parts[0] != "keras":
            return False
        sub = parts[2] if len(parts) > 2 and parts[1] == "src" else (parts[1] if len(parts) > 1
                                                                     else "")
        if sub not in _FUNCTION_PACKAGES:
            return False
        resolved = _resolve_keras(module, fn_name)
        return callable(resolved) and not isinstance(resolved, type)

    @staticmethod
    def _custom(path: str, node: Mapping) -> ModelIntakeError:
        module = node.get("module")
        registered = node.get("registered_name")
        ident = registered or (f"{module}.{node.get('class_name')}" if module
                               else node.get("class_name"))
        return ModelIntakeError(
            f"the model uses the custom object {ident!r} ({_describe(path, node)}), which is "
            "not a Keras built-in; an operator can allow it with XAUDIT_ALLOWED_CUSTOM_OBJECTS",
            code="custom_object")


# ====================================================================== Keras loading


@contextlib.contextmanager
def _forced_safe_mode() -> Iterator[None]:
    """Hold Keras' safe mode on for this load, even if other code in the process has
    called ``keras.config.enable_unsafe_deserialization()`` (the global flag overrides
    the ``safe_mode`` argument)."""
    try:
        from keras.src.saving.serialization_lib import SafeModeScope
    except ImportError:  # pragma: no cover - a future Keras; the argument still applies
        yield
        return
    with SafeModeScope(True):
        yield


def _keras_load(path: Path, policy: IntakePolicy) -> keras.Model:
    custom = dict(policy.custom_objects) or None
    try:
        with _forced_safe_mode():
            model = keras.saving.load_model(str(path), custom_objects=custom,
                                            compile=False, safe_mode=True)
    except Exception as exc:  # whatever Keras raises for a file it cannot rebuild
        raise ModelIntakeError(
            f"Keras could not load {path.name}: {type(exc).__name__}: {_short(exc)}",
            code="corrupt_file") from None
    if not isinstance(model, keras.Model):
        raise ModelIntakeError(f"{path.name} does not hold a Keras model",
                               code="corrupt_file")
    _make_name_traceable(model)
    _check_layer_names(model, path)
    return model


_SCOPE_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\-/]*")


def _make_name_traceable(model: keras.Model) -> None:
    """Give the loaded model a name TensorFlow accepts as a graph scope.

    Keras opens a name scope with the model's name when it is traced in a tf.function;
    an uploaded name such as ``<img src=x>`` then fails every gradient method. The name
    as uploaded is kept in ``model.xaudit_display_name`` for the spec and the report.
    """
    original = str(model.name)
    model.xaudit_display_name = original
    if not _SCOPE_NAME.fullmatch(original):
        cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "_", original).lstrip("_.-") or "model"
        model.name = cleaned[:64]


# TensorFlow's rule for a name scope below the root (keras layer names cannot hold "/").
_LAYER_SCOPE_NAME = re.compile(r"[A-Za-z0-9_.>\-]+")


def _check_layer_names(model: keras.Model, path: Path) -> None:
    """Refuse a model with a layer TensorFlow cannot trace by name.

    Keras opens a graph scope named after each layer when a gradient method traces the
    model; a name such as ``<b>x</b>`` loads and predicts, then fails every attribution
    deep inside the worker. Renaming layers would break the names users give for Grad-CAM
    and see in the report, so the upload is refused here, naming the layer.
    """
    for chain in layer_chains(model, descend=lambda layer: bool(getattr(layer, "layers", None))):
        name = str(chain[-1].name)
        if not _LAYER_SCOPE_NAME.fullmatch(name):
            shown = name if len(name) <= 60 else name[:57] + "..."
            raise ModelIntakeError(
                f"{path.name}: layer name {shown!r} cannot be traced by TensorFlow; layer names "
                "may use letters, digits and _ . - > only: rename the layer and save again",
                code="bad_layer_name")


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ====================================================================== SavedModel


def _savedmodel_refusal() -> ModelIntakeError:
    return ModelIntakeError(
        "TensorFlow SavedModel uploads are turned off: a SavedModel graph can read and write "
        "files on the server and run arbitrary TensorFlow ops. Save the model with "
        "model.save('model.keras'), or ask the operator to set XAUDIT_ALLOW_SAVEDMODEL",
        code="unsupported_format")


def _is_savedmodel_dir(path: Path) -> bool:
    return (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file()


def _load_directory(path: Path, policy: IntakePolicy) -> tuple[keras.Model, ModelSpec]:
    if not _is_savedmodel_dir(path):
        raise ModelIntakeError(f"{path.name} is a directory, not a model file; upload a "
                               ".keras or .h5 file", code="unsupported_format")
    if not policy.allow_savedmodel:
        raise _savedmodel_refusal()
    size, digest = _tree_size_and_digest(path, policy)
    model = _load_savedmodel_dir(path)
    return model, _build_spec(model, fmt="savedmodel", sha256=digest, file_size=size,
                              keras_version=None)


def _tree_size_and_digest(root: Path, policy: IntakePolicy) -> tuple[int, str]:
    digest = hashlib.sha256()
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            p = Path(dirpath) / name
            if p.is_symlink():
                raise ModelIntakeError(f"{p.relative_to(root)} is a symbolic link",
                                       code="archive_bad_member")
            total += p.stat().st_size
            if total > policy.max_file_bytes:
                raise ModelIntakeError(
                    f"the SavedModel is over {policy.max_file_bytes:,} bytes",
                    code="file_too_large")
            digest.update(str(p.relative_to(root)).encode() + b"\0")
            digest.update(sha256_file(p).encode())
    return total, digest.hexdigest()


def _load_savedmodel_archive(path: Path, kind: str, policy: IntakePolicy) -> keras.Model:
    """Extract a zip/tar of a SavedModel with the same member checks, then load it."""
    tmp = tempfile.mkdtemp(prefix="xaudit-savedmodel-")
    try:
        dest = Path(tmp)
        if kind == "zip":
            with _open_zip(path) as zf:
                _check_zip_entries(zf, path.stat().st_size, policy)
                zf.extractall(dest)
        else:
            try:
                with tarfile.open(path) as tar:
                    total = 0
                    for member in tar.getmembers():
                        _check_member_name(member.name)
                        if not (member.isfile() or member.isdir()):
                            raise ModelIntakeError(
                                f"archive member {member.name!r} is a link or device",
                                code="archive_bad_member")
                        total += member.size
                        if total > policy.uncompressed_cap:
                            raise ModelIntakeError("the archive expands past the size cap",
                                                   code="archive_too_large")
                    tar.extractall(dest, filter="data")
            except tarfile.TarError as exc:
                raise ModelIntakeError(f"{path.name} is not a readable tar archive ({exc})",
                                       code="corrupt_file") from None
        found = [p.parent for p in dest.rglob("saved_model.pb*")]
        if len(found) != 1:
            raise ModelIntakeError("the archive must hold exactly one SavedModel",
                                   code="corrupt_file")
        # Variables and asset-backed tables are read into memory while loading, so the
        # extracted copy is not needed afterwards.
        return _load_savedmodel_dir(found[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_savedmodel_dir(path: Path) -> keras.Model:
    try:
        try:
            # `model.export()` writes a "serve" endpoint; older exports only a signature.
            layer = keras.layers.TFSMLayer(str(path), call_endpoint="serve")
        except ValueError:
            layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
        fn = layer.call_endpoint_fn
        signature = getattr(fn, "input_signature", None)
        if signature is None:
            args, kwargs = fn.structured_input_signature
            signature = list(args) + [kwargs[k] for k in sorted(kwargs)]
        specs = tf.nest.flatten(signature)
        if len(specs) != 1:
            raise ValueError(f"the serving signature takes {len(specs)} inputs; one is supported")
        spec = specs[0]
        inp = keras.Input(shape=tuple(spec.shape[1:]), dtype=spec.dtype.name,
                          name=(spec.name or "input"))
        out = layer(inp)
        if isinstance(out, Mapping):
            out = [out[k] for k in sorted(out)]
            out = out[0] if len(out) == 1 else out
        return keras.Model(inp, out, name=path.name or "savedmodel")
    except ModelIntakeError:
        raise
    except Exception as exc:
        raise ModelIntakeError(f"the SavedModel could not be loaded: {type(exc).__name__}: "
                               f"{_short(exc)}", code="corrupt_file") from None


# ====================================================================== spec building


def _shape(tensor: Any) -> list[int | None] | None:
    shape = getattr(tensor, "shape", None)
    if shape is None:
        return None
    try:
        return [None if d is None else int(d) for d in tuple(shape)]
    except (TypeError, ValueError):
        return None


def _layer_output_shape(layer: Any) -> list | None:
    try:
        out = layer.output
    except Exception:  # shared layers have no single output; unbuilt layers none at all
        return None
    if isinstance(out, (list, tuple)):
        return [_shape(t) for t in out]
    if isinstance(out, Mapping):
        return [_shape(out[k]) for k in sorted(out)]
    return _shape(out)


def _count_params(layer: Any) -> int:
    try:
        return int(layer.count_params())
    except Exception:  # an unbuilt layer has no weights yet
        return 0


_PASS_THROUGH = ("Reshape", "Flatten", "Dropout", "Identity", "Permute", "Activity",
                 "GaussianNoise", "GaussianDropout", "AlphaDropout", "SpatialDropout")


def _producer(model: Any, tensor: Any) -> Any:
    """The layer of ``model`` whose output is ``tensor`` (None if not found)."""
    for layer in getattr(model, "layers", []):
        try:
            out = layer.output
        except Exception:  # shared layers have several outputs
            continue
        outs = out if isinstance(out, (list, tuple)) else [out]
        if any(o is tensor for o in outs):
            return layer
    return None


def _activation_of(model: Any, tensor: Any, hops: int = 0) -> str:
    layer = _producer(model, tensor)
    if layer is None or hops > 8:
        return "unknown"
    if isinstance(layer, keras.Model):
        outs = layer.outputs if len(layer.outputs) else []
        return _activation_of(layer, outs[0], hops + 1) if len(outs) == 1 else "unknown"
    fn = getattr(layer, "activation", None)
    if fn is not None:
        name = getattr(fn, "__name__", None) or type(fn).__name__
        return str(name).lower()
    cls = type(layer).__name__
    if cls in ("Softmax", "ReLU", "LeakyReLU", "ELU", "PReLU"):
        return cls.lower()
    if cls.startswith(_PASS_THROUGH):
        try:
            return _activation_of(model, layer.input, hops + 1)
        except Exception:  # a layer with several inputs
            return "unknown"
    if isinstance(layer, keras.layers.Layer) and not hasattr(layer, "activation"):
        return "linear"
    return "unknown"


def _task(activation: str, width: int | None) -> str:
    if activation in ("softmax", "log_softmax"):
        return "multiclass"
    if activation in ("sigmoid", "hard_sigmoid"):
        return "binary" if width == 1 else "multilabel"
    if activation == "unknown":
        return "unknown"
    return "regression"


def _input_kind(shape: list[int | None]) -> str:
    if len(shape) == 3 and shape[-1] is not None and 1 <= shape[-1] <= 4:
        return "image"
    if len(shape) == 2:
        return "sequence"
    if len(shape) == 1:
        return "tabular"
    return "other"


def _build_spec(model: keras.Model, *, fmt: str, sha256: str, file_size: int,
                keras_version: str | None) -> ModelSpec:
    inputs = []
    for i, t in enumerate(model.inputs):
        producer = _producer(model, t)
        name = producer.name if producer is not None else str(getattr(t, "name", f"input_{i}"))
        inputs.append(InputSpec(name=name, shape=(_shape(t) or [])[1:],
                                dtype=str(getattr(t, "dtype", "float32"))))
    output_names = list(getattr(model, "output_names", None) or [])
    heads = []
    is_tfsm = any(isinstance(la, _classes("tfsm_layer")) for la in model.layers)
    for i, t in enumerate(model.outputs):
        shape = (_shape(t) or [])[1:]
        width = shape[-1] if shape else 1
        activation = "unknown" if is_tfsm else _activation_of(model, t)
        producer = _producer(model, t)
        if producer is not None:
            name = producer.name
        else:
            name = output_names[i] if i < len(output_names) else str(getattr(t, "name", i))
        heads.append(HeadSpec(name=name, shape=shape, activation=activation,
                              task=_task(activation, width), width=width))
    layers = [LayerSummary(name=layer_path(chain), class_name=type(chain[-1]).__name__,
                           output_shape=_layer_output_shape(chain[-1]),
                           params=_count_params(chain[-1]), depth=len(chain) - 1)
              for chain in layer_chains(model)]
    candidates = _gradcam_layer_names(model)
    input_shape = inputs[0].shape if inputs else []
    text = _text_info(model) if len(inputs) == 1 else None
    kind = "text" if text is not None else _input_kind(input_shape)
    unsupported = _unsupported(model, inputs, heads, kind, text)
    if kind in ("text", "sequence") and not unsupported:
        # Grad-CAM over time: the Conv1D / recurrent layers its layer option accepts
        from explain.attributions.sequences import time_layer_names
        from explain.attributions.tokens import token_model

        tm = token_model(model) if kind == "text" else None
        candidates = time_layer_names(model if tm is None else tm.ids_model)
    return ModelSpec(
        format=fmt, sha256=sha256, file_size=int(file_size), model_name=str(getattr(model, "xaudit_display_name", model.name)),
        keras_version=keras_version, inputs=inputs, input_shape=input_shape,
        input_kind=kind, outputs=heads,
        task=heads[0].task if heads else "unknown",
        final_activation=heads[0].activation if heads else "unknown",
        n_params=_count_params(model), layers=layers, gradcam_layers=candidates,
        gradcam_default=candidates[-1] if candidates else None,
        text=text, unsupported=unsupported,
    )


def _text_info(model: keras.Model) -> dict[str, Any] | None:
    """What makes ``model`` a text model, or None: the ``Embedding`` that its (single)
    input feeds, possibly through a ``TextVectorization`` layer taking raw strings."""
    from explain.attributions.tokens import text_layers

    vectorizer, emb = text_layers(model)
    if emb is None and vectorizer is None:
        return None
    first = model.inputs[0]
    if emb is None:
        # strings into a vectorizer that does not feed an Embedding: text, but unsupported
        return {"embedding_layer": None, "vocab_size": int(vectorizer.vocabulary_size()),
                "padding_id": 0, "mask_zero": False, "string_input": True,
                "vectorizer_layer": vectorizer.name, "sequence_length":
                    getattr(vectorizer, "_output_sequence_length", None)}
    length = None
    if vectorizer is not None:
        length = getattr(vectorizer, "_output_sequence_length", None)
        vocab = int(vectorizer.vocabulary_size())
    else:
        shape = _shape(first) or []
        length = shape[1] if len(shape) == 2 else None
        vocab = int(emb.input_dim)
    return {
        "embedding_layer": emb.name,
        "vocab_size": vocab,
        "embedding_dim": int(emb.output_dim),
        "padding_id": 0,
        "mask_zero": bool(getattr(emb, "mask_zero", False)),
        "string_input": vectorizer is not None,
        "vectorizer_layer": None if vectorizer is None else vectorizer.name,
        "sequence_length": None if length is None else int(length),
    }


def _unsupported(model: Any, inputs: list[InputSpec], heads: list[HeadSpec], kind: str,
                 text: dict[str, Any] | None) -> str | None:
    """Why xaudit cannot audit this model, or None."""
    if len(inputs) != 1:
        return f"the model has {len(inputs)} inputs; xaudit audits models with one input"
    if not heads:
        return "the model has no output"
    head = heads[0]
    if head.task == "multilabel":
        return (f"the output {head.name!r} is a multilabel head (sigmoid over "
                f"{head.width} units); xaudit audits softmax or single-sigmoid classifiers "
                "and regressors")
    if head.task == "unknown":
        return f"the activation of the output {head.name!r} cannot be read"
    if kind == "other":
        return f"inputs of shape {tuple(inputs[0].shape)} are neither image, text, " \
               "sequence nor tabular"
    if text is not None:
        if text["embedding_layer"] is None:
            return ("the TextVectorization layer does not feed an Embedding layer; xaudit "
                    "attributes text models through their Embedding")
        if text["string_input"] and text.get("sequence_length") is None:
            return ("the TextVectorization layer has no output_sequence_length; xaudit "
                    "needs a fixed number of tokens per text")
        if text.get("sequence_length") is None:
            return "the token input has no fixed length; build the model with Input((T,))"
        try:
            from explain.attributions.tokens import token_model

            token_model(model)
        except ValueError as exc:
            return str(exc)
    elif inputs[0].dtype == "string":
        return "the model takes strings but has no TextVectorization layer on its input"
    if kind == "sequence" and any(d is None for d in inputs[0].shape):
        return ("the sequence input has no fixed length and width; build the model with "
                "Input((T, F))")
    return None


def _gradcam_layer_names(model: keras.Model) -> list[str]:
    """Grad-CAM candidates as the Grad-CAM ``layer`` option names them."""
    from explain.attributions.grad_cam import gradcam_candidate_layers

    try:
        return list(gradcam_candidate_layers(model))
    except TypeError:  # not a graph model (cannot happen for a loaded Keras model)
        return []
