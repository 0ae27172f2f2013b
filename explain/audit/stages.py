"""The audit's stages, their share of its time, and the progress callback's timing."""

from __future__ import annotations

import time
from collections.abc import Callable

#: Pipeline stages in order, with the share of a typical audit's time each takes (used to
#: turn progress within a stage into progress of the whole audit).
STAGES: tuple[tuple[str, float], ...] = (
    ("load_model", 0.04),
    ("load_data", 0.02),
    ("evaluate", 0.04),
    ("select_examples", 0.01),
    ("attributions", 0.40),
    ("global_importance", 0.06),
    ("quality", 0.36),
    ("fairness", 0.02),
    ("drift", 0.01),
    ("findings", 0.02),
    ("assemble", 0.02),
)
_STAGE_NAMES = tuple(name for name, _ in STAGES)


Progress = Callable[[str, float], None]


def stage_span(stage: str) -> tuple[float, float]:
    """``(start, end)`` of ``stage`` on the 0 → 1 scale of the progress callback."""
    start = 0.0
    for name, weight in STAGES:
        if name == stage:
            return start, min(1.0, start + weight)
        start += weight
    raise ValueError(f"unknown audit stage {stage!r}; stages: {', '.join(_STAGE_NAMES)}")





class Stages:
    """Calls the progress callback and times each stage."""

    def __init__(self, callback: Progress | None):
        self.callback = callback
        self.timings: dict[str, float] = {}
        self.stage: str | None = None
        self.t0 = 0.0

    def start(self, stage: str) -> None:
        self._close()
        self.stage, self.t0 = stage, time.perf_counter()
        self.step(0.0)

    def step(self, within: float) -> None:
        if self.callback is None or self.stage is None:
            return
        lo, hi = stage_span(self.stage)
        self.callback(self.stage, lo + (hi - lo) * min(1.0, max(0.0, float(within))))

    def finish(self) -> dict[str, float]:
        if self.stage is not None:
            self.step(1.0)
        self._close()
        return self.timings

    def _close(self) -> None:
        if self.stage is not None:
            self.timings[self.stage] = round(time.perf_counter() - self.t0, 4)
            self.stage = None

