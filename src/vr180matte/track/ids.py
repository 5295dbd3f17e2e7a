"""Track id allocation, shared between the two eyes and carried across chunks.

Why its own object: ids must be stable for the whole video (the chunk hand-off saves ``next_id``) and, in the
stereo modes, the same person must have the same id in both eyes, so both views draw from one allocator.
"""
from __future__ import annotations


class IdAllocator:
    """Hands out increasing track ids; never reuses one within a video."""

    def __init__(self, next_id: int = 1) -> None:
        if next_id < 1:
            raise ValueError(f"next_id must be >= 1, got {next_id}")
        self.next_id = int(next_id)

    def new(self) -> int:
        """A fresh id."""
        i = self.next_id
        self.next_id += 1
        return i

    def observe(self, track_id: int) -> None:
        """Record an id chosen elsewhere (a seed, a hand-off) so :meth:`new` never hands it out again."""
        if track_id >= self.next_id:
            self.next_id = int(track_id) + 1

    def __repr__(self) -> str:
        return f"IdAllocator(next_id={self.next_id})"
