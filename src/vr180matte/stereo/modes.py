"""Stereo consistency modes (``stereo.consistency_mode``): one small strategy class each, in a registry.

A mode decides, for one stereo frame, who detects, how the right eye relates to the left, and whether the result
is validated-and-corrected; the :class:`~vr180matte.stereo.consistency.StereoStage` owns the views, the
detection schedule, disparity, validation and the report. A new mode is one class with ``@register``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..engines.base import Detection
from ..boxes import iou, shift_box
from .disparity import shift_mask

if TYPE_CHECKING:  # the stage imports this module; only type hints go the other way
    from .consistency import StereoResult, StereoStage

MODES: dict[str, type["StereoMode"]] = {}


def register(cls: type["StereoMode"]) -> type["StereoMode"]:
    MODES[cls.name] = cls
    return cls


def make_mode(name: str) -> "StereoMode":
    try:
        return MODES[name]()
    except KeyError:
        raise ValueError(f"stereo.consistency_mode={name!r}: choose one of {', '.join(MODES)}") from None


class StereoMode:
    """One frame of stereo matting: ``step(stage, frame_idx, left_img, right_img, detect_now) -> StereoResult``."""

    name: str = ""
    needs_detector = False  # the mode detects itself, so the engine must provide a detector
    corrects = True  # validated frames below the threshold are corrected (independent only reports)
    coupled = True  # the right eye follows the left under the same ids (independent: each eye on its own)

    def step(self, stage: "StereoStage", frame_idx: int, left_img: torch.Tensor, right_img: torch.Tensor,
             detect_now: bool) -> "StereoResult":
        raise NotImplementedError


@register
class Independent(StereoMode):
    """Each eye detects and segments on its own; agreement is measured and reported, never corrected."""

    name = "independent"
    corrects = False
    coupled = False

    def step(self, stage, frame_idx, left_img, right_img, detect_now):
        from .consistency import mask_iou, pair_boxes

        ld, rd = stage.detect_eyes(left_img, right_img) if detect_now else (None, None)
        lm = stage.left.step(frame_idx, left_img, **stage.view_kwargs(detect_now, ld))
        rm = stage.right.step(frame_idx, right_img, **stage.view_kwargs(detect_now, rd))
        agreement: dict[int, float] = {}
        disparity: dict[int, float] = {}
        lids = [i for i, t in lm.tracks.items() if t.box is not None]
        rids = [i for i, t in rm.tracks.items() if t.box is not None]
        pairs = pair_boxes([lm.tracks[i].box for i in lids], [rm.tracks[i].box for i in rids],
                           stage.max_disp, -stage.max_disp / 4)
        paired_l, paired_r = set(), set()
        for a, b in pairs:
            li, ri = lids[a], rids[b]
            paired_l.add(li)
            paired_r.add(ri)
            d = stage.disparity(li, left_img, right_img, lm.tracks[li].prob, None)
            disparity[li] = d
            dm = d if stage.use_mapping else 0.0
            agreement[li] = mask_iou(lm.tracks[li].prob, shift_mask(rm.tracks[ri].prob, -dm))
        for i in lids:
            if i not in paired_l:
                agreement[i] = 0.0
        for i in rids:
            if i not in paired_r:
                agreement[i] = min(agreement.get(i, 0.0), 0.0)
        for tid in stage.smoother.ids():
            if tid not in lm.tracks:
                stage.smoother.drop(tid)
        return stage.result(lm, rm, agreement, disparity, [], agreement)


@register
class MasterSlave(StereoMode):
    """The left eye detects and segments; each new left track seeds the right eye with its shifted mask, same id."""

    name = "master_slave"

    def detect(self, stage, left_img, right_img) -> tuple[list[Detection], list[Detection] | None, dict[int, int]]:
        """(left detections, right detections or None, left index -> right index)."""
        return stage.detect_lead(left_img, right_img), None, {}

    def step(self, stage, frame_idx, left_img, right_img, detect_now):
        eye_w = int(left_img.shape[1])
        ldets, rdets, pairs = self.detect(stage, left_img, right_img) if detect_now else (None, None, {})
        lm = stage.left.step(frame_idx, left_img, **stage.view_kwargs(detect_now, ldets))

        # The right eye follows the left: end what the left ended, seed what the left started.
        left_live = set(stage.left.live_ids)
        for tid in list(stage.right.live_ids):
            if tid not in left_live:
                if stage.trace is not None:
                    stage.trace.event("right", "end", frame_idx, tid, reason="left_ended")
                stage.right.end_track(tid)
                stage.forget(tid)
        right_live = set(stage.right.live_ids)
        seeds: dict[int, tuple[np.ndarray | None, torch.Tensor | None]] = {}
        new = [tid for tid in sorted(left_live - right_live)
               if lm.tracks.get(tid) is not None and lm.tracks[tid].box is not None]  # else retried next frame
        partners = {tid: self._partner(lm.tracks[tid].box, ldets, rdets, pairs) for tid in new}
        # The seeds' disparities, and with them this frame's validation measurement of the left eye's other people.
        measured = stage.seed_disparities(left_img, right_img,
                                          [(tid, lm.tracks[tid].prob, partners[tid][0]) for tid in new], lm)
        for tid, d in zip(new, measured):
            tm = lm.tracks[tid]
            rbox = partners[tid][1]
            dm = d if stage.use_mapping else 0.0
            mask = shift_mask(tm.prob, dm)
            box = rbox if rbox is not None else shift_box(tm.box, dm, eye_w)
            seeds[tid] = (np.asarray(box, dtype=np.float32), mask)
            if stage.trace is not None:
                stage.trace.event("stereo", "seeded", frame_idx, tid, disparity=float(dm))
        rm = stage.right.step(frame_idx, right_img, seeds=seeds, run_detector=False,
                              before_update=lambda masks, download: stage.validator.post_bands(lm, masks, download),
                              **({"detections": rdets} if rdets is not None else {}))
        return stage.validate(frame_idx, left_img, right_img, lm, rm, skip_measure=set(seeds))

    @staticmethod
    def _partner(box, ldets, rdets, pairs) -> tuple[float | None, np.ndarray | None]:
        """(disparity prior, right box) from the paired right detection of the left detection ``box`` came from."""
        if ldets is None or not pairs:
            return None, None
        best, best_iou = None, 0.3
        for i, d in enumerate(ldets):
            v = iou(d.box, box)
            if v > best_iou and i in pairs:
                best, best_iou = i, v
        if best is None:
            return None, None
        rbox = rdets[pairs[best]].box
        return 0.5 * float(ldets[best].box[0] + ldets[best].box[2] - rbox[0] - rbox[2]), rbox


@register
class Joint(MasterSlave):
    """The detector runs once on the whole SBS frame; boxes are split and paired; the left eye leads."""

    name = "joint"
    needs_detector = True

    def detect(self, stage, left_img, right_img):
        return stage.detect_joint(left_img, right_img)


__all__: list[str] = ["MODES", "StereoMode", "register", "make_mode", "Independent", "MasterSlave", "Joint"]
