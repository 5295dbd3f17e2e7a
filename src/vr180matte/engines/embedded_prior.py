"""The box prior of the embedded segmenter: a mask for a person too small for the pose model.

The pose landmark + segmentation model is weak below ~60 px: for a distant person its presence check fails and it
returns nothing, although the detector boxed the person (on a real street half of the 20-40 px pedestrians were
lost this way). Inside a detector's box a person is the part that differs from the surroundings, which is what
OpenCV's GrabCut (iterated graph cuts on colour models of the box and its margin) separates: the box's margin is
background, an upright ellipse in the box probably the person, the rest undecided. Small crops are upscaled first,
so its colour models have pixels to learn from. When GrabCut gives up (nearly nothing or nearly the whole box), the
ellipse itself is the prior: a person box is mostly person in its middle.

OpenCV is already a dependency (mediapipe pins it); GrabCut on a ~64x128 crop takes a few milliseconds.
"""
from __future__ import annotations

import numpy as np

__all__ = ["box_prior", "PRIOR_MAX_PX"]

PRIOR_MAX_PX = 64.0  # longest box side (image px) up to which a person the pose model misses gets the box prior
_WORK_PX = 96  # the box's long side is upscaled to at least this for GrabCut
_ITERS = 3


def _ellipse(h: int, w: int, rect: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = rect
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    ax, ay = max(0.42 * (x1 - x0), 1.0), max(0.48 * (y1 - y0), 1.0)
    return ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0


def box_prior(rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(H, W) float32 probability of the person in ``box`` (xyxy, image px) of ``rgb`` ((H, W, 3) uint8)."""
    import cv2

    h, w = rgb.shape[:2]
    out = np.zeros((h, w), np.float32)
    x0, y0 = int(max(0, np.floor(box[0]))), int(max(0, np.floor(box[1])))
    x1, y1 = int(min(w, np.ceil(box[2]))), int(min(h, np.ceil(box[3])))
    bw, bh = x1 - x0, y1 - y0
    if bw < 2 or bh < 2:
        return out
    m = max(3, int(0.5 * max(bw, bh)))  # margin: what the background looks like around the person
    cx0, cy0, cx1, cy1 = max(0, x0 - m), max(0, y0 - m), min(w, x1 + m), min(h, y1 + m)
    f = max(1.0, _WORK_PX / max(bw, bh))
    crop = np.ascontiguousarray(rgb[cy0:cy1, cx0:cx1])
    if f > 1.0:
        crop = cv2.resize(crop, (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f))),
                          interpolation=cv2.INTER_CUBIC)
    ch, cw = crop.shape[:2]
    rect = (int((x0 - cx0) * f), int((y0 - cy0) * f), min(cw, int(round((x1 - cx0) * f))),
            min(ch, int(round((y1 - cy0) * f))))
    ell = _ellipse(ch, cw, rect)
    mask = np.full((ch, cw), cv2.GC_BGD, np.uint8)
    mask[rect[1]:rect[3], rect[0]:rect[2]] = cv2.GC_PR_BGD
    mask[ell] = cv2.GC_PR_FGD
    area = max(1, (rect[2] - rect[0]) * (rect[3] - rect[1]))
    fg = ell
    if (mask == cv2.GC_BGD).any():  # GrabCut needs some sure background
        try:
            bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            # GrabCut seeds its colour models with k-means from OpenCV's per-thread RNG: without a fixed seed the
            # same box on the same pixels gives another mask on each call, and identical eyes would disagree.
            cv2.setRNGSeed(0)
            cv2.grabCut(crop, mask, None, bgd, fgd, _ITERS, cv2.GC_INIT_WITH_MASK)
            cut = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
            if 0.15 * area <= cut.sum() <= 0.85 * area:
                fg = cut
        except cv2.error:  # degenerate colour models (a flat crop): keep the ellipse
            pass
    soft = fg.astype(np.float32)
    if f > 1.0:
        soft = cv2.resize(soft, (cx1 - cx0, cy1 - cy0), interpolation=cv2.INTER_AREA)
    out[cy0:cy1, cx0:cx1] = soft
    out[:y0] = 0.0  # nothing outside the detector's box
    out[y1:] = 0.0
    out[:, :x0] = 0.0
    out[:, x1:] = 0.0
    return out
