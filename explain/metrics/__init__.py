"""Quality of explanations: can the attributions be trusted?

Each metric is a class bound to what it judges, with its metadata on the class
(``name``, ``category``, ``direction``) and a documented pass/fail threshold::

    from explain.metrics import Deletion
    result = Deletion(model, x, steps=10).detailed(attributions)
    result.score, result.passed, result.to_dict()
"""

from explain.metrics.agreement import MethodAgreement, agreement, top_k_intersection
from explain.metrics.base import (
    Category,
    Direction,
    Explainer,
    Metric,
    MetricResult,
    run_explainer,
)
from explain.metrics.completeness import COMPLETENESS_TOLERANCE, CompletenessGap
from explain.metrics.faithfulness import CausalFidelity, Deletion, Insertion
from explain.metrics.maps import (
    global_importance,
    reduce_to_map,
    region_importance,
    region_label,
)
from explain.metrics.sanity import ModelParameterRandomization, clone_with_weights
from explain.metrics.stability import MaxSensitivity

__all__ = [
    "COMPLETENESS_TOLERANCE",
    "Category",
    "CausalFidelity",
    "CompletenessGap",
    "Deletion",
    "Direction",
    "Explainer",
    "Insertion",
    "MaxSensitivity",
    "MethodAgreement",
    "Metric",
    "MetricResult",
    "ModelParameterRandomization",
    "agreement",
    "clone_with_weights",
    "global_importance",
    "reduce_to_map",
    "region_importance",
    "region_label",
    "run_explainer",
    "top_k_intersection",
]
