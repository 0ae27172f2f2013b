"""The worker's entry point: ``celery -A worker.celery_app worker -Q attributions,default``.

GPU memory growth is configured before anything initialises TensorFlow's devices.
"""

from __future__ import annotations

from celery.signals import worker_ready

from worker.gpu import configure_gpus

configure_gpus()

from api import create_app  # noqa: E402
from worker.app import celery_init_app  # noqa: E402

flask_app = create_app()
celery = celery_init_app(flask_app)
app = celery


@worker_ready.connect
def _announce_liveness(**_kwargs) -> None:
    # /healthz counts workers by this heartbeat (worker/watchdog.py).
    from api.liveness import start_liveness

    start_liveness(flask_app.config)
