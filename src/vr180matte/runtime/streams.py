"""One CUDA stream per stage thread, with an event at every hand-off between stages (issue 19, GPU policy).

Why: the pipeline's stages run in threads (pipeline/overlap.py) so decode, the models, the frame math and the
encoder overlap. On one CUDA stream they would not: every kernel of every thread queues behind the others, and a
stage that has to wait for its own result (a download) also waits for the other stages' kernels. With a stream
per stage thread, each stage's kernels queue on their own; the next stage's stream waits for an event recorded
where the previous stage's work on the item ends, which orders the two on the device without a host
synchronisation.

The caching allocator hands a freed block back to the stream that allocated it at once. A tensor made by one
stage and used by the next is freed by the later stage, possibly while that stage's kernels still read it; so
every tensor of a handed-over item is recorded on the receiving stream (``Tensor.record_stream``), and the
allocator keeps its memory until that stream's work on it is done.

Off (the CPU, or the CPU policy): every call is the identity and nothing is created, so the same stage code runs
on either device.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import Any, Iterator

import torch

__all__ = ["StageStreams", "tensors_in"]


@dataclasses.dataclass
class _Handed:
    """An item between two stages and the event that marks the end of the sending stage's work on it."""

    item: Any
    event: Any


class StageStreams:
    """Streams and hand-off events of one run's stage threads (``enabled``: the device policy's
    ``stage_streams``; only ever on for a CUDA device)."""

    def __init__(self, device: torch.device | str, enabled: bool) -> None:
        self.device = torch.device(device)
        self.enabled = bool(enabled) and self.device.type == "cuda" and torch.cuda.is_available()

    @contextmanager
    def stage(self) -> Iterator[None]:
        """Run the calling thread's stage on a stream of its own (the current stream is per thread). On leaving,
        the stream's work is waited for (once a chunk): what the stage left behind (a chunk's hand-off state, the
        last frames' tracks) is then complete for whatever stream reads it next."""
        if not self.enabled:
            yield
            return
        stream = torch.cuda.Stream(device=self.device)
        try:
            with torch.cuda.stream(stream):
                yield
        finally:
            stream.synchronize()

    def send(self, item: Any) -> Any:
        """After a stage: ``item`` with an event recorded on the stage's stream (where its work on it ends)."""
        if not self.enabled or item is None:
            return item
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        return _Handed(item, event)

    def receive(self, handed: Any) -> Any:
        """Before a stage: its stream waits for the sender's event (on the device, no host wait) and keeps the
        memory of the item's tensors until its own work on them is done."""
        if not isinstance(handed, _Handed):
            return handed
        stream = torch.cuda.current_stream(self.device)
        stream.wait_event(handed.event)
        for t in tensors_in(handed.item):
            if t.device.type == "cuda":
                t.record_stream(stream)
        return handed.item


def tensors_in(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor reachable from ``obj`` through dicts, lists, tuples, sets and dataclass fields (each once)."""
    seen: set[int] = set()
    stack = [obj]
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, torch.Tensor):
            yield x
        elif isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple, set, frozenset)):
            stack.extend(x)
        elif dataclasses.is_dataclass(x) and not isinstance(x, type):
            stack.extend(getattr(x, f.name) for f in dataclasses.fields(x))
