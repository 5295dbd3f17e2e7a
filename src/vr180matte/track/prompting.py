"""Prompting the segmenter for one view: queued re-prompts, seeds, and starting a track.

Why its own module: a segmenter only follows what it was prompted with, so every way a person gets (re-)anchored
goes through here: a re-prompt queued by the stereo stage or the manual override file, a hand-off mask, a seed from
the other eye, a drifted or new detection. Each creates the track if it is new and stops trusting its old mask.
"""
from __future__ import annotations

import numpy as np
import torch

from .tracker import Track, mask_box
from .view_state import ViewState, log

__all__ = ["Prompter"]


class Prompter:
    """Queues re-prompts between steps and applies prompts to one view's segmenter and tracks."""

    def __init__(self, state: ViewState) -> None:
        self.state = state

    def request(self, track_id: int, *, box: np.ndarray | None = None, mask: torch.Tensor | None = None,
                origin: str = "reprompt", box_is_mask: bool = False) -> None:
        """Queue a prompt for ``track_id`` on the next step (see :meth:`ViewMatter.reprompt`)."""
        if box is None and mask is None:
            raise ValueError(f"reprompt of track {track_id} needs a box or a mask")
        self.state.pending[int(track_id)] = (None if box is None else np.asarray(box, dtype=np.float32), mask)
        if box_is_mask and box is not None and mask is not None:
            self.state.pending_own_box.add(int(track_id))
        self.state.pending_origin[int(track_id)] = origin

    def apply(
        self,
        frame_idx: int,
        device: torch.device,
        seeds: dict[int, tuple[np.ndarray | None, torch.Tensor | None]] | None,
    ) -> set[int]:
        """Prompt the queued re-prompts, then the seeds; the ids prompted this frame."""
        s = self.state
        prompted: set[int] = set()
        for tid, (box, mask) in s.pending.items():
            self.prompt(tid, box, mask, device, frame_idx, seeded=False,
                        origin=s.pending_origin.get(tid, "reprompt"), box_is_mask=tid in s.pending_own_box)
            prompted.add(tid)
        s.pending.clear()
        s.pending_origin.clear()
        s.pending_own_box.clear()
        if seeds:
            for tid, (box, mask) in seeds.items():
                if box is None and mask is None:
                    raise ValueError(f"{s.view}: seed for track {tid} has neither box nor mask")
                self.prompt(int(tid), box, mask, device, frame_idx, seeded=True, origin="seed")
                prompted.add(int(tid))
        return prompted

    def prompt(
        self,
        tid: int,
        box: np.ndarray | None,
        mask: torch.Tensor | None,
        device: torch.device,
        frame_idx: int,
        *,
        seeded: bool,
        score: float | None = None,
        origin: str = "detection",
        box_is_mask: bool = False,
    ) -> None:
        """Prompt the segmenter for ``tid`` on this frame, creating the track if it is new (``box_is_mask``: see
        engines/base.py ``Segmenter.add_prompt``)."""
        s = self.state
        box = None if box is None else np.asarray(box, dtype=np.float32).reshape(4)
        if mask is not None:
            mask = mask.to(device=device, dtype=torch.float32)
        s.segmenter.add_prompt(tid, box=box, mask=mask, box_is_mask=box_is_mask)
        t = s.tracks.get(tid)
        if t is None:
            s.ids.observe(tid)
            t = Track(
                id=tid, box=None, score=1.0 if score is None else float(score), start_frame=frame_idx, origin=origin
            )
            s.tracks[tid] = t
            s.stats["tracks_started"] += 1
            s.event("start", frame_idx, tid, origin=origin, box=box, score=score)
            log.debug("%s: frame %d: track %d started (%s)", s.view, frame_idx, tid, "seed" if seeded else "prompt")
        if t.start_frame < 0:
            t.start_frame = frame_idx
        if box is None and mask is not None:
            box_from_mask = mask_box(mask, s.settings.mask_threshold)  # rare (seeds, hand-off): one small transfer
            if box_from_mask is not None:
                t.last_box = box_from_mask
        if box is not None:
            t.last_box = box  # the prompt is the best estimate until the mask says otherwise
        t.seeded = t.seeded or seeded
        s.probs.pop(tid, None)  # the old mask is not trusted any more
