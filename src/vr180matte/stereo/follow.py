"""Following small people between detection frames: the detector, in a window around each one.

Why: a person too small for the embedded engine's pose model is matted by the box prior (engines/embedded_prior.py)
inside the detector's box. Until the next detection frame (``detection.detect_interval``, 10 frames) nothing moved
that box: a walking or turning person left it, and the matte covered a shrinking part of them (on the lone
distant-person scene of benchmarks/small_people.py the matte fell to 10-25% of the person between detections).
SAM2 and MobileSAM follow a mask by themselves; the box prior cannot.

So on every frame that is not a detection frame, each such track's box is looked for again by the detector in a
square window around it (``context`` x its longest side, at least ``min_window`` px, on the source-resolution eye
when there is one), resampled to a small fixed ``size``, every window of an eye through the network in one batch
with one download (engines/yolo.py ``detect_windows``). Candidates (score at least ``min_score``: the person is
known, only the box is asked for) whose centre lies within ``max_shift`` of the box's longest side from the box's
centre may be the person; of those, the one covering most of the track's box, plus its score, becomes the track's
new prompt. Cover, not IoU: a prior box taken from a fragment of an earlier mask is much smaller than the person, and
the person grows when they turn or spread their arms; a neighbour in the window covers little of the box. None found
keeps the old box, and the tracker's confirmation still ends a prior that detection frames no longer see.

Both eyes must move together: in the coupled stereo modes (master_slave, joint) only the leading left eye is
searched, and a moved box is carried to the right eye's prior of the same person by that person's smoothed
disparity, as a seed is (two independent searches jitter apart by a pixel or two, a large share of a small person;
identical eyes get identical boxes). In ``independent`` mode each eye is searched on its own image.
"""
from __future__ import annotations

import logging

import numpy as np

from ..boxes import box_iou, shift_box

log = logging.getLogger(__name__)

__all__ = ["PriorFollower"]


class PriorFollower:
    """Re-finds the box-prior tracks of the stereo stage's views with the detector, between detection frames."""

    def __init__(self, detector, size: int = 128, context: float = 2.0, min_score: float = 0.15,
                 max_shift: float = 0.75, same_iou: float = 0.9, min_window: float = 48.0) -> None:
        """``size``: network input side per window; ``context``: window side over the box's longest side;
        ``same_iou``: a found box this close to the current one is no news (no re-prompt); ``min_window``: the
        smallest window side in image px."""
        self.detector = detector
        self.size = int(size)
        self.context = float(context)
        self.min_score = float(min_score)
        self.max_shift = float(max_shift)
        self.same_iou = float(same_iou)
        self.min_window = float(min_window)
        self.stats = {"frames": 0, "windows": 0, "found": 0, "moved": 0, "carried": 0}

    @staticmethod
    def usable(detector) -> bool:
        return detector is not None and hasattr(detector, "detect_windows")

    def follow(self, stage, frame_idx: int, left_img, right_img) -> None:
        """One frame of the stereo ``stage`` (not a detection frame): the left eye's priors searched, and the right
        eye's searched too (independent mode) or carried over from the left by disparity (coupled modes)."""
        eyes = [(stage.left, left_img, stage.source.source_of(left_img))]
        if not stage.strategy.coupled:
            eyes.append((stage.right, right_img, stage.source.source_of(right_img)))
        moved = self.step(frame_idx, eyes, stage.trace)
        if not stage.strategy.coupled:
            return
        right_priors = getattr(stage.right.segmenter, "prior_boxes", None) or {}
        eye_w = int(right_img.shape[1])
        for tid, box in moved.get("left", {}).items():
            d = stage.smoother.get(tid)
            if tid not in right_priors or d is None:
                continue  # the right eye has a model mask of this person (or no disparity yet): left alone
            new = shift_box(box, float(d) if stage.use_mapping else 0.0, eye_w)
            stage.right.reprompt(tid, box=new, origin="follow")
            self.stats["carried"] += 1
            if stage.trace is not None:
                stage.trace.event("right", "followed", frame_idx, tid, box=new)

    def step(self, frame_idx: int, views: list[tuple[object, object, object | None]], trace=None
             ) -> dict[str, dict[int, np.ndarray]]:
        """``views``: (view matter, processing eye, source eye or None) per eye. Re-prompts the views' prior tracks
        whose box the detector finds moved, one batched detector call per eye that has any; returns the moves,
        ``{view name: {track id: new box}}`` (processing px)."""
        todo = []
        for view, img, src in views:
            boxes = getattr(getattr(view, "segmenter", None), "prior_boxes", None)
            if boxes:
                todo.append((view, img, src, boxes))
        moved: dict[str, dict[int, np.ndarray]] = {}
        if not todo:
            return moved
        self.stats["frames"] += 1
        for view, img, src, boxes in todo:
            image = src if src is not None else img
            sy = image.shape[0] / img.shape[0]
            sx = image.shape[1] / img.shape[1]
            scale = np.float32([sx, sy, sx, sy])
            ids = list(boxes)
            b = np.stack([boxes[t] for t in ids]).astype(np.float32) * scale  # image px
            side = np.maximum(self.context * np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]), self.min_window)
            cx, cy = 0.5 * (b[:, 0] + b[:, 2]), 0.5 * (b[:, 1] + b[:, 3])
            windows = np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1)
            found = self.detector.detect_windows(image, windows, self.size, self.min_score)
            self.stats["windows"] += len(ids)
            for tid, old, rows in zip(ids, b, found):
                if not len(rows):
                    continue
                shift = np.hypot(0.5 * (rows[:, 0] + rows[:, 2] - old[0] - old[2]),
                                 0.5 * (rows[:, 1] + rows[:, 3] - old[1] - old[3]))
                ok = shift <= self.max_shift * max(float(old[2] - old[0]), float(old[3] - old[1]))
                if not ok.any():
                    continue
                k = int(np.argmax(np.where(ok, _cover(old, rows[:, :4]) + rows[:, 4], -1.0)))  # ties: best score
                self.stats["found"] += 1
                if box_iou(old, rows[k, :4])[0, 0] >= self.same_iou:
                    continue
                new = rows[k, :4] / scale
                self.stats["moved"] += 1
                moved.setdefault(view.view, {})[tid] = new
                view.reprompt(tid, box=new, origin="follow")
                if trace is not None:
                    trace.event(view.view, "followed", frame_idx, tid, box=new, score=float(rows[k, 4]))
                log.debug("%s: frame %d: prior track %d followed to %s", view.view, frame_idx, tid, np.round(new))
        return moved


def _cover(box: np.ndarray, cands: np.ndarray) -> np.ndarray:
    """Share of ``box``'s area inside each of ``cands`` ((n, 4) xyxy)."""
    ix = np.clip(np.minimum(box[2], cands[:, 2]) - np.maximum(box[0], cands[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], cands[:, 3]) - np.maximum(box[1], cands[:, 1]), 0, None)
    return ix * iy / max(float((box[2] - box[0]) * (box[3] - box[1])), 1e-6)
