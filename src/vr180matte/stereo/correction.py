"""Correction of a person whose two eyes disagree (``stereo.correction_method``).

Validation (stereo/validation.py) found the person's right mask, mapped back by disparity, too far from the left
one. ``transfer``: the weaker eye's mask is replaced by the stronger's, shifted; ``reprocess``: the same, and the
weaker eye's segmenter is re-prompted with it so the following frames recover too; ``ensemble``: both eyes get the
strength-weighted average of the two aligned masks. The weaker eye is the one whose mask area changed more against
the person's agreed area on the previous frame, times the segmenter score (an eye that suddenly lost a limb is the
broken one).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from ..boxes import mask_stats_on_device
from ..engines.base import TrackMask
from .disparity import shift_mask
from .result import MASK_T, band_box, iou_on_device

if TYPE_CHECKING:  # the stage builds this part; only type hints go the other way
    from .consistency import StereoStage
    from .validation import _Rows

# The stage's logger: stereo messages keep the one name users filter and read them by.
log = logging.getLogger("vr180matte.stereo.consistency")

__all__ = ["METHODS", "StereoCorrector"]

METHODS = ("transfer", "reprocess", "ensemble")


class StereoCorrector:
    """Applies ``method`` to a person's two masks; re-prompts the stage's views where the method asks for it."""

    def __init__(self, method: str, stage: StereoStage) -> None:
        if method not in METHODS:
            raise ValueError(f"stereo.correction_method={method!r}: choose one of {', '.join(METHODS)}")
        self.method = method
        self.stage = stage
        self.n_reprompt = 0  # weaker-eye segmenters re-prompted (stats.json stereo.reprompts)

    @staticmethod
    def _strength(tid: int, tm: TrackMask | None, area: float, ref_area: dict[int, float]) -> float:
        """How much to trust an eye's mask of ``area`` pixels (validation's download) against the agreed area."""
        if tm is None or tm.box is None:
            return 0.0
        ref = ref_area.get(tid)
        consistency = 1.0 if not ref else min(area, ref) / max(area, ref, 1e-6)
        return consistency * (0.5 + 0.5 * float(tm.score))

    def apply(self, tid, lt, rt, pl, pr, dm, ref_area: dict[int, float], areas: tuple[float, float]):
        """Apply the configured correction to the person's rows ``pl``/``pr``; ``ref_area``: each person's agreed
        mask area on the last validated frame; ``areas``: this frame's mask areas of ``pl`` and ``pr``. Returns
        (left rows, right rows, the weaker eye, the eye(s) changed, the numbers :meth:`finish` needs as one device
        vector): validation downloads the vectors of all corrected persons of a frame together."""
        sl, sr = self._strength(tid, lt, areas[0], ref_area), self._strength(tid, rt, areas[1], ref_area)
        # Ties go to the left eye (the master in master_slave; the detected eye in joint).
        weak = "right" if sl >= sr else "left"
        if self.method == "ensemble":
            wl, wr = (sl, sr) if sl + sr > 0 else (1.0, 1.0)
            fused = (wl * pl + wr * shift_mask(pr, -dm)) / (wl + wr)
            pl, pr = fused, shift_mask(fused, dm)
            eye = "both"
        else:
            if weak == "right":
                pr = shift_mask(pl, dm)
            else:
                pl = shift_mask(pr, -dm)
            eye = weak
        v = torch.cat([iou_on_device(pl, shift_mask(pr, -dm))[None], mask_stats_on_device(pl, MASK_T),
                       mask_stats_on_device(pr, MASK_T)])
        return pl, pr, weak, eye, v

    def finish(self, frame_idx, tid, lt, rt, pl, pr, weak: str, eye: str, before: float, rows: _Rows,
               v: list[float]):
        """After the download: re-prompt the weaker eye where the method asks for it. Returns (agreement after,
        the eye boxes of both rows, their areas, log record)."""
        after, boxes, areas = v[0], (band_box(v[1:7], rows.r0), band_box(v[7:13], rows.r0)), (v[5], v[11])
        weak_tm = rt if weak == "right" else lt
        lost = weak_tm is None or weak_tm.box is None
        if self.method == "reprocess" or (lost and self.method != "ensemble"):
            # Re-prompt the weaker eye's segmenter so the following frames recover (a lost track must be).
            view, prob, box = (self.stage.right, pr, boxes[1]) if weak == "right" else (self.stage.left, pl, boxes[0])
            if box is not None:
                # ``box`` is ``prob``'s own box (its pixels > MASK_T, downloaded above): no read to route the prompt
                view.reprompt(tid, box=box.copy(), mask=rows.full(prob), box_is_mask=True)
                self.n_reprompt += 1
        rec = {"frame": int(frame_idx), "track": int(tid), "eye": eye, "method": self.method,
               "before": round(float(before), 4), "after": round(float(after), 4)}
        log.debug("stereo correction %s", rec)
        return after, boxes, areas, rec
