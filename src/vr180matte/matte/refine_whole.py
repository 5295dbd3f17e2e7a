"""The refiner's whole-frame path (the GPU policy): both eyes, every pixel, a fixed handful of batched ops.

The fast guided filter as RVM and He et al. run it: box filters on the coarse grid, one bilinear upsample of
the coefficients ``A`` and ``b`` (and of the band mask), one full-resolution multiply-add with the guide. The
band rule (pixels whose support holds no uncertain coarse cell are exactly 0 or 1) and the thin-structure rule
are ``torch.where`` over the whole batch, where the tile path decides them tile by tile on the host.

Why not tiles on a GPU: a 3072 px eye is ~150 tiles of 256 px, each a dozen small kernels plus host reads to
decide whether to skip it; every host read is a synchronisation that also waits for the other stages' kernels.
The whole frame is a few large kernels and no read at all, and the GPU has the memory (both eyes: ~0.7 GB of
float planes at 3072 px). The op count does not depend on the number of people or on where they stand.

The result equals the tile path's within float rounding (tested to 1e-5 on DAVIS frames): the same coarse
grid, the same sample positions, the same rules. Outside the band the tile path rounds ``up(b)`` alone where
no pixel of a tile is in the band and ``up(b) + up(A) . I`` where some are; here it is always the latter,
which rounds the same way (``A`` is ~0 where the coarse mask is saturated).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .refine_ops import _gauss_kernel, coarse_prob, coefficients, edges, masks, stretch


def pool_guides(guides: torch.Tensor, s: int) -> torch.Tensor:
    """(B, H, W, 3) uint8 (any strides) -> (B, 3, ceil(H/s), ceil(W/s)) block means in [0, 1]; the last
    partial block is replicate-padded, as in the tile path.

    When the blocks tile the eye (the usual case), the block sums are exact integers, as the tile path's
    OpenCV integral image gives them: the guided filter's coefficients divide by the guide's local variance
    (+ eps = 1e-4), so float rounding in a float pooling (~3e-7) can move the alpha by up to 5e-3 where the
    image is nearly flat; with the same exact sums the two paths agree to 1e-6."""
    H, W = guides.shape[1:3]
    if s > 1 and H % s == 0 and W % s == 0:
        blocks = guides.unflatten(1, (H // s, s)).unflatten(3, (W // s, s))  # (B, hl, s, wl, s, 3), a view
        return blocks.sum(dim=(2, 4), dtype=torch.int32).permute(0, 3, 1, 2).float().mul_(1.0 / (255.0 * s * s))
    g = guides.permute(0, 3, 1, 2).float().div_(255.0)  # divided before pooling, as the tile path does
    ph, pw = (-H) % s, (-W) % s
    if ph or pw:
        g = F.pad(g, (0, pw, 0, ph), mode="replicate")
    return F.avg_pool2d(g, s) if s > 1 else g


def _up(x: torch.Tensor, s: int, H: int, W: int) -> torch.Tensor:
    """Coarse-grid planes (B, C, hl, wl) -> (B, C, H, W) by the integer factor ``s`` (pixel centres)."""
    hl, wl = x.shape[2:]
    return F.interpolate(x, size=(hl * s, wl * s), mode="bilinear", align_corners=False)[..., :H, :W]


def refine_whole(ref, probs: torch.Tensor, guides: torch.Tensor, plan: dict) -> torch.Tensor:
    """The whole-frame path of :meth:`Refiner.refine_batch`: ``probs`` (B, h, w) float, ``guides`` (B, H, W, 3)
    uint8 (a strided view of the SBS frame is fine), both on the refiner's device -> (B, H, W). No host read."""
    H, W = guides.shape[1:3]
    s, r = plan["grid_factor"], plan["radius_grid"]
    p, p_l = coarse_prob(probs, H, W, s)
    if ref.method == "guided":
        coef = coefficients(pool_guides(guides, s), p_l, r, ref.eps)  # (B, 4, hl, wl)
        thin, band = masks(p, p_l, r)
        inband = _up(band, s, H, W)[:, 0] > 0  # (B, H, W)
        A = _up(coef, s, H, W)  # (B, 4, H, W): A_r, A_g, A_b, b
        q = A[:, 3]
        for c in range(3):  # three fixed channels, not a loop over data
            q = q.addcmul_(A[:, c], guides[..., c].float().div_(255.0))
        del A
        q = torch.where(inband, stretch(q, plan["gain"]), q.round())
        # thin structures: at least the coarse mask's own stretched estimate (sampled straight from the mask)
        pc, th = F.interpolate(torch.cat([p, thin], 1), size=(H, W), mode="bilinear", align_corners=False).unbind(1)
        q = torch.where((th > 0.5) & inband, torch.maximum(q, stretch(pc, plan["gain"])), q)
        a = q.clamp_(0, 1)[:, None]
    else:
        a = _up(p_l, s, H, W)
    sigma = ref.feather_px / 2.0
    kern = _gauss_kernel(sigma, probs.device) if sigma > 0 else None
    ref.last_stats = {"tiles": 1, "tiles_refined": 1, "tile": max(H, W), "whole_frame": True}
    return edges(a, ref.erode_px, kern)[:, 0]
