"""Per-stage wall-clock timings, collected the same way by the CLI, the worker and the benchmark."""

from __future__ import annotations

import time
from contextlib import contextmanager


class StageTimer:
    """Accumulates seconds per stage name; ``with timer("encode"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def merge(self, other: "StageTimer") -> None:
        for stage, seconds in other.seconds.items():
            self.add(stage, seconds)

    def total(self) -> float:
        return sum(self.seconds.values())

    def as_ms(self) -> dict[str, float]:
        return {stage: round(s * 1000, 2) for stage, s in self.seconds.items()}
