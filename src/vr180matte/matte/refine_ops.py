"""The refiner's building blocks, shared by the tile path (:mod:`.refine_tiles`) and the whole-frame path
(:mod:`.refine_whole`): box filters, separable bilinear sampling, the guided-filter coefficients on the coarse
grid, the band and thin-structure masks, erosion/feathering.

Everything here is torch ops on whatever device the tensors live on, with no read of a tensor value back to the
host except in :func:`_sample` (which crops by the first and last index, for the tile path only).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SNAP = 1.0 / 512.0  # below half an 8-bit step: invisible, but keeps the background exactly 0 / the inside 1
LO, HI = 0.02, 0.98  # coarse probabilities outside (LO, HI) count as certain
THIN_SAT = 0.9  # a coarse neighbourhood (3x3 cells) whose maximum stays below this holds a sub-cell structure
MAX_GRID = 1024  # the coarse coefficient grid is at most this many cells per side (bounds its memory)


def _shift_sum(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Sum over a 2r+1 window along ``dim`` (zeros past the border): 2r + 1 shifted slices of one padded copy."""
    n = x.shape[dim]
    pad = [0, 0] * (x.dim() - 1 - dim % x.dim()) + [r, r]
    xp = F.pad(x, pad)
    out = xp.narrow(dim, 0, n).clone()
    for k in range(1, 2 * r + 1):  # the window's taps (a fixed few), not a loop over data
        out += xp.narrow(dim, k, n)
    return out


def _box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, normalised by the number of valid pixels at the borders (``avg_pool2d``'s
    ``count_include_pad=False`` mean). Separable sums of shifted slices: on the CPU ~2.5x faster than
    ``avg_pool2d``'s 2-D window at the refiner's 3x3 (its 17 channels at a 384-cell grid: 26 -> 10 ms), equal to
    it up to float rounding (2e-7)."""
    if r <= 0:
        return x
    h, w = x.shape[-2:]
    ones_h = torch.ones(h, 1, device=x.device, dtype=x.dtype)
    ones_w = torch.ones(1, w, device=x.device, dtype=x.dtype)
    count = _shift_sum(ones_h, r, 0) * _shift_sum(ones_w, r, 1)  # valid pixels per window, (h, w)
    return _shift_sum(_shift_sum(x, r, -2), r, -1).div_(count)


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
    """Bilinear resampling of ``x`` (C, h, w) at the separable sample positions ``ay``, ``ax``.

    Reads the first/last index back to the host to crop the map (a tile's rows of a wide map would otherwise
    be gathered whole): for the CPU tile/block paths only; :func:`_resample` is the read-free form."""
    i0, i1, w = ay
    j0, j1, v = ax
    r0, r1, c0, c1 = int(i0[0]), int(i1[-1]) + 1, int(j0[0]), int(j1[-1]) + 1  # indices ascend (see _axis)
    x = x[:, r0:r1, c0:c1]
    return _resample(x, (i0 - r0, i1 - r0, w), (j0 - c0, j1 - c0, v))


def _resample(x: torch.Tensor, ay: tuple, ax: tuple) -> torch.Tensor:
    """Bilinear resampling of ``x`` (..., h, w) at the separable positions ``ay``, ``ax`` (from :func:`_axis`):
    two gathers, no host read. The same arithmetic as :func:`_sample`, so the values are bit-identical."""
    i0, i1, w = ay
    j0, j1, v = ax
    t = x[..., i0, :] * (1 - w)[:, None] + x[..., i1, :] * w[:, None]
    return t[..., j0] * (1 - v) + t[..., j1] * v


def coarse_prob(probs: torch.Tensor, H: int, W: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, h, w) probabilities -> (``p`` (B, 1, ph, pw), ``p_l`` (B, 1, hl, wl)): the mask (area-averaged first
    when it is finer than the grid, so the sampling does not alias) and its bilinear samples on the coefficient
    grid, whose cell j covers source pixels [j*s, (j+1)*s)."""
    dev = probs.device
    h, w = probs.shape[1:]
    hl, wl = -(-H // s), -(-W // s)
    p = probs[:, None]
    if h > hl or w > wl:
        k = max(1, min(h // hl, w // wl))
        p = F.avg_pool2d(p, k, ceil_mode=True) if k > 1 else p
    ph, pw = p.shape[2:]
    p_l = _resample(p, _axis(0, hl, s * ph / H, 0.0, ph, dev), _axis(0, wl, s * pw / W, 0.0, pw, dev))
    return p, p_l


def coefficients(I: torch.Tensor, p: torch.Tensor, r: int, eps: float) -> torch.Tensor:
    """Colour guided-filter coefficients on the coarse grid, already box-averaged (the 'mean_a', 'mean_b').

    ``I`` (B, 3, hl, wl), ``p`` (B, 1, hl, wl) -> (B, 4, hl, wl): A_r, A_g, A_b, b."""
    mI = _box(I, r)
    mp = _box(p, r)
    cov = _box(I * p, r) - mI * mp
    idx = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
    prods = torch.cat([I[:, i : i + 1] * I[:, j : j + 1] for i, j in idx], 1)
    var = _box(prods, r)
    del prods
    for k, (i, j) in enumerate(idx):
        var[:, k] -= mI[:, i] * mI[:, j]
    a, b, c, d, e, f = var.unbind(1)
    a = a + eps
    d = d + eps
    f = f + eps
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


def masks(p: torch.Tensor, p_l: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(``thin`` (B, 1, ph, pw), ``band`` (B, 1, hl, wl)) as 0/1 floats.

    ``thin``: structures thinner than about one coarse cell (a limb, a finger) never saturate in the coarse
    mask, and the guided filter's window average washes them out; there the result keeps at least the coarse
    mask's own contrast-restored estimate (measured on DAVIS: boundary F up, MAD unchanged).
    ``band``: cells within the coefficients' support of an uncertain cell; outside it the result is exactly
    round(up(b)), 0 or 1."""
    thin = (F.max_pool2d(p, 3, stride=1, padding=1) < THIN_SAT).float()
    unc = ((p_l > LO) & (p_l < HI)).float()
    reach = 2 * r + 2  # the coefficients' support (two box filters) plus the interpolation cell
    band = _max_sep(unc, reach)
    return thin, band


def _max_sep(x: torch.Tensor, r: int) -> torch.Tensor:
    """Max over a (2r+1)^2 window (``max_pool2d``, stride 1, padded): a row pass then a column pass, exactly the
    same values (a maximum is a maximum in any order), ~2x faster on the CPU at the band's 9x9 (not at 3x3,
    where ``thin`` keeps the 2-D pool)."""
    x = F.max_pool2d(x, (1, 2 * r + 1), stride=1, padding=(0, r))
    return F.max_pool2d(x, (2 * r + 1, 1), stride=1, padding=(r, 0))


def stretch(q: torch.Tensor, gain: float) -> torch.Tensor:
    """Contrast around 0.5 by ``gain`` (the upscale factor), in place, clamped: restores a ~1 px transition."""
    return q.sub_(0.5).mul_(gain).add_(0.5).clamp_(0, 1)


def _erode(a: torch.Tensor, px: int) -> torch.Tensor:
    """Grey erosion (px > 0) or dilation (px < 0) of (N, 1, h, w) alpha by |px| pixels, octagonal element.

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
    """Separable Gaussian blur of (N, 1, h, w) with replicate borders."""
    r = (k.numel() - 1) // 2
    a = F.conv2d(F.pad(a, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(a, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


def edges(a: torch.Tensor, erode_px: int, kern: torch.Tensor | None) -> torch.Tensor:
    """Optional erode/feather of (N, 1, h, w) alpha in source pixels, then snap near-0/1 values (via
    ``torch.where``, no host read) so far regions stay exact."""
    if erode_px:
        a = _erode(a, erode_px)
    if kern is not None:
        a = _feather(a, kern)
    a = a.clamp(0, 1)
    return torch.where(a < SNAP, 0.0, torch.where(a > 1 - SNAP, 1.0, a))
