"""GPU set-up for a worker process.

One worker process per GPU (``CUDA_VISIBLE_DEVICES`` pins it). Memory growth is turned on
so TensorFlow does not reserve the whole card up front, which would leave nothing for
a second process and hide how much a model really needs.
"""

from __future__ import annotations

import logging

log = logging.getLogger("xaudit.worker")


def configure_gpus() -> int:
    """Turn on memory growth for every visible GPU; return how many there are."""
    from explain._backend import tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            # Devices already initialised (something ran a model first): growth can no
            # longer be changed in this process; say so rather than fail.
            log.warning("GPU %s already initialised; memory growth unchanged", gpu.name)
    if gpus:
        log.info("worker sees %d GPU(s): %s", len(gpus), [g.name for g in gpus])
    return len(gpus)
