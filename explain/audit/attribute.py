"""Attribution of one chunk of the explained examples with one method, and the merge of
the chunks back into one :class:`~explain.attributions.base.Attribution` per method."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from explain.audit.plan import CHUNK_FIELDS, AuditPlan
from explain.audit.prepare import load_model


def _chunk_seed(seed: int, method: str, start: int) -> int:
    """A seed of its own for each chunk, from the audit's seed, the method and the first
    row: chunks then draw independent noise wherever and in whichever order they run."""
    digest = hashlib.sha256(f"{int(seed)}:{method}:{int(start)}".encode()).digest()
    return int.from_bytes(digest[:4], "little")



def attribute_chunk(plan: AuditPlan, method: str, start: int, stop: int,
                    model: tuple[Any, Any] | None = None) -> dict[str, np.ndarray]:
    """Attribute the explained examples ``start:stop`` with ``method``.

    Depends only on the plan, the method and the rows (each chunk seeds itself), so a
    chunk gives the same arrays in any process, in any order, however often it runs.

    Parameters
    ----------
    plan
        From :func:`prepare`.
    method
        One of ``plan.methods``.
    start, stop
        Positions among the explained examples (as in :meth:`AuditPlan.chunks`).
    model
        ``(model, spec)`` of ``plan.meta["model_path"]``; None loads it.

    Returns
    -------
    dict
        The arrays of :data:`CHUNK_FIELDS` the method reports.
    """
    from explain._backend import keras
    from explain.attributions.registry import explain as attribute_full

    if method not in plan.methods:
        raise ValueError(f"method {method!r} is not part of this audit ({plan.methods})")
    n = plan.n_examples
    if not 0 <= int(start) < int(stop) <= n:
        raise ValueError(f"chunk {start}:{stop} is outside the {n} explained examples")
    if model is None:
        model = load_model(plan.meta["model_path"])
    cfg_seed = int(plan.meta["config"]["seed"])
    opts = plan.options(method)
    if "seed" in opts:
        opts["seed"] = _chunk_seed(int(opts["seed"]), method, start)
    keras.utils.set_random_seed(_chunk_seed(cfg_seed, method, start))
    rows = plan.arrays["idx"][int(start):int(stop)]
    a = attribute_full(model[0], plan.arrays["x"][rows], method, **opts)
    out = {"values": np.asarray(a.values), "targets": np.asarray(a.targets)}
    for key in CHUNK_FIELDS[2:]:
        value = getattr(a, key)
        if value is not None:
            out[key] = np.asarray(value)
    return out


def merge_chunks(plan: AuditPlan, chunks: Mapping[tuple[str, int, int],
                                                   Mapping[str, np.ndarray]]) -> dict:
    from explain.attributions.base import Attribution

    expected = plan.chunks()
    missing = [c for c in expected if tuple(c) not in chunks]
    if missing:
        raise ValueError(f"attribution chunks missing: {missing}")
    out = {}
    for m in plan.methods:
        parts = [chunks[c] for c in expected if c[0] == m]

        def joined(key: str, parts=parts) -> np.ndarray | None:
            if any(key not in p for p in parts):
                return None
            return np.concatenate([np.asarray(p[key]) for p in parts], axis=0)

        out[m] = Attribution(values=joined("values"), method=m, targets=joined("targets"),
                             scores=joined("scores"),
                             baseline_scores=joined("baseline_scores"),
                             completeness_gap=joined("completeness_gap"),
                             options=plan.options(m))
    return out

