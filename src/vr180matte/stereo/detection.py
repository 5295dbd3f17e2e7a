"""Detection for both eyes: the stereo stage's one detection schedule and every detector run it makes.

The stage, not each view, decides when and how people are detected, because the two eyes are one decision: a
person one eye is unsure of may be vouched for by the other (stereo/vouch.py), ``joint`` mode detects once on the
SBS frame and pairs the halves (stereo/pairing.py), and ``master_slave`` detects the right eye only to vouch for
a new left candidate. The boxes found here go to the views (:meth:`StereoDetection.view_kwargs`); the views' own
detectors are then never used.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..boxes import iou, overlap_small, shift_box
from ..config import Config
from ..engines.base import Detection, Detector, detect_at
from .equirect import EquirectDetector
from .pairing import pair_boxes, split_sbs_detections
from .source_detect import SourceEyes
from .vouch import Vouching

if TYPE_CHECKING:  # the stage builds this part; only type hints go the other way
    from .consistency import StereoStage

__all__ = ["StereoDetection"]


class StereoDetection:
    """The detection schedule and the detector runs of a :class:`StereoStage` (see the module docstring); reads the
    stage's views (their tracks) and this frame's ``max_disp``. ``detector``: the engine's person detector (None:
    the views run their own), wrapped in :class:`EquirectDetector` when ``detection.equirect_crops`` is on."""

    def __init__(self, cfg: Config, stage: StereoStage, detector: Detector | None,
                 equirect_detector: EquirectDetector | None = None) -> None:
        self.stage = stage
        self.detect_interval = int(cfg.detection.detect_interval)
        self.detector = detector
        self.equirect: EquirectDetector | None = None
        # auto: off here; for_engine turns it on for equirect input (a flat clip's edges are not stretched, and
        # crops there only add false detections and detector time)
        if detector is not None and (cfg.detection.equirect_crops is True or equirect_detector is not None):
            self.equirect = equirect_detector or EquirectDetector(detector)
        self._first = True
        self.vouch_ratio = float(cfg.stereo.vouch_ratio)
        self.track_iou = float(cfg.matting.track_iou_threshold)  # a candidate this close to a track is that person
        self._refused: list = []  # master_slave: unsure left boxes the right eye did not vouch for (detect_lead)
        self._vouching: Vouching | None = None  # built on first use: the detector's threshold is final by then
        self.source = SourceEyes()  # this frame's source-resolution eyes: the detector runs on them (source_detect.py)

    def reset(self) -> None:
        """Chunk start: the next frame is a detection frame."""
        self._first = True
        self._refused = []  # per chunk, so a resumed run decides exactly as an uninterrupted one

    def is_detection_frame(self, frame_idx: int) -> bool:
        """The one detection schedule: the first frame after a reset, then every ``detect_interval`` frames."""
        return self.detector is not None and (self._first or frame_idx % self.detect_interval == 0)

    def next_frame(self, frame_idx: int) -> bool:
        """:meth:`is_detection_frame` for the frame the stage now steps; the first frame after a reset is done."""
        detect_now = self.is_detection_frame(frame_idx)
        self._first = False
        return detect_now

    @property
    def vouching(self) -> Vouching | None:
        """Stereo vouching (stereo/vouch.py), or None when off (``vouch_ratio`` 1) or the detector has no
        ``threshold=`` argument."""
        if self._vouching is None and self.detector is not None and self.vouch_ratio < 1.0 and \
                getattr(self.detector, "supports_threshold", False):
            thr = float(self.detector.confidence_threshold)
            self._vouching = Vouching(thr, self.vouch_ratio * thr)
        return self._vouching

    def vouching_report(self) -> dict | None:
        """The stats.json ``stereo.vouching`` block, or None when vouching was never used (not built here)."""
        if self._vouching is None:
            return None
        return {"threshold": round(self._vouching.threshold, 4),
                "floor": round(self._vouching.floor, 4), **self._vouching.stats.as_dict()}

    def detect_eye(self, img: torch.Tensor, threshold: float | None = None) -> list[Detection]:
        """Detections of one eye at the detector's threshold, or down to ``threshold`` (vouching candidates)."""
        det = self.equirect if self.equirect is not None else self.detector
        found = self.source.detect(det, img, threshold, inner=self.detector)
        return found if found is not None else detect_at(det, img, threshold)

    def _detect_band(self, img: torch.Tensor, around: list[Detection], threshold: float) -> list[Detection]:
        """Detections in the full-width band of rows holding ``around`` (grown by a quarter of the tallest box):
        equirect stereo has no vertical disparity, so a partner lies in those rows. A band as wide as the eye is
        seen at the eye's own detection density (whole-eye pass and tiles alike), so its scores are close to a
        full-eye run's (the context differs), at the cost of the band's tiles only."""
        H = int(img.shape[0])
        margin = 0.25 * max(float(d.box[3] - d.box[1]) for d in around)
        y0 = int(max(0.0, min(float(d.box[1]) for d in around) - margin))
        y1 = int(min(float(H), max(float(d.box[3]) for d in around) + margin + 1))
        y0, y1 = min(y0, max(0, y1 - 32)), max(y1, min(H, y0 + 32))  # at least 32 rows
        self._vouching.stats.band_rows += y1 - y0
        self._vouching.stats.eye_rows += H
        out = []
        found = self.source.detect(self.detector, img, threshold, rows=slice(y0, y1))
        for d in found if found is not None else detect_at(self.detector, img[y0:y1], threshold):
            box = np.asarray(d.box, np.float32).copy()
            box[[1, 3]] += y0
            out.append(Detection(box=box, score=float(d.score), mask=d.mask))
        return out

    def detect_eyes(self, left_img: torch.Tensor, right_img: torch.Tensor
                    ) -> tuple[list[Detection], list[Detection]]:
        """Both eyes detected on their own; a candidate one eye is unsure of survives when the other is sure."""
        v = self.vouching
        if v is None:
            return self.detect_eye(left_img), self.detect_eye(right_img)
        ld, rd = self.detect_eye(left_img, v.floor), self.detect_eye(right_img, v.floor)
        return v.apply(ld, rd, self.stage.max_disp, -self.stage.max_disp / 4)

    def detect_lead(self, left_img: torch.Tensor, right_img: torch.Tensor) -> list[Detection]:
        """The leading (left) eye's detections. The right eye is detected only when the left has a candidate under
        the threshold that is nobody it already tracks (one that would start a track if vouched for): a person
        already tracked needs no vouching, so in a steady scene a detection frame costs one detector run."""
        v = self.vouching
        if v is None:
            return self.detect_eye(left_img)
        ld = self.detect_eye(left_img, v.floor)
        tracked = [t.box for t in self.stage.left.tracks.values() if t.box is not None]
        unsure = [d for d in ld if d.score < v.threshold
                  and not any(iou(d.box, b) >= self.track_iou or overlap_small(d.box, b) >= 0.7 for b in tracked)]
        # A candidate the right eye already refused at the previous detection frame (a poster, a mannequin: the
        # same box again) is not checked again, so a persistent false positive costs one extra run, not one a frame.
        refused_before = [any(iou(d.box, b) >= 0.5 for b in self._refused) for d in unsure]
        new = [d for d, r in zip(unsure, refused_before) if not r]
        self._refused = [d.box for d, r in zip(unsure, refused_before) if r]
        if not new:
            return [d for d in ld if d.score >= v.threshold]  # as without vouching
        v.stats.right_eye_runs += 1
        band = self._detect_band(right_img, new, v.floor)
        kept = v.apply(ld, band, self.stage.max_disp, -self.stage.max_disp / 4)[0]
        kept_ids = {id(d) for d in kept}
        self._refused += [d.box for d in unsure if id(d) not in kept_ids]
        return kept

    def detect_joint(self, left_img: torch.Tensor, right_img: torch.Tensor
                     ) -> tuple[list[Detection], list[Detection], dict[int, int]]:
        """Detect once on the SBS frame, split, add equirect crops per eye, pair. Returns (left, right, pairs)."""
        eye_w = int(left_img.shape[1])
        sbs = torch.cat([left_img, right_img], dim=1)
        v = self.vouching
        floor = v.floor if v is not None else None
        max_disp = self.stage.max_disp
        ld, rd = split_sbs_detections(detect_at(self.detector, sbs, floor), eye_w)
        if self.equirect is not None:
            self.equirect.stats["calls"] += 1
            ld = self.equirect.merge(ld, self.equirect.detect_crops(left_img, floor))
            rd = self.equirect.merge(rd, self.equirect.detect_crops(right_img, floor))
        if v is not None:
            ld, rd = v.apply(ld, rd, max_disp, -max_disp / 4)
        pairs = dict(pair_boxes([d.box for d in ld], [d.box for d in rd], max_disp, -max_disp / 4))
        # A person found only in the right eye still gets a left detection (its box moved by the typical offset),
        # so the left eye starts the track and both eyes share its id.
        offsets = [0.5 * (ld[i].box[0] + ld[i].box[2] - rd[j].box[0] - rd[j].box[2]) for i, j in pairs.items()]
        off = float(np.median(offsets)) if offsets else 0.0
        paired_r = set(pairs.values())
        for j, d in enumerate(rd):
            if j in paired_r:
                continue
            box = shift_box(d.box, -off, eye_w)
            ld.append(Detection(box=box, score=float(d.score)))
            pairs[len(ld) - 1] = j
        return ld, rd, pairs

    def view_kwargs(self, detect_now: bool, dets: list[Detection] | None) -> dict:
        if self.detector is None:
            return {}  # the view follows its own detector and interval
        if detect_now:
            return {"detections": dets if dets is not None else [], "run_detector": False}
        return {"run_detector": False}
