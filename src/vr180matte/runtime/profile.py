"""Per-stage timing and peak memory sampling for stats.json and the processing report."""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable, Iterator

import psutil


class StageTimer:
    """Accumulates wall seconds per named stage (``with timer("decode"): ...``)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t0

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.seconds.items()}


class MemorySampler:
    """Samples this process's RSS (and an optional VRAM probe) in a background thread.

    Sampling rather than reading ru_maxrss at the end keeps a time series for the report and measures
    this run only (ru_maxrss is process-lifetime, which misleads when several runs share a process).
    """

    def __init__(
        self,
        interval_s: float = 0.25,
        vram_mb: Callable[[], float | None] | None = None,
        on_sample: Callable[[float, float, float | None], None] | None = None,
    ):
        self.interval_s = interval_s
        self._vram = vram_mb or (lambda: None)
        self._on_sample = on_sample
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.perf_counter()
        self.peak_rss_mb = 0.0
        self.peak_vram_mb: float | None = None

    def sample(self) -> None:
        rss = self._proc.memory_info().rss / 2**20
        vram = self._vram()
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        if vram is not None:
            self.peak_vram_mb = max(self.peak_vram_mb or 0.0, vram)
        if self._on_sample is not None:
            self._on_sample(time.perf_counter() - self._t0, rss, vram)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> "MemorySampler":
        self.sample()
        self._thread = threading.Thread(target=self._run, name="vr180matte-memsampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.sample()
