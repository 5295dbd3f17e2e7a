"""Stereo frame layouts, as data: how a frame splits into eyes, how eyes join back, how big an eye is.

One row per layout, read by the probe, the reader, the pipeline, the finalizer (metadata) and ``evaluate``, so a
layout's geometry is written once. Splits are views (no copy) of numpy arrays or torch tensors alike.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    name: str  # the config's ``input.layout`` value
    axis: int | None  # 1 = eyes side by side (width), 0 = stacked (height), None = one view
    left_first: bool  # the left eye is stored first (left half / top half)
    words: str  # for messages
    stereo_mode: str  # the st3d/sv3d stereo word written to metadata

    @property
    def stereo(self) -> bool:
        return self.axis is not None

    def eye_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of one eye of a ``width`` x ``height`` frame."""
        if self.axis == 1:
            return width // 2, height
        if self.axis == 0:
            return width, height // 2
        return width, height

    def fits(self, width: int, height: int) -> bool:
        """Whether the frame divides evenly into two eyes."""
        return self.axis is None or (width if self.axis == 1 else height) % 2 == 0

    def split(self, frame):
        """(left, right) views of an ``(H, W, ...)`` frame (numpy or torch); no copy."""
        if self.axis is None:
            raise ValueError(f"layout {self.name} has one view; it cannot be split into eyes")
        n = frame.shape[self.axis] // 2
        a, b = (frame[:, :n], frame[:, n:]) if self.axis == 1 else (frame[:n], frame[n:])
        return (a, b) if self.left_first else (b, a)

    def join(self, left, right):
        """The frame back from its eyes (torch tensors or numpy arrays)."""
        if self.axis is None:
            raise ValueError(f"layout {self.name} has one view")
        first, second = (left, right) if self.left_first else (right, left)
        if hasattr(first, "dim"):  # torch
            import torch

            return torch.cat([first, second], dim=self.axis)
        import numpy as np

        return np.concatenate([first, second], axis=self.axis)


LAYOUTS: dict[str, Layout] = {
    lay.name: lay
    for lay in (
        Layout("sbs", 1, True, "side-by-side", "left-right"),
        Layout("sbs_rl", 1, False, "side-by-side (right first)", "right-left"),
        Layout("tb", 0, True, "top-bottom", "top-bottom"),
        Layout("mono", None, True, "mono (one view)", "mono"),
    )
}
#: the layouts vr180matte can matte (two eyes)
STEREO_LAYOUTS = tuple(n for n, lay in LAYOUTS.items() if lay.stereo)
#: st3d/sv3d stereo word -> layout name
FROM_STEREO_MODE = {lay.stereo_mode: n for n, lay in LAYOUTS.items()}


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown stereo layout {name!r}; use {', '.join(LAYOUTS)}") from None
