"""The reader's read-ahead: one producer thread, a bounded queue, and a consumer that sees its errors.

Why a module of its own: the hand-off between the decode thread and the consumer (bounded put that gives up on
close, end and failure markers, draining a producer blocked on a full queue) is thread plumbing that knows nothing
about video; :class:`vr180matte.io.reader.FrameReader` keeps the frame range and decoding. Why bounded: a 6144x3072
RGB frame is 54 MiB, so the producer must never run ahead by more than ``size`` items.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

_END = object()  # sentinel: decoding finished normally


class _Failure:
    """Carries an exception from the decode thread to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class ReadAhead:
    """A bounded queue fed by one background thread; iterating :meth:`items` yields what it puts, in order."""

    def __init__(self, size: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None
        #: largest queue size observed (proves the bound in tests)
        self.max_queued = 0

    @property
    def stopped(self) -> bool:
        """True once :meth:`close` was called: the producer should stop."""
        return self._stop.is_set()

    def start(self, target: Callable[[], None], name: str) -> None:
        self.thread = threading.Thread(target=target, name=name, daemon=True)
        self.thread.start()

    # -- consumer side -------------------------------------------------------------------------------------------
    def items(self) -> Iterator:
        """Yield the producer's items until it finishes; re-raise its failure here, in the consumer's thread."""
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def close(self) -> None:
        """Stop the producer thread and drop queued items; safe to call twice."""
        self._stop.set()
        t = self.thread
        if t is not None and t.is_alive():
            while t.is_alive():  # unblock a producer waiting on a full queue
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                t.join(timeout=0.05)
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    # -- producer side -------------------------------------------------------------------------------------------
    def put(self, item) -> bool:
        """Blocking put that gives up when the reader is closed; False means stop."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                self.max_queued = max(self.max_queued, self._queue.qsize())
                return True
            except queue.Full:
                continue
        return False

    def finish(self) -> None:
        """Tell the consumer that the producer finished normally."""
        self.put(_END)

    def fail(self, exc: BaseException) -> None:
        """Hand ``exc`` to the consumer, which raises it."""
        self.put(_Failure(exc))
