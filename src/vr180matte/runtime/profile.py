"""Per-stage timing and peak memory sampling for stats.json and the processing report.

Under concurrency (decode, compute and encode in their own threads) the sum of stage seconds is no longer
the wall time, so :class:`StageTimer` keeps three honest figures:

* **busy seconds** per stage: time some thread spent inside ``with timer(stage)``; summed over threads, so
  two threads refining at once count twice (it is work done, not elapsed time);
* **wait seconds** per queue side: time a thread was blocked on a bounded queue (``put`` blocked = the
  consumer is the bottleneck; ``get`` blocked = the producer is). :class:`TimedQueue` records them;
* **wall seconds** from :meth:`StageTimer.start` to :meth:`StageTimer.stop` (or now), and the process's CPU
  seconds over the same span: ``core_utilization = cpu_s / (wall_s * cores)`` says whether the overlap leaves
  cores idle (near 1.0: every core busy, so only less work, not more overlap, can make the run faster).

``busiest_stage_s`` is the largest busy figure: with perfect overlap the wall time approaches it, so
``efficiency = wall / busiest`` (1.0 = the pipeline runs at the speed of its slowest stage) is what the
throughput benchmark and the processing report print.

* **busy seconds per overlapping stage** (``pipeline_busy_s``): the threads of :mod:`vr180matte.pipeline.overlap`
  (``segment`` = upload + scale + segment, ``finish`` = refine + temporal + quality + composite, ``encode``) each
  run several of the steps above one after another, so a thread's busy time is the sum of its steps; the pipeline
  cannot go faster than its busiest thread, and ``pipeline_efficiency = wall / that`` says how close it gets.

All updates take a lock: stages run in several threads and ``dict[k] += x`` is a read-modify-write.

GPU stages queue kernels and return before they ran, so a plain timer charges their device time to whichever
stage next reads a result. With ``sync`` set (``performance.profile_sync``: the pipeline passes
``torch.cuda.synchronize``), every stage synchronises the device on entry and on exit, so its seconds include
its own kernels and none of an earlier stage's. That costs the overlap between host and device, so production
runs leave it off; benchmarks that print per-stage GPU seconds turn it on.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import psutil


class StageTimer:
    """Accumulates busy seconds per named stage (``with timer("decode"): ...``), thread-safe.

    ``seconds`` / :meth:`as_dict` keep their meaning (busy seconds per stage) so existing callers see no
    change; :meth:`summary` adds waits, wall time and the busiest stage.
    """

    def __init__(self, enabled: bool = True, sync: Callable[[], None] | None = None):
        self.enabled = enabled
        self.sync = sync  # called at every stage boundary when set (device synchronisation, see module doc)
        self.seconds: dict[str, float] = defaultdict(float)
        self.waits: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._threads: dict[str, set[int]] = defaultdict(set)
        self.pipeline: dict[str, float] = defaultdict(float)  # busy seconds per overlapping stage (thread)
        self._lock = threading.Lock()
        self._t_start: float | None = None
        self._t_stop: float | None = None
        self._cpu_start: float | None = None  # process CPU seconds at start() (all threads, native ones too)
        self._cpu_stop: float | None = None

    # ----------------------------------------------------------------- wall clock
    def start(self) -> None:
        """Start (or restart) the wall clock; the first stage entered starts it when nobody called this."""
        with self._lock:
            self._t_start = time.perf_counter()
            self._t_stop = None
            self._cpu_start, self._cpu_stop = time.process_time(), None

    def stop(self) -> None:
        with self._lock:
            if self._t_start is not None:
                self._t_stop = time.perf_counter()
                self._cpu_stop = time.process_time()

    @property
    def cpu_s(self) -> float | None:
        """Process CPU seconds between :meth:`start` and :meth:`stop` (or now); None if start() was not called."""
        with self._lock:
            if self._cpu_start is None:
                return None
            return (self._cpu_stop if self._cpu_stop is not None else time.process_time()) - self._cpu_start

    @property
    def wall_s(self) -> float:
        with self._lock:
            if self._t_start is None:
                return 0.0
            end = self._t_stop if self._t_stop is not None else time.perf_counter()
            return end - self._t_start

    # ----------------------------------------------------------------- busy / wait
    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        if self.sync is not None:
            self.sync()  # work queued before this stage is not charged to it
        t0 = time.perf_counter()
        if self._t_start is None:
            with self._lock:
                if self._t_start is None:
                    self._t_start = t0
        try:
            yield
        finally:
            if self.sync is not None:
                self.sync()  # this stage's queued kernels are part of its time
            dt = time.perf_counter() - t0
            with self._lock:
                self.seconds[stage] += dt
                self.calls[stage] += 1
                self._threads[stage].add(threading.get_ident())

    @contextmanager
    def wait(self, name: str) -> Iterator[None]:
        """Time spent blocked (on a queue, a lock, a device sync) under ``name``; not counted as busy."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add_wait(name, time.perf_counter() - t0)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds

    def add_pipeline(self, stage: str, seconds: float) -> None:
        """Busy seconds of one item in an overlapping stage (:func:`vr180matte.pipeline.overlap.run_stages`)."""
        if not self.enabled:
            return
        with self._lock:
            self.pipeline[stage] += seconds

    def add_wait(self, name: str, seconds: float) -> None:
        if not self.enabled:
            return
        with self._lock:
            self.waits[name] += seconds

    # ----------------------------------------------------------------- output
    def as_dict(self) -> dict[str, float]:
        """Busy seconds per stage (the ``stages`` block of stats.json)."""
        with self._lock:
            return {k: round(v, 4) for k, v in self.seconds.items()}

    def summary(self, exclude: tuple[str, ...] = ("probe", "load_models", "finalize")) -> dict[str, Any]:
        """``{"wall_s", "busy_s", "wait_s", "threads", "busiest_stage", "busiest_stage_s", "efficiency",
        "pipeline_busy_s", "pipeline_busiest", "pipeline_busiest_s", "pipeline_efficiency", "cpu_s", "cores",
        "core_utilization"}``.

        ``exclude``: one-off stages that do not run per frame and so cannot overlap with anything; they are
        still listed in ``busy_s`` but are not candidates for the busiest stage.
        """
        wall = self.wall_s
        cpu = self.cpu_s
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        with self._lock:
            busy = {k: round(v, 4) for k, v in self.seconds.items()}
            waits = {k: round(v, 4) for k, v in self.waits.items()}
            threads = {k: len(v) for k, v in self._threads.items()}
            pipe = {k: round(v, 4) for k, v in self.pipeline.items()}
        if pipe and "decode" in busy:
            pipe = {"decode": busy["decode"], **pipe}  # the reader's own thread is the first stage
        p_name = max(pipe, key=pipe.get) if pipe else None
        p_top = pipe[p_name] if p_name else 0.0
        per_frame = {k: v for k, v in busy.items() if k not in exclude}
        name = max(per_frame, key=per_frame.get) if per_frame else None
        top = per_frame[name] if name else 0.0
        return {
            "wall_s": round(wall, 4),
            "busy_s": busy,
            "wait_s": waits,
            "threads": threads,
            "busiest_stage": name,
            "busiest_stage_s": round(top, 4),
            "efficiency": round(wall / top, 4) if top > 0 else None,
            "pipeline_busy_s": pipe,
            "pipeline_busiest": p_name,
            "pipeline_busiest_s": round(p_top, 4),
            "pipeline_efficiency": round(wall / p_top, 4) if p_top > 0 else None,
            "cpu_s": None if cpu is None else round(cpu, 3),
            "cores": cores,
            "core_utilization": round(cpu / (wall * cores), 4) if cpu is not None and wall > 0 else None,
        }


class TimedQueue(queue.Queue):
    """A bounded :class:`queue.Queue` that books blocked time into a :class:`StageTimer`.

    ``put`` waits are booked as ``"<name>.put"`` (the queue was full: downstream is slower) and ``get``
    waits as ``"<name>.get"`` (the queue was empty: upstream is slower).
    """

    def __init__(self, maxsize: int, timer: StageTimer, name: str):
        super().__init__(maxsize)
        self._timer = timer
        self._name = name

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        t0 = time.perf_counter()
        try:
            super().put(item, block, timeout)
        finally:
            self._timer.add_wait(f"{self._name}.put", time.perf_counter() - t0)

    def get(self, block: bool = True, timeout: float | None = None):
        t0 = time.perf_counter()
        try:
            return super().get(block, timeout)
        finally:
            self._timer.add_wait(f"{self._name}.get", time.perf_counter() - t0)


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
