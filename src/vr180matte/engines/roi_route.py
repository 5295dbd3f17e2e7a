"""Routing of the ROI segmenter's prompts (engines/roi.py): which person gets a lane, and when a lane re-anchors.

Both run on the :class:`~vr180matte.engines.roi.RoiSegmenter`'s own state (its lanes, full-frame ids and queued
prompts) as its ``_route`` and ``_maybe_reanchor`` methods; they live here so the segmenter's frame step and its
routing rules each read in one sitting.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..boxes import mask_boxes
from .roi_lanes import _Lane, _Pending

if TYPE_CHECKING:
    from .roi import RoiSegmenter

__all__ = ["route", "reanchor_if_misfit"]


def route(self: RoiSegmenter, H: int, W: int) -> None:
    """Hand each pending prompt to a lane (new window) or to the full-frame segmenter."""
    if not self._pending:
        return
    pending, self._pending = self._pending, {}
    # The boxes of mask prompts route them: one download for those whose box is not known yet.
    masked = [tid for tid, p in pending.items() if p.mask is not None and not p.box_is_mask]
    from_masks = dict(zip(masked, mask_boxes([pending[tid].mask for tid in masked])))
    boxes = {}
    for tid, p in pending.items():
        box = from_masks.get(tid)
        boxes[tid] = box if box is not None else p.box
    free = self.max_lanes - len([t for t in self.lanes if t not in pending])
    small = sorted((t for t, b in boxes.items() if b is not None and self.crops.small(b, H, W)),
                   key=lambda t: float(max(boxes[t][2] - boxes[t][0], boxes[t][3] - boxes[t][1])))
    to_lane = set(small[: max(free, 0)])
    for tid, p in pending.items():
        box = boxes[tid]
        own = p.mask is not None and (p.box_is_mask or from_masks.get(tid) is not None)  # box = the mask's box
        if tid in to_lane:
            if tid in self._full_ids:
                self._full_ids.discard(tid)
                self.full.remove_track(tid)
            lane = self.lanes.get(tid)
            if lane is None or self.crops.misfit(box, lane.window, H, W):
                lane = _Lane(self.make_inner(), self.crops.window(box, H, W))
            # else: a re-prompt that still fits the window goes to the lane's own segmenter (a conditioning
            # frame in the same memory bank), so detector re-prompts do not reset its memory
            x0, y0, x1, y1 = lane.window
            mask = None if p.mask is None else p.mask[y0:y1, x0:x1]
            # the window holds the whole box, so a mask's own box stays its crop's own box
            lane.seg.add_prompt(tid, box=np.array([box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0],
                                                  np.float32), mask=mask, box_is_mask=own)
            if tid not in self.lanes:
                self.stats["lanes_started"] += 1
            self.lanes[tid] = lane
        else:
            if self.lanes.pop(tid, None) is not None:
                self.stats["to_full"] += 1
            self._full_ids.add(tid)
            self.full.add_prompt(tid, box=p.box if p.mask is None else box, mask=p.mask, box_is_mask=own)

def reanchor_if_misfit(self: RoiSegmenter, tid: int, lane: _Lane, b: np.ndarray | None, full: torch.Tensor,
                       H: int, W: int) -> None:
    """Re-prompt a lane whose person's box ``b`` (in its crop) no longer fits its window."""
    if b is None:
        return  # occluded or gone: keep the window, the person may come back into it
    x0, y0 = lane.window[:2]
    if self.crops.misfit(np.array([b[0] + x0, b[1] + y0, b[2] + x0, b[3] + y0], np.float32), lane.window, H, W):
        self.stats["reanchors"] += 1
        # ``b`` was measured on the lane's mask, pasted unchanged into ``full``: the full mask's own box
        self._pending[tid] = _Pending(np.array([b[0] + x0, b[1] + y0, b[2] + x0, b[3] + y0], np.float32), full,
                                      box_is_mask=True)
