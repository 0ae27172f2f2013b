"""Backend setup shared by every module that touches Keras.

xaudit's numeric core is written against TensorFlow (GradientTape, tf.function), so the
Keras backend is pinned to TensorFlow before Keras is first imported.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

__all__ = ["keras", "tf"]
