"""Attributes an object forwards to one of its parts: one descriptor for every class split by responsibility.

Why: when a per-frame class is split into parts (the stereo stage's detection and validation, a view's shared
state, the frame matter's two halves), its callers keep reaching what moved through the owner: ``owner.name``
reads, calls and assigns ``owner.<path>``. An assignment must land on the part, where the code that uses the
value looks (the stereo stage sets ``view.prompts``; tests set ``stage.detector``), so a plain alias will not do.
A missing attribute still raises ``AttributeError``, so ``getattr(owner, name, default)`` keeps working.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Forward"]


class Forward:
    """``name = Forward("part.attr")`` in a class body: ``obj.name`` is ``obj.part.attr`` (read and set)."""

    def __init__(self, path: str) -> None:
        self.path = path.split(".")

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        for name in self.path:
            obj = getattr(obj, name)
        return obj

    def __set__(self, obj: Any, value: Any) -> None:
        for name in self.path[:-1]:
            obj = getattr(obj, name)
        setattr(obj, self.path[-1], value)
