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
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..boxes import mask_box

log = logging.getLogger(__name__)

BatchFn = Callable[[list[Any], int, list[torch.Tensor]], list[dict[int, torch.Tensor]]]

_EDGE = 0.08  # a mask box closer than this fraction of the window side to a window edge (inside the eye) re-anchors
_GROW = 0.75  # ... or larger than this fraction of the window side
_SHRINK = 0.2  # ... or smaller than this fraction of it (the person went far away: a tighter window)


@dataclass
class _Lane:
    seg: Any  # the lane's own inner segmenter (one track)
    window: tuple[int, int, int, int]  # x0, y0, x1, y1 in eye pixels (square unless the eye is smaller)


@dataclass
class _Pending:
    box: np.ndarray | None
    mask: torch.Tensor | None


class RoiSegmenter:
    """Segmenter protocol over ``make_inner()`` segmenters; see the module docstring.

    ``max_frac``: a track gets a lane when its window side is at most this fraction of the eye's shorter side
    (0 = never: every track on the full frame, exactly the inner segmenter's behaviour). ``context``: window =
    box grown by this fraction of its longer side on each side. ``max_lanes``: lanes per view at most (the
    smallest tracks get them first; the rest stay on the full frame), which bounds the encoder batch.
    ``min_side``: smallest window side in pixels.
    """

    def __init__(self, make_inner: Callable[[], Any], batch: BatchFn, *, max_frac: float = 0.25,
                 context: float = 0.5, max_lanes: int = 8, min_side: int = 48) -> None:
        self.make_inner = make_inner
        self.batch = batch
        self.full = make_inner()
        self.name = f"roi({getattr(self.full, 'name', type(self.full).__name__)})"
        self.max_frac = float(max_frac)
        self.context = float(context)
        self.max_lanes = int(max_lanes)
        self.min_side = int(min_side)
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

    @property
    def device(self) -> torch.device:
        return getattr(self.full, "device", torch.device("cpu"))

    def add_prompt(self, track_id: int, box: np.ndarray | None = None, mask: torch.Tensor | None = None) -> None:
        """Routed on the next :meth:`segment`, when the eye's size is known."""
        if box is None and mask is None:
            raise ValueError("add_prompt needs a box or a mask")
        self._pending[int(track_id)] = _Pending(None if box is None else np.asarray(box, np.float32).reshape(4),
                                                mask)

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
        images = [image] + [image[y0:y1, x0:x1] for _, lane in lanes for x0, y0, x1, y1 in [lane.window]]
        # Inner segmenters encoded ahead by prefetch_batch (both eyes at once) use that; the rest (new lanes,
        # re-anchored ones) go through one encoder batch here.
        ready = self._prefetched if self._prefetched_frame == frame_idx else set()
        todo = [k for k, sg in enumerate(segs) if id(sg) not in ready]
        results: list[dict[int, torch.Tensor]] = [{} for _ in segs]
        for k, r in zip(todo, self.batch([segs[k] for k in todo], frame_idx, [images[k] for k in todo])
                        if todo else []):
            results[k] = r
        for k, sg in enumerate(segs):
            if id(sg) in ready:
                results[k] = sg.segment(frame_idx, images[k])
        self._prefetched, self._prefetched_frame = set(), None
        out: dict[int, torch.Tensor] = dict(results[0])
        for (tid, lane), res in zip(lanes, results[1:]):
            crop_prob = res.get(tid)
            if crop_prob is None:
                continue
            x0, y0, x1, y1 = lane.window
            full = crop_prob.new_zeros((H, W))
            full[y0:y1, x0:x1] = crop_prob
            out[tid] = full
            self._maybe_reanchor(tid, lane, crop_prob, full, H, W)
        if len(out) > 1:
            self._resolve_overlaps(out)
        return out

    # ------------------------------------------------------------------ internals
    def _side(self, box: np.ndarray) -> float:
        """The crop window side for ``box``: its longer side grown by ``context`` on each side."""
        return max(float(box[2] - box[0]), float(box[3] - box[1])) * (1.0 + 2.0 * self.context)

    def _window(self, box: np.ndarray, H: int, W: int) -> tuple[int, int, int, int]:
        side = int(round(min(max(self._side(box), self.min_side), H, W)))
        cx, cy = 0.5 * float(box[0] + box[2]), 0.5 * float(box[1] + box[3])
        x0 = int(round(min(max(cx - side / 2, 0), W - side)))
        y0 = int(round(min(max(cy - side / 2, 0), H - side)))
        return x0, y0, x0 + side, y0 + side

    def _small(self, box: np.ndarray, H: int, W: int) -> bool:
        return self.max_frac > 0 and self._side(box) <= self.max_frac * min(H, W)

    def _route(self, H: int, W: int) -> None:
        """Hand each pending prompt to a lane (new window) or to the full-frame segmenter."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        boxes = {}
        for tid, p in pending.items():
            box = None
            if p.mask is not None:
                box = mask_box(p.mask > 0.5)
            boxes[tid] = box if box is not None else p.box
        free = self.max_lanes - len([t for t in self.lanes if t not in pending])
        small = sorted((t for t, b in boxes.items() if b is not None and self._small(b, H, W)),
                       key=lambda t: float(max(boxes[t][2] - boxes[t][0], boxes[t][3] - boxes[t][1])))
        to_lane = set(small[: max(free, 0)])
        for tid, p in pending.items():
            box = boxes[tid]
            if tid in to_lane:
                if tid in self._full_ids:
                    self._full_ids.discard(tid)
                    self.full.remove_track(tid)
                lane = self.lanes.get(tid)
                if lane is None or self._misfit(box, lane.window, H, W):
                    lane = _Lane(self.make_inner(), self._window(box, H, W))
                # else: a re-prompt that still fits the window goes to the lane's own segmenter (a conditioning
                # frame in the same memory bank), so detector re-prompts do not reset its memory
                x0, y0, x1, y1 = lane.window
                mask = None if p.mask is None else p.mask[y0:y1, x0:x1]
                lane.seg.add_prompt(tid, box=np.array([box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0],
                                                      np.float32), mask=mask)
                if tid not in self.lanes:
                    self.stats["lanes_started"] += 1
                self.lanes[tid] = lane
            else:
                if self.lanes.pop(tid, None) is not None:
                    self.stats["to_full"] += 1
                self._full_ids.add(tid)
                self.full.add_prompt(tid, box=p.box if p.mask is None else box, mask=p.mask)

    def _maybe_reanchor(self, tid: int, lane: _Lane, crop_prob: torch.Tensor, full: torch.Tensor,
                        H: int, W: int) -> None:
        if tid in self._pending:
            return  # re-prompted from outside already
        b = mask_box(crop_prob > 0.5)
        if b is None:
            return  # occluded or gone: keep the window, the person may come back into it
        x0, y0 = lane.window[:2]
        if self._misfit(np.array([b[0] + x0, b[1] + y0, b[2] + x0, b[3] + y0], np.float32), lane.window, H, W):
            self.stats["reanchors"] += 1
            self._pending[tid] = _Pending(None, full)

    def _misfit(self, box: np.ndarray, window: tuple[int, int, int, int], H: int, W: int) -> bool:
        """Whether ``box`` (eye pixels) nears an inner edge of ``window``, outgrows it or shrank far inside it."""
        x0, y0, x1, y1 = window
        side = float(max(x1 - x0, y1 - y0))
        e = _EDGE * side
        near_edge = ((box[0] <= x0 + e and x0 > 0) or (box[1] <= y0 + e and y0 > 0)
                     or (box[2] >= x1 - e and x1 < W) or (box[3] >= y1 - e and y1 < H))
        size = float(max(box[2] - box[0], box[3] - box[1]))
        return near_edge or size > _GROW * side or (size < _SHRINK * side and side > self.min_side)

    def _resolve_overlaps(self, out: dict[int, torch.Tensor]) -> None:
        """Each pixel claimed (> 0.5) by several tracks belongs to the most confident one (ties: the lower id).

        Runs every frame on eye-sized maps, so it keeps three eye-sized buffers whatever the number of people
        (no stack of every track's map) and stops after one pass when nobody overlaps."""
        ids = sorted(out)
        count = torch.zeros_like(out[ids[0]], dtype=torch.uint8)
        for t in ids:
            count += out[t] > 0.5
        contested = count > 1
        if not bool(contested.any()):
            return
        self.stats["contested_pixels"] += int(contested.sum())
        top = out[ids[0]].clone()
        owner = torch.zeros_like(count)
        for k, t in enumerate(ids[1:], start=1):
            better = out[t] > top  # strictly: a tie stays with the earlier (lower) id
            top = torch.where(better, out[t], top)
            owner[better] = k
        for k, tid in enumerate(ids):
            lose = contested & (out[tid] > 0.5) & (owner != k)
            if bool(lose.any()):
                out[tid] = torch.where(lose, torch.clamp(1.0 - top, max=0.49), out[tid])

    @staticmethod
    def prefetch_batch(segmenters: list["RoiSegmenter"], frame_idx: int, images: list[torch.Tensor]) -> None:
        """parallel_eyes: every eye's full frame and person crops through the encoder as one batch, ahead of the
        ``segment`` calls (prompts that arrive in between start lanes that :meth:`segment` encodes itself)."""
        hook = getattr(segmenters[0].full, "prefetch_batch", None)
        if hook is None:
            return
        inner, crops, owners = [], [], []
        for s, image in zip(segmenters, images):
            H, W = int(image.shape[0]), int(image.shape[1])
            s._route(H, W)
            if s._full_ids:
                inner.append(s.full)
                crops.append(image)
                owners.append(s)
            for lane in s.lanes.values():
                x0, y0, x1, y1 = lane.window
                inner.append(lane.seg)
                crops.append(image[y0:y1, x0:x1])
                owners.append(s)
            s._prefetched, s._prefetched_frame = set(), int(frame_idx)
        if not inner:
            return
        hook(inner, frame_idx, crops)
        for s, seg in zip(owners, inner):
            s._prefetched.add(id(seg))


def with_roi(cfg, make_inner: Callable[[], Any], batch: BatchFn) -> Any:
    """``make_inner()`` wrapped in a :class:`RoiSegmenter` per ``matting.roi_max_frac`` (0: the bare segmenter)."""
    m = cfg.matting
    if float(m.roi_max_frac) <= 0:
        return make_inner()
    return RoiSegmenter(make_inner, batch, max_frac=float(m.roi_max_frac), max_lanes=int(m.roi_max_lanes))


__all__ = ["RoiSegmenter", "with_roi"]
