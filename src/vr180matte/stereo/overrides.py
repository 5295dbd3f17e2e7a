"""The manual override file (``input.prompts``, track/prompts.py) applied to both eyes of the stereo stage.

A user adds a person the detector missed (or re-anchors one it follows badly) with a box drawn in one eye, and
removes false mattes with exclusion regions. Both must hold in both eyes, or the viewer sees a person in one eye
only: an ``add`` box drawn in one eye is carried to the other by the person's disparity, measured on the box, and
in the coupled modes the left eye leads and the right follows under the same id, as for a detected person.
Exclusions are applied to the stage's final masks, after correction, so a mask moved over from the other eye is
excluded too.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..boxes import iou, mask_box, shift_box
from ..config import Config
from ..engines.base import TrackMask
from .disparity import measure_disparity
from .result import StereoResult

if TYPE_CHECKING:  # the stage builds this part; only type hints go the other way
    from .consistency import StereoStage

# The stage's logger: stereo messages keep the one name users filter and read them by.
log = logging.getLogger("vr180matte.stereo.consistency")

__all__ = ["StereoOverrides"]


class StereoOverrides:
    """The prompts file's ``add`` boxes and exclusions, applied to a :class:`StereoStage`'s views and results.

    Reads the stage's prompts file (``stage.prompts``, set by ``attach``), views, mode and this frame's ``max_disp``.
    """

    def __init__(self, cfg: Config, stage: StereoStage) -> None:
        self.stage = stage
        self.track_iou = float(cfg.matting.track_iou_threshold)  # a box this close to a track's is that person

    def add(self, frame_idx: int, left_img: torch.Tensor, right_img: torch.Tensor) -> None:
        """The prompts file's ``add`` boxes of this frame: each starts a person (or re-anchors the one tracked in
        that box). A box for one eye is carried to the other by the person's disparity, measured on the box; in the
        coupled modes the left eye leads and the right follows under the same id, as for a detected person."""
        stage = self.stage
        eye_w = int(left_img.shape[1])
        for eye, box in stage.prompts.adds(frame_idx, left_img.shape):
            stage.prompts.stats["added"] += 1
            boxes = {"left": box, "right": box}
            if eye != "both":
                other = "left" if eye == "right" else "right"
                rect = torch.zeros(left_img.shape[:2], dtype=torch.float32, device=left_img.device)
                x0, y0, x1, y1 = (int(round(float(v))) for v in box)
                rect[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)] = 1.0
                src, dst = (left_img, right_img) if eye == "left" else (right_img, left_img)
                if eye == "left":
                    d, _ = measure_disparity(src, dst, rect, max_disp=stage.max_disp)
                else:  # the right eye's box: x_left - x_right = -(what the reversed search finds)
                    d_r, _ = measure_disparity(src, dst, rect, max_disp=stage.max_disp // 4 + 1,
                                               min_disp=-stage.max_disp)
                    d = -d_r
                boxes[other] = shift_box(box, d if eye == "left" else -d, eye_w)
            coupled = stage.mode != "independent"
            tid = None
            for view_eye in (("left",) if coupled else ("left", "right")):
                view = stage.views[view_eye]
                tid = self._target(view, boxes[view_eye]) if not coupled or tid is None else tid
                view.reprompt(tid, box=boxes[view_eye], origin="prompt")
                log.info("prompts: frame %d: %s eye box %s -> track %d", frame_idx, view_eye,
                         np.round(boxes[view_eye]).tolist(), tid)
            if coupled and tid in stage.right.live_ids:
                stage.right.reprompt(tid, box=boxes["right"], origin="prompt")

    def exclude(self, frame_idx: int, res: StereoResult) -> None:
        """The prompts file's exclusion regions of this frame, cut out of every person's mask in both eyes."""
        for eye, fm in (("left", res.left), ("right", res.right)):
            for tid, tm in list(fm.tracks.items()):
                keep = self.stage.prompts.keep_mask(frame_idx, eye, tm.prob.shape, tm.prob.device)
                if keep is not None:
                    prob = tm.prob * keep.to(tm.prob.dtype)
                    fm.tracks[tid] = TrackMask(track_id=tid, prob=prob, box=mask_box(prob), score=tm.score)

    def _target(self, view, box: np.ndarray) -> int:
        """The live track of ``view`` whose box overlaps ``box`` (a user adjusting a person's box), else a new id."""
        best, best_iou = None, self.track_iou
        for tid, t in view.tracks.items():
            ref = t.ref_box()
            if ref is not None and iou(ref, box) >= best_iou:
                best, best_iou = tid, iou(ref, box)
        return best if best is not None else view.ids.new()
