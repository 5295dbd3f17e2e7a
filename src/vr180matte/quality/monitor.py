"""Online quality assessment during a run: edge consistency, temporal stability, stereo alignment.

Fed one eye-frame at a time by the pipeline; every ``every``-th frame (``performance.quality_every``) it
analyses a copy of alpha and frame at the *processing* resolution, capped at ``max_side`` (so scores are
comparable across resolutions and the cost is small). The guide it is given should be the processing-size eye
(the full-resolution frame also works, at the cost of shrinking it); the alpha is area-averaged to the guide's
analysis size. Frames it does not sample cost nothing (:meth:`QualityMonitor.wants` lets the caller skip even
the call). The summary says how it sampled. It keeps running sums plus, per view, the previous small frame for
the temporal score: memory is constant.
"""
from __future__ import annotations

import logging

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vr180matte.quality.metrics import edge_consistency, temporal_stability

log = logging.getLogger(__name__)


def _small(alpha: torch.Tensor, guide: torch.Tensor, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Alpha and guide at the analysis size: the guide's own size (the processing resolution), capped at
    ``max_side``. Alpha larger than that (the full-resolution matte) is area-averaged to it."""
    gh, gw = guide.shape[:2]
    f = min(1.0, max_side / max(gh, gw))
    size = (max(1, round(gh * f)), max(1, round(gw * f)))
    if alpha.device.type == "cpu" and guide.device.type == "cpu" and guide.dtype == torch.uint8:
        # OpenCV's area resize reads the full-resolution inputs once, without float copies of the whole frame
        a_np = np.ascontiguousarray(alpha.detach().float().numpy())
        g_np = np.ascontiguousarray(guide.detach().numpy())
        if a_np.shape != size:
            up = a_np.shape[0] < size[0]
            a_np = cv2.resize(a_np, size[::-1], interpolation=cv2.INTER_LINEAR if up else cv2.INTER_AREA)
        if g_np.shape[:2] != size:
            g_np = cv2.resize(g_np, size[::-1], interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(a_np), np.ascontiguousarray(g_np)
    a = alpha.detach().float()[None, None]
    g = guide.detach().permute(2, 0, 1)[None].float()
    if tuple(a.shape[2:]) != size:
        a = F.interpolate(a, size=size, mode="area" if a.shape[2] >= size[0] else "bilinear")
    if tuple(g.shape[2:]) != size:
        g = F.interpolate(g, size=size, mode="area")
    return a[0, 0].cpu().numpy(), g[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


class QualityMonitor:
    """Running automated quality scores for stats.json (``summary()`` is the ``quality`` block)."""

    def __init__(self, *, every: int = 1, max_side: int = 512) -> None:
        if every < 1:
            raise ValueError(f"quality monitor 'every' must be >= 1, got {every}")
        self.every = int(every)
        self.max_side = int(max_side)
        self._edge: dict[str, list[float]] = {}  # view -> [sum, count]
        self._temp: dict[str, list[float]] = {}
        self._prev: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}
        self._stereo = [0.0, 0]
        self._frame_count = 0
        self._last_frame = -1
        self._analysed = 0  # eye-frames actually analysed (sampled or kept as a temporal pair's first half)
        self._size: tuple[int, int] | None = None

    def wants(self, frame_idx: int) -> bool:
        """Whether :meth:`update` does anything for ``frame_idx`` (so a caller can skip preparing its inputs)."""
        return self.every == 1 or frame_idx % self.every in (0, self.every - 1)

    def update(self, view: str, frame_idx: int, alpha: torch.Tensor, guide: torch.Tensor) -> None:
        """Score one eye-frame (sampled every ``every`` frames; the frame after a sample is kept as well so
        the temporal score always compares consecutive frames)."""
        sample = frame_idx % self.every == 0
        keep = self.every == 1 or frame_idx % self.every == self.every - 1
        if not (sample or keep):
            return
        a, g = _small(alpha, guide, self.max_side)
        self._analysed += 1
        self._size = a.shape
        if sample:
            s = self._edge.setdefault(view, [0.0, 0])
            s[0] += edge_consistency(a)
            s[1] += 1
            prev = self._prev.get(view)
            if prev is not None and prev[0] == frame_idx - 1 and prev[1].shape == a.shape:
                t = self._temp.setdefault(view, [0.0, 0])
                t[0] += temporal_stability(prev[1], a, prev[2], g)
                t[1] += 1
            if frame_idx != self._last_frame:
                self._frame_count += 1
                self._last_frame = frame_idx
        self._prev[view] = (frame_idx, a, g) if keep else self._prev.get(view, (frame_idx, a, g))
        if not keep:
            self._prev.pop(view, None)

    def add_stereo(self, frame_idx: int, agreement: float) -> None:
        """Cross-eye agreement (0..1) reported by the stereo stage for ``frame_idx``."""
        self._stereo[0] += float(agreement)
        self._stereo[1] += 1

    @staticmethod
    def _mean(d: dict[str, list[float]]) -> float | None:
        n = sum(v[1] for v in d.values())
        return None if n == 0 else round(sum(v[0] for v in d.values()) / n, 4)

    def summary(self) -> dict:
        """``{"edge_consistency", "temporal_stability", "stereo_alignment" (None without a stereo stage),
        "frames", "per_view", "sampling"}``; scores are means in [0, 1], 1 = best. ``frames`` counts sampled
        frames; ``sampling`` says how: ``every`` k-th frame (plus the frame before it, for the temporal score),
        at ``analysis_size`` (height, width; the processing resolution capped at ``max_side``)."""
        per_view = {
            v: {
                "edge_consistency": round(self._edge[v][0] / self._edge[v][1], 4) if v in self._edge else None,
                "temporal_stability": round(self._temp[v][0] / self._temp[v][1], 4) if v in self._temp else None,
            }
            for v in sorted(set(self._edge) | set(self._temp))
        }
        return {
            "edge_consistency": self._mean(self._edge),
            "temporal_stability": self._mean(self._temp),
            "stereo_alignment": round(self._stereo[0] / self._stereo[1], 4) if self._stereo[1] else None,
            "frames": self._frame_count,
            "per_view": per_view,
            "sampling": {
                "every": self.every,
                "max_side": self.max_side,
                "analysis_size": list(self._size) if self._size is not None else None,
                "eye_frames_analysed": self._analysed,
            },
        }
