"""The ROI segmenter's lanes (engines/roi.py): one inner segmenter per small person, run on its crop, all of
them through the image encoder together.

A lane is a square window of the eye and its own inner segmenter (its own SAM2 memory bank / MobileSAM box);
the full-frame inner segmenter takes everyone else. One frame of a view runs the full frame and every lane's
crop as one encoder batch (``batch``: the engine's own multi-view batch function), except the inner segmenters
that the stereo stage's prefetch already encoded with the other eye (``parallel_eyes``): those only decode.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

BatchFn = Callable[[list[Any], int, list[torch.Tensor]], list[dict[int, torch.Tensor]]]


@dataclass
class _Lane:
    seg: Any  # the lane's own inner segmenter (one track)
    window: tuple[int, int, int, int]  # x0, y0, x1, y1 in eye pixels (square unless the eye is smaller)


@dataclass
class _Pending:
    box: np.ndarray | None
    mask: torch.Tensor | None
    box_is_mask: bool = False  # ``box`` is the mask's own box (Segmenter.add_prompt)


def crop(image: torch.Tensor, window: tuple[int, int, int, int]) -> torch.Tensor:
    """The lane's view of the eye (no copy)."""
    x0, y0, x1, y1 = window
    return image[y0:y1, x0:x1]


def run_inner(segs: list[Any], images: list[torch.Tensor], frame_idx: int, batch: BatchFn,
              ready: set[int]) -> list[dict[int, torch.Tensor]]:
    """Each inner segmenter's result on its image, in order: the ones encoded ahead (``ready``: their id()) each
    segment on their own, the rest go through one encoder batch."""
    todo = [k for k, sg in enumerate(segs) if id(sg) not in ready]
    results: list[dict[int, torch.Tensor]] = [{} for _ in segs]
    for k, r in zip(todo, batch([segs[k] for k in todo], frame_idx, [images[k] for k in todo])
                    if todo else []):
        results[k] = r
    for k, sg in enumerate(segs):
        if id(sg) in ready:
            results[k] = sg.segment(frame_idx, images[k])
    return results


def prefetch_views(segmenters: list, frame_idx: int, images: list[torch.Tensor]) -> None:
    """parallel_eyes: every eye's full frame and person crops through the encoder as one batch, ahead of the
    ``segment`` calls (prompts that arrive in between start lanes that :meth:`RoiSegmenter.segment` encodes
    itself). ``segmenters``: one :class:`~vr180matte.engines.roi.RoiSegmenter` per view."""
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
            inner.append(lane.seg)
            crops.append(crop(image, lane.window))
            owners.append(s)
        s._prefetched, s._prefetched_frame = set(), int(frame_idx)
    if not inner:
        return
    hook(inner, frame_idx, crops)
    for s, seg in zip(owners, inner):
        s._prefetched.add(id(seg))
