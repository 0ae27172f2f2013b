"""The whole audit in this process: :func:`run_audit`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from explain.audit.assess import assess_in, load_previous
from explain.audit.attribute import attribute_chunk
from explain.audit.config import AuditConfig
from explain.audit.prepare import prepare_in
from explain.audit.stages import Progress, Stages
from explain.result import AuditResult


def run_audit(
    model_path: str | os.PathLike,
    data: Any,
    config: AuditConfig | Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    previous: Any = None,
    model_name: str | None = None,
    dataset_name: str | None = None,
) -> AuditResult:
    """Audit a Keras model on labelled data.

    The same as :func:`prepare`, :func:`attribute_chunk` on every chunk of
    :meth:`AuditPlan.chunks`, then :func:`assess`, in this process.

    Parameters
    ----------
    model_path
        A ``.keras`` or ``.h5`` file; it is checked by
        :func:`explain.modelio.load_model_safely` before Keras reads it.
    data
        A :class:`~explain.datasets.Dataset`, the path of a data file (``.npz``, ``.npy``,
        ``.csv``) or a bundled data set name. Labels are required.
    config
        An :class:`AuditConfig` or a mapping for :meth:`AuditConfig.from_dict`.
    progress
        ``progress(stage, fraction)``: called as each stage of :data:`STAGES` starts,
        while it runs, and as it ends; ``fraction`` is the share of the audit done. An
        exception raised by the callback stops the audit.
    previous
        A previous audit (:class:`~explain.result.AuditResult`, a report dict, or the
        path of a report.json or saved result folder) to measure drift against.
    model_name, dataset_name
        Display names (default: the model file's stem; the data set's own name).

    Returns
    -------
    AuditResult
        ``report`` validated against ``explain/report.schema.json``, and the arrays the
        report's figures are drawn from.

    Raises
    ------
    explain.errors.ModelIntakeError
        The model file was refused.
    explain.errors.DataError
        The data does not fit the model, has no labels, or holds non-finite values.
    ValueError, TypeError
        A bad config or an unsupported model (several inputs, a sequence model).
    """
    stages = Stages(progress)
    # Read now, so a missing previous report fails before the expensive stages.
    prev = load_previous(previous)
    plan, loaded = prepare_in(stages, model_path, data, config, model_name=model_name,
                              dataset_name=dataset_name, loaded=None)
    stages.start("attributions")
    chunks = {}
    todo = plan.chunks()
    for i, (m, start, stop) in enumerate(todo):
        chunks[(m, start, stop)] = attribute_chunk(plan, m, start, stop, model=loaded)
        stages.step((i + 1) / len(todo))
    return assess_in(stages, plan, chunks, prev, loaded)

