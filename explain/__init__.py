"""xaudit's core library: attributions, their quality metrics, findings and the audit.

Usable with no service running::

    from explain import attribute, METHODS
    attr = attribute(model, x, method="integrated_gradients")

The attribution names are loaded on first use, so light modules of this package
(``explain.errors``, ``explain.result``, ``explain.findings``) import without TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["METHODS", "Attribution", "attribute", "explain"]
__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from explain.attributions import METHODS, Attribution, attribute, explain


def __getattr__(name: str) -> Any:
    if name in __all__:
        from explain import attributions

        value = getattr(attributions, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'explain' has no attribute {name!r}")
