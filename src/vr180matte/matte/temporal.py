"""Motion-adaptive temporal smoothing of alpha: removes flicker where the image is still, never lags on motion.

Flicker is frame-to-frame change of alpha that the image does not justify. So the blend weight towards the
previous alpha is large only where the frame itself did not change (a local, blurred image difference on a
small copy of the guide is below the noise level) and the alpha change is small (a large jump with a still
image is a segmentation correction, not noise: it is taken at once). Where anything moves, the weight is 0
and the current alpha passes through untouched, so moving edges do not trail.

Where the work happens: every decision (motion, the correction gate) is made on small grids (the guide at
its analysis size; the processing-resolution eye is enough, the full-resolution frame is never needed). The
full-resolution alpha is touched once to find where it changed at all (``prev - alpha``: an alpha that is
exactly 0 or 1 in both frames does not change). Then, by the device policy (``DevicePolicy.whole_frame``):

* block path (CPU): the blend runs only in blocks that hold a change, which for a refined matte is the thin
  edge band; deciding which blocks reads the change map back to the host;
* whole-frame path (GPU): one pass over both eyes (upsample the weight, one multiply-add, snap through
  ``torch.where``), no block loop and no host read, so the op count does not depend on the people.

The result is the same either way (tested): outside the changed blocks the change, and so the blend, is 0.

State per eye: the previous output alpha (full resolution, needed to blend) and the previous guide at a
small analysis size; nothing grows with the video. One smoother serves one eye (:meth:`step`) or a fixed
batch of eyes (:meth:`step_batch`, both eyes in one call).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vr180matte.matte.refine import _axis, _sample

_ANALYSIS_SIDE = 256  # motion is measured on a copy of the guide this big (longest side)
_NOISE = 4.0 / 255.0  # mean local grey change below this counts as still (compression noise)
_MOTION = 12.0 / 255.0  # at and above this the pixel is moving: no smoothing
_MAX_WEIGHT = 0.8  # strength 1 keeps at most this much of the previous alpha
_SNAP = 1.0 / 512
_BLOCK = 192  # full-resolution blocks (a multiple of the analysis cell near this size) are blended or skipped


def _small_gray(guide: torch.Tensor, host_ok: bool = True) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (B, 1, h, w) grey in [0, 1] at the analysis size (longest side <= 256).
    ``host_ok=False`` (whole-frame path): torch ops only, no numpy round trip and no constant uploaded."""
    g = guide if guide.dim() == 4 else guide[None]
    H, W = g.shape[1:3]
    k = max(1, -(-max(H, W) // _ANALYSIS_SIDE))
    if not host_ok:
        g = g.permute(0, 3, 1, 2).float()
        g = F.avg_pool2d(g, k, ceil_mode=True) if k > 1 else g
        r, gr, b = g.unbind(1)
        return (r * 0.299 + gr * 0.587 + b * 0.114)[:, None] / 255.0
    if k > 1 and g.device.type == "cpu" and g.dtype == torch.uint8 and H % k == 0 and W % k == 0:
        # a full-resolution guide on the CPU: OpenCV's integer area resize on 16-bit values instead of a float
        # copy of the whole frame (the same means to 2e-6; see refine._pool_guide)
        small = [cv2.resize(np.left_shift(x.numpy(), 8, dtype=np.uint16), (W // k, H // k), interpolation=cv2.INTER_AREA)
                 for x in g]
        g = torch.from_numpy(np.stack(small)).permute(0, 3, 1, 2).float().mul_(255.0 / 65280.0)
    else:
        g = g.permute(0, 3, 1, 2).float()
        if k > 1:
            g = F.avg_pool2d(g, k, ceil_mode=True)
    w = torch.tensor([0.299, 0.587, 0.114], device=g.device).view(1, 3, 1, 1)
    return (g * w).sum(1, keepdim=True) / 255.0  # (B, 1, h, w)


def _blend_whole(alphas, delta, still, gate, weight: float) -> torch.Tensor:
    """The whole-frame blend: ``alpha + weight * up(still) * up(gate) * delta`` over the batch, snapped. The same
    bilinear upsampling (``align_corners=False``) as the block path's per-block sampling."""
    size = alphas.shape[1:]
    w = F.interpolate(still, size=size, mode="bilinear", align_corners=False).mul_(weight)
    w = w.mul_(F.interpolate(gate, size=size, mode="bilinear", align_corners=False))[:, 0]
    o = alphas + w * delta
    return torch.where(o < _SNAP, 0.0, torch.where(o > 1 - _SNAP, 1.0, o))


class TemporalSmoother:
    """``step(alpha, guide)`` returns the smoothed alpha (same shape/device); ``reset()`` at a cut or chunk
    start. ``strength`` 0..1 (0 or ``enabled=False`` passes alpha through unchanged).

    ``guide`` may be the full-resolution eye or any smaller copy of it (the processing-resolution eye): only
    its analysis-size grey image is used. ``alpha`` is expected snapped (exact 0/1 away from edges), as the
    refiner gives it; values that did not change are returned as they are.
    """

    def __init__(self, *, strength: float = 0.5, enabled: bool = True, whole_frame: bool = False) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"refine.temporal_strength must be in 0..1, got {strength}")
        self.strength = float(strength)
        self.enabled = bool(enabled) and strength > 0
        self.whole_frame = bool(whole_frame)  # DevicePolicy.whole_frame: one pass, no block loop, no host read
        self._prev_alpha: torch.Tensor | None = None  # (B, H, W)
        self._prev_gray: torch.Tensor | None = None  # (B, 1, h, w)
        self.last_stats: dict = {}

    def reset(self) -> None:
        self._prev_alpha = None
        self._prev_gray = None

    @torch.no_grad()
    def step(self, alpha: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """One eye: ``alpha`` (H, W) float, ``guide`` (h, w, 3) uint8."""
        if not self.enabled:
            return alpha
        return self.step_batch(alpha[None], guide[None])[0]

    @torch.no_grad()
    def step_batch(self, alphas: torch.Tensor, guides: torch.Tensor) -> torch.Tensor:
        """Both eyes at once: ``alphas`` (B, H, W), ``guides`` (B, h, w, 3) -> (B, H, W). The batch size is part
        of the state: feed the same eyes in the same order every frame (equal to one smoother per eye)."""
        if not self.enabled:
            return alphas
        if alphas.dim() != 3 or guides.dim() != 4 or guides.shape[0] != alphas.shape[0]:
            raise ValueError(
                f"step_batch expects (B, H, W) alphas and (B, h, w, 3) guides, got {tuple(alphas.shape)} "
                f"and {tuple(guides.shape)}"
            )
        gray = _small_gray(guides, host_ok=not self.whole_frame)
        prev_a, prev_g = self._prev_alpha, self._prev_gray
        if prev_a is None or prev_a.shape != alphas.shape or prev_g.shape != gray.shape:
            self._prev_alpha, self._prev_gray = alphas.clone(), gray
            self.last_stats = {"blocks": 0, "blocks_blended": 0}
            return alphas
        B, H, W = alphas.shape
        diff = F.avg_pool2d((gray - prev_g).abs(), 5, stride=1, padding=2, count_include_pad=False)
        diff = F.max_pool2d(diff, 5, stride=1, padding=2)  # a moving edge also moves its neighbourhood
        still = ((_MOTION - diff) / (_MOTION - _NOISE)).clamp(0, 1)  # (B, 1, h, w)
        delta = prev_a - alphas  # the one full-resolution pass every frame needs: where did alpha change?
        # A change over a whole neighbourhood on a still image is a correction (a person found or lost), not
        # flicker along an edge: follow it at once. Measured as the mean |delta| around each analysis pixel.
        k = max(1, -(-max(H, W) // _ANALYSIS_SIDE))
        cell = delta.abs()[:, None]
        cell = F.avg_pool2d(cell, k, ceil_mode=True) if k > 1 else cell  # (B, 1, ch, cw)
        area = F.avg_pool2d(cell, 9, stride=1, padding=4, count_include_pad=False)
        gate = (1.0 - (area - 0.3).clamp(min=0) / 0.2).clamp(0, 1)
        if self.whole_frame:
            out = _blend_whole(alphas, delta, still, gate, self.strength * _MAX_WEIGHT)
            self.last_stats = {"blocks": 1, "blocks_blended": 1, "whole_frame": True}
            self._prev_alpha, self._prev_gray = out, gray
            return out
        # Blocks of whole analysis cells: a block whose cells saw no change keeps alpha as it is.
        m = max(1, _BLOCK // k)
        ch, cw = cell.shape[2:]
        changed = (cell[:, 0] > 0).cpu().numpy()
        sat = np.zeros((B, ch + 1, cw + 1), dtype=np.int64)
        sat[:, 1:, 1:] = changed.cumsum(1).cumsum(2)
        out = alphas.clone()
        dev = alphas.device
        weight = self.strength * _MAX_WEIGHT
        n_blocks = n_blend = 0
        for by in range(0, ch, m):
            y0, y1 = by * k, min(H, (by + m) * k)
            ys = _axis(y0, y1, still.shape[2] / H, 0.0, still.shape[2], dev)
            yg = _axis(y0, y1, ch / H, 0.0, ch, dev)
            for bx in range(0, cw, m):
                x0, x1 = bx * k, min(W, (bx + m) * k)
                cy1, cx1 = min(ch, by + m), min(cw, bx + m)
                xs = xg = None
                for b in range(B):
                    n_blocks += 1
                    if sat[b, cy1, cx1] - sat[b, by, cx1] - sat[b, cy1, bx] + sat[b, by, bx] == 0:
                        continue  # no change anywhere in the block: the blend would add exactly 0
                    n_blend += 1
                    if xs is None:
                        xs = _axis(x0, x1, still.shape[3] / W, 0.0, still.shape[3], dev)
                        xg = _axis(x0, x1, cw / W, 0.0, cw, dev)
                    # the same bilinear upsampling as F.interpolate(align_corners=False), for this block only
                    w = _sample(still[b], ys, xs)[0].mul_(weight).mul_(_sample(gate[b], yg, xg)[0])
                    o = out[b, y0:y1, x0:x1]
                    o.addcmul_(w, delta[b, y0:y1, x0:x1])
                    o[o < _SNAP] = 0.0
                    o[o > 1 - _SNAP] = 1.0
        self.last_stats = {"blocks": n_blocks, "blocks_blended": n_blend}
        self._prev_alpha, self._prev_gray = out, gray
        return out
