"""The processing scale: ``processing.scale_factor`` as a number for a video's eyes ("auto" resolved).

Why "auto" is not simply 0.5: half of each eye is what a 6K eye (3072 px) needs to fit the segmenters and a 10 GB
card, but a downscaled copy or a web eye (480-1080 px) halved leaves a 30 px pedestrian 15 px wide at the
segmenter, where no model finds a body (benchmarks/small_people.py, docs/benchmarks.md). At those sizes the full
eye is cheap, so "auto" keeps the processing eye's short side at ``MIN_PROCESSING_EYE`` px or more.
"""
from __future__ import annotations

import math
from typing import Any

AUTO_SCALE = 0.5  # "auto" for eyes of 2 * MIN_PROCESSING_EYE px and more (every 4K-8K VR180 eye)
MIN_PROCESSING_EYE = 640  # processing eye side "auto" keeps, source permitting


def processing_scale(value: Any, eye_side: int | None = None) -> float:
    """``value`` (a number or "auto") as the scale for eyes whose processing short side is ``eye_side`` source px
    at scale 1; "auto" without a known eye (an engine built outside a run) is ``AUTO_SCALE``."""
    if value != "auto":
        return float(value)
    if not eye_side:
        return AUTO_SCALE
    need = math.ceil(MIN_PROCESSING_EYE / eye_side * 20) / 20  # a multiple of 0.05: tidy processing sizes
    return min(1.0, max(AUTO_SCALE, need))
