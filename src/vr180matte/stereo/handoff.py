"""What one chunk hands to the next: :class:`ChunkHandoff`, produced and consumed by the stereo stage.

Why it exists: chunks bound memory and make resume possible, but people must keep their ids and masks across a
chunk boundary, and the overlap frames are blended. The hand-off is written to the work folder when a chunk
finishes and read back when the next chunk starts (also in an uninterrupted run, so a resumed run produces the
same frames).

On disk it is plain data: tensors, ints, floats, strings, lists and dicts saved with ``torch.save`` and read with
``torch.load(..., weights_only=True)``, so a file planted in the work folder cannot run code; anything else in
the file is refused with a one-line error naming it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import HandoffError
from ..track.view_matter import ViewHandoff

FORMAT = 2  # bump when the layout below changes; an older file is refused (delete the work folder)


@dataclass
class ChunkHandoff:
    """State carried from chunk k to chunk k+1.

    ``left``/``right``: each live track's last mask, box and score in that eye (at processing resolution; the next
    chunk resizes them if it runs at another scale after an out-of-memory retry). ``next_id``: the first id not
    yet used in the video (kept once, here). ``disparity``/``ref_area``: the stereo stage's smoothed per-person
    disparity window and last agreed mask area. ``overlap``: per eye, one quantised low-resolution (uint8,
    at most 512 px a side) person probability per overlap frame, blended into the next chunk's first frames.
    """

    next_id: int = 1
    left: ViewHandoff | None = None
    right: ViewHandoff | None = None
    disparity: dict = field(default_factory=dict)
    ref_area: dict = field(default_factory=dict)
    overlap: dict[str, list[torch.Tensor]] = field(default_factory=lambda: {"left": [], "right": []})

    # ---- plain data -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        def view(v: ViewHandoff | None) -> dict | None:
            if v is None:
                return None
            s = v.state_dict()
            s.pop("next_id", None)  # kept once, at the top
            return s

        return {
            "format": FORMAT,
            "next_id": int(self.next_id),
            "left": view(self.left),
            "right": view(self.right),
            "disparity": {int(k): (int(v[0]), [tuple(float(x) for x in it) for it in v[1]])
                          for k, v in self.disparity.items()},
            "ref_area": {int(k): float(v) for k, v in self.ref_area.items()},
            "overlap": {eye: [t.to(torch.uint8).cpu().contiguous() for t in ts] for eye, ts in self.overlap.items()},
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "ChunkHandoff":
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError("not a vr180matte chunk hand-off of this version")
        nid = int(state["next_id"])

        def view(s: dict | None) -> ViewHandoff | None:
            return None if s is None else ViewHandoff.from_state_dict({**s, "next_id": nid})

        disparity = {int(k): (int(v[0]), [tuple(x) for x in v[1]]) for k, v in state["disparity"].items()}
        return cls(
            next_id=nid, left=view(state["left"]), right=view(state["right"]), disparity=disparity,
            ref_area={int(k): float(v) for k, v in state["ref_area"].items()},
            overlap={eye: list(ts) for eye, ts in state["overlap"].items()},
        )

    def resized(self, size: tuple[int, int]) -> "ChunkHandoff":
        """The hand-off with every track mask at ``size`` (H, W): the next chunk may run at another scale."""
        import torch.nn.functional as F

        for v in (self.left, self.right):
            if v is None:
                continue
            for tid, m in list(v.masks.items()):
                if tuple(m.shape) != tuple(size):
                    fy, fx = size[0] / m.shape[0], size[1] / m.shape[1]
                    m = F.interpolate(m[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
                    if tid in v.boxes:  # the box prompts the segmenter too: same scale as the mask
                        v.boxes[tid] = (np.asarray(v.boxes[tid], dtype=np.float32) * [fx, fy, fx, fy]).astype(np.float32)
                v.masks[tid] = m.to(torch.float16)
        return self

    # ---- files ----------------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write atomically (a temporary name, then renamed)."""
        tmp = Path(path).with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, work_root: Path | None = None) -> "ChunkHandoff":
        """Read a hand-off as data only; any file that is not one gives :class:`HandoffError` naming it."""
        where = work_root if work_root is not None else Path(path).parent
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            return cls.from_state_dict(state)
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with the file, the fix is the same
            why = " ".join(str(exc).split())[:120]
            raise HandoffError(
                f"chunk hand-off {path} cannot be read as plain data ({why}); delete the work folder {where} "
                "and run again"
            ) from None

