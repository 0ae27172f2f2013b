"""Check ``.npy`` / ``.npz`` files from their headers before any array is read.

``np.load`` allocates what a header declares before it reads a byte of data: a 1 MB
``savez_compressed`` of zeros expands to a gigabyte, and a 128-byte ``.npy`` header may
declare shape ``(10**12, 10)``. So every member's header is read here first (a few hundred
bytes, decompressing only that far), and the declared sizes are checked against the
operator's caps and against what the file can actually hold.

Caps (environment): ``XAUDIT_MAX_DATA_BYTES`` (total decompressed bytes of one data file,
default 512 MiB) and ``XAUDIT_MAX_DATA_RATIO`` (largest decompressed/compressed ratio of
an npz member over 16 MiB, default 100). Refusals are :class:`explain.errors.DataError`:
``data_too_large`` (HTTP 413) or ``bad_format`` (422).
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from explain.errors import DataError

__all__ = ["DEFAULT_MAX_DATA_BYTES", "check_array_file", "max_data_bytes"]

DEFAULT_MAX_DATA_BYTES = 512 * 1024 * 1024
_RATIO_FLOOR = 16 * 1024 * 1024
_MAX_MEMBERS = 64
#: numpy's own default header size limit (format.read_array_header_*).
_MAX_HEADER = 10_000


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise ValueError(f"{name} must be a number of bytes, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return value


def max_data_bytes(environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    return _env_int(env, "XAUDIT_MAX_DATA_BYTES", DEFAULT_MAX_DATA_BYTES)


def _too_large(source: str, what: str, declared: int, cap: int) -> DataError:
    return DataError(
        f"{what} in {source} declares {declared:,} bytes of data; the limit is {cap:,} "
        "(XAUDIT_MAX_DATA_BYTES)", code="data_too_large", status=413)


def _read_header(fh, source: str, what: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header length) of one .npy stream, reading only its header."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(
                fh, max_header_size=_MAX_HEADER)
        elif version in ((2, 0), (3, 0)):
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(
                fh, max_header_size=_MAX_HEADER)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError,
            zipfile.BadZipFile) as exc:
        raise DataError(f"{what} in {source} has no readable array header: "
                        f"{str(exc)[:200]}", code="bad_format") from None
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise DataError(f"{what} in {source} declares a negative dimension {shape}",
                        code="bad_format")
    header_len = fh.tell() if hasattr(fh, "tell") else 0
    return shape, dtype, header_len


def _declared_bytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    # Python ints: (10**12, 10) float64 is 8e13 bytes, computed without overflow.
    return math.prod(shape) * int(dtype.itemsize)


def check_array_file(path: str | os.PathLike, cap: int | None = None,
                     max_ratio: float | None = None,
                     environ: Mapping[str, str] | None = None) -> dict[str, tuple[int, ...]]:
    """Refuse an ``.npy``/``.npz`` whose headers declare more than the caps, or more than
    the file holds. Returns each member's declared shape. Reads headers only.

    ``cap`` and ``max_ratio`` default to ``XAUDIT_MAX_DATA_BYTES`` and
    ``XAUDIT_MAX_DATA_RATIO`` of ``environ`` (default: the process environment)."""
    p = Path(path)
    env = os.environ if environ is None else environ
    cap = max_data_bytes(env) if cap is None else cap
    if max_ratio is None:
        max_ratio = float(env.get("XAUDIT_MAX_DATA_RATIO") or 100.0)
    source = p.name
    ext = p.suffix.lower()
    if ext == ".npy":
        with open(p, "rb") as fh:
            shape, dtype, header_len = _read_header(fh, source, "the array")
        declared = _declared_bytes(shape, dtype)
        if declared > cap:
            raise _too_large(source, "the array", declared, cap)
        if dtype.hasobject:
            return {"": shape}  # refused with its own message by np.load(allow_pickle=False)
        if declared > p.stat().st_size - header_len:
            raise DataError(
                f"{source} declares shape {shape} ({declared:,} bytes) but holds only "
                f"{p.stat().st_size - header_len:,} bytes of data", code="bad_format")
        return {"": shape}
    if ext != ".npz":
        return {}
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{source} is not a readable .npz file: {exc}",
                        code="bad_format") from None
    shapes: dict[str, tuple[int, ...]] = {}
    with zf:
        infos = zf.infolist()
        if len(infos) > _MAX_MEMBERS:
            raise DataError(f"{source} holds {len(infos)} arrays; at most {_MAX_MEMBERS}",
                            code="bad_format")
        total = 0
        for info in infos:
            name = info.filename
            if info.file_size > _RATIO_FLOOR and info.compress_size > 0 and \
                    info.file_size / info.compress_size > max_ratio:
                raise DataError(
                    f"array {name!r} in {source} expands {info.file_size / info.compress_size:,.0f}"
                    f"-fold ({info.file_size:,} bytes from {info.compress_size:,}); the "
                    f"limit is {max_ratio:g} (XAUDIT_MAX_DATA_RATIO)",
                    code="data_too_large", status=413)
            total += info.file_size
            if total > cap:
                raise _too_large(source, f"array {name!r}", total, cap)
            if not name.endswith(".npy"):
                continue
            try:
                with zf.open(info) as fh:
                    shape, dtype, header_len = _read_header(fh, source, f"array {name!r}")
            except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
                raise DataError(f"array {name!r} in {source} is unreadable: {exc}",
                                code="bad_format") from None
            declared = _declared_bytes(shape, dtype)
            if declared > cap:
                raise _too_large(source, f"array {name!r}", declared, cap)
            if not dtype.hasobject and declared > info.file_size - header_len:
                raise DataError(
                    f"array {name!r} in {source} declares shape {shape} ({declared:,} "
                    f"bytes) but holds only {max(info.file_size - header_len, 0):,}",
                    code="bad_format")
            shapes[name[:-4]] = shape
    return shapes
