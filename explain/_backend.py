"""Backend setup shared by every module that touches Keras.

xaudit's numeric core is written against TensorFlow (GradientTape, tf.function), so the
Keras backend is pinned to TensorFlow before Keras is first imported.

TensorFlow's C++ runtime writes start-up lines to stderr (``oneDNN custom operations are
on``, ``Could not find cuda drivers``, ``failed call to cuInit``) from its absl logging,
which ``TF_CPP_MIN_LOG_LEVEL`` no longer reaches. They say nothing to an xaudit user and
bury its one-line answers, so the import and the device discovery run with stderr (file
descriptor 2) sent to a temporary file; if the import fails, what it wrote is replayed.
``XAUDIT_TF_LOGS=1`` keeps them.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import_quietly() -> tuple[Any, Any]:
    if os.environ.get("XAUDIT_TF_LOGS", "").strip().lower() in ("1", "true", "yes", "on"):
        import keras
        import tensorflow as tf

        return keras, tf
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable descriptor 2 (embedded interpreters)
        import keras
        import tensorflow as tf

        return keras, tf
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # device discovery logs its cuInit error now
            import keras
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return keras, tf


keras, tf = _import_quietly()

__all__ = ["keras", "tf"]
