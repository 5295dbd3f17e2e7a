"""Duplicate checks for one view: the same person detected twice must not become two tracks.

Why its own module: box checks (in track/association.py) catch a second box on an already tracked person, but not
a partial one (an upper-body box inside a tracked person's mask, or two boxes on the same person in the first
frame). These checks use the masks instead: before a track starts, how much of the box a live mask covers; after
the first segmentation, how much of a new track's mask lies inside another's. Each check's numbers come from the
device in one transfer (the second one with the view step's download: runtime/download.py).
"""
from __future__ import annotations

import numpy as np
import torch

from .view_state import ViewState, log

__all__ = ["Duplicates"]


class Duplicates:
    """Mask-based duplicate checks on one view's live tracks."""

    def __init__(self, state: ViewState) -> None:
        self.state = state
        self._counts: dict[tuple[int, int], tuple[float, float]] = {}  # this step's (overlap, area) per pair

    def coverage(self, boxes: list[np.ndarray], exclude: set[int]) -> np.ndarray | None:
        """(n_boxes, n_tracks): fraction of each box covered by each trusted live mask (one host transfer)."""
        s = self.state
        probs = [p for tid, p in s.probs.items() if tid not in exclude and tid in s.tracks]
        if not probs or not boxes:
            return None
        vals = []
        for box in boxes:
            for p in probs:
                h, w = p.shape[-2:]
                x0, y0 = int(np.clip(np.floor(box[0]), 0, w)), int(np.clip(np.floor(box[1]), 0, h))
                x1, y1 = int(np.clip(np.ceil(box[2]), 0, w)), int(np.clip(np.ceil(box[3]), 0, h))
                area = max((x1 - x0) * (y1 - y0), 1)
                vals.append((p[y0:y1, x0:x1] > s.settings.mask_threshold).sum().float() / area)
        return torch.stack(vals).cpu().numpy().reshape(len(boxes), len(probs))

    def post_counts(self, frame_idx: int, masks: dict[int, torch.Tensor]) -> None:
        """Before the track update: the overlap counts :meth:`merge_new` may need, posted to the step's download
        (runtime/download.py) so they come down with the tracker's statistics instead of in a read of their own.
        Which masks are empty is only known after that download, so every pair of a track started this frame with
        another masked track is counted (a superset of the pairs tested; no read)."""
        s = self.state
        self._counts = {}
        born = [tid for tid, t in s.tracks.items()
                if t.start_frame == frame_idx and t.origin == "detection" and tid in masks]
        others = [tid for tid in s.tracks if tid in masks]
        pairs = [(a, b) for a in born for b in others if a != b]
        if not pairs:
            return
        def then(v: list[float]) -> None:
            self._counts = {pair: (v[2 * i], v[2 * i + 1]) for i, pair in enumerate(pairs)}

        s.download.post(_pair_counts(masks, pairs, s.settings.mask_threshold), then)

    def merge_new(self, frame_idx: int) -> None:
        """End tracks started this frame whose first mask lies mostly inside another track's mask.

        Box checks cannot tell a partial duplicate (an upper-body box of someone already tracked, or two boxes on
        the same person in the first frame) from a second person; the first masks can. Only new tracks are tested,
        so established tracks are never merged away; ids forced by the caller (seeds, re-prompts) are kept. The
        counts come from :meth:`post_counts` (the step's download).
        """
        s = self.state
        born = [
            tid
            for tid, t in s.tracks.items()
            if t.start_frame == frame_idx and t.origin == "detection" and t.box is not None
        ]
        if not born:
            return
        others = [tid for tid, t in s.tracks.items() if t.box is not None and tid in s.probs]
        pairs = [(a, b) for a in born for b in others if a != b and a in s.probs]
        if not pairs:
            return
        # Both orders of two new tracks are among the pairs, so "how much of b lies inside a" is in the same
        # download (no second transfer per pair).
        counts = dict(self._counts)
        missing = [p for p in pairs if p not in counts]
        if missing:  # a caller that did not post them (not the view's step): one read for those
            got = _pair_counts(s.probs, missing, s.settings.mask_threshold).cpu().tolist()
            counts.update(zip(missing, (tuple(v) for v in got)))
        frac = [counts[p] for p in pairs]
        ended: set[int] = set()
        for (a, b), (inter, area) in zip(pairs, frac):
            if a in ended or b in ended or area <= 0:
                continue
            inside = inter / area
            b_new = s.tracks[b].start_frame == frame_idx
            # Two new tracks fully inside each other: keep the lower id (the better-scored detection).
            dup = s.settings.dup_inside
            if inside > dup and (not b_new or b < a or self._inside(b, a, counts) <= dup):
                log.debug("%s: frame %d: new track %d duplicates track %d, ended", s.view, frame_idx, a, b)
                ended.add(a)
        for a in sorted(ended):
            s.event("end", frame_idx, a, reason="duplicate_of_track")
            s.end_track(a)
            s.stats["duplicates_merged"] += 1

    def _inside(self, a: int, b: int, counts: dict) -> float:
        """Fraction of track ``a``'s mask inside track ``b``'s mask: from this frame's download when the pair is
        in it (two new detection tracks), else read for this pair (a new seeded or re-prompted track: rare)."""
        if (a, b) in counts:
            inter, area = counts[a, b]
        else:
            s = self.state
            inter, area = _pair_counts(s.probs, [(a, b)], s.settings.mask_threshold)[0].cpu().tolist()
        return inter / area if area > 0 else 0.0


def _pair_counts(masks: dict[int, torch.Tensor], pairs: list[tuple[int, int]], thr: float) -> torch.Tensor:
    """(P, 2) float on the device: for each pair ``(a, b)``, the pixels of ``a``'s mask inside ``b``'s and the
    pixels of ``a``'s mask (each mask thresholded once, however many pairs it is in; no read)."""
    on = {t: masks[t] > thr for pair in pairs for t in pair}
    return torch.stack([torch.stack([(on[a] & on[b]).sum(), on[a].sum()]) for a, b in pairs]).float()
