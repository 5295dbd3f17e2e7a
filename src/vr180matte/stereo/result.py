"""What the stereo stage returns for one frame, and the agreement measure it is judged by.

A module of its own because every part of the stage uses both (the modes, validation, correction, the run report)
while the stage module (stereo/consistency.py) imports those parts: kept here, nobody imports in a circle.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..engines.base import FrameMatte

__all__ = ["MASK_T", "StereoResult", "band_box", "iou_on_device", "mask_iou"]

MASK_T = 0.5  # a probability mask's pixel belongs to the person above this


@dataclass
class StereoResult:
    left: FrameMatte
    right: FrameMatte
    agreement: dict[int, float]  # per person: IoU of left mask vs right mask mapped back by disparity
    disparity: dict[int, float]  # per person, pixels at processing res (left x minus right x), smoothed
    corrections: list[dict] = field(default_factory=list)
    detected: bool = False  # the detector ran on this frame


def mask_iou(a: torch.Tensor, b: torch.Tensor, thresh: float = MASK_T) -> float:
    """IoU of two probability masks thresholded at ``thresh`` (1.0 when both are empty)."""
    return float(iou_on_device(a, b, thresh))  # one read


def iou_on_device(a: torch.Tensor, b: torch.Tensor, thresh: float = MASK_T) -> torch.Tensor:
    """:func:`mask_iou` without the read: the same float32 division as a 0-d tensor, 1.0 where both are empty."""
    ma, mb = a > thresh, b > thresh
    union = (ma | mb).sum().float()
    return torch.where(union == 0, torch.ones_like(union), (ma & mb).sum().float() / union)


def band_box(stats: list[float], r0: int) -> np.ndarray | None:
    """The eye box of a row band's downloaded ``[x0, y0, x1, y1, area, ...]`` mask stats
    (``boxes.mask_stats_on_device``), rows offset by the band's first row ``r0``; None for an empty mask."""
    if stats[4] <= 0:
        return None
    b = np.array(stats[:4], dtype=np.float32)
    b[[1, 3]] += r0
    return b
