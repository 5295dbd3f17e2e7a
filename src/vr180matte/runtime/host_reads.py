"""Count host reads of tensor values and dispatched torch ops, by label: how the GPU frame path is checked on a
CPU (benchmarks/host_reads.py, tests/runtime/test_host_reads.py).

Why count instead of time: on a GPU every read of a device value back to the host (``.item()``, ``bool(t)``,
``.numpy()``, ...) is a synchronisation that waits for all queued kernels, and the per-frame op count is what
the launch overhead scales with. Both can be counted on any device, so a CPU run with the GPU policy forced
shows what a GPU run would pay, without a GPU.

:class:`HostReadCounter` is a context manager that enters a ``TorchFunctionMode`` (sees Python-level tensor
methods, where the reads are) and a ``TorchDispatchMode`` (sees every aten op that runs, however it was called).
Both modes are thread-local: enter it in the thread that does the work. ``label`` (a string set by the caller,
e.g. ``"frame 3/refine"``) is what the counts are filed under.
"""
from __future__ import annotations

import sys
from collections import Counter
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

#: tensor methods that read a value back to the host (``__array__`` is numpy's conversion, e.g. np.asarray(t))
READS = frozenset({"item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__", "__array__"})
_PACKAGE = str(Path(__file__).resolve().parents[1])
_HERE = str(Path(__file__).resolve())


def _site() -> str:
    """``module.py:function:line`` of the innermost product frame below this module: where a read was asked."""
    f = sys._getframe(2)
    while f is not None:
        name = f.f_code.co_filename
        if name.startswith(_PACKAGE) and name != _HERE:
            return f"{name[len(_PACKAGE) + 1:]}:{f.f_code.co_name}:{f.f_lineno}"
        f = f.f_back
    return "outside the package"


def _to_host(func, args, kwargs) -> bool:
    """``t.cpu()`` / ``t.to("cpu")``: a device-to-host copy on a GPU (a no-op on a CPU, so counted apart).

    Only the literal forms count: ``t.to(self.device)`` with a ``torch.device`` is the policy's device (on a
    GPU run, the GPU), which a CPU run cannot tell apart from a download."""
    name = getattr(func, "__name__", "")
    if name == "cpu":
        return True
    if name != "to":
        return False
    dev = kwargs.get("device") if kwargs else None
    if dev is None and len(args) > 1:
        dev = args[1]
    return isinstance(dev, str) and dev.startswith("cpu")


class _Reads(TorchFunctionMode):
    def __init__(self, owner: "HostReadCounter") -> None:
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in READS:
            self.owner.reads[self.owner.label] += 1
            self.owner.read_kinds[name] += 1
            self.owner.read_sites[f"{self.owner.label}|{_site()}"] += 1
        elif _to_host(func, args, kwargs):
            self.owner.downloads[self.owner.label] += 1
        return func(*args, **(kwargs or {}))


class _Ops(TorchDispatchMode):
    def __init__(self, owner: "HostReadCounter") -> None:
        super().__init__()
        self.owner = owner

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.owner.ops[self.owner.label] += 1
        return func(*args, **(kwargs or {}))


class HostReadCounter:
    """``with HostReadCounter() as c: ...`` then ``c.reads`` / ``c.ops`` / ``c.downloads`` (Counters by label),
    ``c.read_kinds`` (by method name) and ``c.read_sites`` (by label and the product line that asked).
    Set ``c.label`` (or use :meth:`labelled`) to file counts."""

    def __init__(self, label: str = "other") -> None:
        self.label = label
        self.reads: Counter = Counter()  # host reads of tensor values
        self.ops: Counter = Counter()  # aten ops dispatched
        self.downloads: Counter = Counter()  # .cpu() / .to("cpu") calls: device-to-host copies on a GPU
        self.read_kinds: Counter = Counter()
        self.read_sites: Counter = Counter()  # "<label>|<module>:<function>:<line>": where each read was asked
        self._stack: ExitStack | None = None

    def __enter__(self) -> "HostReadCounter":
        self._stack = ExitStack()
        self._stack.enter_context(_Reads(self))
        self._stack.enter_context(_Ops(self))
        return self

    def __exit__(self, *exc) -> None:
        stack, self._stack = self._stack, None
        stack.close()

    @contextmanager
    def labelled(self, label: str):
        """File what runs inside under ``label`` (restores the previous label after)."""
        prev, self.label = self.label, label
        try:
            yield self
        finally:
            self.label = prev

    def total(self, what: str = "reads", prefix: str = "") -> int:
        """Sum of ``reads``/``ops``/``downloads`` over the labels starting with ``prefix``."""
        return sum(v for k, v in getattr(self, what).items() if k.startswith(prefix))
