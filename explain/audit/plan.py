"""The audit plan: the serialisable hand-over between preparation, the attribution chunks
and the assessment (possibly in different processes)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from explain.audit.config import AuditConfig
from explain.result import to_jsonable

#: Examples per attribution chunk: the unit of work a worker takes from the `attributions`
#: queue. The in-process pipeline cuts the same chunks, so a fanned-out audit and
#: :func:`run_audit` compute the very same numbers for a seed.
CHUNK_ROWS = 8

#: Arrays of one attribution chunk (``values`` and ``targets`` always; the others for
#: methods that report them).
CHUNK_FIELDS = ("values", "targets", "scores", "baseline_scores", "completeness_gap")


@dataclass
class AuditPlan:
    """Everything the attribution and assessment stages need, made by :func:`prepare`.

    A plan holds no model and no callable: it is JSON (:attr:`meta`) plus named arrays,
    so it can be written to a file (:meth:`to_bytes`, an ``.npz`` read with
    ``allow_pickle=False``) and picked up by another process.

    Attributes
    ----------
    meta
        JSON: the config, the model's path and card, the data set section, performance,
        the methods and their scalar options, notes, the reasons examples were chosen,
        and the preparation stages' timings.
    arrays
        ``x``, ``y`` (every row), ``idx`` (the explained rows), ``pred_all``, ``proba``
        (classifiers), ``global_rows`` (tables with a gradient method), ``sensitive.<name>``
        (each sensitive attribute of every row, never a model input), and array
        options as ``option.<method>.<name>`` (baselines, SHAP backgrounds).
    """

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def config(self) -> AuditConfig:
        return AuditConfig.from_dict(self.meta["config"])

    @property
    def methods(self) -> list[str]:
        return list(self.meta["methods"])

    @property
    def n_examples(self) -> int:
        return int(len(self.arrays["idx"]))

    def options(self, method: str) -> dict[str, Any]:
        """The options ``method`` runs with, arrays included."""
        opts = dict(self.meta["options"][method])
        prefix = f"option.{method}."
        opts.update({k[len(prefix):]: v for k, v in self.arrays.items()
                     if k.startswith(prefix)})
        return opts

    def chunks(self) -> list[tuple[str, int, int]]:
        """``(method, start, stop)`` of every attribution chunk, in a fixed order."""
        n = self.n_examples
        return [(m, s, min(n, s + CHUNK_ROWS)) for m in self.methods
                for s in range(0, n, CHUNK_ROWS)]

    def to_bytes(self) -> bytes:
        """The plan as ``.npz`` bytes that depend only on its content."""
        payload = dict(self.arrays)
        text = json.dumps(to_jsonable(self.meta), sort_keys=True, allow_nan=False)
        payload["plan.json"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        return npz_bytes(payload)

    @classmethod
    def from_bytes(cls, data: bytes) -> AuditPlan:
        arrays = npz_load(data)
        meta = json.loads(arrays.pop("plan.json").tobytes().decode("utf-8"))
        return cls(meta=meta, arrays=arrays)


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Arrays as ``.npz`` bytes that depend only on the arrays (fixed zip timestamps and
    member order), so the same content always makes the same content-addressed blob."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.save(member, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def npz_load(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of :func:`npz_bytes` output (never unpickling anything)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}

