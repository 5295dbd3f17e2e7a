"""Alpha-matte quality metrics: with ground truth (IoU, boundary F, MAD, dtSSD) and without (edge consistency,
temporal stability).

Inputs are numpy arrays or torch tensors (any device; they are moved to the host as float64 numpy), alpha
in [0, 1], shape (H, W). Masks given as uint8 0/255 are scaled to [0, 1] as well. Every function returns a
plain Python float.

Conventions (the usual ones of the matting / video-object-segmentation literature, so numbers compare):

* ``iou``: both sides thresholded at ``thresh``; two empty masks score 1.
* ``boundary_f``: the DAVIS boundary F-measure (Perazzi et al. 2016): one-pixel boundaries of the binarised
  masks, matched within ``tol_px`` pixels (default: DAVIS' 0.008 of the image diagonal, rounded up); two
  empty boundaries score 1, one empty 0.
* ``mad``: mean absolute difference of alpha **x 1e3** (as in the matting papers: 1.0 means 0.1 % average error).
* ``dtssd``: temporal gradient error of Erofeev et al. 2015 for one frame pair,
  ``sqrt(mean(((a_t1 - a_t) - (g_t1 - g_t))^2)) x 1e2``; average it over the pairs of a video.
* ``edge_consistency`` (no ground truth): how smooth the alpha boundary is. The structure-tensor coherence of
  the alpha gradient, averaged along the boundary (weighted by gradient energy). A smooth, anti-aliased edge
  has one gradient direction per neighbourhood (coherence ~1); a stair-stepped edge alternates between
  horizontal and vertical steps (coherence drops towards 0 on diagonals). 1 = smooth.
* ``temporal_stability`` (no ground truth): the change of alpha between two frames that image motion does not
  explain. The previous alpha is warped to the current frame with dense optical flow (OpenCV DIS) computed
  on the frames themselves; what still differs by more than a one-pixel slack is unexplained. Its total,
  divided by the boundary length, is the mean unexplained boundary displacement ``u`` in pixels;
  the score is ``1 / (1 + u)`` (1 = stable; 0.5 = on average one pixel of unexplained change along the
  boundary). Compute it at a fixed analysis size (the quality monitor uses 512 px) so scores compare.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage


def _np(x, name: str = "alpha") -> np.ndarray:
    """Host float64 array in [0, 1] from numpy/torch, uint8 0..255 scaled."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x)
    if a.dtype == np.uint8:
        a = a.astype(np.float64) / 255.0
    elif a.dtype == np.bool_:
        a = a.astype(np.float64)
    else:
        a = a.astype(np.float64)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) map, got shape {a.shape}")
    return a


def _same(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    p, g = _np(pred, "prediction"), _np(gt, "ground truth")
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in size")
    return p, g


def iou(pred, gt, thresh: float = 0.5) -> float:
    """Intersection over union of the masks thresholded at ``thresh`` (> thresh is foreground)."""
    p, g = _same(pred, gt)
    pb, gb = p > thresh, g > thresh
    union = np.logical_or(pb, gb).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(pb, gb).sum() / union)


def _seg2bmap(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of a binary mask, as DAVIS' ``seg2bmap`` at the same size: a pixel that differs
    from its right, bottom or bottom-right neighbour."""
    seg = mask.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _disk(r: int) -> np.ndarray:
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return (x * x + y * y) <= r * r


def boundary_f(pred, gt, tol_px: int | None = None) -> float:
    """DAVIS boundary F-measure of the masks thresholded at 0.5; ``tol_px`` default 0.008 x image diagonal."""
    p, g = _same(pred, gt)
    if tol_px is None:
        tol_px = int(math.ceil(0.008 * math.hypot(*p.shape)))
    pb, gb = _seg2bmap(p > 0.5), _seg2bmap(g > 0.5)
    n_p, n_g = int(pb.sum()), int(gb.sum())
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0
    se = _disk(max(0, int(tol_px)))
    g_dil = ndimage.binary_dilation(gb, structure=se) if tol_px > 0 else gb
    p_dil = ndimage.binary_dilation(pb, structure=se) if tol_px > 0 else pb
    precision = float((pb & g_dil).sum()) / n_p
    recall = float((gb & p_dil).sum()) / n_g
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def mad(pred, gt) -> float:
    """Mean absolute alpha difference x 1e3."""
    p, g = _same(pred, gt)
    return float(np.abs(p - g).mean() * 1e3)


def dtssd(preds_t, preds_t1, gts_t, gts_t1) -> float:
    """dtSSD of one frame pair (t, t+1) x 1e2: error of the temporal alpha derivative."""
    a0, g0 = _same(preds_t, gts_t)
    a1, g1 = _same(preds_t1, gts_t1)
    if a0.shape != a1.shape:
        raise ValueError(f"frames t {a0.shape} and t+1 {a1.shape} differ in size")
    d = (a1 - a0) - (g1 - g0)
    return float(np.sqrt(np.mean(d * d)) * 1e2)


def edge_consistency(alpha, sigma: float = 2.0) -> float:
    """Boundary smoothness in [0, 1] (1 = smooth): gradient-energy-weighted structure-tensor coherence.

    ``sigma`` is the neighbourhood (pixels) over which the gradient direction must agree; 2 px at the
    monitor's 512 px analysis size covers the stair steps of a 4-12x upscaled mask. An alpha without any
    boundary scores 1 (nothing to alias).
    """
    a = _np(alpha).astype(np.float32)
    gx = cv2.Sobel(a, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(a, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    energy = gx * gx + gy * gy
    total = float(energy.sum())
    if total < 1e-9:
        return 1.0
    k = (0, 0)
    jxx = cv2.GaussianBlur(gx * gx, k, sigma)
    jyy = cv2.GaussianBlur(gy * gy, k, sigma)
    jxy = cv2.GaussianBlur(gx * gy, k, sigma)
    tr = jxx + jyy
    disc = np.sqrt((jxx - jyy) ** 2 + 4 * jxy * jxy)
    with np.errstate(invalid="ignore", divide="ignore"):
        coh = np.where(tr > 1e-12, disc / np.maximum(tr, 1e-12), 1.0)
    coh = np.clip(coh, 0, 1) ** 2
    return float((coh * energy).sum() / total)


def _gray(frame) -> np.ndarray:
    if hasattr(frame, "detach"):
        frame = frame.detach().cpu().numpy()
    f = np.asarray(frame)
    if f.ndim == 3:
        f = cv2.cvtColor(np.ascontiguousarray(f[..., :3]).astype(np.uint8), cv2.COLOR_RGB2GRAY)
    elif f.dtype != np.uint8:
        f = np.clip(f * (255.0 if f.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(f)


_DIS = None


def flow(frame_from, frame_to) -> np.ndarray:
    """Dense optical flow (H, W, 2) float32 such that ``frame_to[y, x] ~= frame_from[y + fy, x + fx]``."""
    global _DIS
    if _DIS is None:
        _DIS = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    return _DIS.calc(_gray(frame_to), _gray(frame_from), None)


def warp(alpha: np.ndarray, fl: np.ndarray) -> np.ndarray:
    """Warp ``alpha`` (defined on the 'from' frame) onto the 'to' frame with a flow from :func:`flow`."""
    h, w = alpha.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(alpha.astype(np.float32), xx + fl[..., 0], yy + fl[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def unexplained_change(alpha_prev, alpha, frame_prev, frame) -> tuple[float, float]:
    """(sum of alpha change not explained by image motion, boundary length) in pixels of the inputs."""
    a0, a1 = _same(alpha_prev, alpha)
    g0, g1 = _gray(frame_prev), _gray(frame)
    if g0.shape != a0.shape or g1.shape != a1.shape:
        raise ValueError(f"frames {g0.shape}/{g1.shape} and alphas {a0.shape} must have the same size")
    wa = warp(a0.astype(np.float32), flow(g0, g1))
    hi = cv2.dilate(wa, np.ones((3, 3), np.uint8))
    lo = cv2.erode(wa, np.ones((3, 3), np.uint8))
    a = a1.astype(np.float32)
    resid = np.maximum(a - hi, 0) + np.maximum(lo - a, 0)
    gy, gx = np.gradient(np.maximum(a, wa))
    length = float(np.hypot(gx, gy).sum())
    return float(resid.sum()), length


def temporal_stability(alpha_prev, alpha, frame_prev, frame) -> float:
    """1 / (1 + mean unexplained boundary displacement in pixels); 1 = stable, no boundary = 1."""
    u, length = unexplained_change(alpha_prev, alpha, frame_prev, frame)
    if u <= 0:
        return 1.0
    return float(1.0 / (1.0 + u / max(length, 1.0)))
