"""Motion-adaptive temporal smoothing of alpha: removes flicker where the image is still, never lags on motion.

Flicker is frame-to-frame change of alpha that the image does not justify. So the blend weight towards the
previous alpha is large only where the frame itself did not change (a local, blurred image difference on a
small copy of the guide is below the noise level) and the alpha change is small (a large jump with a still
image is a segmentation correction, not noise: it is taken at once). Where anything moves, the weight is 0
and the current alpha passes through untouched, so moving edges do not trail.

State per eye: the previous output alpha (full resolution, needed to blend) and the previous guide at a
small analysis size; nothing grows with the video.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_ANALYSIS_SIDE = 256  # motion is measured on a copy of the guide this big (longest side)
_NOISE = 4.0 / 255.0  # mean local grey change below this counts as still (compression noise)
_MOTION = 12.0 / 255.0  # at and above this the pixel is moving: no smoothing
_MAX_WEIGHT = 0.8  # strength 1 keeps at most this much of the previous alpha


def _small_gray(guide: torch.Tensor) -> torch.Tensor:
    H, W = guide.shape[:2]
    k = max(1, -(-max(H, W) // _ANALYSIS_SIDE))
    g = guide.permute(2, 0, 1)[None].float()
    if k > 1:
        g = F.avg_pool2d(g, k, ceil_mode=True)
    w = torch.tensor([0.299, 0.587, 0.114], device=g.device).view(1, 3, 1, 1)
    return (g * w).sum(1, keepdim=True) / 255.0  # (1, 1, h, w)


class TemporalSmoother:
    """One per eye. ``step(alpha, guide)`` returns the smoothed alpha (same shape/device); ``reset()`` at a cut
    or chunk start. ``strength`` 0..1 (0 or ``enabled=False`` passes alpha through unchanged)."""

    def __init__(self, *, strength: float = 0.5, enabled: bool = True) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"refine.temporal_strength must be in 0..1, got {strength}")
        self.strength = float(strength)
        self.enabled = bool(enabled) and strength > 0
        self._prev_alpha: torch.Tensor | None = None
        self._prev_gray: torch.Tensor | None = None

    def reset(self) -> None:
        self._prev_alpha = None
        self._prev_gray = None

    @torch.no_grad()
    def step(self, alpha: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return alpha
        gray = _small_gray(guide)
        prev_a, prev_g = self._prev_alpha, self._prev_gray
        if prev_a is None or prev_a.shape != alpha.shape or prev_g.shape != gray.shape:
            self._prev_alpha, self._prev_gray = alpha.clone(), gray
            return alpha
        diff = F.avg_pool2d((gray - prev_g).abs(), 5, stride=1, padding=2, count_include_pad=False)
        diff = F.max_pool2d(diff, 5, stride=1, padding=2)  # a moving edge also moves its neighbourhood
        still = ((_MOTION - diff) / (_MOTION - _NOISE)).clamp(0, 1)
        w = F.interpolate(still, size=alpha.shape, mode="bilinear", align_corners=False)[0, 0]
        w.mul_(self.strength * _MAX_WEIGHT)
        delta = prev_a - alpha
        # A change over a whole neighbourhood on a still image is a correction (a person found or lost), not
        # flicker along an edge: follow it at once. Measured as the mean |delta| around each analysis pixel.
        k = max(1, -(-max(alpha.shape) // _ANALYSIS_SIDE))
        area = delta.abs()[None, None]
        area = F.avg_pool2d(area, k, ceil_mode=True) if k > 1 else area
        area = F.avg_pool2d(area, 9, stride=1, padding=4, count_include_pad=False)
        gate = (1.0 - (area - 0.3).clamp(min=0) / 0.2).clamp(0, 1)
        w.mul_(F.interpolate(gate, size=alpha.shape, mode="bilinear", align_corners=False)[0, 0])
        out = alpha + w * delta
        out[out < 1.0 / 512] = 0.0
        out[out > 1 - 1.0 / 512] = 1.0
        self._prev_alpha, self._prev_gray = out, gray
        return out
