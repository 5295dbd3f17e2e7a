"""Detection on the source-resolution eyes, boxes in processing pixels.

Why: the stereo stage works on processing-size eyes (``processing.scale_factor``, 0.5 by default), and a person
20 px wide in the source is 10 px there: the detector's own upscaling (``detection.upscale``) cannot bring back
what the downscale removed. On a lone 21x24 px person the bundled detector scored 0.55 on the source eye and 0.12 on
the half-size eye. So the detector is given the source eye (or its 8-bit proxy) and its boxes are scaled to the
processing eye: the detection image size is still ``min(detection.image_size, detection.upscale x source)``
(the detector is told its input is the source, ``source_scale = 1``), so a 6K eye is detected at the same size
as before and a small eye at up to ``upscale`` times its real pixels. Eyes whose aspect differs from the
processing eye (squeezed web copies, processed de-squeezed) keep the processing eye: a squeezed person is not one
the detector knows.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..engines.base import Detection, detect_at

__all__ = ["SourceEyes"]


class SourceEyes:
    """This frame's source-resolution eyes, matched to their processing-size eyes by identity."""

    def __init__(self) -> None:
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.used = 0  # detector runs on a source eye (stats.json stereo.source_detections)

    def set(self, proc: tuple[torch.Tensor, ...], source: tuple[torch.Tensor, ...] | None) -> None:
        """Pair each processing eye with its source eye for this frame (None: none this frame)."""
        self._pairs = []
        if source is None:
            return
        for p, s in zip(proc, source):
            ph, pw = int(p.shape[0]), int(p.shape[1])
            sh, sw = int(s.shape[0]), int(s.shape[1])
            if sh <= ph or s.dtype != torch.uint8 or abs(sw / sh - pw / ph) > 0.02 * pw / ph:
                continue  # not larger, not 8-bit, or another aspect (squeezed): the processing eye is better
            self._pairs.append((p, s))

    def source_of(self, img: torch.Tensor) -> torch.Tensor | None:
        for p, s in self._pairs:
            if p is img:
                return s
        return None

    def detect(self, detector, img: torch.Tensor, threshold: float | None, rows: slice | None = None,
               inner=None) -> list[Detection] | None:
        """Detections of ``img`` (a processing eye, or its ``rows``) found on its source eye, in ``img``'s pixels
        (row offsets relative to ``rows.start``); None when ``img`` has no source eye this frame."""
        src = self.source_of(img)
        if src is None:
            return None
        sy = src.shape[0] / img.shape[0]
        sx = src.shape[1] / img.shape[1]
        if rows is not None:
            src = src[int(round(rows.start * sy)):int(round(rows.stop * sy))]
            h_img = rows.stop - rows.start
        else:
            h_img = int(img.shape[0])
        inner = inner if inner is not None else detector
        old = getattr(inner, "source_scale", None)
        if old is not None:
            inner.source_scale = 1.0  # this input IS the source
        try:
            dets = detect_at(detector, src, threshold)
        finally:
            if old is not None:
                inner.source_scale = old
        self.used += 1
        f = np.array([1 / sx, 1 / sy, 1 / sx, 1 / sy], np.float32)
        out = []
        for d in dets:
            mask = d.mask
            if mask is not None:
                mask = F.interpolate(mask[None, None].float(), size=(h_img, int(img.shape[1])), mode="bilinear",
                                     align_corners=False)[0, 0]
            out.append(Detection(box=np.asarray(d.box, np.float32) * f, score=float(d.score), mask=mask))
        return out
