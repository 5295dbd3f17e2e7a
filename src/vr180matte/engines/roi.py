"""One matte per person at the person's own resolution: small people are segmented in their own crop.

A SAM-family segmenter sees the whole eye at its input size (1024 px) and decodes masks on a 256x256 grid, so
a distant pedestrian 40 px tall in a 1536 px processing eye covers a handful of mask cells: a blob, not a person.
:class:`RoiSegmenter` wraps any :class:`~vr180matte.engines.base.Segmenter`: each track whose box is small
(its crop window, the box grown by ``context`` on every side, would be at most ``max_frac`` of the eye's shorter
side) gets its own *lane*: a square window around it, cut from the frame and resized to the segmenter's input,
with its own inner segmenter (its own SAM2 memory bank / MobileSAM box). Larger people share one full-frame
inner segmenter as before. The crops of all lanes and the full frame go through the image encoder as one batch
(``batch``: the engine's own multi-view batch function), and each lane's mask is pasted back into the eye.

A lane's window is fixed while the person stays well inside it, so a memory-based segmenter (SAM2) attends to
frames of the same geometry. When the mask nears the window edge, outgrows or shrinks within it, the lane
*re-anchors*: a new window around the mask, prompted with that mask (a new conditioning frame, like a detector
re-prompt). A track that grows past the size limit moves to the full frame, and back, the same way.

Overlaps: lanes are separate segmenters, so two people whose windows overlap may both claim a pixel; each
pixel then belongs to the most confident track and the others are capped below 0.5 there, so one person's
matte never swallows the other's before the union is taken.

Crops are cut from the processing-resolution eye (``processing.scale_factor``); a lane gains the segmenter's
full token grid for the person, not pixels the processing resolution dropped.

This file runs a view's frame step; routing tracks to lanes is engines/roi_route.py, the window rules
engines/roi_windows.py, running the lanes' inner segmenters (and the two-eye prefetch) engines/roi_lanes.py,
pasting back and overlaps engines/roi_merge.py.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
import torch

from ..boxes import box_rows, boxes_from_rows, mask_boxes_and
from ..forward import Forward
from ..runtime.download import FrameDownload
from ..runtime.policy import choose_policy
from .roi_lanes import BatchFn, _Lane, _Pending, crop, prefetch_views, run_inner
from .roi_route import reanchor_if_misfit, route
from .roi_merge import contested, give_contested, paste
from .roi_windows import _EDGE, _GROW, _SHRINK, CropPlanner  # noqa: F401 - the thresholds re-exported

log = logging.getLogger(__name__)


class RoiSegmenter:
    """Segmenter protocol over ``make_inner()`` segmenters; see the module docstring.

    ``max_frac``: a track gets a lane when its window side is at most this fraction of the eye's shorter side
    (0 = never: every track on the full frame, exactly the inner segmenter's behaviour). ``context``: window =
    box grown by this fraction of its longer side on each side. ``max_lanes``: lanes per view at most (the
    smallest tracks get them first; the rest stay on the full frame), which bounds the encoder batch.
    ``min_side``: smallest window side in pixels.
    """

    # The window rules (constructor arguments) live on the CropPlanner.
    max_frac = Forward("crops.max_frac")
    context = Forward("crops.context")
    min_side = Forward("crops.min_side")

    def __init__(self, make_inner: Callable[[], Any], batch: BatchFn, *, max_frac: float = 0.25,
                 context: float = 0.5, max_lanes: int = 8, min_side: int = 48, read_free: bool = False) -> None:
        self.make_inner = make_inner
        # read_free (the GPU policy): the overlap hand-out runs on every frame, and the lanes' boxes and the
        # overlap count are posted to the view's one download of the step (share_download) instead of read here.
        # Off (CPU policy): one read here, which lets a frame where nobody overlaps skip the hand-out.
        self.read_free = bool(read_free)
        self.download: FrameDownload | None = None
        self.batch = batch
        self.full = make_inner()
        self.name = f"roi({getattr(self.full, 'name', type(self.full).__name__)})"
        self.crops = CropPlanner(max_frac, context, min_side)
        self.max_lanes = int(max_lanes)
        self.stats = {"lanes_started": 0, "reanchors": 0, "to_full": 0, "contested_pixels": 0}
        self.reset()

    # ------------------------------------------------------------------ protocol
    def reset(self) -> None:
        self.full.reset()
        self.lanes: dict[int, _Lane] = {}
        self._full_ids: set[int] = set()
        self._pending: dict[int, _Pending] = {}
        self._prefetched: set[int] = set()  # id() of inner segmenters encoded by prefetch_batch
        self._prefetched_frame: int | None = None

    def share_download(self, download: FrameDownload) -> None:
        """The view's download of the frame step (track/view_state.py), flushed with the tracker's statistics."""
        self.download = download

    @property
    def device(self) -> torch.device:
        return getattr(self.full, "device", torch.device("cpu"))

    def add_prompt(self, track_id: int, box: np.ndarray | None = None, mask: torch.Tensor | None = None, *,
                   box_is_mask: bool = False) -> None:
        """Routed on the next :meth:`segment`, when the eye's size is known."""
        if box is None and mask is None:
            raise ValueError("add_prompt needs a box or a mask")
        self._pending[int(track_id)] = _Pending(None if box is None else np.asarray(box, np.float32).reshape(4),
                                                mask, bool(box_is_mask and box is not None and mask is not None))

    def remove_track(self, track_id: int) -> None:
        tid = int(track_id)
        self._pending.pop(tid, None)
        self.lanes.pop(tid, None)
        if tid in self._full_ids:
            self._full_ids.discard(tid)
            self.full.remove_track(tid)

    @property
    def track_ids(self) -> list[int]:
        return sorted(set(self.lanes) | self._full_ids | set(self._pending))

    def segment(self, frame_idx: int, image: torch.Tensor) -> dict[int, torch.Tensor]:
        H, W = int(image.shape[0]), int(image.shape[1])
        self._route(H, W)
        lanes = list(self.lanes.items())
        segs = [self.full] + [lane.seg for _, lane in lanes]
        images = [image] + [crop(image, lane.window) for _, lane in lanes]
        # Inner segmenters encoded ahead by prefetch_batch (both eyes at once) use that; the rest (new lanes,
        # re-anchored ones) go through one encoder batch here.
        ready = self._prefetched if self._prefetched_frame == frame_idx else set()
        results = run_inner(segs, images, frame_idx, self.batch, ready)
        self._prefetched, self._prefetched_frame = set(), None
        out: dict[int, torch.Tensor] = dict(results[0])
        check = []  # lanes whose window may no longer fit their person: their mask boxes come down together
        for (tid, lane), res in zip(lanes, results[1:]):
            crop_prob = res.get(tid)
            if crop_prob is None:
                continue
            full = paste(crop_prob, lane.window, H, W)
            out[tid] = full
            if tid not in self._pending:  # else re-prompted from outside already
                check.append((tid, lane, crop_prob, full))
        ids, clash = contested(out) if len(out) > 1 else ([], None)
        if not check and clash is None:
            return out
        n = clash.sum()[None] if clash is not None else torch.zeros(1, device=image.device)

        def then(boxes: list, n: float) -> None:  # re-anchors act on the next frame; the count is for stats.json
            for (tid, lane, _, full), b in zip(check, boxes):
                self._maybe_reanchor(tid, lane, b, full, H, W)
            self.stats["contested_pixels"] += int(n)

        if self.read_free and self.download is not None:
            if clash is not None:
                give_contested(out, ids, clash)  # a where with nothing contested is a copy, a check a read
            rows = box_rows([c[2] for c in check], device=n.device)
            self.download.post(torch.cat([rows.flatten().to(n.device), n.float()]),
                               lambda v: then(boxes_from_rows(v[:-1]), v[-1]))
            return out
        # The lanes' mask boxes and the contested-pixel count come down together: one read per eye.
        boxes, (count,) = mask_boxes_and([c[2] for c in check], n)
        then(boxes, count)
        if count > 0:
            give_contested(out, ids, clash)
        return out

    #: parallel_eyes: both eyes' full frames and crops through the encoder as one batch (engines/roi_lanes.py)
    prefetch_batch = staticmethod(prefetch_views)

    # ------------------------------------------------------------------ routing (engines/roi_route.py)
    _route = route  # hand each pending prompt to a lane or to the full frame
    _maybe_reanchor = reanchor_if_misfit  # re-prompt a lane whose person no longer fits its window


def with_roi(cfg, make_inner: Callable[[], Any], batch: BatchFn, device: torch.device | str = "cpu") -> Any:
    """``make_inner()`` wrapped in a :class:`RoiSegmenter` per ``matting.roi_max_frac`` (0: the bare segmenter);
    read-free under the device policy's whole-frame path (runtime/policy.py)."""
    m = cfg.matting
    if float(m.roi_max_frac) <= 0:
        return make_inner()
    read_free = choose_policy(torch.device(device), force=cfg.hardware.policy).whole_frame
    return RoiSegmenter(make_inner, batch, max_frac=float(m.roi_max_frac), max_lanes=int(m.roi_max_lanes),
                        read_free=read_free)


__all__ = ["RoiSegmenter", "with_roi"]
