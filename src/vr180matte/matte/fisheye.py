"""Passthrough deliverable: VR180 equirect eyes -> fisheye image circles, with the alpha packed into the corners.

What the players read (DeoVR, HereSphere "Alpha Packed" passthrough; sources in docs/outputs.md):

* a side-by-side frame, each eye an *equidistant* fisheye image circle that fills its square half
  (radius ``r`` of a point = its angle off the view axis / (fov / 2)); 180 or 190 degrees across
  (``output.fisheye_fov``; a 190 circle shows the 180 degree VR180 source inside its inner 180/190 and black
  around it);
* the alpha matte of the whole SBS frame, scaled to 40% of the frame height, cut to each eye's circle, and
  pasted into the frame's dead corners outside the image circles: the left eye's alpha circle split into a
  top and a bottom half placed on the centre seam (bottom half at the top edge, top half at the bottom edge),
  the right eye's split into four quadrants placed at the outer corners (each quadrant at the corner
  diagonally opposite its position, so the four together read as the circle cut by the frame's edges);
* the file name tagged ``_FISHEYE180_alpha`` / ``_FISHEYE190_alpha``, which is how the players pick the
  projection and turn on the alpha mask.

A disk of diameter ``0.4 * H`` centred on a corner (or on the middle of the top/bottom edge) reaches
``0.2 * H`` into the frame, and the nearest image circle is ``(sqrt(2) - 1) / 2 * H = 0.207 * H`` away,
so alpha and picture never overlap.

The reprojection runs on the processing device with ``torch.nn.functional.grid_sample`` and a sampling grid
computed once per geometry (:class:`FisheyeProjector`); one eye is reprojected at a time, so memory is one
eye's float copy plus the grid.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

#: fraction of the frame height the packed alpha circles have (vr2ar-converter, DeoVR/HereSphere layout)
ALPHA_SCALE = 0.4
FOVS = (180, 190)


def player_tag(fov_deg: int) -> str:
    """The filename tag DeoVR/HereSphere recognise, e.g. ``_FISHEYE190_alpha``."""
    if int(fov_deg) not in FOVS:
        raise ValueError(f"output.fisheye_fov must be one of {', '.join(map(str, FOVS))}, got {fov_deg}")
    return f"_FISHEYE{int(fov_deg)}_alpha"


def alpha_side(height: int) -> int:
    """Side of one eye's packed alpha square: even (so halves and quadrants are whole pixels), <= 0.4 * H."""
    return max(2, 2 * int(height * ALPHA_SCALE / 2))


def _centres(n: int, device) -> torch.Tensor:
    """Pixel centres of ``n`` pixels in [-1, 1] (grid_sample's align_corners=False convention)."""
    return (torch.arange(n, device=device, dtype=torch.float64) + 0.5) * (2.0 / n) - 1.0


def fisheye_grid(size: int, fov_deg: float, src_fov_deg: float = 180.0, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Sampling grid from a ``size`` x ``size`` equidistant fisheye eye into an equirect eye.

    Returns ``grid`` (1, size, size, 2) float32 for ``grid_sample`` (x = longitude scaled so +-1 is
    +-src_fov/2, y = latitude scaled so +-1 is +-90 degrees: an equirect eye always spans the full height) and
    ``valid`` (size, size) bool: inside the image circle and inside the source's field.
    """
    y = _centres(size, device)[:, None].expand(size, size)
    x = _centres(size, device)[None, :].expand(size, size)
    r = torch.sqrt(x * x + y * y)
    theta = r * math.radians(fov_deg) / 2.0  # angle off the view axis (equidistant)
    s = torch.where(r > 0, torch.sin(theta) / r.clamp_min(1e-12), torch.ones_like(r))
    dx, dy, dz = x * s, y * s, torch.cos(theta)  # x right, y down, z forward
    lon = torch.atan2(dx, dz)
    lat = torch.asin(dy.clamp(-1.0, 1.0))
    half = math.radians(src_fov_deg) / 2.0
    valid = (r <= 1.0) & (lon.abs() <= half)
    grid = torch.stack([lon / half, lat / (math.pi / 2)], dim=-1).to(torch.float32)[None]
    return grid, valid


def equirect_grid(height: int, width: int, fov_deg: float, src_fov_deg: float = 180.0, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse: grid from an equirect eye (``height`` x ``width`` covering src_fov) into a fisheye eye."""
    half = math.radians(src_fov_deg) / 2.0
    lat = (_centres(height, device) * (math.pi / 2))[:, None].expand(height, width)
    lon = (_centres(width, device) * half)[None, :].expand(height, width)
    dx = torch.cos(lat) * torch.sin(lon)
    dy = torch.sin(lat)
    dz = torch.cos(lat) * torch.cos(lon)
    theta = torch.acos(dz.clamp(-1.0, 1.0))
    r = theta / (math.radians(fov_deg) / 2.0)
    h = torch.sqrt(dx * dx + dy * dy)
    k = torch.where(h > 0, r / h.clamp_min(1e-12), torch.zeros_like(h))
    valid = r <= 1.0
    grid = torch.stack([dx * k, dy * k], dim=-1).to(torch.float32)[None]
    return grid, valid


def _sample(img: torch.Tensor, grid: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(H, W[, C]) image of any dtype -> image on ``grid``'s size, same dtype, zero outside ``valid``."""
    squeeze = img.dim() == 2
    x = img[..., None] if squeeze else img
    dtype = x.dtype
    src = x.to(grid.device).permute(2, 0, 1)[None].to(torch.float32)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    out = out.permute(1, 2, 0)
    out = out * valid[..., None].to(out.dtype)
    if dtype in (torch.uint8, torch.uint16, torch.int16, torch.int32):
        top = 255 if dtype == torch.uint8 else 65535
        out = out.round_().clamp_(0, top).to(dtype)
    else:
        out = out.to(dtype)
    return out[..., 0] if squeeze else out.contiguous()


class _Remapper:
    """Samples an image on a precomputed grid: ``grid_sample`` on a GPU; on the CPU OpenCV's ``remap`` with
    fixed-point maps, which is ~4x faster than torch's grid_sample there and reads uint8/uint16 without a float
    copy (same bilinear sampling, 1/32-pixel weights). The maps are built lazily, per input size, once."""

    def __init__(self, grid: torch.Tensor, valid: torch.Tensor) -> None:
        self.grid, self.valid = grid, valid
        self._maps: dict = {}

    def _cv_maps(self, h: int, w: int):
        key = (h, w)
        if key not in self._maps:
            import cv2

            g = self.grid[0].cpu().double().numpy()
            # grid_sample's align_corners=False: -1 is the outer edge of the first pixel; clamping into the image
            # is its padding_mode="border"; invalid pixels point far outside and read the constant 0
            mx = np.clip((g[..., 0] + 1) * w / 2 - 0.5, 0, w - 1)
            my = np.clip((g[..., 1] + 1) * h / 2 - 0.5, 0, h - 1)
            bad = ~self.valid.cpu().numpy()
            mx[bad], my[bad] = -1000.0, -1000.0
            self._maps[key] = cv2.convertMaps(mx.astype(np.float32), my.astype(np.float32), cv2.CV_16SC2)
        return self._maps[key]

    @torch.no_grad()
    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.grid.device.type != "cpu" or img.device.type != "cpu" or img.dtype not in _CV_DTYPES:
            return _sample(img, self.grid, self.valid)
        import cv2

        m1, m2 = self._cv_maps(int(img.shape[0]), int(img.shape[1]))
        src = np.ascontiguousarray(img.numpy())
        out = cv2.remap(src, m1, m2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return torch.from_numpy(out)


_CV_DTYPES = (torch.uint8, torch.uint16, torch.float32)


class FisheyeProjector(_Remapper):
    """Equirect eye -> equidistant fisheye eye on the processing device, the grid built once per geometry.

    ``__call__``: (H, W[, C]) equirect eye (uint8/uint16 colour or float alpha) -> (size, size[, C]), same dtype.
    """

    def __init__(self, size: int, fov_deg: int = 180, src_fov_deg: float = 180.0, device="cpu") -> None:
        player_tag(fov_deg)  # validates
        self.size, self.fov_deg, self.src_fov_deg = int(size), int(fov_deg), float(src_fov_deg)
        self.device = torch.device(device)
        super().__init__(*fisheye_grid(self.size, self.fov_deg, self.src_fov_deg, self.device))


class EquirectProjector(_Remapper):
    """Fisheye eye -> equirect eye (the inverse; tests and the round-trip check use it)."""

    def __init__(self, height: int, width: int, fov_deg: int = 180, src_fov_deg: float = 180.0, device="cpu") -> None:
        super().__init__(*equirect_grid(int(height), int(width), float(fov_deg), float(src_fov_deg), device))


def _disk(side: int, device) -> torch.Tensor:
    c = _centres(side, device)
    return (c[:, None] ** 2 + c[None, :] ** 2) <= 1.0


def _layout(height: int, width: int, a: int) -> list[tuple[str, slice, slice, slice, slice]]:
    """(eye, rows in the alpha square, cols in the alpha square, frame rows, frame cols) of the six pieces."""
    h = a // 2
    H, W = height, width
    mid = W // 2
    top, bottom = slice(0, h), slice(H - h, H)
    lo, hi = slice(h, a), slice(0, h)  # lower / upper half of the alpha square
    return [
        ("left", lo, slice(0, a), top, slice(mid - h, mid + h)),
        ("left", hi, slice(0, a), bottom, slice(mid - h, mid + h)),
        ("right", lo, lo, top, slice(0, h)),
        ("right", hi, lo, bottom, slice(0, h)),
        ("right", lo, hi, top, slice(W - h, W)),
        ("right", hi, hi, bottom, slice(W - h, W)),
    ]


@torch.no_grad()
def pack_alpha(frame: torch.Tensor, alpha_left: torch.Tensor, alpha_right: torch.Tensor) -> torch.Tensor:
    """Paste both eyes' alpha (fisheye, (S, S) float in [0, 1]) into the corners of the SBS fisheye ``frame``.

    ``frame`` (S, 2S, 3) uint8 or uint16 is modified in place and returned; the alpha goes into all three
    channels (grey), at the frame's full code range, inside each piece's disk only.
    """
    H, W = frame.shape[:2]
    if W != 2 * H:
        raise ValueError(f"a passthrough frame is two square eyes side by side, got {W}x{H}")
    top = 255.0 if frame.dtype == torch.uint8 else 65535.0
    a = alpha_side(H)
    disk = _disk(a, frame.device)
    small = {}
    for eye, al in (("left", alpha_left), ("right", alpha_right)):
        x = al.to(frame.device, torch.float32).clamp(0, 1)[None, None]
        s = F.interpolate(x, size=(a, a), mode="area")[0, 0] * disk
        small[eye] = (s * top).round_().to(frame.dtype)
    for eye, ar, ac, fr, fc in _layout(H, W, a):
        m = disk[ar, ac][..., None]
        region = frame[fr, fc]
        piece = small[eye][ar, ac][..., None].expand(-1, -1, frame.shape[2])
        region.copy_(torch.where(m, piece, region))  # (index_put has no uint16 kernel)
    return frame


@torch.no_grad()
def unpack_alpha(frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of :func:`pack_alpha`: (left, right) alpha squares (a, a) float in [0, 1] from the corners
    (mean of the three channels; zero outside the disk). Upscale them to the eye size to compare."""
    H, W = frame.shape[:2]
    top = 255.0 if frame.dtype == torch.uint8 else 65535.0
    a = alpha_side(H)
    disk = _disk(a, frame.device)
    out = {e: torch.zeros((a, a), dtype=torch.float32, device=frame.device) for e in ("left", "right")}
    for eye, ar, ac, fr, fc in _layout(H, W, a):
        out[eye][ar, ac] = frame[fr, fc].float().mean(dim=2) / top
    return out["left"] * disk, out["right"] * disk


def passthrough_spherical(fov_deg: int) -> dict:
    """What the finalizer writes into a passthrough file: st3d left-right and an sv3d whose projection is a mesh
    (``mshp``) of the same equidistant fisheye, the only way Spherical Video V2 describes a fisheye (an equirect
    box would make YouTube-style players unwrap the circles wrongly). DeoVR/HereSphere read the filename tag."""
    return {"stereo": "left-right", "projection": "fisheye", "fov_deg": float(fov_deg)}


class PassthroughPacker:
    """Both VR180 equirect eyes + their alpha -> one alpha-packed fisheye SBS frame (S x 2S), on the device.

    ``size`` is the fisheye eye side (the source eye height, made even for 4:2:0 encoders). The colour inside
    the circles is the source's (decontaminated in the edge band when asked); outside them black, and the
    corners carry the alpha.
    """

    def __init__(self, size: int, fov_deg: int = 180, src_fov_deg: float = 180.0, device="cpu") -> None:
        size = int(size) - int(size) % 2
        if size < 8:
            raise ValueError(f"fisheye eye size {size} is too small")
        self.size = size
        self.projector = FisheyeProjector(size, fov_deg, src_fov_deg, device)

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of the packed frame."""
        return 2 * self.size, self.size

    @torch.no_grad()
    def __call__(self, left: torch.Tensor, right: torch.Tensor, alpha_left: torch.Tensor,
                 alpha_right: torch.Tensor) -> torch.Tensor:
        S = self.size
        dev = self.projector.device
        out = torch.empty((S, 2 * S, left.shape[2]), dtype=left.dtype, device=dev)
        out[:, :S] = self.projector(left)
        out[:, S:] = self.projector(right)
        pack_alpha(out, self.projector(alpha_left.float()), self.projector(alpha_right.float()))
        return out
