"""Edge colour decontamination: the foreground's own colour in the semi-transparent band of the matte.

A pixel at the edge of a person (hair, motion blur) is ``I = a * F + (1 - a) * B``: its colour is the person's
``F`` mixed with the old background ``B``. Keeping ``I`` as the colour and compositing over a new background
``B'`` gives ``a * I + (1 - a) * B'``, which still carries ``a * (1 - a) * B``: a fringe of the old background
(green spill around hair on a greenscreen, the street's colour around a person in passthrough). Estimating
``F`` where ``0 < a < 1`` removes it.

The estimate is pymatting's ``estimate_foreground_ml`` (Germer et al., "Fast Multi-Level Foreground Estimation",
ICPR 2020): a coarse-to-fine solve that propagates the colours of nearby solid foreground and background into
the band, smooth where the alpha is smooth. It is a CPU (numba) method, so it runs only on the band: the frame is
cut into tiles, and only tiles that hold band pixels are solved, each with a margin of context around it; only
the band pixels of each tile are written back. Pixels with ``a == 0`` or ``a == 1`` are never changed, so an
opaque person and the untouched background stay bit-exact.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")
#: output formats ``refine.decontaminate: auto`` turns it on for (their alpha is baked into colour over a new
#: background by someone else: a keyer, a headset's passthrough compositor)
AUTO_ON = ("greenscreen", "passthrough")
_BATCH = 8  # tiles read, solved and written together


def enabled(setting, output_format: str) -> bool:
    """Resolve ``refine.decontaminate`` (auto | on | off, or a bool) for an output format."""
    if isinstance(setting, bool):
        return setting
    s = str(setting).lower()
    if s in ("on", "true", "yes"):
        return True
    if s in ("off", "false", "no"):
        return False
    if s == "auto":
        return output_format in AUTO_ON
    raise ValueError(f"refine.decontaminate must be one of {', '.join(MODES)}, got {setting!r}")


def _band(alpha: torch.Tensor, eps: float) -> torch.Tensor:
    return (alpha > eps) & (alpha < 1.0 - eps)


@torch.no_grad()
def decontaminate(
    rgb: torch.Tensor,
    alpha: torch.Tensor,
    *,
    tile: int = 256,
    margin: int = 32,
    eps: float = 0.5 / 255,
    inplace: bool = True,
    regularization: float = 1e-5,
    threads: int | None = None,
) -> tuple[torch.Tensor, dict]:
    """Replace the colour of band pixels (``eps < alpha < 1 - eps``) by the estimated foreground colour.

    ``rgb`` (H, W, 3) uint8 or uint16 (any device), ``alpha`` (H, W) float in [0, 1]. Returns the frame
    (``rgb`` itself when ``inplace``) and a small report: tiles solved and band pixels changed. Tiles are solved
    in ``threads`` threads (default: torch's thread count), a fixed batch at a time (bounded memory).
    """
    from pymatting import estimate_foreground_ml  # the lead's requirements pin pymatting

    if rgb.dim() != 3 or rgb.shape[2] != 3 or rgb.dtype not in (torch.uint8, torch.uint16):
        raise ValueError(f"decontaminate expects an (H, W, 3) uint8/uint16 frame, got {tuple(rgb.shape)} {rgb.dtype}")
    if tuple(alpha.shape) != tuple(rgb.shape[:2]):
        raise ValueError(f"alpha {tuple(alpha.shape)} does not match the frame {tuple(rgb.shape[:2])}")
    out = rgb if inplace else rgb.clone()
    top = 255.0 if rgb.dtype == torch.uint8 else 65535.0
    H, W = rgb.shape[:2]
    a = alpha.to(rgb.device, torch.float32)
    band = _band(a, eps)
    # which tiles hold band pixels: one max-pool over the band, on the frame's device
    th, tw = -(-H // tile), -(-W // tile)
    padded = F.pad(band[None, None].float(), (0, tw * tile - W, 0, th * tile - H))
    busy = F.max_pool2d(padded, tile)[0, 0].bool().cpu().numpy()
    tiles = [(int(ty) * tile, int(tx) * tile) for ty, tx in np.argwhere(busy)]
    workers = max(1, min(int(threads or torch.get_num_threads()), len(tiles) or 1))

    def solve(crop: np.ndarray, al: np.ndarray) -> np.ndarray:
        # pymatting's solver is numba nogil: tiles in threads use every core
        return estimate_foreground_ml(crop, al, regularization=regularization)

    changed = 0
    # A fixed batch: every crop of a batch is read before any of its results is written, so the result does not
    # depend on the number of threads (a later batch sees its neighbours' cleaned colours, deterministically).
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for b in range(0, len(tiles), _BATCH):
            jobs = []
            for y0, x0 in tiles[b : b + _BATCH]:
                y1, x1 = min(H, y0 + tile), min(W, x0 + tile)
                cy0, cx0, cy1, cx1 = max(0, y0 - margin), max(0, x0 - margin), min(H, y1 + margin), min(W, x1 + margin)
                crop = out[cy0:cy1, cx0:cx1].cpu().numpy().astype(np.float32) / np.float32(top)
                al = a[cy0:cy1, cx0:cx1].cpu().numpy().astype(np.float32)
                jobs.append(((y0, x0, y1, x1, y0 - cy0, x0 - cx0), pool.submit(solve, crop, al)))
            for (y0, x0, y1, x1, iy0, ix0), job in jobs:
                fg = job.result()[iy0 : iy0 + (y1 - y0), ix0 : ix0 + (x1 - x0)]
                fg_t = torch.from_numpy(np.ascontiguousarray(fg)).float().clamp_(0, 1)
                fg_t = (fg_t * top).round_().to(rgb.dtype).to(rgb.device)
                m = band[y0:y1, x0:x1]
                region = out[y0:y1, x0:x1]
                region.copy_(torch.where(m[..., None], fg_t, region))  # (index_put has no uint16 kernel)
                changed += int(m.sum())
    return out, {"tiles": int(len(tiles)), "band_pixels": changed}
