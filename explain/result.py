"""The result of one audit: the report.json content plus the arrays its figures need.

:class:`AuditResult` is the hand-over between the audit pipeline (which fills it) and the
report renderer (``reports.render_html`` / ``reports.render_json``), possibly in another
process: :meth:`AuditResult.save` writes a folder with ``report.json`` and ``arrays.npz``
and :meth:`AuditResult.load` reads it back without unpickling anything.

``report`` is exactly what ``report.json`` holds; its layout is fixed by
``explain/report.schema.json`` (``schema_version`` "1.0"). ``arrays`` carries what JSON
must not: pixels and per-example attributions. Array names follow one convention:

``examples_x``
    ``(n, ...)`` the inputs of the chosen examples; row ``i`` belongs to
    ``report["examples"][i]`` (``report["examples"][i]["index"]`` is the row in the data set).
    Images are ``(n, H, W)``, ``(n, H, W, 1)`` or ``(n, H, W, 3)``; tables are ``(n, F)``.
``maps.<method>``
    Per-example attributions of one method, row-aligned with ``examples_x``: ``(n, H, W)``
    for images (channels already reduced, signed or not) or ``(n, F)`` for tables (signed).
``class_maps.<method>``
    Images only: ``(K, H, W)`` mean ``|attribution|`` over the examples of each class, one
    map per class in the order of ``report["dataset"]["class_names"]``.
``drift_<name>``
    Optional arrays describing the previous audit, e.g. ``drift_class_maps.<method>`` with
    the previous run's ``(K, H, W)`` per-class maps.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["AuditResult", "ARRAYS_FILE", "REPORT_FILE", "to_jsonable"]

#: File names inside a saved result folder.
REPORT_FILE = "report.json"
ARRAYS_FILE = "arrays.npz"

# Method names become npz member names, so keep them to a safe alphabet.
_ARRAY_NAME = re.compile(
    r"^(examples_x|(maps|class_maps)\.[A-Za-z0-9_\-]+|drift_[A-Za-z0-9_.\-]+)$"
)


def to_jsonable(value: Any, *, strict: bool = True) -> Any:
    """Return ``value`` as plain JSON types.

    numpy scalars and arrays become Python numbers and lists, tuples become lists, enums
    their values, and non-finite floats become ``None`` (JSON has no NaN; the schema then
    says whether a missing number is acceptable at that place).

    Parameters
    ----------
    value
        Any nesting of mappings, lists, tuples, numbers, strings, booleans, enums, None
        and numpy values.
    strict
        True (report.json, stored plans): a key that is not a string, or a value JSON
        cannot hold, raises ``TypeError``, so a mistake in the pipeline is found where it
        is made. False (a metric's free-form ``detail``, see
        :meth:`explain.metrics.MetricResult.to_dict`): keys are turned into strings and
        such values are kept as they are, for the caller to serialise or not.

    Returns
    -------
    Any
        The same structure made of ``dict``, ``list``, ``str``, ``int``, ``float``,
        ``bool`` and ``None`` (and, with ``strict=False``, whatever could not be turned).

    Raises
    ------
    TypeError
        With ``strict``: if a key is not a string or a value has no JSON representation
        (an object, a set, bytes, ...).
    """
    if isinstance(value, Enum):
        return to_jsonable(value.value, strict=strict)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                if strict:
                    raise TypeError(f"report keys must be strings, got {key!r}")
                key = str(key)
            out[key] = to_jsonable(item, strict=strict)
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item, strict=strict) for item in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist(), strict=strict)
    if isinstance(value, np.generic):
        return to_jsonable(value.item(), strict=strict)
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if strict:
        raise TypeError(f"{type(value).__name__} cannot be written to report.json")
    return value


@dataclass
class AuditResult:
    """Everything one audit produced, ready to be rendered or stored.

    Parameters
    ----------
    report
        The report.json content (see ``explain/report.schema.json``). Stored as given;
        numpy scalars are converted when it is serialised.
    arrays
        Named arrays for the figures (see the module docstring for the names). Must be
        numeric or boolean: ``arrays.npz`` is read back with ``allow_pickle=False``.

    Raises
    ------
    TypeError
        If ``report`` is not a dict or an array is not a numeric numpy array.
    ValueError
        If an array name does not follow the naming convention.
    """

    report: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.report, dict):
            raise TypeError(f"report must be a dict, got {type(self.report).__name__}")
        checked = {}
        for name, array in self.arrays.items():
            if not isinstance(name, str) or not _ARRAY_NAME.match(name):
                raise ValueError(
                    f"array name {name!r} is not one of examples_x, maps.<method>, "
                    "class_maps.<method>, drift_<name>"
                )
            array = np.asarray(array)
            if array.dtype.kind not in "biuf":
                raise TypeError(
                    f"array {name!r} has dtype {array.dtype}; only numeric or boolean "
                    "arrays can be stored"
                )
            checked[name] = array
        self.arrays = checked

    # -- the views the renderer reads ------------------------------------------------------

    @property
    def examples_x(self) -> np.ndarray | None:
        """The chosen examples' inputs ``(n, ...)``, or None when the audit kept none."""
        return self.arrays.get("examples_x")

    def maps(self) -> dict[str, np.ndarray]:
        """Per-example attributions by method: ``{method: (n, H, W) or (n, F)}``."""
        return self._prefixed("maps.")

    def class_maps(self) -> dict[str, np.ndarray]:
        """Per-class mean ``|attribution|`` maps by method: ``{method: (K, H, W)}``."""
        return self._prefixed("class_maps.")

    def drift_arrays(self) -> dict[str, np.ndarray]:
        """The optional ``drift_*`` arrays, keyed without the ``drift_`` prefix."""
        return self._prefixed("drift_")

    def _prefixed(self, prefix: str) -> dict[str, np.ndarray]:
        return {
            name[len(prefix):]: array
            for name, array in sorted(self.arrays.items())
            if name.startswith(prefix)
        }

    # -- serialisation ---------------------------------------------------------------------

    def to_json(self, indent: int | None = 2) -> str:
        """Serialise ``report`` as report.json text.

        Parameters
        ----------
        indent
            Indentation passed to :func:`json.dumps` (None for one line).

        Returns
        -------
        str
            UTF-8-safe JSON text; numpy values converted, NaN/inf written as null.
        """
        return json.dumps(
            to_jsonable(self.report), indent=indent, ensure_ascii=False, allow_nan=False
        )

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``report.json`` and ``arrays.npz`` into ``folder`` (created if needed).

        Each file is written to a temporary name and renamed into place, so a task that
        runs twice, or dies half-way, never leaves a torn file behind.

        Parameters
        ----------
        folder
            Destination folder.

        Returns
        -------
        pathlib.Path
            The folder.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        text = self.to_json().encode("utf-8")
        _atomic_write(folder / REPORT_FILE, lambda f: f.write(text))
        _atomic_write(folder / ARRAYS_FILE, lambda f: np.savez_compressed(f, **self.arrays))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> AuditResult:
        """Read a folder written by :meth:`save`.

        Parameters
        ----------
        folder
            A folder holding ``report.json`` and, optionally, ``arrays.npz``.

        Returns
        -------
        AuditResult
            The result; arrays are loaded eagerly with ``allow_pickle=False``.
        """
        folder = Path(folder)
        report = json.loads((folder / REPORT_FILE).read_text(encoding="utf-8"))
        arrays: dict[str, np.ndarray] = {}
        npz_path = folder / ARRAYS_FILE
        if npz_path.exists():
            with np.load(npz_path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        return cls(report=report, arrays=arrays)


def _atomic_write(path: Path, write: Callable[[Any], object]) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as tmp:
            write(tmp)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
