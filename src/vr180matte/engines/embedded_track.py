"""One person in the embedded segmenter: their streaming state, and their step through the pose model.

Why a module of its own: :class:`vr180matte.engines.embedded_segmenter.EmbeddedSegmenter` manages the tracks of a
view (prompts, the box prior for people too small for the model, the frame's masks); what happens to one track
once the landmark model has found its person is per-track work that needs none of that: the mask is cut to the
ROI the model ran on (so a person next to it never leaks in), fused with the selfie model for close-ups, smoothed
over time, and the next frame's ROI taken from the model's auxiliary landmarks. Searching a region for a lost
person with the pose detector is here too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..boxes import iou as box_iou
from .embedded_detector import PoseResult, Roi


@dataclass
class TrackState:
    """Streaming state of one person; O(1) in the number of frames seen (one previous mask)."""

    roi: Roi | None = None
    prompt_box: np.ndarray | None = None  # pending (re-)anchor, applied on the next segment() call
    last_box: np.ndarray | None = None  # box of the previous output mask
    prev: np.ndarray | None = None  # previous smoothed probability, full image
    lost_frames: int = 0
    frames: int = field(default=0)
    body_box: np.ndarray | None = None  # box of this frame's landmarks (who owns a contested pixel)
    prior_box: np.ndarray | None = None  # box the box prior was drawn in (kept: a prior's own mask box shrinks)


def roi_near(rgb: np.ndarray, box: np.ndarray, margin: float,
             detect: Callable[[np.ndarray, tuple[int, int]], list[tuple[float, Roi]]]) -> Roi | None:
    """Detector ROI of the person best matching ``box``, searched in ``box`` grown by ``margin`` each side;
    ``detect(crop, offset)`` runs the pose detector (only when the search window is large enough)."""
    h, w = rgb.shape[:2]
    bw, bh = box[2] - box[0], box[3] - box[1]
    x0 = int(max(0, box[0] - margin * bw))
    y0 = int(max(0, box[1] - margin * bh))
    x1 = int(min(w, box[2] + margin * bw))
    y1 = int(min(h, box[3] + margin * bh))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    cands = detect(rgb[y0:y1, x0:x1], (x0, y0))
    # Compare inside the image: a close-up's body circle extends far beyond the frame.
    lim = np.array([w, h, w, h], dtype=np.float32)
    target = np.clip(Roi.from_box(box).box(), 0, lim)
    best, best_iou = None, 0.15
    for _, roi in cands:
        iou = box_iou(np.clip(roi.box(), 0, lim), target)
        if iou > best_iou:
            best, best_iou = roi, iou
    return best


def follow(tr: TrackState, res: PoseResult, rgb: np.ndarray, fresh: bool, smoothing: float,
           fuse: Callable[[np.ndarray, np.ndarray], np.ndarray] | None) -> np.ndarray:
    """The track's probability on this frame from the landmark model's ``res``, and its state moved on.

    ``fresh``: the track was (re-)anchored on this frame, so nothing is smoothed with the previous mask; ``fuse``:
    the close-up fusion (None: off), applied when the person's hips are below the frame."""
    h, w = rgb.shape[:2]
    tr.prior_box = None
    tr.body_box = res.landmark_box
    # Keep only what lies in the ROI the model was run on: other people nearby must not leak in.
    region = (tr.roi or res.next_roi).box()
    m = res.mask
    x0, y0 = int(max(0, np.floor(region[0]))), int(max(0, np.floor(region[1])))
    x1, y1 = int(min(w, np.ceil(region[2]))), int(min(h, np.ceil(region[3])))
    cut = np.zeros_like(m)
    if x1 > x0 and y1 > y0:
        cut[y0:y1, x0:x1] = m[y0:y1, x0:x1]
    if fuse is not None and res.next_roi.cy > h:
        cut = fuse(rgb, cut)
    if smoothing > 0 and tr.prev is not None and not fresh:
        # mediapipe SegmentationSmoothingCalculator: mix in the previous mask where the current is uncertain.
        uncertainty = 1.0 - np.abs(2.0 * cut - 1.0)
        cut = cut + (tr.prev - cut) * (uncertainty * smoothing)
    roi = res.next_roi
    if roi.size < 8 or roi.size > 8 * max(h, w) or not (-roi.size < roi.cx < w + roi.size and -roi.size < roi.cy < h + roi.size):
        tr.roi = None  # degenerate: search again next frame
    else:
        tr.roi = roi
    tr.lost_frames = 0
    tr.frames += 1
    return np.clip(cut, 0.0, 1.0).astype(np.float32, copy=False)
