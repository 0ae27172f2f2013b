"""Attribution methods, one module each, behind one registry and one contract."""

# Importing a method module registers it in the registry.
from explain.attributions import (  # noqa: F401
    grad_cam,
    integrated_gradients,
    occlusion,
    saliency,
    sequences,
    shap_values,
    smoothgrad,
    tokens,
)
from explain.attributions.base import Attribution, ModelFunction
from explain.attributions.registry import METHODS, attribute, explain, method_info

__all__ = ["METHODS", "Attribution", "ModelFunction", "attribute", "explain", "method_info"]
