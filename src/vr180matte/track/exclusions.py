"""The manual override file's excluded regions, applied to one view's detections and masks.

Why its own module: an excluded region (track/prompts.py) is nobody's, so it has to hold at both ends of a view's
step: a detection lying mostly inside one starts or re-anchors nothing, and a mask is zeroed there after
segmentation. Without a prompts file attached both are no-ops.
"""
from __future__ import annotations

import numpy as np
import torch

from ..engines.base import Detection
from .view_state import ViewState

__all__ = ["Exclusions"]


class Exclusions:
    """Applies the attached prompts file's excluded regions to one view (``state.prompts``; None = none)."""

    def __init__(self, state: ViewState) -> None:
        self.state = state

    def detections(self, frame_idx: int, image: torch.Tensor, dets: list[Detection]) -> list[Detection]:
        """Detections lying mostly (over half their box) in an excluded region of the prompts file are dropped."""
        s = self.state
        if s.prompts is None or not dets:
            return dets
        keep = []
        for d in dets:
            if s.prompts.excluded_fraction(frame_idx, s.view, np.asarray(d.box, np.float32), image.shape) > 0.5:
                s.prompts.stats["detections_excluded"] += 1
                s.event("dropped", frame_idx, None, reason="excluded_region", box=d.box, score=float(d.score))
                continue
            keep.append(d)
        return keep

    def masks(self, frame_idx: int, image: torch.Tensor, masks: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Masks with this frame's excluded regions zeroed (new tensors: segmenters may share their state)."""
        s = self.state
        if s.prompts is None or not masks:
            return masks
        keep = s.prompts.keep_mask(frame_idx, s.view, image.shape, image.device)
        if keep is None:
            return masks
        return {tid: p * keep.to(p.dtype) for tid, p in masks.items()}
