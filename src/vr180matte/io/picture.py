"""A straight-alpha output frame kept as its two parts: the source colour and the alpha plane.

Why: with straight alpha the colour of an alpha deliverable is the decoded frame itself, untouched. Interleaving
it with the alpha into an RGBA frame costs a full-frame copy (75 MB at 6K, ~95 ms a frame on the 2-core VM), and
the ProRes planes (io/planes.py) take the channels apart again straight after. Handed over as two parts, the
colour is the decoded frame (no copy) and only the alpha is new (on a GPU, the frame's one download is the alpha
plane, a quarter of an RGBA frame). A writer that needs interleaved pixels (PNG, swscale) builds them itself.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class RgbAlpha(NamedTuple):
    """``rgb`` (H, W, 3) and ``alpha`` (H, W), both uint8 or both uint16 (alpha at the colour's full scale)."""

    rgb: np.ndarray
    alpha: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of the interleaved frame, (H, W, 4)."""
        return (*self.rgb.shape[:2], 4)

    @property
    def dtype(self) -> np.dtype:
        return self.rgb.dtype

    def check(self) -> None:
        """ValueError unless the two parts make one frame."""
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3 or self.alpha.shape != self.rgb.shape[:2]:
            raise ValueError(f"expected (H, W, 3) colour and (H, W) alpha, got {self.rgb.shape} and {self.alpha.shape}")
        if self.alpha.dtype != self.rgb.dtype:
            raise ValueError(f"colour is {self.rgb.dtype} but alpha is {self.alpha.dtype}")

    def rgba(self, bgr: bool = False) -> np.ndarray:
        """The interleaved (H, W, 4) frame, RGBA or (``bgr``) BGRA, in one copy."""
        colour = self.rgb[..., ::-1] if bgr else self.rgb
        return np.concatenate([colour, self.alpha[..., None]], axis=2)
