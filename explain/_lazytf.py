"""``keras`` and ``tf`` names that import TensorFlow on first use, not on import.

For modules on paths that often end before any model is built: checking an uploaded file
(most hostile files are refused from their bytes and JSON alone) and the ``xaudit``
commands that load nothing. ``keras.layers.Dense`` through these is the real attribute;
only the first access pays for importing TensorFlow (see :mod:`explain._backend`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["keras", "tf"]


class _Lazy:
    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        from explain import _backend

        return getattr(getattr(_backend, self._name), attr)

    def __repr__(self) -> str:
        return f"<{self._name}, imported on first use>"


keras: Any = _Lazy("keras")
tf: Any = _Lazy("tf")
