"""Per-person horizontal disparity between the two eyes of a VR180 frame.

VR180 eyes are equirectangular views from two horizontally offset lenses. Equirectangular x is linear in
longitude, so a person at a roughly constant depth appears in the right eye shifted horizontally by an
almost uniform amount (vertical disparity is near zero). We therefore model each person's right-eye
appearance as the left-eye appearance shifted by ``-d`` pixels, with ``d = x_left - x_right``.

``measure_disparity`` finds ``d`` by masked normalised cross-correlation (NCC) over horizontal shifts,
restricted to the person's own pixels: the background sits at a different depth, so including it (as a
plain box correlation would) biases the estimate towards the background's disparity. NCC is computed for
all shifts at once with two ``conv2d`` calls, coarse-to-fine for large regions so the cost stays small,
and refined to subpixel precision with a parabola through the peak.

``DisparitySmoother`` turns the per-frame measurements into a temporally stable estimate per person: a causal
local-linear fit over a short window, which follows a person walking towards the camera without the lag a
plain EMA has, with outlier rejection so one bad correlation (occlusion, motion blur) does not make the
mapped mask jump.
"""
from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# Correlation regions wider than this (pixels) are first matched on a downscaled copy.
_COARSE_WIDTH = 96
# Minimum number of person pixels for a measurement to mean anything.
_MIN_PIXELS = 24


def _gray(img: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8 or float RGB -> (H, W) float32 luminance in [0, 1]."""
    x = img.float()
    if img.dtype == torch.uint8:
        x = x / 255.0
    if x.ndim == 3:
        x = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    return x


def _ncc_curve(left: torch.Tensor, right: torch.Tensor, weight: torch.Tensor, box: tuple[int, int, int, int],
               shifts: range) -> torch.Tensor:
    """Weighted NCC of ``left[box]`` against ``right`` shifted by each ``d`` in ``shifts`` (right x = left x - d).

    Returns a 1-D tensor with one NCC value per shift. Pixels of ``right`` outside the image are replicated
    from its border, so a person touching the eye edge still gets a curve (with less support).
    """
    y0, y1, x0, x1 = box
    d_lo, d_hi = shifts.start, shifts.stop - 1
    # Strip of the right image covering every candidate position: columns x0-d_hi .. x1-d_lo.
    sx0, sx1 = x0 - d_hi, x1 - d_lo
    W = right.shape[1]
    pad_l, pad_r = max(0, -sx0), max(0, sx1 - W)
    strip = right[y0:y1, max(sx0, 0):min(sx1, W)]
    if pad_l or pad_r:
        strip = F.pad(strip[None, None], (pad_l, pad_r, 0, 0), mode="replicate")[0, 0]
    return _ncc_of_strip(left, weight, box, strip)


def _ncc_curve_from(left: torch.Tensor, right: torch.Tensor, weight: torch.Tensor, box: tuple[int, int, int, int],
                    d_lo: torch.Tensor, n: int) -> torch.Tensor:
    """:func:`_ncc_curve` for the ``n`` shifts ``d_lo, d_lo + 1, ...`` where ``d_lo`` is a device scalar (a peak
    found on the device): the strip's columns are gathered, clamped to the image (the same replicate padding), so
    nothing is read to place the window."""
    y0, y1, x0, x1 = box
    cols = (x0 - (d_lo + (n - 1))) + torch.arange(x1 - x0 + n - 1, device=right.device)
    strip = right[y0:y1].index_select(1, cols.clamp(0, right.shape[1] - 1))
    return _ncc_of_strip(left, weight, box, strip)


def _ncc_of_strip(left: torch.Tensor, weight: torch.Tensor, box: tuple[int, int, int, int],
                  strip: torch.Tensor) -> torch.Tensor:
    """The NCC curve of ``left[box]`` (weighted by ``weight[box]``) at every position of ``strip`` (the right
    image's rows of the box, from the largest shift's columns on), in increasing shift."""
    y0, y1, x0, x1 = box
    lpatch = left[y0:y1, x0:x1]
    m = weight[y0:y1, x0:x1]
    msum = m.sum().clamp_min(1e-6)
    lmean = (m * lpatch).sum() / msum
    lc = (lpatch - lmean) * m  # weighted, centred template
    lvar = (lc * (lpatch - lmean)).sum()
    s = strip[None, None]
    kern = torch.stack([lc, m])[:, None]  # (2, 1, h, w)
    cc = F.conv2d(s, kern)[0, :, 0]  # (2, n): sum(lc*R), sum(m*R) per position (position k <-> x0-d_hi+k)
    r2 = F.conv2d(s * s, m[None, None])[0, 0, 0]  # sum(m*R^2)
    rvar = (r2 - cc[1] ** 2 / msum).clamp_min(0.0)
    ncc = cc[0] / torch.sqrt(lvar.clamp_min(1e-9) * rvar.clamp_min(1e-9))
    # Position k corresponds to shift d = d_hi - k; return in increasing d.
    return torch.flip(ncc, dims=[0])


# A peak NCC this close to 1 is the same pixels at an integer shift (identical eyes, a flat synthetic layer): the
# parabola through its asymmetric neighbours would move it by up to a tenth of a pixel, and the mask shifted by that
# would differ between eyes that are the same image (issue 21: identical eyes must give identical mattes).
EXACT_MATCH = 1.0 - 1e-4


def _parabola(c: torch.Tensor, k: int) -> float:
    """Subpixel offset of the peak at index ``k`` of curve ``c`` (parabola through three points)."""
    if k <= 0 or k >= c.numel() - 1:
        return 0.0
    return _subpixel(float(c[k - 1]), float(c[k]), float(c[k + 1]))


def _subpixel(a: float, b: float, d: float) -> float:
    """Subpixel offset of an inner peak ``b`` between its neighbours ``a`` and ``d`` (host floats)."""
    den = a - 2 * b + d
    if den >= 0 or b >= EXACT_MATCH:  # not a maximum, or the integer shift matches pixel for pixel
        return 0.0
    return max(-0.5, min(0.5, 0.5 * (a - d) / den))


def _coarse_weight(cover: torch.Tensor) -> torch.Tensor:
    """The coarse search's mask from each coarse cell's person coverage: the cells more than half covered, or, for a
    mask too thin for that grid (fewer than ``_MIN_PIXELS // 2`` such cells: a limb-wide sliver), every cell it
    touches. Chosen on the device, so the coarse peak always places the fine window and nothing is read to decide
    (the whole range at full resolution, the old fallback, cost a read and a search ``range / 4s`` times wider)."""
    half = (cover > 0.5).float()
    return torch.where(half.sum() >= _MIN_PIXELS // 2, half, (cover > 0).float())


def measure_disparity(
    left_img: torch.Tensor,
    right_img: torch.Tensor,
    left_mask: torch.Tensor,
    *,
    max_disp: int,
    prior: float | None = None,
    min_disp: int | None = None,
) -> tuple[float, float]:
    """Horizontal disparity (``x_left - x_right``, pixels) of the person in ``left_mask`` and a confidence.

    ``left_img``/``right_img``: (H, W, 3) uint8 (or (H, W) float) eyes at processing resolution;
    ``left_mask``: (H, W) probability of the person in the left eye. The search covers
    ``[min_disp, max_disp]`` (``min_disp`` defaults to ``-max_disp // 4``: crossed disparities are rare in
    VR180 but occur for very near objects with toed-in rigs). ``prior`` (e.g. last frame's smoothed value)
    breaks near-ties in its favour; it never overrides a clearly better match.

    Returns ``(disparity, confidence)`` where confidence is the peak NCC clipped to [0, 1] (0 when the
    mask is empty or the region has no texture; the disparity is then ``prior`` or 0).
    """
    fallback = (float(prior) if prior is not None else 0.0, 0.0)
    max_disp = int(max(1, max_disp))
    min_disp = -(max_disp // 4) if min_disp is None else int(min_disp)
    m = (left_mask.to(left_img.device) > 0.5).float()
    if m.sum() < _MIN_PIXELS:
        return fallback
    rows, cols = torch.nonzero(m.any(dim=1)), torch.nonzero(m.any(dim=0))
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    # Coarse-to-fine: at a scale where the region is about _COARSE_WIDTH wide, search the full range,
    # then search +-2 coarse pixels around the coarse peak at full resolution.
    scale = max(1, int(math.ceil(max(x1 - x0, y1 - y0) / _COARSE_WIDTH)))
    # Disparity is horizontal, so only the person's rows are read. They are cut before the grey conversion (not
    # the whole eye once per person), widened to whole coarse blocks so the pooled rows equal the whole eye's.
    H = int(m.shape[0])
    ra, rb = (y0 // scale) * scale, min(H, -(-y1 // scale) * scale)
    L, R = _gray(left_img[ra:rb]), _gray(right_img[ra:rb].to(left_img.device))
    m = m[ra:rb]
    y0, y1 = y0 - ra, y1 - ra
    lo, hi = min_disp, max_disp
    if scale > 1:
        Lc = F.avg_pool2d(L[None, None], scale, ceil_mode=True)[0, 0]
        Rc = F.avg_pool2d(R[None, None], scale, ceil_mode=True)[0, 0]
        mc = _coarse_weight(F.avg_pool2d(m[None, None], scale, ceil_mode=True)[0, 0])
        box_c = (y0 // scale, -(-y1 // scale), x0 // scale, -(-x1 // scale))
        shifts_c = range(int(math.floor(min_disp / scale)), int(math.ceil(max_disp / scale)) + 1)
        curve_c = _ncc_curve(Lc, Rc, mc, box_c, shifts_c)
        if prior is not None:
            curve_c = curve_c - 0.02 * torch.abs(
                torch.arange(shifts_c.start, shifts_c.stop, device=L.device, dtype=torch.float32) * scale - prior
            ) / max(1, max_disp)
        kc = int(torch.argmax(curve_c))
        dc = (shifts_c.start + kc) * scale
        lo, hi = max(min_disp, dc - 2 * scale), min(max_disp, dc + 2 * scale)
    shifts = range(lo, hi + 1)
    curve = _ncc_curve(L, R, m, (y0, y1, x0, x1), shifts)
    score = curve.clone()
    if prior is not None:
        score = score - 0.02 * torch.abs(
            torch.arange(lo, hi + 1, device=L.device, dtype=torch.float32) - prior
        ) / max(1, max_disp)
    k = int(torch.argmax(score))
    peak = float(curve[k])
    if not math.isfinite(peak):
        return fallback
    d = lo + k + _parabola(curve, k)
    return float(d), float(max(0.0, min(1.0, peak)))


@dataclass(frozen=True)
class DisparityJob:
    """One person's measurement for :func:`measure_disparities` (the arguments of :func:`measure_disparity`)."""

    src: torch.Tensor  # (H, W, 3) eye the mask is in
    dst: torch.Tensor  # (H, W, 3) the other eye
    mask: torch.Tensor  # (H, W) probability in ``src``
    max_disp: int
    min_disp: int | None = None
    prior: float | None = None
    # The mask's own box (xyxy of its pixels > 0.5, end-exclusive), when the caller already downloaded it (a view's
    # track box): the search is placed without reading it again (issue 19).
    box: np.ndarray | None = None


def _stacked_stats(masks: list[torch.Tensor], extra: torch.Tensor | None = None
                   ) -> tuple[list[tuple[float, int, int, int, int]], list[float]]:
    """(pixels, y0, y1, x0, x1) of every mask > 0.5, and the values of ``extra`` (a caller's numbers of the same
    frame), in one download."""
    rows = []
    for m in masks:  # per-person reductions, no host read: all results leave the device together below
        b = m > 0.5
        ry, rx = b.any(dim=1), b.any(dim=0)
        H, W = ry.numel(), rx.numel()
        iy, ix = torch.arange(H, device=m.device), torch.arange(W, device=m.device)
        rows.append(torch.stack([
            b.sum().float(),
            torch.where(ry, iy, H).min().float(), (torch.where(ry, iy, -1).max() + 1).float(),
            torch.where(rx, ix, W).min().float(), (torch.where(rx, ix, -1).max() + 1).float(),
        ]))
    parts = [torch.stack(rows).flatten()] if rows else []
    if extra is not None:
        parts.append(extra.float().flatten().to(parts[0].device if parts else extra.device))
    if not parts:
        return [], []
    v = torch.cat(parts).cpu().tolist()  # one download: every person's pixel count and box (and the extra)
    stats = [v[5 * i: 5 * i + 5] for i in range(len(rows))]
    return [(n, int(y0), int(y1), int(x0), int(x1)) for n, y0, y1, x0, x1 in stats], v[5 * len(rows):]


def measure_disparities(jobs: list[DisparityJob]) -> list[tuple[float, float]]:
    """:func:`measure_disparity` for several persons with at most two downloads in all instead of about ten per
    person (each a device synchronisation on a GPU): the pixel counts and boxes of the masks whose box the caller
    did not give, then every peak with its two neighbours. Results are bit-identical to :func:`measure_disparity`
    per job (the same ops on the same crops; the parabola is evaluated on the host from the same three float32
    values)."""
    return measure_disparities_with(jobs)[0]


def measure_disparities_with(jobs: list[DisparityJob], extra: torch.Tensor | None = None
                             ) -> tuple[list[tuple[float, float]], list[float]]:
    """:func:`measure_disparities`, with the values of ``extra`` (the caller's numbers of the frame, e.g. the stereo
    validation's row bands) in one of its downloads: one read fewer for the caller.

    The coarse-to-fine step is decided on the device: the coarse peak places the fine window (+-2 coarse pixels)
    where it is, so no read waits between the two searches. Jobs that carry their mask's box need no read to
    place their search (their pixel count comes down with the peaks): when all do, one download in all."""
    if not jobs and extra is None:
        return [], []
    unknown = [i for i, j in enumerate(jobs) if j.box is None]
    extra_values: list[float] | None = None
    stats = {}
    if unknown or not jobs:  # the boxes nobody gave, with extra's values
        measured, extra_values = _stacked_stats([jobs[i].mask.to(jobs[i].src.device) for i in unknown], extra)
        stats = dict(zip(unknown, measured))
    out: list[tuple[float, float] | None] = [None] * len(jobs)
    plans = []
    for i, j in enumerate(jobs):
        max_disp = int(max(1, j.max_disp))
        min_disp = -(max_disp // 4) if j.min_disp is None else int(j.min_disp)
        if j.box is not None:
            x0, y0, x1, y1 = (int(v) for v in j.box)
            n = (x1 - x0) * (y1 - y0)  # at least the pixel count: the exact one comes down with the peak
        else:
            n, y0, y1, x0, x1 = stats[i]
        if n < _MIN_PIXELS:
            out[i] = _no_measurement(j)
            continue
        plans.append(_Plan(i, j, max_disp, min_disp, y0, y1, x0, x1))
    if plans or (extra_values is None and extra is not None):  # every peak (and extra if not down yet): one read
        rows = torch.stack([p.search() for p in plans]) if plans else torch.zeros((0, 6), device=extra.device)
        tail = [] if extra_values is not None or extra is None else [extra.float().flatten().to(rows.device)]
        v = torch.cat([rows.flatten(), *tail]).cpu().tolist()
        if extra_values is None:
            extra_values = v[rows.numel():]
        for k, p in enumerate(plans):
            out[p.index] = p.result(v[6 * k: 6 * k + 6])
    return out, extra_values if extra_values is not None else []  # type: ignore[return-value]


def _no_measurement(job: DisparityJob) -> tuple[float, float]:
    """Too few mask pixels to mean anything: the prior (or 0), zero confidence."""
    return (float(job.prior) if job.prior is not None else 0.0, 0.0)


class _Plan:
    """One person's coarse-to-fine search in :func:`measure_disparities` (the steps of :func:`measure_disparity`)."""

    def __init__(self, index, job: DisparityJob, max_disp, min_disp, y0, y1, x0, x1):
        self.index, self.job, self.max_disp, self.min_disp = index, job, max_disp, min_disp
        self.scale = max(1, int(math.ceil(max(x1 - x0, y1 - y0) / _COARSE_WIDTH)))
        m = (job.mask.to(job.src.device) > 0.5).float()
        H, s = int(m.shape[0]), self.scale
        ra, rb = (y0 // s) * s, min(H, -(-y1 // s) * s)
        self.L, self.R = _gray(job.src[ra:rb]), _gray(job.dst[ra:rb].to(job.src.device))
        self.m = m[ra:rb]
        self.box = (y0 - ra, y1 - ra, x0, x1)
        # the fine window: shifts lo .. lo + span (lo placed on the device at scale > 1)
        self.span = 4 * s if s > 1 else max_disp - min_disp

    def _penalised(self, curve: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        """The curve with the prior's tie-breaking penalty (``shifts``: each value's disparity, float)."""
        if self.job.prior is None:
            return curve
        return curve - 0.02 * torch.abs(shifts - self.job.prior) / max(1, self.max_disp)

    def search(self) -> torch.Tensor:
        """``[first shift, peak index, curve at peak - 1, peak, peak + 1, mask pixels]`` on the device, no read.

        At scale > 1 the coarse peak ``dc`` (the whole range on the pooled eyes) places the fine window
        ``dc - 2s .. dc + 2s``, evaluated at all its ``4s + 1`` shifts with those outside ``[min_disp, max_disp]``
        left out of the peak; at scale 1 the fine search covers the whole range."""
        dev = self.L.device
        n = self.span + 1
        if self.scale > 1:
            s = self.scale
            y0, y1, x0, x1 = self.box
            Lc = F.avg_pool2d(self.L[None, None], s, ceil_mode=True)[0, 0]
            Rc = F.avg_pool2d(self.R[None, None], s, ceil_mode=True)[0, 0]
            mc = _coarse_weight(F.avg_pool2d(self.m[None, None], s, ceil_mode=True)[0, 0])
            shifts_c = range(int(math.floor(self.min_disp / s)), int(math.ceil(self.max_disp / s)) + 1)
            curve_c = _ncc_curve(Lc, Rc, mc, (y0 // s, -(-y1 // s), x0 // s, -(-x1 // s)), shifts_c)
            d_c = torch.arange(shifts_c.start, shifts_c.stop, device=dev, dtype=torch.float32) * s
            lo = (shifts_c.start + self._penalised(curve_c, d_c).argmax()) * s - 2 * s  # device scalar
            curve = _ncc_curve_from(self.L, self.R, self.m, self.box, lo, n)
            d = (lo + torch.arange(n, device=dev)).float()
            score = self._penalised(curve, d).masked_fill((d < self.min_disp) | (d > self.max_disp), -math.inf)
        else:
            lo = torch.tensor(self.min_disp, device=dev)
            curve = _ncc_curve(self.L, self.R, self.m, self.box, range(self.min_disp, self.max_disp + 1))
            score = self._penalised(curve, torch.arange(self.min_disp, self.max_disp + 1, device=dev,
                                                         dtype=torch.float32))
        k = score.argmax()
        idx = torch.stack([k - 1, k, k + 1]).clamp(0, n - 1)
        return torch.cat([torch.stack([lo.float(), k.float()]), curve[idx], self.m.sum()[None]])

    def result(self, row: list[float]) -> tuple[float, float]:
        """``(disparity, confidence)`` from a downloaded :meth:`search` row."""
        lo, k, a, b, d, pixels = row
        # (a job whose box was given learns its pixel count only now)
        if pixels < _MIN_PIXELS or not math.isfinite(b):
            return _no_measurement(self.job)
        lo, k = int(lo), int(k)
        # the window as one by one cuts it (clamped to the range); k counted from its first shift
        first, last = max(self.min_disp, lo), min(self.max_disp, lo + self.span)
        k, n = lo + k - first, last - first + 1
        off = _subpixel(a, b, d) if 0 < k < n - 1 else 0.0
        return float(first + k + off), float(max(0.0, min(1.0, b)))


def shift_mask(mask: torch.Tensor, dx: float) -> torch.Tensor:
    """Shift ``mask`` (..., H, W) horizontally so its content moves by ``-dx`` pixels (subpixel, linear).

    With disparity ``d = x_left - x_right``, the right-eye mask is ``shift_mask(left_mask, d)`` and the
    left-eye mask is ``shift_mask(right_mask, -d)``. Pixels shifted in from outside the image are 0.
    """
    if dx == 0:
        return mask.clone()
    W = mask.shape[-1]
    k = math.floor(dx)
    f = float(dx - k)

    def take(off: int) -> torch.Tensor:
        # out[x] = mask[x + off], zero outside.
        out = torch.zeros_like(mask)
        if abs(off) >= W:
            return out
        if off >= 0:
            out[..., : W - off] = mask[..., off:]
        else:
            out[..., -off:] = mask[..., : W + off]
        return out

    a = take(k)
    if f < 1e-6:
        return a
    return (1.0 - f) * a + f * take(k + 1)


class DisparitySmoother:
    """Temporal smoothing of per-person disparity: a causal local-linear fit with outlier rejection.

    ``smoothing`` in [0, 1) is ``stereo.disparity_smoothing``; it sets the window, ``1 + 2 s / (1 - s)``
    measurements (0.8 -> 9, 0 = no smoothing), capped at 60. The estimate is the value at the newest frame of a
    confidence-weighted straight-line fit over the window: unlike an EMA, a person steadily approaching the camera
    (a disparity ramp) is followed without lag, while per-frame noise is averaged out. A measurement further than
    ``outlier_px`` from the fit's prediction is ignored, unless ``max_rejects`` consecutive ones agree (a real
    jump, e.g. a different person took over the id): the window then restarts there. Measurements below
    ``min_confidence`` (untextured or empty region) are not used. Memory: at most the window per live id.
    """

    def __init__(self, smoothing: float = 0.8, outlier_px: float = 3.0, max_rejects: int = 3,
                 min_confidence: float = 0.2):
        smoothing = min(max(float(smoothing), 0.0), 0.99)
        self.window = int(min(60, max(1, round(1 + 2 * smoothing / (1 - smoothing)))))
        self.outlier_px = float(outlier_px)
        self.max_rejects = int(max_rejects)
        self.min_confidence = float(min_confidence)
        self._hist: dict[int, deque] = {}  # id -> deque of (step, disparity, weight)
        self._step: dict[int, int] = {}
        self._rejected: dict[int, int] = {}
        self._value: dict[int, float] = {}

    def _fit(self, hist: deque, at: float) -> float:
        """Weighted least-squares line through ``hist`` evaluated at step ``at`` (mean for < 3 points)."""
        if len(hist) < 3:
            return float(hist[-1][1])
        t = np.array([h[0] for h in hist], dtype=np.float64)
        d = np.array([h[1] for h in hist], dtype=np.float64)
        w = np.array([h[2] for h in hist], dtype=np.float64)
        tc = t - at
        sw, st, sd = w.sum(), (w * tc).sum(), (w * d).sum()
        stt, std = (w * tc * tc).sum(), (w * tc * d).sum()
        den = sw * stt - st * st
        if den <= 1e-9:
            return float(sd / sw)
        slope = (sw * std - st * sd) / den
        return float((sd - slope * st) / sw)

    def get(self, track_id: int) -> float | None:
        """The current smoothed value (None for an unknown id)."""
        return self._value.get(track_id)

    def predict(self, track_id: int) -> float | None:
        """The expected value on the next update (used as the search prior)."""
        hist = self._hist.get(track_id)
        if not hist:
            return self._value.get(track_id)
        return self._fit(hist, self._step[track_id] + 1)

    def update(self, track_id: int, measured: float, confidence: float = 1.0) -> float:
        """Feed one measurement (one per frame); returns the smoothed disparity for this frame."""
        hist = self._hist.setdefault(track_id, deque(maxlen=self.window))
        step = self._step.get(track_id, -1) + 1
        self._step[track_id] = step
        if confidence < self.min_confidence and hist:
            self._value[track_id] = self._fit(hist, step)
            return self._value[track_id]
        if hist:
            pred = self._fit(hist, step)
            if abs(measured - pred) > self.outlier_px:
                self._rejected[track_id] = self._rejected.get(track_id, 0) + 1
                if self._rejected[track_id] < self.max_rejects:
                    self._value[track_id] = pred
                    return pred
                log.debug("disparity of track %d jumped %.1f -> %.1f px: restarting", track_id, pred, measured)
                hist.clear()
        self._rejected[track_id] = 0
        hist.append((step, float(measured), float(min(1.0, max(confidence, self.min_confidence)))))
        self._value[track_id] = self._fit(hist, step)
        return self._value[track_id]

    def drop(self, track_id: int) -> None:
        for d in (self._hist, self._step, self._rejected, self._value):
            d.pop(track_id, None)

    def ids(self) -> list[int]:
        return list(self._value)

    def state(self) -> dict[int, tuple[int, list[tuple[int, float, float]]]]:
        """Picklable ``{id: (step, [(step, disparity, weight), ...])}`` (the window) for the chunk hand-off."""
        return {i: (self._step[i], list(h)) for i, h in self._hist.items()}

    def load(self, state: dict | None) -> None:
        """Restore :meth:`state` output (a plain ``{id: value}`` is accepted too)."""
        self._hist, self._step, self._rejected, self._value = {}, {}, {}, {}
        for i, v in (state or {}).items():
            i = int(i)
            if isinstance(v, (int, float)):
                step, items = 0, [(0, float(v), 1.0)]
            else:
                step, items = int(v[0]), [tuple(x) for x in v[1]]
            if not items:
                continue
            self._hist[i] = deque(((int(a), float(b), float(c)) for a, b, c in items), maxlen=self.window)
            self._step[i] = step
            self._value[i] = self._fit(self._hist[i], step)
