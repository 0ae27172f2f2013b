"""The audit pipeline: load → validate → evaluate → choose examples → attribute → assess →
findings → drift → :class:`~explain.result.AuditResult`.

::

    from explain.audit import run_audit
    result = run_audit("model.keras", "test.npz", {"samples": 24, "seed": 0})
    result.report["findings"]          # what a reviewer should worry about
    result.save("audit/")              # report.json + arrays.npz

The pipeline is three functions that a service can run in different processes:
:func:`prepare` (load, validate, evaluate, choose the examples, fix every method's
options) makes a serialisable :class:`AuditPlan`; :func:`attribute_chunk` attributes one
chunk of examples with one method (:meth:`AuditPlan.chunks` lists them; each chunk seeds
itself, so chunks can run anywhere, in any order); :func:`assess` turns the plan and the
chunks into the result. :func:`run_audit` runs all three in this process and gives the
same result.

Every stage reports to an optional ``progress(stage, fraction)`` callback, where
``fraction`` is the share of the whole audit done so far (0 → 1) and ``stage`` one of
:data:`STAGES`. The audit is deterministic for a given ``seed`` (everything except the
``generated_at`` timestamp and the ``timings`` section).

What the report contains, and how each part is measured
-------------------------------------------------------
performance
    :func:`explain.evaluation.evaluate_model` on **every** row given, so the numbers
    describe the whole sample, not the few examples explained one by one.
examples
    ``samples`` rows explained one by one, chosen (seeded) to show the reviewer the
    model's weak spots first: the most confident mistakes (a quarter of the budget), then
    the least confident predictions (an eighth), then rows drawn evenly from each class
    (regression: the largest errors, then rows drawn across the range of predictions).
    Every attribution explains the model's **predicted** class (output 0 for a single
    sigmoid unit or a regression head).
global_importance
    Tables: mean ``|attribution|`` per feature over up to ``global_rows`` rows, with a
    cheap method (Integrated Gradients when configured; its baseline is the mean row of
    the data, so "importance" means "moves the output away from the average row").
    Images: the share of attribution mass in each cell of a 4×4 grid, averaged over the
    explained examples, for the first configured method in the order Grad-CAM, IG, SHAP.
explanation_quality
    Per method, a list of checks ``{metric, category, score, threshold, higher_is_better,
    passed}``:

    - ``completeness_gap`` (IG, SHAP): ``mean |sum(attr) - (f(x) - f(baseline))|``
      divided by ``mean |f(x) - f(baseline)|`` over the examples, against the
      ``completeness_tolerance`` of the finding thresholds (5 %). The per-example
      relative gaps (mean and max) are kept beside it.
    - ``deletion_auc`` / ``insertion_auc``: the causal-fidelity AUCs
      (:class:`~explain.metrics.Deletion`), where the *threshold* is the AUC of random
      feature orders on the same examples: a method passes when it beats chance.
      Removed features take the mean row (tables) or mean image (images) of the data.
    - ``randomization_similarity`` (gradient methods): the
      :class:`~explain.metrics.ModelParameterRandomization` score on a small subset,
      randomizing the top ``randomization_layers`` layers one by one and then all.
    - ``max_sensitivity`` (only when ``quality["stability"]``; gradient methods).
agreement
    For each pair of methods: the mean per-example Spearman correlation of their maps
    (``local_rank_correlation``) and the Spearman correlation of their global importance
    (``global_rank_correlation``; images: of the 8×8 region shares, since pixel-level
    ranks of a smooth Grad-CAM map and a speckled gradient map are not comparable).
findings
    :func:`explain.findings.run_rules`; the image shortcut rule reads every method's
    per-example maps reduced to ``(n, H, W)`` non-negative importance, grouped by
    predicted class.
drift
    Against a previous audit: nDCG of the global importance and per-feature changes.
fairness
    When the data names sensitive attributes (``config.sensitive``; never model inputs):
    :func:`explain.fairness.assess_fairness` on **every** row — per-group metrics with
    Fairlearn, gaps with bootstrap intervals, attributions by group over the global rows,
    proxy inputs and the gap with each one permuted; against a previous audit, the gaps'
    changes. None otherwise.

The package follows those stages: :mod:`~explain.audit.config` (what to compute),
:mod:`~explain.audit.stages` (progress and timings), :mod:`~explain.audit.prepare` (load,
evaluate, :mod:`~explain.audit.examples`, method options → :mod:`~explain.audit.plan`),
:mod:`~explain.audit.attribute` (the chunks), then :mod:`~explain.audit.assess`, which
builds one :class:`~explain.audit.context.AuditContext` and hands it to
:mod:`~explain.audit.importance`, :mod:`~explain.audit.quality` and
:mod:`~explain.audit.fairness`.
"""

from __future__ import annotations

from explain.audit.assess import assess
from explain.audit.attribute import attribute_chunk
from explain.audit.config import DEFAULT_METHODS, QUALITY_CHECKS, AuditConfig
from explain.audit.context import AuditContext
from explain.audit.examples import choose_examples
from explain.audit.importance import method_is_cheap
from explain.audit.plan import CHUNK_FIELDS, CHUNK_ROWS, AuditPlan, npz_bytes, npz_load
from explain.audit.prepare import prepare
from explain.audit.run import run_audit
from explain.audit.stages import STAGES, Progress, stage_span

__all__ = [
    "CHUNK_FIELDS",
    "CHUNK_ROWS",
    "DEFAULT_METHODS",
    "QUALITY_CHECKS",
    "STAGES",
    "AuditConfig",
    "AuditContext",
    "AuditPlan",
    "Progress",
    "assess",
    "attribute_chunk",
    "choose_examples",
    "method_is_cheap",
    "npz_bytes",
    "npz_load",
    "prepare",
    "run_audit",
    "stage_span",
]
