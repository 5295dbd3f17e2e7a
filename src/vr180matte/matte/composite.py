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


def channels(mode: str) -> int:
    """Channels of a composed frame: RGBA for ``alpha``, RGB for ``greenscreen``."""
    return 4 if mode == "alpha" else 3


def _bg(background, device) -> torch.Tensor:
    """The background colour as a (3,) float tensor on ``device``; checked on the host values (reading a device
    tensor back to check it would synchronise every frame), copied without blocking."""
    vals = [float(v) for v in background]
    if len(vals) != 3 or not all(0 <= v <= 255 for v in vals):
        raise ValueError(f"background colour must be three values in 0..255, got {list(background)}")
    return torch.tensor(vals, dtype=torch.float32).to(device, non_blocking=True)


def _top(dtype: torch.dtype) -> float:
    """Full scale of a frame's dtype: 255 for 8-bit, 65535 for 16-bit colour."""
    return 255.0 if dtype == torch.uint8 else 65535.0


def _levels(alpha: torch.Tensor, device, top: float) -> torch.Tensor:
    """Alpha in [0, 1] (clamped) as float integer levels 0..``top``, rounded (in place on clamp's own copy)."""
    return alpha.to(device, torch.float32).clamp(0, 1).mul_(top).round_()


@torch.no_grad()
def straight_alpha(alpha: torch.Tensor, dtype: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
    """The alpha channel :func:`compose` writes for straight ``mode="alpha"``, alone: ``alpha`` (..., H, W) float
    -> integer levels in ``dtype`` (uint8 0..255, or uint16 0..65535 for a 16-bit frame), into ``out`` when
    given. With straight alpha the colour is the source's, so an alpha deliverable needs only this plane beside
    the decoded frame (io/picture.py): no RGBA frame is built."""
    if dtype not in (torch.uint8, torch.uint16):
        raise ValueError(f"alpha levels are uint8 or uint16, got {dtype}")
    device = out.device if out is not None else alpha.device
    aq = _levels(alpha, device, _top(dtype))
    if out is None:
        return aq.to(dtype)
    out.copy_(aq)
    return out


@torch.no_grad()
def compose(
    rgb: torch.Tensor,
    alpha: torch.Tensor,
    *,
    mode: str,
    background=(0, 255, 0),
    premultiplied: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``rgb`` (..., H, W, 3) uint8 or uint16 + ``alpha`` (..., H, W) float in [0, 1] -> frame of the same dtype
    and device. Leading dimensions are a batch (both eyes as one (2, H, W, 3) view of the SBS frame): every
    operation is per pixel, so a batch is one pass and equals composing each image.

    ``mode="alpha"``: (H, W, 4) RGBA; colour straight, or multiplied by alpha when ``premultiplied``.
    ``mode="greenscreen"``: (H, W, 3) ``rgb * a + background * (1 - a)``. Values are rounded, not truncated,
    so an alpha of exactly 1 (or 0) reproduces the source (or the background) bit for bit. A uint16 frame
    (a >8-bit source decoded as 16-bit RGB) keeps 16 bits: alpha is written at 0..65535 and ``background``
    (always given in 0..255) is scaled by 257, so 10-bit colour reaches the encoder intact.

    ``out``: an (..., H, W, 4 or 3) tensor of the frame's dtype (e.g. one eye's view, or both eyes' (2, H, W, C)
    view, of the whole output frame) to write the result into and return; the eyes of an SBS frame are then
    composed straight into it, with no joined full-frame alpha and no concatenation (the same values).
    """
    if mode not in MODES:
        raise ValueError(f"output.format must be one of {', '.join(MODES)}, got {mode!r}")
    if rgb.dim() < 3 or rgb.shape[-1] != 3 or rgb.dtype not in (torch.uint8, torch.uint16):
        raise ValueError(f"compose expects an (H, W, 3) uint8 or uint16 frame, got {tuple(rgb.shape)} {rgb.dtype}")
    if tuple(alpha.shape) != tuple(rgb.shape[:-1]):
        raise ValueError(f"alpha {tuple(alpha.shape)} does not match the frame {tuple(rgb.shape[:-1])}")
    top = _top(rgb.dtype)
    if out is not None and (tuple(out.shape) != (*rgb.shape[:-1], channels(mode)) or out.dtype != rgb.dtype):
        raise ValueError(
            f"out {tuple(out.shape)} {out.dtype} does not fit a {mode} frame of {tuple(rgb.shape)} {rgb.dtype}"
        )
    if mode == "alpha":
        aq = _levels(alpha, rgb.device, top)  # integers in 0..top, so the casts below are exact
        if premultiplied:
            # with the quantised alpha, so colour <= alpha holds exactly in the written values
            c = (rgb.float() * (aq / top)[..., None]).round_().to(rgb.dtype)
        else:
            c = rgb
        if out is None:
            return torch.cat([c, aq.to(rgb.dtype)[..., None]], dim=-1)
        out[..., :3] = c
        out[..., 3] = aq
        return out
    a = alpha.to(rgb.device, torch.float32).clamp(0, 1)
    bg = _bg(background, rgb.device) * (top / 255.0)
    res = (bg + (rgb.float() - bg) * a[..., None]).round_().clamp_(0, top)
    if out is None:
        return res.to(rgb.dtype)
    out.copy_(res)
    return out


@torch.no_grad()
def compose_batch(rgb: torch.Tensor, alpha: torch.Tensor, **kw) -> torch.Tensor:
    """Both eyes (any batch) in one call: ``rgb`` (B, H, W, 3) + ``alpha`` (B, H, W) -> (B, H, W, C), with the
    same keywords as :func:`compose` (which takes the batch as leading dimensions, in one pass, no reshaping
    copy of a strided view): the result equals composing each eye."""
    if rgb.dim() != 4 or tuple(alpha.shape) != tuple(rgb.shape[:3]):
        raise ValueError(
            f"compose_batch expects (B, H, W, 3) frames and (B, H, W) alphas, got {tuple(rgb.shape)} and "
            f"{tuple(alpha.shape)}"
        )
    return compose(rgb, alpha, **kw)
