"""Track ids across independently processed chunks: match by mask IoU over the frames two chunks share.

Why it exists: in chunk-parallel mode (``processing.chunk_parallel``) every chunk starts from nothing (its own
detections, its own ids from 1), so the same person gets unrelated ids in neighbouring chunks. Both chunks process
the overlap frames, so the previous chunk's tail masks and this chunk's head masks show the same people on the same
frames: ids are matched by the IoU of those masks summed over every overlap frame and both eyes (one Hungarian
assignment, a minimum IoU), and chained from the first chunk so ids stay stable over the whole video. A person
seen first inside a chunk, or not matched, gets the next unused global id. Deterministic: the result depends only
on the stored masks, never on which worker ran which chunk or in what order they finished.

Masks are small (see :func:`small_track_mask`): a few KB per person per overlap frame.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

TRACK_MASK_SIDE = 128  # long side of the per-person overlap masks kept for id matching
MIN_IOU = 0.3

# One overlap frame's per-person masks: eye -> {local id -> (h, w) bool/uint8 mask}
FrameTracks = Mapping[str, Mapping[int, torch.Tensor]]


def small_track_mask(prob: torch.Tensor) -> torch.Tensor:
    """A person's (H, W) probability -> a small boolean mask on the CPU (long side ``TRACK_MASK_SIDE``)."""
    h, w = prob.shape[-2:]
    f = min(1.0, TRACK_MASK_SIDE / max(h, w))
    size = (max(1, round(h * f)), max(1, round(w * f)))
    small = F.interpolate(prob.float()[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return (small >= 0.5).cpu()


def overlap_iou(prev: Sequence[FrameTracks], cur: Sequence[FrameTracks]) -> tuple[list[int], list[int], np.ndarray]:
    """IoU of every (previous id, current id) pair, intersections and unions summed over frames and eyes."""
    prev_ids = sorted({i for fr in prev for eye in fr.values() for i in eye})
    cur_ids = sorted({i for fr in cur for eye in fr.values() for i in eye})
    inter = np.zeros((len(prev_ids), len(cur_ids)))
    union = np.zeros_like(inter)
    for fp, fc in zip(prev, cur):
        for eye in set(fp) | set(fc):
            a, b = fp.get(eye, {}), fc.get(eye, {})
            area_a = {i: int(m.sum()) for i, m in a.items()}
            area_b = {j: int(m.sum()) for j, m in b.items()}
            for r, i in enumerate(prev_ids):
                for c, j in enumerate(cur_ids):
                    ai, bj = area_a.get(i, 0), area_b.get(j, 0)
                    both = int((a[i] & b[j]).sum()) if i in a and j in b and a[i].shape == b[j].shape else 0
                    inter[r, c] += both
                    union[r, c] += ai + bj - both
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return prev_ids, cur_ids, iou


def match_ids(prev: Sequence[FrameTracks], cur: Sequence[FrameTracks], min_iou: float = MIN_IOU) -> dict[int, int]:
    """``{current local id: previous id}`` for the people both chunks see on their shared frames."""
    from scipy.optimize import linear_sum_assignment

    prev_ids, cur_ids, iou = overlap_iou(prev, cur)
    if iou.size == 0:
        return {}
    rows, cols = linear_sum_assignment(-iou)
    return {cur_ids[c]: prev_ids[r] for r, c in zip(rows, cols) if iou[r, c] >= min_iou}


def chain_ids(
    chunk_ids: Sequence[Iterable[int]],
    overlaps: Sequence[tuple[Sequence[FrameTracks], Sequence[FrameTracks]] | None],
    min_iou: float = MIN_IOU,
) -> list[dict[int, int]]:
    """Global ids for every chunk: ``result[k][local id] = global id``.

    ``chunk_ids[k]``: every local id chunk ``k`` used. ``overlaps[k]`` (``k >= 1``): (chunk ``k-1``'s tail tracks,
    chunk ``k``'s head tracks) on their shared frames, with local ids; ``overlaps[0]`` is ignored.
    """
    maps: list[dict[int, int]] = []
    next_id = 1
    for k, ids in enumerate(chunk_ids):
        mapping: dict[int, int] = {}
        if k > 0 and overlaps[k] is not None:
            tail, head = overlaps[k]
            prev_map = maps[k - 1]
            matched = match_ids(tail, head, min_iou)
            mapping = {cur: prev_map[prev] for cur, prev in matched.items() if prev in prev_map}
        for local in sorted(set(ids) | set(mapping)):
            if local not in mapping:
                mapping[local] = next_id
                next_id += 1
            next_id = max(next_id, mapping[local] + 1)
        maps.append(mapping)
    return maps


__all__ = ["TRACK_MASK_SIDE", "small_track_mask", "overlap_iou", "match_ids", "chain_ids"]
