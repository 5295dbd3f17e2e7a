"""Merging the ROI segmenter's lanes back into the eye (engines/roi.py): each lane's crop mask pasted into an
eye-sized map, then the pixels several people claim given to one of them.

Lanes are separate segmenters, so two people whose windows overlap may both claim a pixel; each pixel then
belongs to the most confident track and the others are capped below 0.5 there, so one person's matte never
swallows the other's before the union is taken.
"""
from __future__ import annotations

import torch


def paste(crop_prob: torch.Tensor, window: tuple[int, int, int, int], H: int, W: int) -> torch.Tensor:
    """An (H, W) map, zero outside ``window``, with ``crop_prob`` inside it."""
    x0, y0, x1, y1 = window
    full = crop_prob.new_zeros((H, W))
    full[y0:y1, x0:x1] = crop_prob
    return full


def contested(out: dict[int, torch.Tensor]) -> tuple[list[int], torch.Tensor]:
    """The ids in order and the pixels several of them claim (> 0.5), on the device: no read, so the caller can
    bring the count down with its other numbers of the frame (engines/roi.py: one read per eye)."""
    ids = sorted(out)
    count = torch.zeros_like(out[ids[0]], dtype=torch.uint8)
    for t in ids:
        count += out[t] > 0.5
    return ids, count > 1


def give_contested(out: dict[int, torch.Tensor], ids: list[int], clash: torch.Tensor) -> None:
    """Each contested pixel (``clash``) goes to the most confident track (ties: the lower id); the others are capped
    below 0.5 there. Three eye-sized buffers whatever the number of people (no stack of every track's map)."""
    top = out[ids[0]].clone()
    owner = torch.zeros_like(clash, dtype=torch.uint8)
    for k, t in enumerate(ids[1:], start=1):
        better = out[t] > top  # strictly: a tie stays with the earlier (lower) id
        top = torch.where(better, out[t], top)
        owner[better] = k
    for k, tid in enumerate(ids):
        # No check whether this track lost anything: a where with nothing to take is a copy, a check a read.
        lose = clash & (out[tid] > 0.5) & (owner != k)
        out[tid] = torch.where(lose, torch.clamp(1.0 - top, max=0.49), out[tid])
