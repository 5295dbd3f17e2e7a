"""Streaming multi-person segmenter of the embedded engine (one instance per view).

Each track follows its person by itself between prompts, the way mediapipe's own pose tracker does, but for any
number of people: the landmark model run on a track's ROI returns, besides the person's segmentation probability,
two auxiliary landmarks from which the next frame's ROI is derived. A prompt (box or mask from the tracker) only
re-anchors a track when its current ROI no longer agrees with the prompt, so re-prompting every few frames does
not disturb a good track. When the landmark model loses a person, the segmenter looks for them again with the
pose detector in a region around their last box; if that fails the track gets an all-zero mask (the tracker ends
it after enough misses).

The probability is smoothed over time with mediapipe's uncertainty-weighted rule (only uncertain pixels lean on
the previous frame, so motion does not lag), cut to the track's ROI so a person next to it never leaks in.

One matte per person at the person's own resolution: the landmark model crops each track's ROI and resizes it to
its 256x256 input, so a person 30 px tall is segmented at the same model resolution as one filling the frame, and
the mask is pasted back into the view. Overlapping people do not swallow each other: the pose model is not
instance-aware inside a ROI, so where two tracks both claim a pixel it belongs to the track whose own body
(its landmark box) contains it, then to the more confident one; the others are capped below it.

This module manages the tracks of a view and assembles the frame's masks; one track's step through the pose model
is :mod:`.embedded_track`, close-up fusion :mod:`.embedded_closeup`, the overlap rule :mod:`.embedded_overlaps` and
the box prior :mod:`.embedded_prior`.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import torch

from .base import EngineError
from ..boxes import iou as box_iou, mask_box
from .embedded_closeup import SelfieFusion
from .embedded_detector import PoseGraphs, Roi
from .embedded_overlaps import resolve_overlaps
from .embedded_prior import PRIOR_MAX_PX, box_prior
from .embedded_track import TrackState, follow, roi_near

log = logging.getLogger(__name__)

_Track = TrackState  # its name when it was defined here


class EmbeddedSegmenter:
    """Box/mask-prompted streaming segmenter on the bundled pose landmark + segmentation model (CPU)."""

    name = "mediapipe-pose-seg"

    def __init__(
        self,
        view: str = "left",
        device: torch.device | str = "cpu",
        smoothing: float = 0.3,
        search_margin: float = 0.5,
        reanchor_iou: float = 0.5,
        closeup_fusion: bool = True,
        prior_max_px: float = PRIOR_MAX_PX,
    ) -> None:
        """``smoothing``: mediapipe's combine-with-previous ratio (0 = off); ``search_margin``: how far around the
        last box (as a fraction of its size) a lost person is searched for; ``reanchor_iou``: a prompt box that
        overlaps the track's current box at least this much keeps the current ROI; ``closeup_fusion``: for people whose
        hips are below the frame (close-ups, talking heads), where pose segmentation is weak, fuse in the bundled
        selfie-segmentation model near the pose mask; ``prior_max_px``: a person whose box is at most this long
        (image px) and whom the pose model does not find gets the box prior (engines/embedded_prior.py) instead of
        an empty mask; 0 = off. Such tracks are listed in :attr:`prior_ids` after each :meth:`segment`."""
        self.view = view
        self.device = torch.device(device)
        self.smoothing = float(smoothing)
        self.search_margin = float(search_margin)
        self.reanchor_iou = float(reanchor_iou)
        self._tracks: dict[int, TrackState] = {}
        self.closeup_fusion = closeup_fusion
        self.prior_max_px = float(prior_max_px)
        self.prior_ids: set[int] = set()  # tracks whose mask on the last segment() call is the box prior
        self._graphs: PoseGraphs | None = None
        self._closeup = SelfieFusion()  # the selfie-segmentation model, made on the first close-up

    @property
    def graphs(self) -> PoseGraphs:
        if self._graphs is None:
            self._graphs = PoseGraphs()
        return self._graphs

    @property
    def track_ids(self) -> list[int]:
        """Live track ids (for tests and logging)."""
        return list(self._tracks)

    @property
    def prior_boxes(self) -> dict[int, np.ndarray]:
        """``{track id: box}`` of the tracks whose mask on the last :meth:`segment` call was the box prior (image
        px): the box the prior was drawn in, which only a new prompt moves (stereo/follow.py supplies one)."""
        return {tid: self._tracks[tid].prior_box for tid in sorted(self.prior_ids)
                if tid in self._tracks and self._tracks[tid].prior_box is not None}

    # -- prompts -----------------------------------------------------------------------------------------------
    def add_prompt(self, track_id: int, box: np.ndarray | None = None, mask: torch.Tensor | None = None, *,
                   box_is_mask: bool = False) -> None:
        """Start ``track_id`` or re-anchor it at ``box`` (else the box of ``mask``) from the next frame on."""
        if box is None and mask is not None:
            box = mask_box(mask.detach().to("cpu").float().numpy())
        if box is None:
            raise EngineError(f"track {track_id}: a prompt needs a box or a non-empty mask")
        box = np.asarray(box, dtype=np.float32).reshape(4)
        tr = self._tracks.setdefault(track_id, TrackState())
        if tr.roi is not None and tr.last_box is not None and box_iou(tr.last_box, box) >= self.reanchor_iou:
            log.debug("%s: track %d prompt agrees with its mask (IoU >= %.2f); kept", self.view, track_id, self.reanchor_iou)
            return
        tr.prompt_box = box
        log.debug("%s: track %d (re-)anchored at %s", self.view, track_id, np.round(box).tolist())

    def remove_track(self, track_id: int) -> None:
        """Forget ``track_id``."""
        self._tracks.pop(track_id, None)

    def reset(self) -> None:
        """Drop every track (the mediapipe graphs are kept: they hold no per-person state)."""
        self._tracks.clear()

    def close(self) -> None:
        """Drop every track and free the mediapipe graphs."""
        self.reset()
        if self._graphs is not None:
            self._graphs.close()
            self._graphs = None
        self._closeup.close()

    # -- per frame ---------------------------------------------------------------------------------------------
    def segment(self, frame_idx: int, image: torch.Tensor) -> dict[int, torch.Tensor]:
        """(H, W) float32 probability for every live track on this frame (all zero where the person is lost)."""
        t0 = time.perf_counter()
        rgb = np.ascontiguousarray(image.detach().to("cpu").numpy())
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise EngineError(f"embedded segmenter needs an (H, W, 3) uint8 RGB image, got {tuple(rgb.shape)} {rgb.dtype}")
        h, w = rgb.shape[:2]
        probs: dict[int, np.ndarray] = {}
        self.prior_ids = set()
        for tid, tr in self._tracks.items():
            probs[tid] = self._segment_track(tid, tr, rgb)
        self._resolve_overlaps(probs, {tid: self._tracks[tid].body_box for tid in probs})
        out: dict[int, torch.Tensor] = {}
        for tid, p in probs.items():
            tr = self._tracks[tid]
            tr.prev = p if p.any() else None
            if tid in self.prior_ids:
                tr.last_box = tr.prior_box  # the prior's mask is smaller than its box: searching in it would shrink
            else:
                tr.last_box = mask_box(p) if tr.prev is not None else tr.last_box
            out[tid] = torch.from_numpy(p).to(self.device)
        log.debug(
            "%s frame %d: %d track(s) in %.1f ms", self.view, frame_idx, len(out), (time.perf_counter() - t0) * 1e3
        )
        return out

    def _segment_track(self, tid: int, tr: TrackState, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        fresh = False
        if tr.prompt_box is not None:
            tr.roi = self._roi_near(rgb, tr.prompt_box, margin=0.25) or Roi.from_box(tr.prompt_box)
            tr.last_box, tr.prompt_box, tr.prev, fresh = tr.prompt_box, None, None, True
        res = self.graphs.landmarks(rgb, tr.roi) if tr.roi is not None else None
        if res is None and tr.last_box is not None:
            # Lost by the landmark model: look for the person around where they were.
            roi = self._roi_near(rgb, tr.last_box, margin=self.search_margin)
            res = self.graphs.landmarks(rgb, roi) if roi is not None else None
            if res is not None:
                log.debug("%s: track %d re-acquired by the detector", self.view, tid)
        if res is None:
            tr.roi = None
            tr.body_box = None
            prior_box = tr.prior_box if tr.prior_box is not None and not fresh else tr.last_box
            if prior_box is not None and self._small(prior_box):
                # Too small for the pose model, but a detector (or the user) boxed a person here: the box prior.
                tr.prior_box = np.asarray(prior_box, np.float32)
                self.prior_ids.add(tid)
                tr.lost_frames = 0
                return box_prior(rgb, tr.prior_box)
            tr.lost_frames += 1
            return np.zeros((h, w), dtype=np.float32)
        return follow(tr, res, rgb, fresh, self.smoothing, self._fuse_selfie if self.closeup_fusion else None)

    def _small(self, box: np.ndarray) -> bool:
        return self.prior_max_px > 0 and max(float(box[2] - box[0]), float(box[3] - box[1])) <= self.prior_max_px

    def _fuse_selfie(self, rgb: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Close-up fusion of the selfie model near this person's pose mask (engines/embedded_closeup.py)."""
        return self._closeup.fuse(rgb, pose, self.view)

    def _roi_near(self, rgb: np.ndarray, box: np.ndarray, margin: float) -> Roi | None:
        """Detector ROI of the person best matching ``box``, searched in ``box`` grown by ``margin`` each side."""
        return roi_near(rgb, box, margin, lambda crop, offset: self.graphs.detect(crop, offset=offset))

    _resolve_overlaps = staticmethod(resolve_overlaps)  # engines/embedded_overlaps.py
