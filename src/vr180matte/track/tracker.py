"""Detection <-> track association for one view: pure logic, no models.

Why a separate module: the association rules (which detection belongs to which person, when a track is
drifting, when it is over) are the part of the engine that decides whether two people stay two people. They are
kept free of any model so they can be tested exactly and reused by every engine (embedded, det-sam2, mobilesam).

Boxes are ``numpy.float32`` ``[x0, y0, x1, y1]`` in processing-resolution pixels (continuous coordinates: a
mask pixel ``(y, x)`` covers ``[x, x+1) x [y, y+1)``, so a mask's box ends one past its last pixel).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..boxes import box_iou  # noqa: F401 - re-exported: view_matter and tests import it from here
from ..boxes import mask_box as _mask_box
from ..boxes import mask_stats_on_device
from ..engines.base import Detection
from .ids import IdAllocator

log = logging.getLogger(__name__)

__all__ = ["Track", "Tracker", "IdAllocator", "box_iou", "mask_box", "mask_stats"]

# Cost given to pairs below the IoU threshold: larger than any sum of valid costs (each <= 1), so the
# assignment first maximises the number of valid pairs and only then their total IoU.
_INVALID_COST = 1e6


def mask_stats(
    probs: list[torch.Tensor], thresh: float = 0.5
) -> list[tuple[np.ndarray | None, float, float]]:
    """For each mask: ``(box or None, area fraction, mean probability inside the mask)``.

    All masks are reduced on their device and come down in one transfer (one sync per frame, not per track).
    """
    if not probs:
        return []
    return parse_mask_stats(probs, mask_stats_rows(probs, thresh).cpu().numpy())


def mask_stats_rows(probs: list[torch.Tensor], thresh: float = 0.5) -> torch.Tensor:
    """(N, 6) ``[x0, y0, x1, y1, area, prob_sum]`` of every mask, on the device (no read: see ``mask_stats``)."""
    return torch.stack([mask_stats_on_device(p, thresh) for p in probs])


def parse_mask_stats(probs: list[torch.Tensor], stats) -> list[tuple[np.ndarray | None, float, float]]:
    """:func:`mask_stats` from the downloaded rows of :func:`mask_stats_rows` (``stats``: (N, 6) on the host)."""
    out: list[tuple[np.ndarray | None, float, float]] = []
    for p, (x0, y0, x1, y1, area, psum) in zip(probs, np.asarray(stats, np.float32).reshape(-1, 6)):
        total = float(p.shape[-1] * p.shape[-2])
        if area <= 0:
            out.append((None, 0.0, 0.0))
        else:
            out.append((np.array([x0, y0, x1, y1], dtype=np.float32), float(area) / total, float(psum / area)))
    return out


@dataclass
class Track:
    """One person in one view: only the current state, never a history of masks."""

    id: int
    box: np.ndarray | None  # box of the current mask (None while the mask is empty)
    score: float  # last matched detector score, else the segmenter's mean mask probability
    age: int = 0  # frames since the track started
    missed: int = 0  # consecutive frames with an empty mask
    hits: int = 0  # frames with a non-empty mask
    last_seen: int = -1  # last frame with a non-empty mask
    last_box: np.ndarray | None = None  # box of the last non-empty mask (used to match while missed)
    start_frame: int = -1
    last_matched: int = -1  # last frame a detection was matched to this track
    unmatched_runs: int = 0  # consecutive detector runs without a match on frames whose mask was empty
    unmatched_now: bool = False  # the detector ran on the current frame and did not see this track
    seeded: bool = False  # created or re-prompted from the other eye (master-slave stereo)
    origin: str = "detection"  # how the track started: detection | seed | reprompt | handoff
    det_score: float | None = None  # score of the last matched detection
    extra: dict = field(default_factory=dict)

    def ref_box(self) -> np.ndarray | None:
        """The box used for matching: the current mask box, else the last one seen."""
        return self.box if self.box is not None else self.last_box


class Tracker:
    """Association and life-cycle rules, shared by every view.

    ``iou_threshold``: minimum IoU of a (track mask box, detection box) pair to be matched.
    ``max_missed``: a track whose mask stays empty for more than this many consecutive frames ends.
    ``min_mask_area``: masks smaller than this fraction of the view count as empty (speckle is not a person).
    ``drift_iou``: a matched track whose mask box has IoU below this with its detection is re-prompted.
    """

    def __init__(
        self, iou_threshold: float = 0.3, max_missed: int = 30, min_mask_area: float = 1e-4, drift_iou: float = 0.5
    ) -> None:
        if not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
        if not 0.0 <= drift_iou <= 1.0:
            raise ValueError(f"drift_iou must be in [0, 1], got {drift_iou}")
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        self.iou_threshold = float(iou_threshold)
        self.max_missed = int(max_missed)
        self.min_mask_area = float(min_mask_area)
        self.drift_iou = float(drift_iou)

    def match(
        self, tracks: list[Track], detections: list[Detection]
    ) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        """Hungarian assignment on ``1 - IoU(track box, detection box)``.

        Returns ``(matched [(track_idx, det_idx)], unmatched track idxs, unmatched det idxs)``. Pairs below
        ``iou_threshold`` are never matched; among valid pairs the assignment is globally optimal, so two people
        who cross keep their ids (a greedy or position-ordered match would swap them).
        """
        n, m = len(tracks), len(detections)
        if n == 0 or m == 0:
            return [], list(range(n)), list(range(m))
        tboxes = np.zeros((n, 4), dtype=np.float32)
        has_box = np.zeros(n, dtype=bool)
        for i, t in enumerate(tracks):
            rb = t.ref_box()
            if rb is not None:
                tboxes[i] = rb
                has_box[i] = True
        dboxes = np.stack([np.asarray(d.box, dtype=np.float32).reshape(4) for d in detections])
        iou = box_iou(tboxes, dboxes)
        iou[~has_box] = 0.0
        valid = iou >= self.iou_threshold
        cost = np.where(valid, 1.0 - iou, _INVALID_COST)
        rows, cols = linear_sum_assignment(cost)
        matched = [(int(r), int(c)) for r, c in zip(rows, cols) if valid[r, c]]
        mt = {r for r, _ in matched}
        md = {c for _, c in matched}
        return matched, [i for i in range(n) if i not in mt], [j for j in range(m) if j not in md]

    def is_drifted(self, track: Track, det: Detection) -> bool:
        """True when the track's current mask box no longer agrees with its matched detection."""
        if track.box is None:
            return True  # mask vanished but the detector still sees the person: re-acquire
        return float(box_iou(track.box, det.box)[0, 0]) < self.drift_iou

    def is_empty(self, area_frac: float) -> bool:
        return area_frac < self.min_mask_area or area_frac <= 0.0

    def should_end(self, track: Track, confirm_end_runs: int = 0) -> bool:
        """End a track whose mask has been empty too long, or is empty and the detector confirms it is gone.

        ``confirm_end_runs`` > 0: a track with an empty mask that ``confirm_end_runs`` detector runs in a row did
        not match ends early (the person left; no need to wait ``max_missed`` frames).
        """
        if track.missed > self.max_missed:
            return True
        return confirm_end_runs > 0 and track.missed > 0 and track.unmatched_runs >= confirm_end_runs


def mask_box(prob: torch.Tensor, thresh: float = 0.5) -> np.ndarray | None:
    """xyxy box of ``prob > thresh`` (float32, end-exclusive), or None when the mask is empty (``boxes.mask_box``
    under the tracker's argument name)."""
    return _mask_box(prob, thresh)
