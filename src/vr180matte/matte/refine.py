"""Coarse mask probabilities -> full-resolution alpha, edge-aware (fast guided filter), in tiles.

Why this shape:

* Segmenters give probabilities at processing resolution (SAM2's logits are 256x256; at a 3072 px eye that is
  12 px per cell). Bilinear upscaling of such a mask gives blurry, stair-stepped edges that ignore the image.
  A guided filter (He et al.) fits, in every window, ``alpha ~= A . I + b`` to the coarse mask with the
  full-resolution RGB frame ``I`` as the guide, so the edge of the alpha snaps onto the edge of the image.
* The *fast* guided filter computes ``A`` and ``b`` on a coarse grid (the guide is area-averaged by an integer
  factor ``s``) and applies them at full resolution: the expensive box filters run on ``1/s^2`` of the pixels,
  and only ``alpha = up(A) . I + up(b)`` touches the full-resolution frame.
* The full-resolution step runs in tiles of ``tile`` pixels and one colour channel at a time, so at a
  3072x3072 eye the working memory is a few tile-sized buffers plus the coarse grid, not a stack of full
  float frames. The coarse grid is capped at 1024 cells per side for the same reason.
* The refinement band scales with the output: ``radius_px`` is meant for a 3072 px eye and scales with the
  eye size; the radius never drops below half a coarse-mask cell, because the uncertainty the filter must
  resolve is the size of a cell of the mask it is given (scale factors 0.25 / 0.5 / 1.0 all work).
* Pixels far from the boundary (where the coarse mask is saturated) are exactly 0 or 1: the filter is only
  trusted inside a band around the uncertain region, and tiny values are snapped so no faint halo leaks
  into the background of a greenscreen composite.
* Alpha is *straight* (not premultiplied); :func:`vr180matte.matte.composite.compose` premultiplies when the
  user asks for it. Keeping it straight here is what avoids the dark band that appears when an already
  premultiplied colour is composited as if it were straight.
"""
from __future__ import annotations

import logging
import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

METHODS = ("guided", "bilinear")
_SNAP = 1.0 / 512.0  # below half an 8-bit step: invisible, but keeps the background exactly 0 / the inside 1
_LO, _HI = 0.02, 0.98  # coarse probabilities outside (_LO, _HI) count as certain
_THIN_SAT = 0.9  # a coarse neighbourhood (3x3 cells) whose maximum stays below this holds a sub-cell structure
_MAX_GRID = 1024  # the coarse coefficient grid is at most this many cells per side (bounds its memory)
_WORK_TILE = 256  # full-resolution tiles are at most this big: a person's edge band touches few of them


def _box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, normalised by the number of valid pixels at the borders."""
    if r <= 0:
        return x
    return F.avg_pool2d(x, 2 * r + 1, stride=1, padding=r, count_include_pad=False)


def _axis(start: int, stop: int, scale: float, offset: float, n_in: int, device) -> tuple:
    """Linear-interpolation indices/weights for output pixels ``start..stop`` of one axis.

    Output pixel ``o`` samples the input at ``(o + 0.5) * scale - 0.5 + offset`` (pixel-centre convention, the
    same as ``F.interpolate(mode="bilinear", align_corners=False)``), clamped to the input.
    """
    o = torch.arange(start, stop, device=device, dtype=torch.float32)
    src = ((o + 0.5) * scale - 0.5 + offset).clamp(0, n_in - 1)
    i0 = src.floor().long()
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w1 = src - i0.float()
    return i0, i1, w1


def _sample(x: torch.Tensor, ay: tuple, ax: tuple) -> torch.Tensor:
    """Bilinear resampling of ``x`` (C, h, w) at the separable sample positions ``ay``, ``ax``."""
    i0, i1, w = ay
    j0, j1, v = ax
    # Only the cells the samples read: a tile's rows of a wide map would otherwise be gathered whole.
    r0, r1, c0, c1 = int(i0[0]), int(i1[-1]) + 1, int(j0[0]), int(j1[-1]) + 1  # indices ascend (see _axis)
    x = x[:, r0:r1, c0:c1]
    i0, i1, j0, j1 = i0 - r0, i1 - r0, j0 - c0, j1 - c0
    t = x[:, i0, :] * (1 - w)[None, :, None] + x[:, i1, :] * w[None, :, None]
    return t[:, :, j0] * (1 - v) + t[:, :, j1] * v


def _upsample(x: torch.Tensor, cells: tuple, box: tuple) -> torch.Tensor:
    """Bilinear upsampling of the coarse-grid planes ``x`` (C, hl, wl) by the integer grid factor ``s`` for the
    output pixels ``box`` = (y0, y1, x0, x1), reading only grid cells ``[g0, g1) x [f0, f1)`` (from
    :func:`_support`). Same sample positions and edge clamping as :func:`_axis` / :func:`_sample` (pixel
    centres, ``align_corners=False``), but through ``F.interpolate``'s kernel, which is several times faster
    than two gathers."""
    g0, g1, f0, f1, s = cells
    y0, y1, x0, x1 = box
    crop = x[None, :, g0:g1, f0:f1]
    up = F.interpolate(crop, size=((g1 - g0) * s, (f1 - f0) * s), mode="bilinear", align_corners=False)[0]
    return up[:, y0 - g0 * s : y1 - g0 * s, x0 - f0 * s : x1 - f0 * s]


def _pool_guide(guide: torch.Tensor, s: int, strip: int = 256) -> torch.Tensor:
    """Area-average the (H, W, 3) uint8 guide by the integer factor ``s`` -> (3, ceil(H/s), ceil(W/s)) in [0, 1].

    Works in strips of rows so the full-resolution frame is never converted to float as a whole; the last
    partial block is replicate-padded.
    """
    H, W = guide.shape[:2]
    hl, wl = -(-H // s), -(-W // s)
    out = torch.empty((3, hl, wl), dtype=torch.float32, device=guide.device)
    rows = max(1, strip // s) * s
    # On the CPU, block sums from OpenCV's integral image (exact integers) are ~10x faster than converting the
    # strip to float and pooling, and equal to it up to float rounding (3e-7).
    fast = guide.device.type == "cpu" and s > 1 and W % s == 0
    for y0 in range(0, H, rows):
        y1 = min(H, y0 + rows)
        if fast and (y1 - y0) % s == 0:
            ii = cv2.integral(np.ascontiguousarray(guide[y0:y1].numpy()))  # (h + 1, W + 1, 3) int32
            blk = ii[s::s, s::s] - ii[:-s:s, s::s] - ii[s::s, :-s:s] + ii[:-s:s, :-s:s]
            out[:, y0 // s : y1 // s] = torch.from_numpy(blk.astype(np.float32)).permute(2, 0, 1).mul_(1.0 / (255.0 * s * s))
            continue
        g = guide[y0:y1].permute(2, 0, 1).float().div_(255.0)[None]
        ph, pw = (-(y1 - y0)) % s, (-W) % s
        if ph or pw:
            g = F.pad(g, (0, pw, 0, ph), mode="replicate")
        out[:, y0 // s : y0 // s + g.shape[2] // s] = F.avg_pool2d(g, s)[0] if s > 1 else g[0]
    return out


def _support(n: int, s: int, n_grid: int, T: int, halo: int) -> list[tuple[int, int, int, int, int, int]]:
    """Tiles of one axis: ``(o0, o1, e0, e1, g0, g1)`` = output range, range extended by ``halo``, and the
    coarse-grid cells ``[g0, g1)`` its bilinear samples read (the same arithmetic as :func:`_axis`)."""
    tiles = []
    for o0 in range(0, n, T):
        o1 = min(n, o0 + T)
        e0, e1 = max(0, o0 - halo), min(n, o1 + halo)
        g0 = int(math.floor(min(max((e0 + 0.5) / s - 0.5, 0.0), n_grid - 1)))
        g1 = min(n_grid - 1, int(math.floor(min(max((e1 - 0.5) / s - 0.5, 0.0), n_grid - 1))) + 1) + 1
        tiles.append((o0, o1, e0, e1, g0, g1))
    return tiles


def _cumsum2(m: np.ndarray) -> np.ndarray:
    """(B, h, w) bool -> (B, h+1, w+1) summed-area table, so any cell rectangle is counted in O(1)."""
    c = np.zeros((m.shape[0], m.shape[1] + 1, m.shape[2] + 1), dtype=np.int64)
    c[:, 1:, 1:] = m.cumsum(1).cumsum(2)
    return c


def _count(c: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> int:
    return int(c[y1, x1] - c[y0, x1] - c[y1, x0] + c[y0, x0])


def _erode(a: torch.Tensor, px: int) -> torch.Tensor:
    """Grey erosion (px > 0) or dilation (px < 0) of (1, 1, h, w) alpha by |px| pixels, octagonal element.

    Alternating 3x3 square and 3x3 cross steps approximate a disk, so diagonal edges move by about the same
    distance as straight ones.
    """
    n = abs(px)
    x = -a if px > 0 else a
    for i in range(n):
        if i % 2 == 0:
            x = F.max_pool2d(x, 3, stride=1, padding=1)
        else:
            x = torch.maximum(
                F.max_pool2d(x, (1, 3), stride=1, padding=(0, 1)), F.max_pool2d(x, (3, 1), stride=1, padding=(1, 0))
            )
    return -x if px > 0 else x


def _gauss_kernel(sigma: float, device) -> torch.Tensor:
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, device=device, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _feather(a: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of (1, 1, h, w) with replicate borders."""
    r = (k.numel() - 1) // 2
    a = F.conv2d(F.pad(a, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(a, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


class Refiner:
    """Upscale a coarse person probability to full-resolution straight alpha, guided by the full-res eye image.

    ``method``: ``"guided"`` (fast guided filter, edge-aware) or ``"bilinear"`` (plain upsampling, the baseline).
    ``radius_px``: guided-filter radius in source pixels for a 3072 px eye; scaled with the eye size, and never
    below half a coarse-mask cell. ``eps``: guided-filter regularisation (guide in [0, 1]); smaller follows image
    edges more closely. ``erode_px``: shrink the alpha by N source pixels (negative grows). ``feather_px``:
    extra Gaussian softening (sigma = feather_px / 2) in source pixels. ``tile``: side of the full-resolution
    tiles (bounds memory). One instance can serve both eyes: it keeps no per-frame state.
    """

    def __init__(
        self,
        *,
        method: str = "guided",
        radius_px: int = 8,
        eps: float = 1e-4,
        erode_px: int = 0,
        feather_px: int = 0,
        device: torch.device | str = "cpu",
        tile: int = 1024,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"refine.method must be one of {', '.join(METHODS)}, got {method!r}")
        if radius_px < 1:
            raise ValueError(f"refine.radius_px must be >= 1, got {radius_px}")
        if eps <= 0:
            raise ValueError(f"refine.eps must be > 0, got {eps}")
        if feather_px < 0:
            raise ValueError(f"refine.feather_px must be >= 0, got {feather_px}")
        if tile < 64:
            raise ValueError(f"refine tile must be >= 64 pixels, got {tile}")
        self.method = method
        self.radius_px = int(radius_px)
        self.eps = float(eps)
        self.erode_px = int(erode_px)
        self.feather_px = int(feather_px)
        self.device = torch.device(device)
        self.tile = int(tile)
        self.skip_uniform = True  # fill tiles away from the edge band instead of filtering them (same result)
        self.last_stats: dict = {}

    # ------------------------------------------------------------------ geometry
    def plan(self, prob_shape: tuple[int, int], out_shape: tuple[int, int]) -> dict:
        """Radius and coarse-grid factor for a given mask and output size (exposed for logs and tests)."""
        h, w = prob_shape
        H, W = out_shape
        up = max(H / h, W / w)
        r_full = max(self.radius_px * max(H, W) / 3072.0, up / 2.0, 1.0)
        # One grid cell per radius and a 3x3-cell window: measured on DAVIS (benchmarks/refine_quality.py), this
        # keeps thin structures a wider window washes out, and it keeps the coarse grid small.
        s = max(1, int(round(r_full)), -(-max(H, W) // _MAX_GRID))
        r_low = max(1, int(round(r_full / s)))
        # The coarse mask spreads an edge over about one of its cells; the guided filter puts the transition on
        # the image edge but keeps that reduced contrast. Stretching around 0.5 by the upscale factor restores a
        # ~1 px anti-aliased transition (the 0.5 contour does not move). Measured on DAVIS at 25%: MAD 3.8 -> 1.0.
        gain = max(1.0, up)
        return {"upscale": up, "radius_full": r_full, "grid_factor": s, "radius_grid": r_low, "gain": gain}

    # ------------------------------------------------------------------ main entry
    @torch.no_grad()
    def __call__(self, prob: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """``prob`` (h, w) float in [0, 1] + ``guide`` (H, W, 3) uint8 -> (H, W) float32 alpha in [0, 1]."""
        if prob.dim() != 2:
            raise ValueError(f"Refiner expects a (h, w) probability map, got shape {tuple(prob.shape)}")
        if guide.dim() != 3 or guide.shape[2] != 3 or guide.dtype != torch.uint8:
            raise ValueError(f"Refiner expects an (H, W, 3) uint8 guide frame, got {tuple(guide.shape)} {guide.dtype}")
        return self.refine_batch(prob[None], guide[None])[0]

    @torch.no_grad()
    def refine_batch(self, probs: torch.Tensor, guides: torch.Tensor) -> torch.Tensor:
        """Both eyes (or any batch) in one call: ``probs`` (B, h, w) + ``guides`` (B, H, W, 3) uint8 -> (B, H, W).

        The coarse-grid work (guide pooling, box filters, coefficients, band) runs once for the whole batch;
        the full-resolution step visits, per eye, only the tiles whose interpolation support touches the edge
        band, and fills the others with their exact 0 or 1. Equal to calling the refiner per eye.
        """
        if probs.dim() != 3:
            raise ValueError(f"refine_batch expects (B, h, w) probabilities, got shape {tuple(probs.shape)}")
        if guides.dim() != 4 or guides.shape[3] != 3 or guides.dtype != torch.uint8 or guides.shape[0] != probs.shape[0]:
            raise ValueError(
                f"refine_batch expects (B, H, W, 3) uint8 guides matching {probs.shape[0]} masks, "
                f"got {tuple(guides.shape)} {guides.dtype}"
            )
        dev = self.device
        probs = probs.to(dev, torch.float32).clamp(0, 1)
        guides = guides.to(dev)
        B, h, w = probs.shape
        H, W = guides.shape[1:3]
        plan = self.plan((h, w), (H, W))
        s, r = plan["grid_factor"], plan["radius_grid"]
        hl, wl = -(-H // s), -(-W // s)

        # Coarse probability on the coefficient grid: the grid cell j covers source pixels [j*s, (j+1)*s).
        p = probs[:, None]  # (B, 1, h, w)
        if h > hl or w > wl:  # mask finer than the grid: area-average first so the sampling below does not alias
            k = max(1, min(h // hl, w // wl))
            p = F.avg_pool2d(p, k, ceil_mode=True) if k > 1 else p
        ph, pw = p.shape[2:]
        ay = _axis(0, hl, s * ph / H, 0.0, ph, dev)
        ax = _axis(0, wl, s * pw / W, 0.0, pw, dev)
        p_l = torch.stack([_sample(p[i], ay, ax) for i in range(B)])  # (B, 1, hl, wl)

        if self.method == "guided":
            pooled = torch.stack([_pool_guide(guides[i], s) for i in range(B)])  # (B, 3, hl, wl)
            coef = self._coefficients(pooled, p_l, r)  # (B, 4, hl, wl): A_r, A_g, A_b, b
            del pooled
            # Structures thinner than about one coarse cell (a limb, a finger) never saturate in the coarse mask,
            # and the guided filter's window average washes them out; there the result keeps at least the coarse
            # mask's own contrast-restored estimate. Measured on DAVIS: boundary F up, MAD unchanged.
            thin = (F.max_pool2d(p, 3, stride=1, padding=1) < _THIN_SAT).float()  # (B, 1, ph, pw)
            unc = ((p_l > _LO) & (p_l < _HI)).float()
            reach = 2 * r + 2  # the coefficients' support (two box filters) plus the interpolation cell
            band = F.max_pool2d(unc, 2 * reach + 1, stride=1, padding=reach)  # (B, 1, hl, wl)
            # Outside the band the result is round(up(b)): a tile whose support holds no band cell and only b
            # values on one side of 0.5 is exactly 0 or 1 everywhere (a convex mix of such values rounds alike).
            band_np = (band[:, 0] > 0).cpu().numpy()
            b_np = coef[:, 3].cpu().numpy()
            lo_np, hi_np = ~band_np & (b_np < 0.5), ~band_np & (b_np > 0.5)
        else:
            coef = band = thin = None
            pl_np = p_l[:, 0].cpu().numpy()
            lo_np, hi_np = pl_np == 0.0, pl_np == 1.0  # bilinear of exact 0s (1s) stays exact

        out = torch.empty((B, H, W), dtype=torch.float32, device=dev)
        sigma = self.feather_px / 2.0
        kern = _gauss_kernel(sigma, dev) if sigma > 0 else None
        halo = abs(self.erode_px) + (((kern.numel() - 1) // 2) if kern is not None else 0)
        # Small tiles make the skipping fine-grained (a person covers a few of them); the result does not depend
        # on the tile size, only the memory and the Python overhead do.
        T = min(self.tile, _WORK_TILE)
        gy = _support(H, s, hl, T, halo)
        gx = _support(W, s, wl, T, halo)
        lo_c, hi_c = _cumsum2(lo_np), _cumsum2(hi_np)
        n_tiles = n_work = 0
        for i in range(B):
            if coef is not None:
                # band and coefficients sampled together: one gather per tile instead of five
                bc = torch.cat([band[i], coef[i]])  # (5, hl, wl): band, A_r, A_g, A_b, b
                coarse = (torch.cat([p[i], thin[i]]), ph / H, pw / W)  # sampled straight from the coarse grid
            for ty, (y0, y1, ey0, ey1, g0, g1) in enumerate(gy):
                for tx, (x0, x1, ex0, ex1, f0, f1) in enumerate(gx):
                    n_tiles += 1
                    cells = (g1 - g0) * (f1 - f0)
                    if self.skip_uniform and _count(lo_c[i], g0, g1, f0, f1) == cells:
                        out[i, y0:y1, x0:x1] = 0.0
                        continue
                    if self.skip_uniform and _count(hi_c[i], g0, g1, f0, f1) == cells:
                        out[i, y0:y1, x0:x1] = 1.0
                        continue
                    n_work += 1
                    cells = (g0, g1, f0, f1, s)
                    if coef is None:
                        a = _upsample(p_l[i], cells, (ey0, ey1, ex0, ex1))[0]
                    else:
                        a = self._apply(bc, guides[i], cells, (ey0, ey1, ex0, ex1), plan["gain"], coarse)
                    a = self._edges(a, kern)
                    out[i, y0:y1, x0:x1] = a[y0 - ey0 : y0 - ey0 + (y1 - y0), x0 - ex0 : x0 - ex0 + (x1 - x0)]
        self.last_stats = {"tiles": n_tiles, "tiles_refined": n_work, "tile": T}
        return out

    # ------------------------------------------------------------------ pieces
    def _coefficients(self, I: torch.Tensor, p: torch.Tensor, r: int) -> torch.Tensor:
        """Colour guided-filter coefficients on the coarse grid, already box-averaged (the 'mean_a', 'mean_b').

        ``I`` (B, 3, hl, wl), ``p`` (B, 1, hl, wl) -> (B, 4, hl, wl)."""
        I4, p4 = I, p
        mI = _box(I4, r)
        mp = _box(p4, r)
        cov = _box(I4 * p4, r) - mI * mp
        idx = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
        prods = torch.cat([I4[:, i : i + 1] * I4[:, j : j + 1] for i, j in idx], 1)
        var = _box(prods, r)
        del prods
        for k, (i, j) in enumerate(idx):
            var[:, k] -= mI[:, i] * mI[:, j]
        a, b, c, d, e, f = var.unbind(1)
        a = a + self.eps
        d = d + self.eps
        f = f + self.eps
        # inverse of the symmetric 3x3 covariance by cofactors (vectorised, works on any device)
        i_aa = d * f - e * e
        i_ab = c * e - b * f
        i_ac = b * e - c * d
        i_bb = a * f - c * c
        i_bc = b * c - a * e
        i_cc = a * d - b * b
        det = a * i_aa + b * i_ab + c * i_ac
        cr, cg, cb = cov.unbind(1)
        A_r = (i_aa * cr + i_ab * cg + i_ac * cb) / det
        A_g = (i_ab * cr + i_bb * cg + i_bc * cb) / det
        A_b = (i_ac * cr + i_bc * cg + i_cc * cb) / det
        del var, i_aa, i_ab, i_ac, i_bb, i_bc, i_cc, det
        A = torch.stack([A_r, A_g, A_b], 1)
        bb = mp - (A * mI).sum(1, keepdim=True)
        return _box(torch.cat([A, bb], 1), r)

    def _apply(self, bc: torch.Tensor, guide: torch.Tensor, cells, box, gain: float, coarse=None) -> torch.Tensor:
        """``alpha = up(A) . I + up(b)`` on one tile (``bc`` = band, A_r, A_g, A_b, b on the coarse grid); exact
        0/1 outside the band. Tiles are at most 256 px, so the five sampled planes are a few MB."""
        ey0, ey1, ex0, ex1 = box
        planes = _upsample(bc, cells, box)
        inband = planes[0] > 0
        q = planes[4]
        if bool(inband.any()):
            g = guide[ey0:ey1, ex0:ex1]
            for c in range(3):
                q.addcmul_(planes[1 + c], g[..., c].float().div_(255.0))
            q = torch.where(inband, q.sub_(0.5).mul_(gain).add_(0.5).clamp_(0, 1), q.round())
            if coarse is not None:
                src, fy, fx = coarse
                cy = _axis(ey0, ey1, fy, 0.0, src.shape[1], q.device)
                cx = _axis(ex0, ex1, fx, 0.0, src.shape[2], q.device)
                pc, thin = _sample(src, cy, cx)
                thin = (thin > 0.5) & inband
                if bool(thin.any()):
                    pc = pc.sub_(0.5).mul_(gain).add_(0.5).clamp_(0, 1)
                    q = torch.where(thin, torch.maximum(q, pc), q)
        else:
            q.round_()
        return q.clamp_(0, 1)

    def _edges(self, a: torch.Tensor, kern: torch.Tensor | None) -> torch.Tensor:
        """Optional erode/feather in source pixels, then snap near-0/1 values so far regions stay exact."""
        if self.erode_px or kern is not None:
            x = a[None, None]
            if self.erode_px:
                x = _erode(x, self.erode_px)
            if kern is not None:
                x = _feather(x, kern)
            a = x[0, 0]
        a = a.clamp(0, 1)
        a[a < _SNAP] = 0.0
        a[a > 1 - _SNAP] = 1.0
        return a
