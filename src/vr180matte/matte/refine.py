"""Coarse mask probabilities -> full-resolution alpha, edge-aware (fast guided filter), in tiles.

Why this shape:

* Segmenters give probabilities at processing resolution (SAM2's logits are 256x256; at a 3072 px eye that is
  12 px per cell). Bilinear upscaling of such a mask gives blurry, stair-stepped edges that ignore the image.
  A guided filter (He et al.) fits, in every window, ``alpha ~= A . I + b`` to the coarse mask with the
  full-resolution RGB frame ``I`` as the guide, so the edge of the alpha snaps onto the edge of the image.
* The *fast* guided filter computes ``A`` and ``b`` on a coarse grid (the guide is area-averaged by an integer
  factor ``s``) and applies them at full resolution: the expensive box filters run on ``1/s^2`` of the pixels,
  and only ``alpha = up(A) . I + up(b)`` touches the full-resolution frame.
* Two paths for the full-resolution step, chosen by the device policy (``DevicePolicy.whole_frame``), with the
  same result: the tile path (:mod:`.refine_tiles`, CPU) runs in tiles of ``tile`` pixels, one colour channel
  at a time, and skips tiles away from the edge band, so at a 3072x3072 eye the working memory is a few
  tile-sized buffers plus the coarse grid; the whole-frame path (:mod:`.refine_whole`, GPU) runs both eyes as
  a few batched ops with no per-tile loop and no host read. The coarse grid is capped at 1024 cells per side.
  The shared pieces (coarse grid, coefficients, band, erosion/feathering) live in :mod:`.refine_ops`.
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

import torch

from .refine_ops import MAX_GRID, _axis, _sample  # noqa: F401  (_axis/_sample: used by temporal and tests)
from .refine_tiles import refine_tiles
from .refine_whole import refine_whole

log = logging.getLogger(__name__)

METHODS = ("guided", "bilinear")


class Refiner:
    """Upscale a coarse person probability to full-resolution straight alpha, guided by the full-res eye image.

    ``method``: ``"guided"`` (fast guided filter, edge-aware) or ``"bilinear"`` (plain upsampling, the baseline).
    ``radius_px``: guided-filter radius in source pixels for a 3072 px eye; scaled with the eye size, and never
    below half a coarse-mask cell. ``eps``: guided-filter regularisation (guide in [0, 1]); smaller follows image
    edges more closely. ``erode_px``: shrink the alpha by N source pixels (negative grows). ``feather_px``:
    extra Gaussian softening (sigma = feather_px / 2) in source pixels. ``tile``: side of the full-resolution
    tiles (bounds memory; the policy's ``refine_tile``). ``whole_frame``: the policy's choice of path (see the
    module docstring); the alpha is the same either way. One instance can serve both eyes: it keeps no
    per-frame state; ``last_stats`` says how many tiles the last call refined.
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
        whole_frame: bool = False,
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
        self.whole_frame = bool(whole_frame)  # DevicePolicy.whole_frame: batched whole-eye ops, no tiles
        self.skip_uniform = True  # tile path: fill tiles away from the edge band instead of filtering them
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
        s = max(1, int(round(r_full)), -(-max(H, W) // MAX_GRID))
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

        The coarse-grid work (guide pooling, box filters, coefficients, band) runs once for the whole batch.
        Tile path: the full-resolution step visits, per eye, only the tiles whose interpolation support touches
        the edge band, and fills the others with their exact 0 or 1. Whole-frame path: every pixel of the batch
        in a few ops (``guides`` may be a strided view, e.g. both eyes of the SBS frame). Equal to calling the
        refiner per eye, and the two paths equal each other within float rounding.
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
        plan = self.plan(tuple(probs.shape[1:]), tuple(guides.shape[1:3]))
        path = refine_whole if self.whole_frame else refine_tiles
        return path(self, probs, guides, plan)
