"""Final pixels from a frame and its alpha: RGBA (straight or premultiplied) or a flat-colour key.

Straight alpha (the default) leaves the colour untouched and puts coverage in the fourth channel; editors
(Premiere, Resolve, After Effects, Nuke) interpret ProRes 4444 / PNG alpha as straight unless told otherwise.
Premultiplied multiplies colour by alpha once, here, so nothing downstream must do it again (doing it twice
is what produces the dark fringe users report). The choice is written to stats.json / the output metadata by
the pipeline; see docs/refinement.md.
"""
from __future__ import annotations

import torch

MODES = ("alpha", "greenscreen")


def _bg(background, device) -> torch.Tensor:
    bg = torch.as_tensor(list(background), dtype=torch.float32, device=device)
    if bg.numel() != 3 or bool(((bg < 0) | (bg > 255)).any()):
        raise ValueError(f"background colour must be three values in 0..255, got {list(background)}")
    return bg


@torch.no_grad()
def compose(
    rgb: torch.Tensor,
    alpha: torch.Tensor,
    *,
    mode: str,
    background=(0, 255, 0),
    premultiplied: bool = False,
) -> torch.Tensor:
    """``rgb`` (H, W, 3) uint8 + ``alpha`` (H, W) float in [0, 1] -> uint8 frame on the same device.

    ``mode="alpha"``: (H, W, 4) RGBA; colour straight, or multiplied by alpha when ``premultiplied``.
    ``mode="greenscreen"``: (H, W, 3) ``rgb * a + background * (1 - a)``. Values are rounded, not truncated,
    so an alpha of exactly 1 (or 0) reproduces the source (or the background) bit for bit.
    """
    if mode not in MODES:
        raise ValueError(f"output.format must be one of {', '.join(MODES)}, got {mode!r}")
    if rgb.dim() != 3 or rgb.shape[2] != 3 or rgb.dtype != torch.uint8:
        raise ValueError(f"compose expects an (H, W, 3) uint8 frame, got {tuple(rgb.shape)} {rgb.dtype}")
    if tuple(alpha.shape) != tuple(rgb.shape[:2]):
        raise ValueError(f"alpha {tuple(alpha.shape)} does not match the frame {tuple(rgb.shape[:2])}")
    a = alpha.to(rgb.device, torch.float32).clamp(0, 1)
    if mode == "alpha":
        a8 = (a * 255.0).round_().to(torch.uint8)
        if premultiplied:
            # with the quantised alpha, so colour <= alpha holds exactly in the written 8-bit values
            c = (rgb.float() * (a8.float() / 255.0)[..., None]).round_().to(torch.uint8)
        else:
            c = rgb
        return torch.cat([c, a8[..., None]], dim=2)
    bg = _bg(background, rgb.device)
    out = bg + (rgb.float() - bg) * a[..., None]
    return out.round_().clamp_(0, 255).to(torch.uint8)
