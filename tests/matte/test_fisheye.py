"""Equirect <-> fisheye reprojection and the DeoVR/HereSphere corner alpha packing."""
import math

import numpy as np
import pytest
import torch

from vr180matte.matte.fisheye import (
    EquirectProjector,
    FisheyeProjector,
    alpha_side,
    fisheye_grid,
    pack_alpha,
    player_tag,
    unpack_alpha,
)


def _dot_equirect(size: int, lon_deg: float, lat_deg: float) -> torch.Tensor:
    """A VR180 equirect eye (size x size covers 180 x 180 degrees) with a bright blob at (lon, lat)."""
    c = (torch.arange(size, dtype=torch.float64) + 0.5) / size * 180.0 - 90.0
    lat, lon = torch.meshgrid(c, c, indexing="ij")
    d = (lon - lon_deg) ** 2 + (lat - lat_deg) ** 2
    return torch.exp(-d / 8.0).to(torch.float32)


def _peak(img: torch.Tensor) -> tuple[float, float]:
    """Intensity-weighted centre (x, y) in [-1, 1] coordinates."""
    n = img.shape[0]
    c = (torch.arange(n, dtype=torch.float64) + 0.5) * 2 / n - 1
    w = img.double() / img.sum()
    return float((w.sum(0) * c).sum()), float((w.sum(1) * c).sum())


@pytest.mark.parametrize("fov", [180, 190])
def test_points_land_at_their_equidistant_radius(fov):
    # lon 45 degrees right on the horizon: the fisheye puts it at r = 45 / (fov / 2) along +x;
    # lat 30 degrees down: r = 30 / (fov / 2) along +y (image y points down)
    proj = FisheyeProjector(256, fov)
    x, y = _peak(proj(_dot_equirect(256, 45.0, 0.0)))
    assert x == pytest.approx(45.0 / (fov / 2), abs=0.01) and abs(y) < 0.01
    x, y = _peak(proj(_dot_equirect(256, 0.0, 30.0)))
    assert y == pytest.approx(30.0 / (fov / 2), abs=0.01) and abs(x) < 0.01


def test_360_source_eye_maps_by_its_own_field():
    # a 360-degree equirect eye (2:1, lon +-180): a point at lon 45 still lands at r = 45 / 90 in a 180 fisheye
    c_lon = (torch.arange(512, dtype=torch.float64) + 0.5) / 512 * 360.0 - 180.0
    c_lat = (torch.arange(256, dtype=torch.float64) + 0.5) / 256 * 180.0 - 90.0
    lat, lon = torch.meshgrid(c_lat, c_lon, indexing="ij")
    eye = torch.exp(-((lon - 45.0) ** 2 + (lat + 20.0) ** 2) / 8.0).to(torch.float32)
    x, y = _peak(FisheyeProjector(256, 180, src_fov_deg=360.0)(eye))
    d = math.degrees(math.acos(math.cos(math.radians(20)) * math.cos(math.radians(45))))  # angle off the axis
    assert math.hypot(x, y) == pytest.approx(d / 90.0, abs=0.01) and y < 0 < x


def test_190_leaves_the_ring_outside_the_source_black():
    _grid, valid = fisheye_grid(400, 190)
    c = (torch.arange(400, dtype=torch.float64) + 0.5) * 2 / 400 - 1
    r = torch.sqrt(c[:, None] ** 2 + c[None, :] ** 2)
    # inside 180/190 of the radius the whole sphere half is seen; between 180/190 and 1 there is no source
    assert bool(valid[r < 180 / 190 - 0.01].all())
    assert not bool(valid[(r > 180 / 190 + 0.01)].any())
    out = FisheyeProjector(400, 190)(torch.full((300, 300, 3), 200, dtype=torch.uint8))
    assert out.dtype == torch.uint8 and int(out[r > 0.96].max()) == 0 and int(out[r < 0.9].min()) == 200


def test_equirect_fisheye_equirect_round_trip_is_close():
    rng = np.random.default_rng(0)
    # smooth colour field (low frequencies survive two bilinear resamplings)
    yy, xx = np.mgrid[0:256, 0:256] / 256.0
    img = np.stack([128 + 100 * np.sin(2 * math.pi * (xx * k + yy * (3 - k)) + rng.random()) for k in (1, 2, 3)], -1)
    eye = torch.from_numpy(img.round().astype(np.uint16) * 257)  # 16-bit colour keeps its dtype
    fish = FisheyeProjector(384, 180)(eye)
    assert fish.dtype == torch.uint16
    back = EquirectProjector(256, 256, 180)(fish)
    err = (back.float() - eye.float()).abs()[16:-16, 16:-16] / 257
    assert float(err.mean()) < 1.5 and float(err.max()) < 12


def test_pack_unpack_round_trip_and_pictures_untouched():
    S = 300
    frame = torch.randint(0, 256, (S, 2 * S, 3), dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    inside = ((xx + 0.5 - S / 2) ** 2 + (yy + 0.5 - S / 2) ** 2) <= (S / 2) ** 2
    al = ((xx - S / 2).abs() < S / 6).float() * inside  # a vertical bar
    ar = ((yy - S / 2).abs() < S / 8).float() * inside  # a horizontal bar
    before = frame.clone()
    pack_alpha(frame, al, ar)
    # the image circles are untouched
    circles = torch.cat([inside, inside], dim=1)
    assert torch.equal(frame[circles], before[circles])
    # the six pieces came back together
    ul, ur = unpack_alpha(frame)
    a = alpha_side(S)
    assert ul.shape == (a, a)
    ref_l = torch.nn.functional.interpolate(al[None, None], size=(a, a), mode="area")[0, 0]
    ref_r = torch.nn.functional.interpolate(ar[None, None], size=(a, a), mode="area")[0, 0]
    c = (torch.arange(a) + 0.5) * 2 / a - 1
    disk = (c[:, None] ** 2 + c[None, :] ** 2) <= 1
    assert float((ul - ref_l * disk).abs().max()) <= 0.5 / 255 + 1e-6
    assert float((ur - ref_r * disk).abs().max()) <= 0.5 / 255 + 1e-6
    # orientation: the left bar is vertical, the right bar horizontal
    assert float(ul[:, a // 2].mean()) > 0.8 and float(ul[a // 2, :5].mean()) == 0
    assert float(ur[a // 2, :].mean()) > 0.8 and float(ur[:5, a // 2].mean()) == 0
    # where the pieces sit: left eye's lower half at the top of the centre seam, right eye's quadrants in the corners
    assert int(frame[0, S, 0]) == round(float(ref_l[a // 2, a // 2]) * 255)
    assert int(frame[S - 1, S, 0]) == round(float(ref_l[a // 2 - 1, a // 2]) * 255)


def test_player_tag():
    assert player_tag(190) == "_FISHEYE190_alpha"
    assert player_tag(180) == "_FISHEYE180_alpha"
    with pytest.raises(ValueError, match="fisheye_fov"):
        player_tag(200)


def test_pack_sixteen_bit_uses_the_full_code_range():
    S = 200
    frame = torch.zeros((S, 2 * S, 3), dtype=torch.uint16)
    ones = torch.ones((S, S))
    pack_alpha(frame, ones, ones * 0.5)
    ul, ur = unpack_alpha(frame)
    a = alpha_side(S)
    assert int(frame[0, S, 0]) == 65535 and int(frame[0, 0, 0]) == 32768
    assert float(ul[a // 2, a // 2]) == 1.0 and abs(float(ur[a // 2, a // 2]) - 0.5) < 1e-4


@pytest.mark.parametrize("dtype", [torch.uint8, torch.uint16, torch.float32])
def test_cpu_remap_matches_the_grid_sample_path(dtype):
    """The CPU path (OpenCV remap) and the GPU path (grid_sample, run here on the CPU) sample alike."""
    from vr180matte.matte.fisheye import _sample


    yy, xx = np.mgrid[0:200, 0:260] / 40.0
    base = np.stack([np.sin(xx) + np.cos(yy * 1.3), np.cos(xx + yy), np.sin(xx * yy / 3)], -1) * 0.25 + 0.5
    scale = {torch.uint8: 255, torch.uint16: 65535, torch.float32: 1.0}[dtype]
    img = torch.from_numpy(base * scale).to(dtype) if dtype != torch.float32 else torch.from_numpy(base).float()
    proj = FisheyeProjector(180, 190)
    fast = proj(img).double() / scale
    ref = _sample(img, proj.grid, proj.valid).double() / scale
    assert fast.dtype == ref.dtype and fast.shape == ref.shape
    assert float((fast - ref).abs().mean()) < 0.002 and float((fast - ref).abs().max()) < 0.02
    assert float(fast[~proj.valid].abs().max()) == 0.0 and float(fast[proj.valid].mean()) > 0.2
