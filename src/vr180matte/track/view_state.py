"""What one view knows between frames, shared by the stages of its per-frame step (track/view_matter.py).

Why its own module: prompting, association, duplicate removal, exclusions and the track update all read and change
the same few things (the live tracks, their latest masks, the queued re-prompts, the counters). Keeping them in one
object that every stage is handed makes that shared state explicit, instead of each stage reaching into the others.

Memory: only the current state of each live track is kept (its box, counters and the latest mask tensor, which the
duplicate check needs); never a list of past masks, so memory does not grow with video length.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..engines.base import Detector, FrameMatte, Segmenter, TrackMask
from ..runtime.download import FrameDownload
from .ids import IdAllocator
from .tracker import Track, Tracker

if TYPE_CHECKING:  # view_matter imports this module; the hand-off is only read here
    from .view_matter import ViewHandoff

# Every stage of a view logs as the view (``-v`` prints the logger name): the lines keep the name they always had.
log = logging.getLogger(f"{__package__}.view_matter")

__all__ = ["ViewSettings", "ViewState"]


@dataclass
class ViewSettings:
    """The thresholds of one view's step (:class:`~vr180matte.track.view_matter.ViewMatter`'s arguments).

    ``dup_iou`` / ``dup_coverage``: an unmatched detection whose box has IoU above ``dup_iou`` with a live track's box,
    or whose box is covered more than ``dup_coverage`` by one live track's mask, is the same person detected twice
    and starts no track. ``confirm_end_runs``: a track with an empty mask ends early once this many detector runs in
    a row did not see it (0 = only ``max_missed`` ends tracks). ``mask_threshold``: probability above which a pixel
    belongs to a mask. ``occlusion_iou``: a drifted track is not re-prompted while its detection box overlaps another
    live track's box by more than this IoU, because a box prompt on an occluded person tends to grab the occluder
    (the drift is then the occlusion, not an error). ``dup_inside``: a track started this frame whose mask lies more
    than this fraction inside another track's mask is the same person (a partial duplicate detection) and is ended.
    """

    detect_interval: int = 10
    max_persons: int = 16
    dup_iou: float = 0.5
    dup_coverage: float = 0.5
    confirm_end_runs: int = 2
    mask_threshold: float = 0.5
    occlusion_iou: float = 0.2
    dup_inside: float = 0.8

    def __post_init__(self) -> None:
        if self.detect_interval < 1:
            raise ValueError(f"detect_interval must be >= 1 frame, got {self.detect_interval}")
        if self.max_persons < 1:
            raise ValueError(f"max_persons must be >= 1, got {self.max_persons}")
        self.detect_interval = int(self.detect_interval)
        self.max_persons = int(self.max_persons)
        self.dup_iou = float(self.dup_iou)
        self.dup_coverage = float(self.dup_coverage)
        self.confirm_end_runs = int(self.confirm_end_runs)
        self.mask_threshold = float(self.mask_threshold)
        self.occlusion_iou = float(self.occlusion_iou)
        self.dup_inside = float(self.dup_inside)


class ViewState:
    """One view's collaborators, settings, counters and live tracks (current state only)."""

    def __init__(
        self, view: str, segmenter: Segmenter, detector: Detector | None, ids: IdAllocator, tracker: Tracker,
        settings: ViewSettings,
    ) -> None:
        self.view = view
        self.segmenter = segmenter
        self.detector = detector
        self.ids = ids
        self.tracker = tracker
        self.settings = settings
        self.stats: dict[str, int] = {
            "tracks_started": 0,
            "tracks_ended": 0,
            "tracks_resumed": 0,
            "reprompts": 0,
            "detections_run": 0,
            "detections_supplied": 0,
            "duplicates_skipped": 0,
            "max_persons_skipped": 0,
            "duplicates_merged": 0,
            "stillborn": 0,
            "reprompts_skipped_occluded": 0,
        }
        self.tracks: dict[int, Track] = {}
        self.probs: dict[int, torch.Tensor] = {}  # latest mask per live track (current state only)
        self.pending: dict[int, tuple[np.ndarray | None, torch.Tensor | None]] = {}
        self.pending_origin: dict[int, str] = {}
        self.pending_own_box: set[int] = set()  # queued prompts whose box is their mask's own (Prompter.request)
        # Optional collaborators, set by the stereo stage: the manual override file (track/prompts.py; its excluded
        # regions are applied to this view's detections and masks) and the person trace (quality/debug.py).
        self.prompts = None
        self.trace = None
        # The step's one download (runtime/download.py): the tracker's mask statistics and whatever the segmenter
        # posted for this frame (the ROI segmenter's lane boxes under the GPU policy) come down together.
        self.download = FrameDownload()
        share = getattr(segmenter, "share_download", None)
        if share is not None:
            share(self.download)

    def event(self, kind: str, frame_idx: int, tid: int | None = None, **info) -> None:
        """One event of the person trace (quality/debug.py), when one is attached."""
        if self.trace is not None:
            self.trace.event(self.view, kind, frame_idx, tid, **info)

    def matte(self, frame_idx: int, detections) -> FrameMatte:
        """The frame's result: every live track with a mask (its box and score as the update left them)."""
        out = FrameMatte(frame_idx=frame_idx, detections=list(detections))
        for tid in sorted(self.tracks):
            prob = self.probs.get(tid)
            if prob is not None:
                t = self.tracks[tid]
                out.tracks[tid] = TrackMask(track_id=tid, prob=prob, box=t.box, score=t.score)
        return out

    def end_track(self, track_id: int) -> None:
        """End ``track_id`` now and free its segmenter state (no-op if it is not live)."""
        track_id = int(track_id)
        self.pending.pop(track_id, None)
        self.pending_own_box.discard(track_id)
        if self.tracks.pop(track_id, None) is None:
            return
        self.probs.pop(track_id, None)
        self.segmenter.remove_track(track_id)
        self.stats["tracks_ended"] += 1

    def clear(self) -> None:
        """Drop every track, mask and queued re-prompt (chunk start). Queued origins are left as they are."""
        self.tracks.clear()
        self.probs.clear()
        self.pending.clear()
        self.pending_own_box.clear()

    def resume(self, handoff: ViewHandoff) -> None:
        """Recreate the hand-off's tracks; each is prompted with its mask on the next step."""
        self.ids.observe(int(handoff.next_id) - 1)
        for tid, mask in handoff.masks.items():
            tid = int(tid)
            box = handoff.boxes.get(tid)
            box = None if box is None else np.asarray(box, dtype=np.float32)
            self.ids.observe(tid)
            self.tracks[tid] = Track(
                id=tid, box=box, score=float(handoff.scores.get(tid, 1.0)), last_box=box, origin="handoff"
            )
            self.pending[tid] = (box, mask)
            self.stats["tracks_resumed"] += 1
        log.debug("%s: reset with %d handed-off tracks, next id %d", self.view, len(handoff.masks), self.ids.next_id)
