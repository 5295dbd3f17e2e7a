"""The per-frame track update of one view: what the segmenter's masks say about each live track.

Why its own module: this is where a track's life is decided from its mask. A non-empty mask refreshes the track's
box, score and counters; an empty one counts as missed. Then a track ends when its mask has been empty too long, when
the detector confirms it is gone, when it was a false detection (stillborn), or when it only lived on the
segmenter's box prior and the detector stopped confirming it. All the masks' statistics come down in one transfer,
together with what the segmenter posted for the frame (runtime/download.py).
"""
from __future__ import annotations

import torch

from .tracker import Track, mask_stats_rows, parse_mask_stats
from .view_state import ViewState, log

__all__ = ["TrackUpdater"]


class TrackUpdater:
    """Updates one view's live tracks from this frame's masks and ends the ones that are over."""

    def __init__(self, state: ViewState) -> None:
        self.state = state

    def update(self, frame_idx: int, masks: dict[int, torch.Tensor]) -> None:
        s = self.state
        ids = [tid for tid in s.tracks if tid in masks]
        probs = [masks[tid] for tid in ids]
        got: list = []
        if probs:
            s.download.post(mask_stats_rows(probs, s.settings.mask_threshold), got.extend)
        s.download.flush()  # the step's one read: these statistics and what the segmenter posted before them
        stats = dict(zip(ids, parse_mask_stats(probs, got))) if probs else {}
        # Tracks whose mask this frame is the segmenter's box prior, not a model mask (engines/embedded_segmenter:
        # a person too small for the model): kept alive, but only while the detector keeps seeing them.
        prior_ids = getattr(s.segmenter, "prior_ids", ())
        ended: list[tuple[int, str]] = []
        for tid, t in s.tracks.items():
            t.age += 1
            st = stats.get(tid)
            if st is None or s.tracker.is_empty(st[1]):
                t.box = None
                t.missed += 1
                if t.unmatched_now:
                    t.unmatched_runs += 1
                if st is None:
                    s.probs.pop(tid, None)
                else:
                    s.probs[tid] = masks[tid]
            else:
                box, _, conf = st
                t.box = box
                t.last_box = box
                t.missed = 0
                if tid in prior_ids and t.unmatched_now:
                    t.unmatched_runs += 1  # a prior the detector no longer confirms
                elif tid not in prior_ids:
                    t.unmatched_runs = 0
                t.hits += 1
                t.last_seen = frame_idx
                t.score = t.det_score if t.det_score is not None else conf
                s.probs[tid] = masks[tid]
            if s.trace is not None:
                s.event("frame", frame_idx, tid, area=0.0 if st is None else st[1] * masks[tid].numel(),
                        box=t.box, prior=tid in prior_ids)
            t.unmatched_now = False
            why = self._end_reason(tid, t, frame_idx, prior_ids)
            if why is not None:
                ended.append((tid, why))
        for tid, why in ended:
            log.debug("%s: frame %d: track %d ended (%s, mask empty %d frames)", s.view, frame_idx, tid, why,
                      s.tracks[tid].missed)
            s.event("end", frame_idx, tid, reason=why)
            s.end_track(tid)

    def _end_reason(self, tid: int, t: Track, frame_idx: int, prior_ids) -> str | None:
        """Why track ``t`` ends after this frame's update, or None while it lives on."""
        s = self.state
        confirm = 0 if t.origin == "prompt" else s.settings.confirm_end_runs
        if t.box is None and t.hits == 0 and t.origin == "detection" and t.start_frame == frame_idx:
            # The segmenter found nothing where the detector saw a person: a false detection. Ending it now
            # keeps a zombie track from costing segmenter time and from appearing in one eye only.
            s.stats["stillborn"] += 1
            return "stillborn"
        if s.tracker.should_end(t, confirm):
            return "lost" if t.missed > s.tracker.max_missed else "gone"
        if tid in prior_ids and confirm > 0 and t.unmatched_runs >= confirm:
            return "prior_unconfirmed"
        return None
