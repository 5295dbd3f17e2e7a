"""Parallel intra-only encoding: N encoder contexts on consecutive frames, packets muxed in frame order.

Why: ProRes 4444 at 6144x3072 is the ceiling of every alpha deliverable (6.4 fps on a 16-core H200 machine with
one context, issue 20), and ProRes is intra-only: every frame is coded on its own, so frame ``i`` can go to
context ``i % N`` and the packets, put back in frame order, are the packets one context makes. The muxer stays in
the caller's thread (one writer of the container); the contexts work in their own threads, where PyAV releases
the GIL inside libavcodec and the frame conversion (numpy / swscale) releases it too.

State (created here): ``_pending`` holds at most N futures, oldest first; frame ``i``'s job runs on context
``i % N``'s own one-thread executor, so a context is never used by two threads at once and each sees its frames
in order. Packets are muxed in the order the items were submitted, matched by ``key`` (the pts): an encoder
with frame threads returns a frame's packet from a later call (or from the flush), so "the packets of job i"
are not always frame i's (``_order``: keys not yet muxed; ``_ready``: packets waiting for an earlier one).
Memory: at most N frames in conversion/encoding, plus their packets.

PNG sequences get the same treatment through :class:`FilePool` (one file per frame, so no muxing order).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable


class EncodePool:
    """Runs ``job(context, item) -> [packets]`` for consecutive items on ``contexts`` round robin and hands the
    packets to ``mux`` in item order. ``busy_s``: seconds the workers spent in jobs (summed over workers)."""

    def __init__(self, contexts: list, job: Callable, mux: Callable, name: str = "encode",
                 key: Callable = lambda packet: packet.pts) -> None:
        if not contexts:
            raise ValueError("EncodePool needs at least one context")
        self.contexts = list(contexts)
        self._job, self._mux, self._key = job, mux, key
        self._order: deque = deque()
        self._ready: dict = {}
        self._workers = [ThreadPoolExecutor(1, thread_name_prefix=f"vr180matte-{name}{k}")
                         for k in range(len(contexts))]
        self._pending: deque[Future] = deque()
        self._next = 0  # index of the next item (picks its context)
        self._lock = threading.Lock()
        self.busy_s = 0.0

    @property
    def n(self) -> int:
        return len(self.contexts)

    def _timed(self, ctx, item):
        t0 = time.perf_counter()
        try:
            return self._job(ctx, item)
        finally:
            with self._lock:  # += is a read-modify-write and the workers finish at the same time
                self.busy_s += time.perf_counter() - t0

    def submit(self, item, key) -> None:
        """Queue one item whose packet will carry ``key``; blocks while N items are in flight (muxing the
        oldest), so memory stays bounded."""
        while len(self._pending) >= self.n:
            self._mux_head()
        self._order.append(key)
        k = self._next % self.n
        self._next += 1
        self._pending.append(self._workers[k].submit(self._timed, self.contexts[k], item))
        while self._pending and self._pending[0].done():  # mux what is ready without waiting
            self._mux_head()

    def _mux_head(self) -> None:
        self._take(self._pending.popleft().result())  # re-raises the job's error in the caller

    def _take(self, packets) -> None:
        for packet in packets:
            self._ready[self._key(packet)] = packet  # intra-only: one packet per frame
        while self._order and self._order[0] in self._ready:
            self._mux(self._ready.pop(self._order.popleft()))

    def drain(self) -> None:
        """Mux every item submitted so far, in order."""
        while self._pending:
            self._mux_head()

    def close(self, flush: Callable | None = None) -> None:
        """Drain, then ``flush(context) -> [packets]`` for each context (the packets a frame-threaded encoder
        still holds), mux the rest in order, and stop the workers. After an error, only stops them."""
        try:
            self.drain()
            if flush is not None:
                for ctx in self.contexts:
                    self._take(flush(ctx))
            if self._order:
                raise RuntimeError(f"the encoder returned no packet for {len(self._order)} frame(s), "
                                   f"first key {self._order[0]}")
        finally:
            self.abort()

    def abort(self) -> None:
        """Stop the workers after the running jobs (queued ones are cancelled); safe to call twice."""
        for w in self._workers:
            w.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()
        self._order.clear()
        self._ready.clear()


class FilePool:
    """``write(item)`` jobs (one file per item) on N threads; errors surface at the next submit or at close."""

    def __init__(self, n: int, write: Callable, name: str = "png") -> None:
        self.n = max(1, int(n))
        self._write = write
        self._pool = ThreadPoolExecutor(self.n, thread_name_prefix=f"vr180matte-{name}") if self.n > 1 else None
        self._pending: deque[Future] = deque()
        self._lock = threading.Lock()
        self.busy_s = 0.0

    def _timed(self, item) -> None:
        t0 = time.perf_counter()
        try:
            self._write(item)
        finally:
            with self._lock:
                self.busy_s += time.perf_counter() - t0

    def submit(self, item) -> None:
        if self._pool is None:
            return self._timed(item)
        while len(self._pending) >= self.n:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._timed, item))
        while self._pending and self._pending[0].done():
            self._pending.popleft().result()

    def close(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            self._pending.clear()
