"""xaudit's core library: attributions, their quality metrics, findings and the audit.

Usable with no service running::

    from explain import attribute, METHODS
    attr = attribute(model, x, method="integrated_gradients")
"""

from explain.attributions import METHODS, Attribution, attribute, explain

__all__ = ["METHODS", "Attribution", "attribute", "explain"]
__version__ = "0.1.0"
