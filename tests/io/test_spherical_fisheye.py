"""Spherical Video V2 mesh projection (mshp) for the fisheye passthrough file."""
import math

import av
import numpy as np
import pytest
import torch

from synth import write_video
from vr180matte.io.spherical import fisheye_mesh, mshp_payload, read_mesh, read_spherical, write_spherical
from vr180matte.matte.fisheye import fisheye_grid


@pytest.mark.parametrize("fov", [180, 190])
def test_mesh_round_trips_through_the_box_encoding(fov):
    verts, tris = fisheye_mesh(fov)
    v, lists = read_mesh(mshp_payload(fov))
    assert v.shape == (len(verts), 5) and len(lists) == 1
    assert np.allclose(v, np.array(verts, dtype=np.float32))
    assert lists[0].tolist() == tris


@pytest.mark.parametrize("fov", [180, 190])
def test_mesh_is_the_same_fisheye_the_packer_writes(fov):
    """Every vertex's texture position, looked up in the packer's sampling grid, points where the vertex does."""
    v, lists = read_mesh(mshp_payload(fov))
    S = 512
    grid, _valid = fisheye_grid(S, fov, src_fov_deg=360.0)  # 360: the grid's lon/lat are plain angles
    lon_all, lat_all = grid[0, ..., 0].double() * math.pi, grid[0, ..., 1].double() * (math.pi / 2)
    for x, y, z, u, vv in v[:: 37]:
        r = 2 * math.hypot(u - 0.5, vv - 0.5)
        if r > 0.98:  # the outermost pixels straddle the circle
            continue
        # equidistant: angle off the forward axis (-Z) proportional to the radius in the circle
        assert math.degrees(math.acos(-z)) == pytest.approx(r * fov / 2, abs=1e-3)
        col, row = min(S - 1, int(u * S)), min(S - 1, int((1 - vv) * S))  # texture v points up, image rows down
        lon, lat = float(lon_all[row, col]), float(lat_all[row, col])
        # the grid's direction: x right, y down, z forward; the mesh's: x right, y up, -z forward
        d = (math.cos(lat) * math.sin(lon), math.sin(lat), math.cos(lat) * math.cos(lon))
        assert np.dot(d, (x, -y, -z)) > math.cos(math.radians(1.5))


def test_triangles_wind_counter_clockwise_seen_from_the_centre():
    v, lists = read_mesh(mshp_payload(190))
    p = v[:, :3]
    t = lists[0].reshape(-1, 3)
    a, b, c = p[t[:, 0]], p[t[:, 1]], p[t[:, 2]]
    normal = np.cross(b - a, c - a)
    assert (np.einsum("ij,ij->i", normal, a) < 0).all()  # every face turns toward the viewer at the origin


def test_fisheye_metadata_in_a_real_file(tmp_path):
    path = write_video(tmp_path / "f.mp4", lambda i: np.full((64, 128, 3), 90, np.uint8), n=3)
    write_spherical(path, "left-right", "fisheye", 190)
    meta = read_spherical(path)
    assert meta.stereo == "left-right" and meta.projection == "mesh"
    with av.open(str(path)) as c:
        assert len(list(c.decode(video=0))) == 3  # still a valid file
