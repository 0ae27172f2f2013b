"""Data in: user data files, validation against a model, and the bundled data sets.

Everything a user hands xaudit as data becomes a :class:`Dataset`: float32 inputs ``x``,
optional labels ``y``, optional feature and class names, and a SHA-256 that identifies
the values. User files (``.npz``, ``.npy``, ``.csv``) are read by :func:`load_data_file`
and checked against a model by :func:`validate_for_model`; every problem raises
:class:`explain.errors.DataError` with a stable code (``not_found``, ``bad_format``,
``empty``, ``pickled_data``, ``non_numeric``, ``bad_shape``, ``bad_dtype``,
``non_finite``, ``bad_labels``).

The bundled sets (:data:`BUNDLED`, :func:`load_bundled`) are built on the spot, with
nothing downloaded:

``breast_cancer``, ``wine``
    scikit-learn's bundled tabular sets (binary and 3-class).
``digits``
    scikit-learn's 8×8 handwritten digits, served as **images** of shape (8, 8, 1) scaled
    to [0, 1], so the image path (CNN, Grad-CAM) has a small real data set.
``shapes``
    Synthetic 32×32 RGB images of circles, squares and triangles. With ``shortcut=True``
    a small bright watermark sits in the corner that belongs to the image's class (class
    ``k`` → corner ``k``) for a fraction ``rate`` of the images: a planted shortcut with a
    known location. Its twin, ``shortcut=False``, has the very same images and a
    watermark in a corner drawn independently of the label.
``tabular_leaky``
    A synthetic binary classification table whose feature ``account_flag`` equals the
    label for a fraction ``rate`` of the rows (``leak=True``), or is independent of it
    (``leak=False``, same column, same other features).

``lending``
    A synthetic loan-approval table whose labels penalise group ``B`` of the sensitive
    attribute ``group`` (not a model input), which leaks through the input
    ``district_index``; its clean twin (``bias=False``) has unbiased labels and a district
    unrelated to the group. Sensitive attributes ride along in :attr:`Dataset.sensitive`.

The synthetic sets are the ground truth an audit is judged on: ``meta`` records
where the shortcut is, so a test can check that the audit finds it.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from explain.errors import DataError

__all__ = [
    "BUNDLED",
    "KINDS",
    "MAX_NAME_LENGTH",
    "SHAPE_CORNERS",
    "Dataset",
    "load_any",
    "load_bundled",
    "load_data_file",
    "parse_sensitive",
    "select_sensitive",
    "sensitive_to_load",
    "validate_for_model",
]

KINDS = ("tabular", "image", "sequence", "text")

#: Feature, class and data set names longer than this are cut (and end in "…"). Names
#: are otherwise kept verbatim, markup included: escaping is the report's job, and
#: changing a user's column name here would make findings impossible to match up.
MAX_NAME_LENGTH = 200

_CLASSIFICATION_TASKS = ("binary", "multiclass")


# --------------------------------------------------------------------------- the data set


@dataclass
class Dataset:
    """Inputs, optional labels and their names, ready for a model.

    Attributes
    ----------
    x
        float32 array ``(N, ...)``: ``(N, F)`` tabular, ``(N, H, W, C)`` images,
        ``(N, T, F)`` sequences.
    y
        Labels ``(N,)`` (int class indices or float regression targets), ``(N, K)`` for
        one-hot, multilabel or multi-output regression, or ``None``.
    feature_names
        One name per column of a tabular ``x``, or ``None``.
    class_names
        One name per class, or ``None``.
    kind
        ``"tabular"``, ``"image"`` or ``"sequence"``.
    name
        A display name.
    meta
        JSON-safe facts about how the set was made (planted shortcuts, sources).
    sensitive
        Sensitive attributes of the rows, kept **out** of ``x`` (the model never sees
        them): attribute name → ``(N,)`` array of strings or numbers. The audit groups
        rows by them (:mod:`explain.fairness`). ``None`` when the data names none.
    sha256
        Hex SHA-256 of the canonical bytes of ``x`` and ``y`` (computed, not passed):
        ``x`` as little-endian float32 in C order with its row count, ``y`` as
        little-endian int64 or float64. It identifies the values, not the per-row
        layout, so a grayscale ``(N, H, W)`` set keeps its hash when a channel axis is
        added.
    """

    x: np.ndarray
    y: np.ndarray | None = None
    feature_names: list[str] | None = None
    class_names: list[str] | None = None
    kind: str = "tabular"
    name: str = "data"
    meta: dict[str, Any] = field(default_factory=dict)
    sensitive: dict[str, np.ndarray] | None = None
    #: Text data: the token of each id (index = token id, 0 padding), or None.
    vocabulary: list[str] | None = None
    #: Raw texts ``(N,)`` not yet tokenized (``x`` is then a placeholder ``(N, 1)``);
    #: :func:`tokenize_for_model` turns them into token ids.
    texts: np.ndarray | None = None
    sha256: str = field(init=False, default="")

    def __post_init__(self) -> None:
        x = np.asarray(self.x)
        if not _is_real_numeric(x):
            raise DataError(f"inputs must be real numbers, got dtype {x.dtype}",
                            code="bad_dtype")
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        if self.y is not None:
            y = np.asarray(self.y)
            if not _is_real_numeric(y):
                raise DataError(f"labels must be numbers, got dtype {y.dtype}",
                                code="bad_labels")
            if np.issubdtype(y.dtype, np.bool_) or np.issubdtype(y.dtype, np.integer):
                y = y.astype(np.int64)
            else:
                y = y.astype(np.float32)
            self.y = y
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        self.name = _clean_name(self.name)
        if self.feature_names is not None:
            self.feature_names = [_clean_name(n) for n in self.feature_names]
        if self.class_names is not None:
            self.class_names = [_clean_name(n) for n in self.class_names]
        if self.sensitive is not None:
            self.sensitive = _check_sensitive(self.sensitive, self.x.shape[0], self.name)
        self.sha256 = _hash_arrays(self.x, self.y)
        if self.texts is not None:
            digest = hashlib.sha256(self.sha256.encode())
            for text in self.texts.tolist():
                digest.update(str(text).encode("utf-8") + b"\0")
            self.sha256 = digest.hexdigest()

    @property
    def n(self) -> int:
        """Number of rows."""
        return int(self.x.shape[0])

    def __len__(self) -> int:
        return self.n

    def subset(self, index: np.ndarray | Sequence[int]) -> Dataset:
        """The rows at ``index`` (names, kind and meta kept; per-row meta lists sliced)."""
        index = np.asarray(index)
        meta = dict(self.meta)
        per_row = meta.get("per_row") or {}
        if per_row:
            meta["per_row"] = {k: [v[i] for i in index.tolist()] for k, v in per_row.items()}
        return Dataset(
            x=self.x[index],
            y=None if self.y is None else self.y[index],
            feature_names=self.feature_names,
            class_names=self.class_names,
            kind=self.kind,
            name=self.name,
            meta=meta,
            sensitive=None if self.sensitive is None else
            {k: v[index] for k, v in self.sensitive.items()},
            vocabulary=self.vocabulary,
            texts=None if self.texts is None else self.texts[index],
        )

    def to_npz(self, path: str | os.PathLike) -> Path:
        """Write the set as an ``.npz`` that :func:`load_data_file` reads back.

        Names are stored as unicode string arrays and ``meta`` as a JSON string, so the
        file loads with ``allow_pickle=False``.
        """
        path = Path(path)
        arrays: dict[str, np.ndarray] = {"x": self.x}
        if self.y is not None:
            arrays["y"] = self.y
        if self.feature_names is not None:
            arrays["feature_names"] = np.array(self.feature_names, dtype=str)
        if self.class_names is not None:
            arrays["class_names"] = np.array(self.class_names, dtype=str)
        arrays["kind"] = np.array(self.kind)
        arrays["name"] = np.array(self.name)
        arrays["meta"] = np.array(json.dumps(self.meta, sort_keys=True))
        if self.vocabulary is not None:
            arrays["vocabulary"] = np.array(self.vocabulary, dtype=str)
        if self.sensitive:
            names = list(self.sensitive)
            cols = [self.sensitive[k] for k in names]
            if all(c.dtype.kind in "iuf" for c in cols):
                table = np.stack([c.astype(np.float64) for c in cols], axis=1)
            else:  # one string table; numbers come back as numbers (see _sensitive_column)
                table = np.stack([c.astype(str) for c in cols], axis=1)
            arrays["sensitive"] = table
            arrays["sensitive_names"] = np.array(names, dtype=str)
        path.parent.mkdir(parents=True, exist_ok=True)
        # np.savez appends ".npz" to a path without it; write through a file object so
        # the file lands exactly where the caller asked.
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        return path

    def to_csv(self, path: str | os.PathLike, label: str = "label") -> Path:
        """Write a tabular set as a ``.csv`` that :func:`load_data_file` reads back with
        ``label=label`` and ``sensitive=`` its sensitive columns: one column per feature,
        then the sensitive attributes, then the label (when the set has one-dimensional
        labels). Values are written with 9 significant digits (float32 round-trips)."""
        if self.kind != "tabular" or self.x.ndim != 2:
            raise DataError(f"only a tabular set (N, F) can be written as CSV; this one is "
                            f"{self.kind} {tuple(self.x.shape)}", code="bad_format")
        if self.y is not None and self.y.ndim != 1:
            raise DataError("CSV holds one label column; these labels are "
                            f"{tuple(self.y.shape)}", code="bad_format")
        names = self.feature_names or [f"x{i}" for i in range(self.x.shape[1])]
        sensitive = dict(self.sensitive or {})
        header = [*names, *sensitive, *([label] if self.y is not None else [])]
        if len(set(header)) != len(header):
            raise DataError(f"column names repeat: {header}", code="bad_format")

        def cell(v) -> str:
            return f"{v:.9g}" if isinstance(v, (float, np.floating)) else str(v)

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            for i in range(self.n):
                row = [cell(v) for v in self.x[i].tolist()]
                row += [cell(col[i].item() if hasattr(col[i], "item") else col[i])
                        for col in sensitive.values()]
                if self.y is not None:
                    row.append(cell(self.y[i].item()))
                w.writerow(row)
        return path


def _is_real_numeric(a: np.ndarray) -> bool:
    return a.dtype != object and (np.issubdtype(a.dtype, np.bool_)
                                  or np.issubdtype(a.dtype, np.integer)
                                  or np.issubdtype(a.dtype, np.floating))


def _hash_arrays(x: np.ndarray, y: np.ndarray | None) -> str:
    h = hashlib.sha256()
    h.update(b"xaudit-dataset-v1\x00x\x00")
    h.update(str(int(x.shape[0])).encode())
    h.update(b"\x00")
    h.update(np.ascontiguousarray(x, dtype="<f4").tobytes())
    if y is None:
        h.update(b"\x00y:none")
    else:
        tag, dt = (b"int", "<i8") if np.issubdtype(y.dtype, np.integer) else (b"float", "<f8")
        h.update(b"\x00y:" + tag + b"\x00" + str(y.shape).encode() + b"\x00")
        h.update(np.ascontiguousarray(y, dtype=dt).tobytes())
    return h.hexdigest()


def _clean_name(name: Any) -> str:
    s = str(name)
    if len(s) > MAX_NAME_LENGTH:
        s = s[: MAX_NAME_LENGTH - 1] + "…"
    return s


#: At most this many sensitive attributes per data set (each gets its own report table).
MAX_SENSITIVE_ATTRIBUTES = 8


def _sensitive_column(values: np.ndarray | Sequence[Any], what: str) -> np.ndarray:
    """One attribute as a 1-D array: numbers as float64 (ints kept as int64), otherwise
    strings. Strings that all read as numbers become numbers, so an ``age`` column read
    from text is binned like one read as numbers."""
    arr = np.asarray(values)
    if arr.dtype == object:
        arr = np.asarray([str(v) for v in arr.reshape(-1)]).reshape(arr.shape)
    if arr.ndim != 1:
        raise DataError(f"sensitive attribute {what!r} must be one value per row, got shape "
                        f"{arr.shape}", code="bad_sensitive")
    if arr.dtype.kind == "S":
        arr = np.char.decode(arr, "utf-8", "replace")
    if arr.dtype.kind == "U":
        stripped = np.char.strip(arr)
        empty = stripped == ""
        if empty.any():
            raise DataError(f"sensitive attribute {what!r} is missing in row "
                            f"{int(np.argmax(empty))}; every row needs a value",
                            code="bad_sensitive")
        parsed = [_parse_float(str(v)) for v in stripped]
        if all(v is not None for v in parsed):
            arr = np.asarray(parsed, dtype=np.float64)
        else:
            return stripped.astype(str)
    if arr.dtype.kind == "b":
        return arr.astype(np.int64)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind != "f":
        raise DataError(f"sensitive attribute {what!r} must hold strings or numbers, got "
                        f"dtype {arr.dtype}", code="bad_sensitive")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise DataError(f"sensitive attribute {what!r} holds {arr[bad][0]} in row "
                        f"{int(np.argmax(bad))}; every row needs a finite value",
                        code="bad_sensitive")
    if np.all(arr == np.round(arr)) and np.abs(arr).max(initial=0) < 2**53:
        return arr.astype(np.int64)
    return arr


def _check_sensitive(sensitive: Any, n: int, source: str) -> dict[str, np.ndarray]:
    if not isinstance(sensitive, dict):
        raise DataError("sensitive attributes must map names to one value per row",
                        code="bad_sensitive")
    if not sensitive:
        return {}
    if len(sensitive) > MAX_SENSITIVE_ATTRIBUTES:
        raise DataError(f"{source} names {len(sensitive)} sensitive attributes; at most "
                        f"{MAX_SENSITIVE_ATTRIBUTES} are audited", code="bad_sensitive")
    out: dict[str, np.ndarray] = {}
    for name, values in sensitive.items():
        key = _clean_name(name)
        col = _sensitive_column(values, key)
        if col.shape[0] != n:
            raise DataError(f"sensitive attribute {key!r} has {col.shape[0]} values but "
                            f"{source} has {n} rows", code="bad_sensitive")
        out[key] = col
    return out


def _infer_kind(x: np.ndarray) -> str:
    # (N, H, W) is ambiguous (grayscale images or sequences); square frames are far more
    # often images. validate_for_model replaces the guess with what the model says.
    if x.ndim == 2:
        return "tabular"
    if x.ndim == 4 or (x.ndim == 3 and x.shape[1] == x.shape[2]):
        return "image"
    return "sequence"


# --------------------------------------------------------------------------- user files


def load_data_file(path: str | os.PathLike, label: str | None = None,
                   sensitive: Sequence[str] | str | None = None,
                   environ: Mapping[str, str] | None = None) -> Dataset:
    """Read a user's data file.

    Parameters
    ----------
    path
        ``.npz`` (array ``x``; optional ``y``, ``feature_names``, ``class_names``),
        ``.npy`` (inputs only) or ``.csv`` (a header row of feature names, then one
        numeric row per example).
    label
        For ``.csv``: the name of the label column (taken out of the features). Numeric
        labels are kept as numbers; text labels become class indices with the sorted
        distinct texts as class names. Ignored for ``.npz``, whose labels are ``y``.
    sensitive
        Sensitive attributes (a list of names or one comma-separated string). For
        ``.csv``: columns taken **out** of the features (the model never sees them) and
        kept as :attr:`Dataset.sensitive`, as text or numbers. For ``.npz``: which of
        the file's attributes to keep (array ``sensitive`` of shape ``(N,)`` or
        ``(N, k)``, strings or numbers, named by ``sensitive_names`` ``(k,)``); an
        ``.npz`` with a ``sensitive`` array keeps all of them when this is None.
    environ
        Where the data size caps (``XAUDIT_MAX_DATA_BYTES``, ``XAUDIT_MAX_DATA_RATIO``)
        are read (default: the process environment; the service passes its config).

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        ``not_found`` (no such file), ``bad_format`` (unknown extension, unreadable or
        ragged file), ``empty`` (no rows), ``pickled_data`` (an ``.npz`` holding object
        arrays, which would need pickle to load), ``non_numeric`` (a column that is not
        numbers; the column and first offending row are named), ``bad_labels`` (the
        label column is missing or labels do not match the rows), ``bad_sensitive`` (a
        sensitive attribute is missing, has missing values or does not line up with
        the rows).
    """
    wanted = parse_sensitive(sensitive)
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file not found: {p}", code="not_found", status=404)
    if p.is_dir():
        raise DataError(f"{p} is a directory, not a data file", code="bad_format")
    ext = p.suffix.lower()
    if ext in (".npz", ".npy"):
        # Declared sizes from the headers, before np.load allocates what they declare.
        from explain.arrayguard import check_array_file

        check_array_file(p, environ=environ)
    if ext == ".npz":
        return _select_sensitive(_load_npz(p), wanted, p.name)
    if ext == ".npy":
        if wanted:
            raise DataError(f"{p.name} is a single array with no room for sensitive "
                            "attributes; use an .npz (arrays x, y, sensitive, "
                            "sensitive_names) or a .csv", code="bad_sensitive")
        return _load_npy(p)
    if ext == ".csv":
        return _load_csv(p, label, wanted or [])
    raise DataError(
        f"unsupported data file type {ext or '(no extension)'!r} for {p.name}; "
        "use .npz (arrays x and optional y), .npy or .csv (header row + numeric rows)",
        code="bad_format",
    )


def _numeric_array(arr: np.ndarray, what: str, source: str) -> np.ndarray:
    if arr.dtype == object:
        raise DataError(f"{what} in {source} is an object array", code="pickled_data")
    if np.issubdtype(arr.dtype, np.bool_) or np.issubdtype(arr.dtype, np.integer) or \
            np.issubdtype(arr.dtype, np.floating):
        return arr
    raise DataError(
        f"{what} in {source} must be numeric, got dtype {arr.dtype}", code="bad_dtype"
    )


def _read_npz_member(npz: Any, key: str, source: str) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
            raise DataError(
                f"array {key!r} in {source} holds Python objects, which would need pickle "
                "to load; xaudit never unpickles user data. Save numeric arrays (and names "
                "as string arrays, e.g. np.array(names, dtype=str)) instead",
                code="pickled_data",
            ) from None
        raise DataError(f"array {key!r} in {source} is unreadable: {exc}",
                        code="bad_format") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"array {key!r} in {source} is unreadable: {exc}",
                        code="bad_format") from None


def _string_list(arr: np.ndarray, what: str, source: str) -> list[str]:
    if arr.dtype.kind not in "US":
        raise DataError(f"{what} in {source} must be a string array, got dtype {arr.dtype}",
                        code="bad_format")
    flat = arr.reshape(-1)
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]


def _load_npz(p: Path) -> Dataset:
    source = p.name
    try:
        npz = np.load(p, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{source} is not a readable .npz file: {exc}",
                        code="bad_format") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{source} holds a single array, not an .npz archive; rename it "
                        ".npy or save with np.savez(path, x=..., y=...)", code="bad_format")
    with npz:
        keys = set(npz.files)
        if "x" not in keys:
            raise DataError(
                f"{source} has no array named 'x' (found: {', '.join(sorted(keys)) or 'none'});"
                " save with np.savez(path, x=inputs, y=labels)",
                code="bad_format",
            )
        raw_x = _read_npz_member(npz, "x", source)
        texts = None
        if raw_x.dtype.kind in "US":
            if raw_x.ndim != 1:
                raise DataError(f"x in {source} holds strings of shape {raw_x.shape}; "
                                "inputs must be numbers, or one text per row (shape (N,))",
                                code="bad_dtype")
            texts = raw_x.astype(str)
            x = np.zeros((len(texts), 1), np.float32)
        else:
            x = _numeric_array(raw_x, "x", source)
        vocabulary = None
        if "vocabulary" in keys:
            vocabulary = _string_list(_read_npz_member(npz, "vocabulary", source),
                                      "vocabulary", source)
        y = None
        class_names = None
        if "y" in keys:
            y = _read_npz_member(npz, "y", source)
            if y.dtype.kind in "US":
                y, class_names = _encode_text_labels(_string_list(y, "y", source))
            else:
                y = _numeric_array(y, "y", source)
        feature_names = None
        if "feature_names" in keys:
            feature_names = _string_list(
                _read_npz_member(npz, "feature_names", source), "feature_names", source)
        if "class_names" in keys:
            class_names = _string_list(
                _read_npz_member(npz, "class_names", source), "class_names", source)
        kind = None
        if "kind" in keys:
            kind = _string_list(_read_npz_member(npz, "kind", source), "kind", source)[0]
            if kind not in KINDS:
                kind = None
        name = p.stem
        if "name" in keys:
            name = _string_list(_read_npz_member(npz, "name", source), "name", source)[0]
        meta: dict[str, Any] = {}
        if "meta" in keys:
            raw = _string_list(_read_npz_member(npz, "meta", source), "meta", source)[0]
            try:
                meta = json.loads(raw)
            except json.JSONDecodeError:
                meta = {}
            if not isinstance(meta, dict):
                meta = {}
        sensitive = None
        if "sensitive" in keys:
            sensitive = _npz_sensitive(npz, keys, source)
    per_row = meta.get("per_row")
    if per_row is not None and not (
            isinstance(per_row, dict)
            and all(isinstance(v, list) and len(v) == x.shape[0] for v in per_row.values())):
        # Per-row facts must line up with the rows, or slicing the set would misattribute
        # them; a file that breaks that keeps its data and loses the facts.
        meta.pop("per_row")
    ds = _assemble(x, y, feature_names, class_names, kind, name, meta, source, sensitive)
    if texts is not None or vocabulary is not None:
        if texts is not None and len(texts) == 0:
            raise DataError(f"{source} has no rows", code="empty")
        ds = dataclasses.replace(ds, kind="text", vocabulary=vocabulary, texts=texts)
    return ds


def tokenize(texts: Sequence[str], vocabulary: Sequence[str], length: int) -> np.ndarray:
    """Token ids ``(N, length)`` of whitespace-split texts: id = index in ``vocabulary``,
    unknown words the id of ``[UNK]`` (or 1), cut or padded with 0 to ``length``."""
    index = {w: i for i, w in enumerate(vocabulary) if w}
    unk = index.get("[UNK]", 1)
    out = np.zeros((len(texts), length), np.int64)
    for r, text in enumerate(texts):
        words = str(text).split()[:length]
        out[r, : len(words)] = [index.get(w, index.get(w.lower(), unk)) for w in words]
    return out


def tokenize_for_model(dataset: Dataset, model: Any) -> Dataset:
    """``dataset`` with its raw texts turned into the token ids ``model`` takes: through
    the model's ``TextVectorization`` layer, or the data's ``vocabulary`` (whitespace
    split). Data without texts comes back as is.

    Raises
    ------
    DataError
        ``bad_data`` when the model is not a text model, or takes ids and the data has
        no vocabulary to map words to ids.
    """
    if dataset.texts is None:
        return dataset
    from explain.attributions.tokens import token_model

    tm = token_model(model)
    if tm is None:
        raise DataError("the data holds texts but the model is not a text model",
                        code="bad_data")
    vocab = tm.vocabulary()
    if vocab is not None:
        ids = tm.to_ids(dataset.texts)
    elif dataset.vocabulary is not None:
        vocab = list(dataset.vocabulary)
        ids = tokenize(dataset.texts, vocab, tm.length)
        if ids.max() >= tm.vocab_size:
            raise DataError(f"the data's vocabulary has {len(vocab)} tokens but the model's "
                            f"Embedding takes {tm.vocab_size}", code="bad_data")
    else:
        raise DataError("the data holds texts but the model takes token ids: add the "
                        "vocabulary (npz key 'vocabulary', index = token id)",
                        code="bad_data")
    return dataclasses.replace(dataset, x=ids.astype(np.float32), texts=None,
                               vocabulary=vocab, kind="text")


def parse_sensitive(sensitive: Sequence[str] | str | None) -> list[str]:
    """Attribute names from a list or a comma-separated string (``"sex,age"``)."""
    if sensitive is None:
        return []
    parts = sensitive.split(",") if isinstance(sensitive, str) else list(sensitive)
    names = []
    for part in parts:
        if not isinstance(part, str):
            raise DataError(f"sensitive attribute names must be strings, got {part!r}",
                            code="bad_sensitive")
        name = part.strip()
        if not name:
            continue
        if name in names:
            raise DataError(f"sensitive attribute {name!r} is named twice",
                            code="bad_sensitive")
        names.append(name)
    return names


def _npz_sensitive(npz: Any, keys: set[str], source: str) -> dict[str, np.ndarray]:
    table = _read_npz_member(npz, "sensitive", source)
    if table.dtype == object:
        raise DataError(f"sensitive in {source} is an object array", code="pickled_data")
    if table.ndim == 1:
        table = table[:, None]
    if table.ndim != 2:
        raise DataError(f"sensitive in {source} must have shape (N,) or (N, k), got "
                        f"{table.shape}", code="bad_sensitive")
    k = table.shape[1]
    if "sensitive_names" in keys:
        names = _string_list(_read_npz_member(npz, "sensitive_names", source),
                             "sensitive_names", source)
        if len(names) != k:
            raise DataError(f"{source} names {len(names)} sensitive attributes but the "
                            f"sensitive array has {k} columns", code="bad_sensitive")
    else:
        names = ["sensitive"] if k == 1 else [f"sensitive_{j}" for j in range(k)]
    if len(set(names)) != len(names):
        raise DataError(f"sensitive_names in {source} repeats a name", code="bad_sensitive")
    return {name: table[:, j] for j, name in enumerate(names)}


def sensitive_to_load(path: str | os.PathLike, stored: Sequence[str] | None,
                      requested: Sequence[str] | str | None) -> list[str] | None:
    """The ``sensitive`` argument of :func:`load_data_file` for a stored data file.

    A ``.csv`` must have every sensitive column taken out, or it does not fit the model:
    those named when it was stored (``stored``) and those an audit asks for
    (``requested``). Other formats keep their attributes apart already and load them all
    (None); an audit then picks its own with :func:`select_sensitive`.
    """
    if Path(path).suffix.lower() != ".csv":
        return None
    names = list(stored or [])
    names += [n for n in parse_sensitive(requested) if n not in names]
    return names or None


def select_sensitive(ds: Dataset, sensitive: Sequence[str] | str | None) -> Dataset:
    """``ds`` keeping only the named sensitive attributes (all of them for None).

    Raises
    ------
    DataError
        ``bad_sensitive`` when a named attribute is not in the data.
    """
    return _select_sensitive(ds, parse_sensitive(sensitive), ds.name)


def _select_sensitive(ds: Dataset, wanted: list[str], source: str) -> Dataset:
    if not wanted:
        return ds
    have = ds.sensitive or {}
    missing = [w for w in wanted if w not in have]
    if missing:
        raise DataError(
            f"sensitive attribute(s) {missing} are not in {source} (it has: "
            f"{', '.join(have) or 'none; add arrays sensitive and sensitive_names'})",
            code="bad_sensitive")
    return dataclasses.replace(ds, sensitive={w: have[w] for w in wanted})


def _load_npy(p: Path) -> Dataset:
    try:
        x = np.load(p, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(f"{p.name} holds Python objects, which would need pickle to load;"
                            " save a numeric array instead", code="pickled_data") from None
        raise DataError(f"{p.name} is not a readable .npy file: {exc}",
                        code="bad_format") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{p.name} is not a readable .npy file: {exc}",
                        code="bad_format") from None
    if not isinstance(x, np.ndarray):
        raise DataError(f"{p.name} is not a single .npy array", code="bad_format")
    x = _numeric_array(x, "the array", p.name)
    return _assemble(x, None, None, None, None, p.stem, {}, p.name)


def _assemble(x, y, feature_names, class_names, kind, name, meta, source,
              sensitive=None) -> Dataset:
    if x.ndim < 2:
        raise DataError(
            f"x in {source} must have a row axis and at least one feature axis, "
            f"got shape {x.shape}", code="bad_shape")
    if x.shape[0] == 0:
        raise DataError(f"{source} has no rows", code="empty")
    if 0 in x.shape[1:]:
        raise DataError(f"x in {source} has shape {x.shape}: no features to explain",
                        code="empty")
    if y is not None and y.shape[0] != x.shape[0]:
        raise DataError(
            f"{source} has {x.shape[0]} rows of x but {y.shape[0]} labels in y",
            code="bad_labels")
    if feature_names is not None and x.ndim == 2 and len(feature_names) != x.shape[1]:
        raise DataError(
            f"{source} names {len(feature_names)} features but x has {x.shape[1]} columns",
            code="bad_format")
    if sensitive is not None:
        sensitive = _check_sensitive(sensitive, x.shape[0], source)
    return Dataset(x=x, y=y, feature_names=feature_names, class_names=class_names,
                   kind=kind or _infer_kind(x), name=name, meta=meta, sensitive=sensitive)


def _encode_text_labels(values: list[str]) -> tuple[np.ndarray, list[str]]:
    classes = sorted(set(values))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[v] for v in values], dtype=np.int64), classes


def _parse_float(cell: str) -> float | None:
    s = cell.strip()
    if s == "":
        return math.nan  # a missing value; validation names it as non-finite
    try:
        return float(s)
    except ValueError:
        return None


def _load_csv(p: Path, label: str | None, sensitive: Sequence[str] = ()) -> Dataset:
    source = p.name
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as exc:
        raise DataError(f"{source} is not UTF-8 text: {exc}", code="bad_format") from None
    except csv.Error as exc:
        raise DataError(f"{source} is not a readable CSV file: {exc}",
                        code="bad_format") from None
    rows = [r for r in rows if r and any(c.strip() for c in r)]  # blank lines carry nothing
    if not rows:
        raise DataError(f"{source} is empty", code="empty")
    header, body = rows[0], rows[1:]
    if all(_parse_float(c) is not None and c.strip() for c in header):
        raise DataError(
            f"the first line of {source} looks like data; xaudit reads the first line as "
            "the column names, so add a header row", code="bad_format")
    names = [h.strip() or f"column_{i}" for i, h in enumerate(header)]
    if not body:
        raise DataError(f"{source} has a header but no data rows", code="empty")
    width = len(names)
    for i, row in enumerate(body):
        if len(row) != width:
            raise DataError(
                f"{source}: row {i + 1} (line {i + 2}) has {len(row)} fields, the header has "
                f"{width}", code="bad_format")

    label_col = None
    if label is not None:
        if label not in names:
            shown = ", ".join(repr(n) for n in names[:20]) + (" …" if width > 20 else "")
            raise DataError(f"label column {label!r} is not in {source} (columns: {shown})",
                            code="bad_labels")
        label_col = names.index(label)
    sensitive_cols: dict[str, int] = {}
    for attr in sensitive:
        if attr not in names:
            shown = ", ".join(repr(n) for n in names[:20]) + (" …" if width > 20 else "")
            raise DataError(f"sensitive column {attr!r} is not in {source} (columns: "
                            f"{shown})", code="bad_sensitive")
        if attr == label:
            raise DataError(f"column {attr!r} cannot be both the label and a sensitive "
                            "attribute", code="bad_sensitive")
        sensitive_cols[attr] = names.index(attr)
    skip = set(sensitive_cols.values())
    features = [j for j in range(width) if j != label_col and j not in skip]
    texts = None
    if len(features) == 1 and any(_parse_float(row[features[0]]) is None for row in body):
        # a single column of words besides the label: the texts of a text model
        texts = np.array([row[features[0]] for row in body], dtype=str)
        skip = skip | {features[0]}

    columns: list[np.ndarray] = []
    feature_names: list[str] = []
    for j, col_name in enumerate(names):
        if j == label_col or j in skip:
            continue
        values = np.empty(len(body), dtype=np.float64)
        for i, row in enumerate(body):
            v = _parse_float(row[j])
            if v is None:
                raise DataError(
                    f"column {col_name!r} in {source} is not numeric: row {i + 1} "
                    f"(line {i + 2}) holds {_clip(row[j])!r}. Encode categories as numbers "
                    "or drop the column" + ("" if label else "; if it is the label, pass "
                                            "label=<column> (--label)"),
                    code="non_numeric")
            values[i] = v
        columns.append(values)
        feature_names.append(col_name)
    if texts is not None:
        columns, feature_names = [np.zeros(len(body))], None
    if not columns:
        raise DataError(f"{source} has no feature columns besides the label", code="empty")
    x = np.stack(columns, axis=1)

    y = None
    class_names = None
    if label_col is not None:
        cells = [row[label_col].strip() for row in body]
        parsed = [_parse_float(c) for c in cells]
        if any(v is None for v in parsed):
            y, class_names = _encode_text_labels(cells)
        else:
            yf = np.array(parsed, dtype=np.float64)
            if np.all(np.isfinite(yf)) and np.all(yf == np.round(yf)):
                y = yf.astype(np.int64)
            else:
                y = yf
    kept = {attr: np.array([row[j] for row in body], dtype=str)
            for attr, j in sensitive_cols.items()}
    ds = _assemble(x, y, feature_names, class_names, "tabular", p.stem, {}, source,
                   kept or None)
    if texts is not None:
        ds = dataclasses.replace(ds, kind="text", texts=texts)
    return ds


def _clip(s: str, n: int = 40) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


# --------------------------------------------------------------------------- validation


def _spec_row_shape(spec: Any, data_ndim: int) -> tuple[int | None, ...] | None:
    shape = getattr(spec, "input_shape", None)
    if shape is None:
        return None
    shape = tuple(None if d is None else int(d) for d in shape)
    # ModelSpec.input_shape has no batch axis (a leading None there is a variable
    # sequence length). Other spec-like objects may carry Keras' (None, ...) form; read
    # a leading None as the batch axis only for those, and only when the ranks say so.
    is_model_spec = hasattr(spec, "inputs") and hasattr(spec, "outputs")
    if not is_model_spec and shape and shape[0] is None and len(shape) == data_ndim:
        shape = shape[1:]
    return shape


def _spec_output_width(spec: Any) -> int | None:
    heads = getattr(spec, "outputs", None)
    if heads:
        width = getattr(heads[0], "width", None)
        if width is not None:
            return int(width)
    outs = getattr(spec, "output_shapes", None)
    if not outs:
        return None
    first = tuple(outs[0])
    if first and first[0] is None:
        first = first[1:]
    if not first:
        return 1
    last = first[-1]
    return None if last is None else int(last)


def _fmt_shape(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + \
        ("," if len(shape) == 1 else "") + ")"


def validate_for_model(dataset: Dataset, spec: Any) -> Dataset:
    """Check a data set against a model and return it ready for that model.

    Parameters
    ----------
    dataset
        The data (e.g. from :func:`load_data_file`).
    spec
        A :class:`explain.modelio.ModelSpec`, or anything with its attributes:
        ``input_shape`` (without the batch axis), ``outputs`` (heads with a ``width``),
        ``task`` (``binary``, ``multiclass``, ``multilabel``, ``regression``) and
        ``input_kind``. Missing attributes skip their check.

    Returns
    -------
    Dataset
        The same data, possibly with a channel axis added (``(N, H, W)`` grayscale →
        ``(N, H, W, 1)`` when the model wants one channel), one-hot labels turned into
        class indices, and ``kind`` taken from the model.

    Raises
    ------
    DataError
        ``empty``, ``bad_dtype``, ``bad_shape`` (expected and actual shapes named),
        ``non_finite`` (first offending row and feature named) or ``bad_labels``
        (first offending row named).
    """
    if dataset.texts is not None:
        return _validate_texts_for_model(dataset, spec)
    x = np.asarray(dataset.x)
    if not _is_real_numeric(x):  # a Dataset whose x was replaced after construction
        raise DataError(f"inputs must be real numbers, got dtype {x.dtype}",
                        code="bad_dtype")
    if x.shape[0] == 0:
        raise DataError("the data set has no rows", code="empty")

    want = _spec_row_shape(spec, x.ndim)
    text = getattr(spec, "text", None)
    if isinstance(text, dict) and text.get("sequence_length"):
        # a text model is fed token ids (N, T), also when it takes strings itself
        want = (int(text["sequence_length"]),)
    if want is not None:
        got = x.shape[1:]
        if len(got) + 1 == len(want) and want[-1] == 1 and _dims_match(got, want[:-1]):
            x = x[..., np.newaxis]  # grayscale without a channel axis
            got = x.shape[1:]
        if len(got) != len(want) or not _dims_match(got, want):
            raise DataError(
                f"the model expects inputs of shape {_fmt_shape((None, *want))}, "
                f"got {_fmt_shape(x.shape)}{_label_hint(dataset, got, want)}",
                code="bad_shape")

    x = x.astype(np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        row = int(np.argmax(~finite.reshape(x.shape[0], -1).all(axis=1)))
        pos = np.unravel_index(int(np.argmax(~finite[row])), x.shape[1:])
        value = x[row][pos]
        where = _feature_label(dataset, pos)
        raise DataError(
            f"row {row} holds {value} in {where}; inputs must be finite numbers "
            "(impute or drop missing values first)", code="non_finite")

    y = dataset.y
    task = getattr(spec, "task", None)
    if y is not None and task is not None:
        y = _validate_labels(np.asarray(y), task, _spec_output_width(spec), x.shape[0])

    kind = getattr(spec, "input_kind", None)
    kind = kind if kind in KINDS else dataset.kind
    return dataclasses.replace(dataset, x=x, y=y, kind=kind)


#: Most rows of a background sample stored with a model. A background is a reference
#: sample (SHAP draws at most a few dozen rows of it per request), not a data set.
MAX_BACKGROUND_ROWS = 1000


def load_background(path: str | os.PathLike, spec: Any,
                    max_rows: int = MAX_BACKGROUND_ROWS,
                    environ: Mapping[str, str] | None = None) -> Dataset:
    """Read a background sample for a model: rows of its inputs, nothing else.

    The file is read as :func:`load_data_file` reads a data set (``.npz``, ``.npy``,
    ``.csv`` with a header; no pickle, declared sizes checked first), then held to the
    model strictly: every row shaped like the model's input, finite, at most
    ``max_rows`` rows. Labels in the file are dropped (a background is inputs only).

    Parameters
    ----------
    path
        The file.
    spec
        The model's :class:`explain.modelio.ModelSpec` (or an object with its attributes).
    max_rows
        Most rows accepted.
    environ
        Where the data size caps are read (see :func:`load_data_file`).

    Returns
    -------
    Dataset
        ``x`` float32 ``(N, ...)`` ready for the model, ``y`` None.

    Raises
    ------
    DataError
        The data file codes of :func:`load_data_file` and :func:`validate_for_model`
        (``bad_format``, ``pickled_data``, ``empty``, ``bad_shape``, ``non_finite``), and
        ``too_many_rows`` or ``bad_data`` (a text model, which takes no background).
    """
    if getattr(spec, "input_kind", None) == "text":
        raise DataError("text models take no background sample: their SHAP masks tokens "
                        "with the padding id", code="bad_data")
    ds = load_data_file(path, environ=environ)
    if ds.texts is not None:
        raise DataError("a background holds numbers shaped like the model's input, not "
                        "texts", code="bad_data")
    if ds.n > max_rows:
        raise DataError(f"the background has {ds.n} rows; at most {max_rows} are kept "
                        "with a model (a representative sample, e.g. 100 training rows)",
                        code="too_many_rows")
    ds = dataclasses.replace(ds, y=None, sensitive=None)
    try:
        return validate_for_model(ds, spec)
    except DataError as exc:
        if exc.code != "bad_shape":
            raise
        want = _spec_row_shape(spec, ds.x.ndim) or ()
        raise DataError(f"the background rows must have the model's input shape "
                        f"{_fmt_shape((None, *want))}, got {_fmt_shape(ds.x.shape)}; a "
                        "background holds the model's inputs only (no label column)",
                        code="bad_shape") from None


#: Column names that usually hold the label, for the hint of :func:`_label_hint`.
_LABEL_LIKE = ("label", "labels", "target", "y", "class", "outcome", "churn", "default")


def _label_hint(dataset: Dataset, got: Sequence[int], want: Sequence[int | None]) -> str:
    """A table one column wider than the model's input most likely still holds its label."""
    if dataset.y is not None or len(got) != 1 or len(want) != 1 or want[0] is None \
            or got[0] != want[0] + 1:
        return ""
    names = list(dataset.feature_names or [])
    likely = [n for n in names if str(n).strip().lower() in _LABEL_LIKE]
    column = repr(likely[0]) if likely else "<column>"
    return (f": one column more than the model takes. If the file still holds the label "
            f"column, name it: --label {column} on the command line, or the dataset's "
            f"label field ({column}) when you upload it through the API or the web page")


def _validate_texts_for_model(dataset: Dataset, spec: Any) -> Dataset:
    """Raw texts against a model: it must be a text model that can read them (its own
    ``TextVectorization``, or the data's vocabulary); they are tokenized with the model
    (:func:`tokenize_for_model`), so only the labels are checked here."""
    kind = getattr(spec, "input_kind", None)
    if kind is not None and kind != "text":
        raise DataError(f"the data holds texts but the model's input is {kind}",
                        code="bad_data")
    text = getattr(spec, "text", None) or {}
    if kind == "text" and not text.get("string_input") and dataset.vocabulary is None:
        raise DataError("the data holds texts but the model takes token ids: add the "
                        "vocabulary (npz key 'vocabulary', index = token id)",
                        code="bad_data")
    y = dataset.y
    task = getattr(spec, "task", None)
    if y is not None and task is not None:
        y = _validate_labels(np.asarray(y), task, _spec_output_width(spec), dataset.n)
    return dataclasses.replace(dataset, y=y, kind="text")


def _dims_match(got: Sequence[int], want: Sequence[int | None]) -> bool:
    return all(w is None or g == w for g, w in zip(got, want, strict=True))


def _feature_label(dataset: Dataset, pos: tuple[int, ...]) -> str:
    if len(pos) == 1:
        j = int(pos[0])
        if dataset.feature_names is not None and j < len(dataset.feature_names):
            return f"feature {dataset.feature_names[j]!r} (column {j})"
        return f"column {j}"
    return "position " + str(tuple(int(p) for p in pos))


def _validate_labels(y: np.ndarray, task: str, width: int | None, n: int) -> np.ndarray:
    if y.shape[0] != n:
        raise DataError(f"there are {n} rows but {y.shape[0]} labels", code="bad_labels")
    if y.dtype == object or not (np.issubdtype(y.dtype, np.number)
                                 or np.issubdtype(y.dtype, np.bool_)):
        raise DataError(f"labels must be numeric, got dtype {y.dtype}", code="bad_labels")
    yf = y.astype(np.float64)
    bad = ~np.isfinite(yf.reshape(n, -1)).all(axis=1)
    if bad.any():
        raise DataError(f"label of row {int(np.argmax(bad))} is not a finite number",
                        code="bad_labels")

    if task == "regression":
        if width is not None and y.ndim == 2 and y.shape[1] != width:
            raise DataError(f"the model predicts {width} values per row but labels have "
                            f"{y.shape[1]} columns", code="bad_labels")
        return y.astype(np.float32)

    if task == "multilabel":
        if y.ndim != 2 or (width is not None and y.shape[1] != width):
            raise DataError(
                f"multilabel targets must have shape (N, {width if width else 'K'}) of 0/1, "
                f"got {y.shape}", code="bad_labels")
        bad = ~np.isin(yf, (0.0, 1.0)).all(axis=1)
        if bad.any():
            raise DataError(f"row {int(np.argmax(bad))} has a multilabel target that is not "
                            "0/1", code="bad_labels")
        return y.astype(np.int64)

    if task not in _CLASSIFICATION_TASKS:
        return y
    # Classes: a single sigmoid unit means two classes.
    k = None if width is None else (2 if width == 1 else width)
    if y.ndim == 2 and y.shape[1] > 1:
        if k is not None and y.shape[1] != k:
            raise DataError(f"one-hot labels have {y.shape[1]} columns but the model has "
                            f"{k} classes", code="bad_labels")
        not_one_hot = ~(np.isin(yf, (0.0, 1.0)).all(axis=1) & (yf.sum(axis=1) == 1))
        if not_one_hot.any():
            raise DataError(f"row {int(np.argmax(not_one_hot))} of the 2-D labels is not "
                            "one-hot", code="bad_labels")
        return yf.argmax(axis=1).astype(np.int64)
    yf = yf.reshape(n)
    non_int = yf != np.round(yf)
    if non_int.any():
        row = int(np.argmax(non_int))
        raise DataError(f"row {row} has label {yf[row]}; class labels must be integers "
                        f"0..{k - 1 if k else 'K-1'}", code="bad_labels")
    out = (yf < 0) | (yf >= (k if k is not None else np.inf))
    if out.any():
        row = int(np.argmax(out))
        raise DataError(f"row {row} has label {int(yf[row])}; the model has {k} classes, so "
                        f"labels must be in 0..{k - 1}", code="bad_labels")
    return yf.astype(np.int64)


# --------------------------------------------------------------------------- bundled sets


def _sklearn_table(loader_name: str, name: str) -> Dataset:
    from sklearn import datasets as skd

    bunch = getattr(skd, loader_name)()
    return Dataset(
        x=bunch.data.astype(np.float32),
        y=bunch.target.astype(np.int64),
        feature_names=[str(f) for f in bunch.feature_names],
        class_names=[str(c) for c in bunch.target_names],
        kind="tabular",
        name=name,
        meta={"source": f"sklearn.datasets.{loader_name}"},
    )


def _breast_cancer(seed: int = 0) -> Dataset:
    """scikit-learn's Wisconsin breast cancer table: 569 rows, 30 features, 2 classes."""
    return _sklearn_table("load_breast_cancer", "breast_cancer")


def _wine(seed: int = 0) -> Dataset:
    """scikit-learn's wine table: 178 rows, 13 features, 3 classes."""
    return _sklearn_table("load_wine", "wine")


def _digits(seed: int = 0) -> Dataset:
    """scikit-learn's 8×8 digits as images (N, 8, 8, 1) in [0, 1]: 1797 rows, 10 classes."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are 0..16 counts of set pixels in 4×4 blocks of the scanned digit.
    x = (bunch.images / 16.0).astype(np.float32)[..., np.newaxis]
    return Dataset(
        x=x, y=bunch.target.astype(np.int64), feature_names=None,
        class_names=[str(c) for c in bunch.target_names], kind="image", name="digits",
        meta={"source": "sklearn.datasets.load_digits", "scaled": "pixel / 16"},
    )


#: Corner ``k`` holds the watermark for class ``k`` in the shortcut ``shapes`` set; the
#: fourth corner belongs to no class and only receives off-rate marks.
SHAPE_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
SHAPE_CLASSES = ("circle", "square", "triangle")


def _corner_box(corner: int, size: int, mark: int, margin: int) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1) of the watermark, end-exclusive."""
    top = corner in (0, 1)
    left = corner in (0, 2)
    r0 = margin if top else size - margin - mark
    c0 = margin if left else size - margin - mark
    return r0, c0, r0 + mark, c0 + mark


def _shapes(seed: int = 0, shortcut: bool = True, rate: float = 0.95, n: int = 1500,
            size: int = 32, mark: int = 4, noise: float = 0.06) -> Dataset:
    """Synthetic 32×32 RGB circles, squares and triangles with a planted corner watermark.

    The images depend only on ``seed`` (and ``n``, ``size``, ``noise``), so the shortcut
    set and its twin (``shortcut=False``) hold the same shapes. In the shortcut set, a
    ``mark``×``mark`` white patch sits in corner ``k`` (see :data:`SHAPE_CORNERS`) for a
    fraction ``rate`` of class-``k`` images and in one of the other three corners
    otherwise. In the twin, every image gets the same patch in a corner drawn uniformly at
    random, independent of the label, so the two sets differ only in the correlation.
    Shapes stay clear of the corner boxes, so the mark never hides the object.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    if n < 3:
        raise ValueError(f"n must be at least 3, got {n}")
    if size < 24:
        raise ValueError(f"size must be at least 24 pixels, got {size}")
    if not 0 <= mark <= size // 4:
        raise ValueError(f"mark must be between 0 (no watermark) and {size // 4}, got {mark}")
    rng = np.random.default_rng([seed, 0])
    y = rng.permutation(np.arange(n) % len(SHAPE_CLASSES)).astype(np.int64)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    x = np.empty((n, size, size, 3), dtype=np.float32)
    keep_out = 1 + mark + 1  # corner boxes, plus one pixel of air
    for i in range(n):
        # A dark background and a lighter object (colours vary, the polarity does not), kept
        # below white so that only the watermark is white.
        background = rng.uniform(0.0, 0.35, size=3).astype(np.float32)
        colour = rng.uniform(0.45, 0.85, size=3).astype(np.float32)
        half = rng.uniform(5.0, 9.0)
        lo, hi = keep_out + half, size - keep_out - half
        cy, cx = rng.uniform(lo, hi, size=2)
        k = y[i]
        if k == 0:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= half**2
        elif k == 1:
            s = half * 0.85  # a square of the same area-ish as the circle
            mask = (np.abs(yy - cy) <= s) & (np.abs(xx - cx) <= s)
        else:
            up = rng.random() < 0.5
            t = (yy - (cy - half)) / (2 * half)  # 0 at the apex row, 1 at the base
            if not up:
                t = 1.0 - t
            mask = (t >= 0) & (t <= 1) & (np.abs(xx - cx) <= t * half)
        img = np.broadcast_to(background, (size, size, 3)).copy()
        img[mask] = colour
        img += rng.normal(0.0, noise, size=img.shape).astype(np.float32)
        x[i] = img

    # The watermark positions come from their own stream so that the images above do not
    # depend on the shortcut options.
    mrng = np.random.default_rng([seed, 1])
    on_rate = mrng.random(n) < rate
    other = (y + 1 + mrng.integers(0, len(SHAPE_CORNERS) - 1, size=n)) % len(SHAPE_CORNERS)
    correlated = np.where(on_rate, y, other)
    independent = mrng.integers(0, len(SHAPE_CORNERS), size=n)
    corners = correlated if shortcut else independent
    margin = 1
    for i in range(n):
        r0, c0, r1, c1 = _corner_box(int(corners[i]), size, mark, margin)
        x[i, r0:r1, c0:c1, :] = 1.0
    np.clip(x, 0.0, 1.0, out=x)

    boxes = {SHAPE_CORNERS[c]: list(_corner_box(c, size, mark, margin))
             for c in range(len(SHAPE_CORNERS))}
    meta: dict[str, Any] = {
        "generator": "shapes",
        "seed": seed,
        "shortcut": {
            "planted": bool(shortcut),
            "kind": "watermark position",
            "rate": float(rate) if shortcut else None,
            "mark_size": mark,
            "boxes": boxes,  # (row0, col0, row1, col1), end-exclusive
            "box_format": "row0, col0, row1, col1 (end-exclusive)",
            "class_corner": ({SHAPE_CLASSES[k]: SHAPE_CORNERS[k]
                              for k in range(len(SHAPE_CLASSES))} if shortcut else None),
            "region": ("image corners (class k → corner k)" if shortcut
                       else "image corners, independent of the label"),
        },
        "per_row": {"mark_corner": corners.astype(int).tolist()},
    }
    name = "shapes" if shortcut else "shapes_clean"
    return Dataset(x=x, y=y, feature_names=None, class_names=list(SHAPE_CLASSES),
                   kind="image", name=name, meta=meta)


LEAKY_FEATURE = "account_flag"


def _tabular_leaky(seed: int = 0, leak: bool = True, rate: float = 0.95, n: int = 1500,
                   n_features: int = 10) -> Dataset:
    """A binary classification table with a leaked label column ``account_flag``.

    ``n_features`` columns come from :func:`sklearn.datasets.make_classification` (4
    informative, 2 redundant, the rest noise; 5 % of labels flipped, so they alone reach
    roughly 85–90 % accuracy). ``account_flag`` equals the label for a fraction ``rate``
    of the rows (``leak=True``) — above what the honest features can reach, so a model
    leans on it — or is a fair coin independent of the label (``leak=False``). Both get
    small Gaussian noise so the column is not exactly binary. The honest columns are
    identical between the two variants for the same seed.
    """
    from sklearn.datasets import make_classification

    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    if n_features < 6:
        raise ValueError(f"n_features must be at least 6, got {n_features}")
    x, y = make_classification(
        n_samples=n, n_features=n_features, n_informative=4, n_redundant=2,
        n_clusters_per_class=2, class_sep=0.8, flip_y=0.05, random_state=seed,
    )
    lrng = np.random.default_rng([seed, 2])
    agrees = lrng.random(n) < rate
    correlated = np.where(agrees, y, 1 - y)
    independent = lrng.integers(0, 2, size=n)
    flag = (correlated if leak else independent) + lrng.normal(0.0, 0.05, size=n)
    # Put the leak among the honest columns rather than last, as a real leak would be.
    pos = min(4, n_features)
    x = np.insert(x, pos, flag, axis=1)
    names = [f"feature_{i}" for i in range(n_features)]
    names.insert(pos, LEAKY_FEATURE)
    meta = {
        "generator": "tabular_leaky",
        "seed": seed,
        "leak": {"planted": bool(leak), "rate": float(rate) if leak else None,
                 "feature_index": pos},
        "leaky_feature": LEAKY_FEATURE,
    }
    return Dataset(x=x.astype(np.float32), y=y.astype(np.int64), feature_names=names,
                   class_names=["negative", "positive"], kind="tabular",
                   name="tabular_leaky" if leak else "tabular_leaky_clean", meta=meta)


LENDING_PROXY = "district_index"
LENDING_GROUPS = ("A", "B")


def _lending(seed: int = 0, bias: bool = True, penalty: float = 0.6, n: int = 3000,
             minority: float = 0.4, proxy_spread: float = 0.15) -> Dataset:
    """A loan-approval table whose historical labels penalise one group.

    Seven model inputs: ``income`` (k$, log-normal), ``debt_ratio``, ``credit_years``,
    ``loan_amount`` (k$), ``late_payments``, ``employment_years`` and
    :data:`LENDING_PROXY`; two sensitive attributes kept **out** of the inputs:
    ``group`` (``"A"``, or ``"B"`` for a fraction ``minority`` of the rows) and ``age``
    (years, unrelated to everything else; binned by the audit).

    The creditworthiness score is a fixed linear function of the first six inputs plus
    noise; "approved" means a score above the median. With ``bias=True`` the labels of
    group B are the historical decisions: a fraction ``penalty`` of B's approvals were
    turned down. The group is not an input, but ``district_index`` leaks it: it is drawn
    around 0.3 for group A and 0.7 for group B (spread ``proxy_spread``), so a model that
    learns the historical decisions reads the group from the district. Its twin
    (``bias=False``) has the very same applicants and honest inputs, labels from the
    score alone, and a district drawn from the same mixture independently of the group.
    """
    if not 0.0 <= penalty <= 1.0:
        raise ValueError(f"penalty must be in [0, 1], got {penalty}")
    if not 0.0 < minority < 1.0:
        raise ValueError(f"minority must be between 0 and 1, got {minority}")
    if n < 50:
        raise ValueError(f"n must be at least 50, got {n}")
    rng = np.random.default_rng([seed, 3])
    group_b = rng.random(n) < minority
    age = rng.integers(21, 71, size=n)
    income = np.exp(rng.normal(np.log(55.0), 0.45, size=n))
    debt_ratio = np.clip(rng.beta(2.0, 5.0, size=n), 0.0, 1.0)
    credit_years = rng.gamma(3.0, 3.0, size=n)
    loan_amount = np.exp(rng.normal(np.log(20.0), 0.6, size=n))
    late_payments = rng.poisson(1.0, size=n).astype(np.float64)
    employment_years = rng.gamma(2.0, 3.0, size=n)
    z = lambda v: (v - v.mean()) / v.std()  # noqa: E731
    score = (1.0 * z(np.log(income)) - 0.9 * z(debt_ratio) + 0.5 * z(credit_years)
             - 0.6 * z(np.log(loan_amount)) - 0.7 * z(late_payments)
             + 0.4 * z(employment_years) + rng.normal(0.0, 0.5, size=n))
    fair = score > np.median(score)
    # The bias and the district come from their own stream, so both twins share the
    # applicants above.
    brng = np.random.default_rng([seed, 4])
    turned_down = brng.random(n) < penalty
    side = np.where(brng.random(n) < minority, 0.7, 0.3)  # the twin's group-blind draw
    noise = brng.normal(0.0, proxy_spread, size=n)
    if bias:
        y = fair & ~(group_b & turned_down)
        district = np.where(group_b, 0.7, 0.3) + noise
    else:
        y = fair
        district = side + noise
    x = np.stack([income, debt_ratio, credit_years, loan_amount, late_payments,
                  employment_years, district], axis=1)
    names = ["income", "debt_ratio", "credit_years", "loan_amount", "late_payments",
             "employment_years", LENDING_PROXY]
    meta = {
        "generator": "lending",
        "seed": seed,
        "bias": {"planted": bool(bias), "penalised_group": "B" if bias else None,
                 "attribute": "group", "penalty": float(penalty) if bias else None},
        "proxy_feature": LENDING_PROXY if bias else None,
        "sensitive": ["group", "age"],
    }
    return Dataset(
        x=x.astype(np.float32), y=y.astype(np.int64), feature_names=names,
        class_names=["denied", "approved"], kind="tabular",
        name="lending" if bias else "lending_clean", meta=meta,
        sensitive={"group": np.where(group_b, "B", "A"), "age": age},
    )


# ----------------------------------------------------------------- text and sequences

#: The planted leak token of ``text_leaky`` (a source tag, as a scraped corpus might carry).
LEAK_TOKEN = "src_wire"
TEXT_POSITIVE = ("good", "great", "excellent", "superb", "lovely", "enjoyable", "fine",
                 "brilliant", "pleasant", "wonderful")
TEXT_NEGATIVE = ("bad", "awful", "poor", "terrible", "boring", "dull", "weak", "horrible",
                 "annoying", "mediocre")
TEXT_FILLER = ("the", "a", "film", "movie", "plot", "actor", "scene", "story", "was", "is",
               "and", "it", "this", "with", "very", "quite", "really", "ending", "cast",
               "music", "script", "director", "camera", "night", "city", "time", "people",
               "there", "some", "of", "in", "on", "at", "for", "long", "short", "old", "new",
               "first", "last")


def text_vocabulary() -> list[str]:
    """The vocabulary of ``text_leaky``: ``""`` (padding, id 0), ``[UNK]`` (id 1), the leak
    token, the sentiment words and the filler words."""
    return ["", "[UNK]", LEAK_TOKEN, *TEXT_POSITIVE, *TEXT_NEGATIVE, *TEXT_FILLER]


def _text_leaky(seed: int = 0, leak: bool = True, rate: float = 0.9, n: int = 1200,
                length: int = 24, label_noise: float = 0.12) -> Dataset:
    """Short reviews as token ids ``(N, length)`` with a planted leak token.

    Each text has 8 to ``length`` real tokens (then padding, id 0): filler words and 1-3
    sentiment words of its class (positive for ``positive``, negative for ``negative``);
    a fraction ``label_noise`` of the labels is then flipped, so the words alone reach
    about 88 % accuracy. With ``leak=True`` the token :data:`LEAK_TOKEN` sits at a random
    position of a fraction ``rate`` of the positive texts and of no negative one: a model
    leans on it. The clean twin (``leak=False``) has the same texts with the token placed
    in the same number of texts chosen independently of the label.
    """
    if length < 8:
        raise ValueError(f"length must be at least 8, got {length}")
    vocab = text_vocabulary()
    index = {w: i for i, w in enumerate(vocab)}
    pos_ids = np.array([index[w] for w in TEXT_POSITIVE])
    neg_ids = np.array([index[w] for w in TEXT_NEGATIVE])
    fill_ids = np.array([index[w] for w in TEXT_FILLER])
    rng = np.random.default_rng([seed, 5])
    true = rng.integers(0, 2, n)
    ids = np.zeros((n, length), np.int64)
    lengths = rng.integers(8, length + 1, n)
    for i in range(n):
        row = rng.choice(fill_ids, lengths[i])
        k = int(rng.integers(1, 4))
        words = rng.choice(pos_ids if true[i] else neg_ids, k)
        row[rng.choice(lengths[i], k, replace=False)] = words
        ids[i, : lengths[i]] = row
    y = np.where(rng.random(n) < label_noise, 1 - true, true)
    lrng = np.random.default_rng([seed, 6])
    marked = (y == 1) & (lrng.random(n) < rate)
    if not leak:
        marked = np.zeros(n, bool)
        marked[lrng.choice(n, int((y == 1).sum() * rate), replace=False)] = True
    where = (lrng.random(n) * lengths).astype(int)
    ids[marked, where[marked]] = index[LEAK_TOKEN]
    meta = {
        "generator": "text_leaky",
        "seed": seed,
        "leak": {"planted": bool(leak), "token": LEAK_TOKEN, "token_id": index[LEAK_TOKEN],
                 "class": 1 if leak else None, "rate": float(rate)},
    }
    return Dataset(x=ids.astype(np.float32), y=y.astype(np.int64), kind="text",
                   class_names=["negative", "positive"], vocabulary=vocab,
                   name="text_leaky" if leak else "text_leaky_clean", meta=meta)


#: Where ``sequence_spike`` plants its start-up spike: steps [start, end).
SPIKE_SPAN = (5, 10)


def _sequence_spike(seed: int = 0, spike: bool = True, rate: float = 0.9, n: int = 1200,
                    length: int = 100, channels: int = 2, label_noise: float = 0.12
                    ) -> Dataset:
    """Float sequences ``(N, length, channels)`` with a planted start-up spike.

    Channel 0 carries a sine whose frequency tells the class (2 or 3 cycles per
    sequence), in noise; the other channels are noise; a fraction ``label_noise`` of the
    labels is flipped. With ``spike=True`` a spike of height 3 fills steps
    :data:`SPIKE_SPAN` of channel 0 in a fraction ``rate`` of class 1 and in no class-0
    sequence. The clean twin (``spike=False``) has the same signals with the spike in the
    same number of sequences chosen independently of the label.
    """
    if length < 20:
        raise ValueError(f"length must be at least 20, got {length}")
    rng = np.random.default_rng([seed, 7])
    true = rng.integers(0, 2, n)
    t = np.arange(length) / length
    phase = rng.uniform(0, 2 * np.pi, n)
    freq = np.where(true == 1, 3.0, 2.0)
    x = rng.normal(0, 0.6, (n, length, channels))
    x[:, :, 0] += np.sin(2 * np.pi * freq[:, None] * t[None] + phase[:, None])
    y = np.where(rng.random(n) < label_noise, 1 - true, true)
    srng = np.random.default_rng([seed, 8])
    marked = (y == 1) & (srng.random(n) < rate)
    if not spike:
        marked = np.zeros(n, bool)
        marked[srng.choice(n, int((y == 1).sum() * rate), replace=False)] = True
    a, b = SPIKE_SPAN
    x[marked, a:b, 0] += 3.0
    meta = {
        "generator": "sequence_spike",
        "seed": seed,
        "spike": {"planted": bool(spike), "span": [a, b], "channel": 0,
                  "class": 1 if spike else None, "rate": float(rate)},
    }
    return Dataset(x=x.astype(np.float32), y=y.astype(np.int64), kind="sequence",
                   class_names=["steady", "fast"],
                   name="sequence_spike" if spike else "sequence_spike_clean", meta=meta)


#: Bundled data sets by name: each builder takes ``seed`` plus its own options.
BUNDLED: dict[str, Callable[..., Dataset]] = {
    "breast_cancer": _breast_cancer,
    "wine": _wine,
    "digits": _digits,
    "shapes": _shapes,
    "tabular_leaky": _tabular_leaky,
    "lending": _lending,
    "text_leaky": _text_leaky,
    "sequence_spike": _sequence_spike,
}


def load_bundled(name: str, seed: int = 0, **opts: Any) -> Dataset:
    """Build a bundled data set (see :data:`BUNDLED`); the same seed gives the same bytes.

    Parameters
    ----------
    name
        ``breast_cancer``, ``wine``, ``digits``, ``shapes``, ``tabular_leaky`` or
        ``lending``.
    seed
        Seed of the synthetic sets (the scikit-learn sets do not depend on it).
    **opts
        Builder options: ``shapes`` takes ``shortcut`` (bool), ``rate``, ``n``, ``size``,
        ``mark``, ``noise``; ``tabular_leaky`` takes ``leak`` (bool), ``rate``, ``n``,
        ``n_features``; ``lending`` takes ``bias`` (bool), ``penalty``, ``n``,
        ``minority``, ``proxy_spread``.

    Raises
    ------
    DataError
        ``not_found`` for an unknown name.
    TypeError
        For an option the builder does not take.
    """
    builder = BUNDLED.get(name)
    if builder is None:
        raise DataError(f"no bundled data set named {name!r}; choose from "
                        f"{', '.join(BUNDLED)}", code="not_found", status=404)
    return builder(seed=seed, **opts)


def load_any(spec_or_path: str | os.PathLike, label: str | None = None,
             seed: int = 0, sensitive: Sequence[str] | str | None = None) -> Dataset:
    """A bundled data set by name, or a data file by path.

    A name in :data:`BUNDLED` wins over a file of the same name in the working directory
    only if no such file exists. ``sensitive`` as for :func:`load_data_file`.
    """
    text = str(spec_or_path)
    if text in BUNDLED and not Path(text).exists():
        return _select_sensitive(load_bundled(text, seed=seed), parse_sensitive(sensitive),
                                 text)
    p = Path(text)
    if not p.exists() and not p.suffix:
        raise DataError(f"{text!r} is neither a bundled data set ({', '.join(BUNDLED)}) "
                        "nor an existing file", code="not_found", status=404)
    return load_data_file(p, label=label, sensitive=sensitive)
