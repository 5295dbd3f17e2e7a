"""Run a chain of stages over a stream of items, each stage in its own thread, joined by bounded queues.

Why threads: decode (PyAV), the models (torch, MediaPipe) and encode (PyAV) release the GIL while they work, so
three threads keep up to three cores busy and the wall time approaches the busiest stage instead of the sum.
Why it stays deterministic: each stage runs in exactly one thread and queues are FIFO, so every stage sees the
items in order and keeps its sequential state (tracks, the temporal smoother, the encoder) exactly as in a serial
run: the output bytes are the same with or without overlap.

The first stage runs in the calling thread (it pulls from the source, usually the reader's own decode thread);
the others run in worker threads. A stage returns the item for the next stage, or ``None`` to drop it. Any
exception in any stage stops the chain and is re-raised in the caller; Ctrl-C/SIGTERM in the caller stops the
workers before it propagates.

On a GPU (the device policy's ``stage_streams``) each stage thread runs on a CUDA stream of its own and items are
handed over with an event (runtime/streams.py), so the stages' kernels overlap on the device too.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Iterable

from ..runtime.profile import StageTimer, TimedQueue
from ..runtime.streams import StageStreams

_DONE = object()


class _Stop(Exception):
    pass


def run_stages(source: Iterable, stages: list[tuple[str, Callable]], *, timer: StageTimer, depth: int = 2,
               threaded: bool = True, streams: StageStreams | None = None) -> None:
    """Feed every item of ``source`` through ``stages`` (``[(name, fn), ...]``); the last stage's result is dropped.

    ``depth``: items each queue holds (memory: at most ``depth`` frames in flight between two stages).
    ``threaded=False`` runs everything in the calling thread, one item at a time (same results, no overlap).
    ``streams``: a CUDA stream per stage thread, events at the hand-offs (see the module docstring).
    """
    threaded = threaded and len(stages) > 1
    handoff = streams if streams is not None and threaded else StageStreams("cpu", False)

    def timed(name: str, fn: Callable) -> Callable:
        def call(item):
            t0 = time.perf_counter()
            try:
                return handoff.send(fn(handoff.receive(item)))
            finally:
                timer.add_pipeline(name, time.perf_counter() - t0)
        return call

    stages = [(name, timed(name, fn)) for name, fn in stages]
    if not threaded:
        for item in source:
            for _name, fn in stages:
                item = fn(item)
                if item is None:
                    break
        return

    stop = threading.Event()
    # Each worker sets its own event as its very last act. The caller waits on these, not on Thread.join():
    # when a signal handler raises (SIGTERM, Ctrl-C) inside join(), CPython 3.11 can mark a still-running
    # thread as stopped (its bpo-45274 clean-up releases the lock the running thread holds), so is_alive() lies.
    finished = [threading.Event() for _ in stages[1:]]
    errors: list[BaseException] = []
    queues = [TimedQueue(depth, timer, f"{name}.in") for name, _ in stages[1:]]

    def put(q: TimedQueue, item) -> None:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stop

    def worker(k: int) -> None:
        name, fn = stages[k]
        q_in = queues[k - 1]
        q_out = queues[k] if k < len(stages) - 1 else None
        try:
            # the stage's own stream, waited for on leaving: before ``finished`` tells the caller it is done
            with handoff.stage():
                while True:
                    try:
                        item = q_in.get(timeout=0.1)
                    except queue.Empty:
                        if stop.is_set():
                            break
                        continue
                    if item is _DONE or stop.is_set():
                        break
                    out = fn(item)
                    if out is not None and q_out is not None:
                        put(q_out, out)
        except _Stop:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, which re-raises it
            errors.append(exc)
            stop.set()
        finally:
            if q_out is not None:
                try:
                    put(q_out, _DONE)
                except _Stop:
                    pass
            if stop.is_set():  # unblock an upstream put waiting on this queue
                while not q_in.empty():
                    try:
                        q_in.get_nowait()
                    except queue.Empty:
                        break
            finished[k - 1].set()

    threads = [threading.Thread(target=worker, args=(k,), name=f"vr180matte-{stages[k][0]}", daemon=True)
               for k in range(1, len(stages))]
    first = stages[0][1]
    try:
        for t in threads:  # inside the try: a signal while starting them still stops the ones that started
            t.start()
        try:
            with handoff.stage():
                for item in source:
                    if stop.is_set():
                        break
                    out = first(item)
                    if out is not None:
                        put(queues[0], out)
        except _Stop:
            pass
        finally:
            try:
                put(queues[0], _DONE)
            except _Stop:
                pass
        for ev in finished:
            while not ev.wait(timeout=0.2):
                pass
    except BaseException:
        stop.set()  # the caller's own error or Ctrl-C/SIGTERM: stop the workers, then propagate
        # Wait for every worker to leave its stage: each checks ``stop`` between items, so this takes one item's
        # time. Returning earlier would let the caller close a writer a worker is still encoding into, and two
        # threads inside one FFmpeg codec context deadlock (seen under load as a SIGTERM that never exits).
        for t, ev in zip(threads, finished):
            # A thread without an ident never ran; one that runs after stop was set takes no item.
            while t.ident is not None and not ev.wait(timeout=0.2):
                pass
        raise
    if errors:
        raise errors[0]
