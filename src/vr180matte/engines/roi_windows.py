"""Crop planning for the ROI segmenter (engines/roi.py): which people are small enough for a crop of their own,
the square window around each, and when a window no longer fits its person.

Pure geometry on boxes in eye pixels, apart from the segmenters so the rules read in one place: a window is
fixed while its person stays well inside it (a memory-based segmenter attends to frames of the same geometry)
and is replaced only when the mask nears an inner edge, outgrows it or shrinks far inside it.
"""
from __future__ import annotations

import numpy as np

_EDGE = 0.08  # a mask box closer than this fraction of the window side to a window edge (inside the eye) re-anchors
_GROW = 0.75  # ... or larger than this fraction of the window side
_SHRINK = 0.2  # ... or smaller than this fraction of it (the person went far away: a tighter window)


class CropPlanner:
    """``max_frac``: a track gets a lane when its window side is at most this fraction of the eye's shorter side
    (0 = never). ``context``: window = box grown by this fraction of its longer side on each side. ``min_side``:
    smallest window side in pixels."""

    def __init__(self, max_frac: float, context: float, min_side: int) -> None:
        self.max_frac = float(max_frac)
        self.context = float(context)
        self.min_side = int(min_side)

    def side(self, box: np.ndarray) -> float:
        """The crop window side for ``box``: its longer side grown by ``context`` on each side."""
        return max(float(box[2] - box[0]), float(box[3] - box[1])) * (1.0 + 2.0 * self.context)

    def window(self, box: np.ndarray, H: int, W: int) -> tuple[int, int, int, int]:
        side = int(round(min(max(self.side(box), self.min_side), H, W)))
        cx, cy = 0.5 * float(box[0] + box[2]), 0.5 * float(box[1] + box[3])
        x0 = int(round(min(max(cx - side / 2, 0), W - side)))
        y0 = int(round(min(max(cy - side / 2, 0), H - side)))
        return x0, y0, x0 + side, y0 + side

    def small(self, box: np.ndarray, H: int, W: int) -> bool:
        return self.max_frac > 0 and self.side(box) <= self.max_frac * min(H, W)

    def misfit(self, box: np.ndarray, window: tuple[int, int, int, int], H: int, W: int) -> bool:
        """Whether ``box`` (eye pixels) nears an inner edge of ``window``, outgrows it or shrank far inside it."""
        x0, y0, x1, y1 = window
        side = float(max(x1 - x0, y1 - y0))
        e = _EDGE * side
        near_edge = ((box[0] <= x0 + e and x0 > 0) or (box[1] <= y0 + e and y0 > 0)
                     or (box[2] >= x1 - e and x1 < W) or (box[3] >= y1 - e and y1 < H))
        size = float(max(box[2] - box[0], box[3] - box[1]))
        return near_edge or size > _GROW * side or (size < _SHRINK * side and side > self.min_side)
