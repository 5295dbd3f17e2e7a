"""Detection -> track association for one view's step: who is who, who drifted, who is new.

Why its own module: this is the frame-by-frame decision that keeps two people two people. Detections are matched to
live tracks (Hungarian on mask-box IoU, track/tracker.py); a matched track whose mask drifted from its detection is
re-prompted unless another person occludes it; an unmatched detection starts a track unless it is a duplicate of a
live one (box overlap, or inside a tracked mask: track/duplicates.py) or the view is full.
"""
from __future__ import annotations

import numpy as np
import torch

from ..engines.base import Detection
from .duplicates import Duplicates
from .prompting import Prompter
from .tracker import box_iou
from .view_state import ViewState, log

__all__ = ["Associator"]


class Associator:
    """Matches one frame's detections to a view's live tracks, re-prompts drifted ones and starts new ones."""

    def __init__(self, state: ViewState, prompter: Prompter, duplicates: Duplicates) -> None:
        self.state = state
        self.prompter = prompter
        self.duplicates = duplicates

    def associate(
        self, frame_idx: int, dets: list[Detection], prompted: set[int], device: torch.device, allow_births: bool
    ) -> None:
        s = self.state
        live = list(s.tracks.values())
        matched, unmatched_t, unmatched_d = s.tracker.match(live, dets)
        anchor: dict[int, np.ndarray] = {}  # track id -> box to use for the duplicate check this frame
        for ti, di in matched:
            t, d = live[ti], dets[di]
            t.last_matched = frame_idx
            t.unmatched_runs = 0
            t.det_score = float(d.score)
            t.score = float(d.score)
            anchor[t.id] = np.asarray(d.box, dtype=np.float32)
            t.extra["det_box"] = anchor[t.id]  # the detector's view of this person (benchmarks, debugging)
            if t.id in prompted:
                continue
            s.event("matched", frame_idx, t.id, score=float(d.score), box=d.box)
            if s.tracker.is_drifted(t, d):
                if self._occluded(t.id, d.box):
                    s.stats["reprompts_skipped_occluded"] += 1
                    continue
                log.debug("%s: frame %d: track %d re-prompted from its detection", s.view, frame_idx, t.id)
                self.prompter.prompt(t.id, d.box, d.mask, device, frame_idx, seeded=False)
                prompted.add(t.id)
                s.stats["reprompts"] += 1
        for ti in unmatched_t:
            live[ti].unmatched_now = True  # counted in the track update if this frame's mask is empty too
        if not allow_births or not unmatched_d:
            return
        self._births(frame_idx, dets, unmatched_d, anchor, prompted, device)

    def _births(
        self, frame_idx: int, dets: list[Detection], unmatched_d: list[int], anchor: dict[int, np.ndarray],
        prompted: set[int], device: torch.device,
    ) -> None:
        """Start a track for each unmatched detection (best score first) that is not a duplicate and fits."""
        s, cfg = self.state, self.state.settings
        cands = sorted(unmatched_d, key=lambda j: -float(dets[j].score))
        occupied = [anchor.get(t.id, t.ref_box()) for t in s.tracks.values()]
        occupied = [b for b in occupied if b is not None]
        coverage = self.duplicates.coverage([dets[j].box for j in cands], exclude=prompted)
        for k, j in enumerate(cands):
            d = dets[j]
            box = np.asarray(d.box, dtype=np.float32).reshape(4)
            if occupied and float(box_iou(box, np.stack(occupied)).max()) > cfg.dup_iou:
                s.stats["duplicates_skipped"] += 1
                s.event("dropped", frame_idx, None, reason="duplicate_box", box=box, score=float(d.score))
                continue
            if coverage is not None and float(coverage[k].max()) > cfg.dup_coverage:
                s.stats["duplicates_skipped"] += 1
                s.event("dropped", frame_idx, None, reason="inside_tracked_mask", box=box, score=float(d.score))
                continue
            if len(s.tracks) >= cfg.max_persons:
                s.stats["max_persons_skipped"] += 1
                s.event("dropped", frame_idx, None, reason="max_persons", box=box, score=float(d.score))
                continue
            tid = s.ids.new()
            self.prompter.prompt(tid, box, d.mask, device, frame_idx, seeded=False, score=float(d.score))
            s.tracks[tid].det_score = float(d.score)
            s.tracks[tid].last_matched = frame_idx
            s.tracks[tid].extra["det_box"] = box
            occupied.append(box)

    def _occluded(self, tid: int, box: np.ndarray) -> bool:
        """True when ``box`` overlaps another live track's box by more than ``occlusion_iou``."""
        others = [t.ref_box() for i, t in self.state.tracks.items() if i != tid and t.ref_box() is not None]
        return bool(others) and float(box_iou(box, np.stack(others)).max()) > self.state.settings.occlusion_iou
