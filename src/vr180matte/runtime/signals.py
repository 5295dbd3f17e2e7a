"""SIGTERM handled like Ctrl-C.

Containers, queue workers and ``systemctl stop`` send SIGTERM, and Python's default for it is to die at once
(exit 143, no message, no bookkeeping). Raising :class:`~vr180matte.errors.Terminated` (a ``KeyboardInterrupt``)
in the main thread instead unwinds the run exactly as Ctrl-C does: finished chunks stay in the work folder,
partial files are discarded, a batch records the item as "interrupted", and the CLI exits 143 with one line.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator

from ..errors import Terminated

log = logging.getLogger(__name__)


def _raise_terminated(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    # Restore the default first: a second SIGTERM (an impatient supervisor) ends the process at once.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Terminated("terminated (SIGTERM)")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (no-op off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
