"""Stage timers for profiling inference and training (used by tools/benchmark.py)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class StageTimer:
    """Accumulates wall time per named stage; a no-op when disabled.

    On CUDA the device is synchronised at stage boundaries so that times are attributed to the
    stage that launched the work (only when enabled: syncs cost throughput).
    """

    def __init__(self, enabled: bool = True, device: torch.device | None = None):
        self.enabled = enabled
        self.cuda = device is not None and torch.device(device).type == "cuda"
        self.times: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
            self.times[name] += time.perf_counter() - start


NULL_TIMER = StageTimer(enabled=False)
