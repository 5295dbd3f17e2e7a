"""Which box in one eye is the same person as which box in the other.

Equirect stereo has ~0 vertical disparity and a bounded horizontal one, so a person's two boxes share their rows
and lie a plausible offset apart. The ``joint`` mode splits one detector run on the SBS frame into the eyes and
pairs the halves; vouching (stereo/vouch.py) and the ``independent`` mode's agreement pair the two eyes'
detections or tracks the same way.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..engines.base import Detection

__all__ = ["pair_boxes", "split_sbs_detections"]

_BORDER_KEEP = 0.3  # a part of an SBS box cut by the eye border is kept if it holds this fraction of the box


def split_sbs_detections(dets: list[Detection], eye_w: int) -> tuple[list[Detection], list[Detection]]:
    """Split detections on a left|right SBS frame (width ``2 * eye_w``) into per-eye detections.

    A box cut by the eye border is clipped to each eye holding at least 30% of its width (the two sides of the
    border show different directions, so each substantial part is its own partial person); a smaller sliver is
    dropped, i.e. the box is assigned to the eye holding most of it. Masks, when present, are split the same way.
    """
    left: list[Detection] = []
    right: list[Detection] = []
    for d in dets:
        x0, y0, x1, y1 = (float(v) for v in d.box)
        w = max(x1 - x0, 1e-6)
        frac_left = min(max((eye_w - x0) / w, 0.0), 1.0)
        for side, frac in (("l", frac_left), ("r", 1.0 - frac_left)):
            if frac <= 0.0 or (frac < 1.0 and frac < _BORDER_KEEP):
                continue
            if side == "l":
                box = np.array([x0, y0, min(x1, eye_w), y1], dtype=np.float32)
                mask = None if d.mask is None else d.mask[..., :eye_w]
                left.append(Detection(box=box, score=float(d.score), mask=mask))
            else:
                box = np.array([max(x0, eye_w) - eye_w, y0, x1 - eye_w, y1], dtype=np.float32)
                mask = None if d.mask is None else d.mask[..., eye_w:]
                right.append(Detection(box=box, score=float(d.score), mask=mask))
    return left, right


def pair_boxes(left: list[np.ndarray], right: list[np.ndarray], max_disp: float, min_disp: float = 0.0,
               min_vertical_iou: float = 0.5) -> list[tuple[int, int]]:
    """Pair left-eye and right-eye boxes of the same person.

    A pair needs the same vertical extent (1-D IoU of the y ranges >= ``min_vertical_iou``; equirect stereo has
    ~0 vertical disparity) and a horizontal centre offset (left minus right) within ``[min_disp, max_disp]``
    widened by a quarter of the box width (boxes of partial detections wobble). Among valid pairs the Hungarian
    assignment prefers equal vertical extent, similar width and a small offset.
    """
    if not left or not right:
        return []
    n, m = len(left), len(right)
    cost = np.full((n, m), 1e6)
    for i, a in enumerate(left):
        for j, b in enumerate(right):
            inter = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            union = max(a[3], b[3]) - min(a[1], b[1])
            viou = inter / max(union, 1e-6)
            wa, wb = a[2] - a[0], b[2] - b[0]
            tol = 0.25 * max(wa, wb)
            dx = 0.5 * (a[0] + a[2]) - 0.5 * (b[0] + b[2])
            if viou < min_vertical_iou or not (min_disp - tol <= dx <= max_disp + tol):
                continue
            wratio = min(wa, wb) / max(wa, wb, 1e-6)
            cost[i, j] = (1 - viou) + 0.5 * (1 - wratio) + 0.2 * abs(dx) / max(max_disp, 1.0)
    rows, cols = linear_sum_assignment(cost)
    return [(int(i), int(j)) for i, j in zip(rows, cols) if cost[i, j] < 1e5]
