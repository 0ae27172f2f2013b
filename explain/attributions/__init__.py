"""Attribution methods, one module each, behind one registry and one contract."""

from explain.attributions.base import Attribution, ModelFunction
from explain.attributions.registry import METHODS, attribute, explain, method_info

# Importing a method module registers it.
# (each import below is for its side effect: registration in the registry)
# fmt: off
from explain.attributions import integrated_gradients  # noqa: F401, E402, I001
from explain.attributions import saliency  # noqa: F401, E402
from explain.attributions import smoothgrad  # noqa: F401, E402
from explain.attributions import occlusion  # noqa: F401, E402
from explain.attributions import grad_cam  # noqa: F401, E402
from explain.attributions import shap_values  # noqa: F401, E402
# fmt: on

__all__ = ["METHODS", "Attribution", "ModelFunction", "attribute", "explain", "method_info"]
