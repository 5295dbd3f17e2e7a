"""Passthrough file round trip at the module level: pack, encode HEVC, join with the source's audio, decode,
unpack the corners, reproject back to equirect and compare with the alpha that went in."""
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.synth import tone, write_video
from vr180matte.io.finalize import audio_packets_digest, join_segments, verify_output
from vr180matte.io.probe import probe
from vr180matte.io.reader import FrameReader
from vr180matte.io.spherical import read_spherical
from vr180matte.io.writer import SegmentWriter
from vr180matte.matte.fisheye import (
    EquirectProjector,
    PassthroughPacker,
    passthrough_spherical,
    player_tag,
    unpack_alpha,
)

E = 192  # eye side
N = 4


def _alpha(i: int, shift: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:E, 0:E].astype(np.float64)
    d = np.sqrt(((xx - 90 - 3 * i - shift) / 40) ** 2 + ((yy - 100) / 70) ** 2)
    return np.clip((1.0 - d) * 12 + 0.5, 0, 1)  # an upright ellipse with a soft edge


def _frame(i: int) -> np.ndarray:
    yy, xx = np.mgrid[0:E, 0:E]
    bg = np.stack([xx * 255 // E, yy * 255 // E, np.full_like(xx, 90)], -1).astype(np.float64)
    person = np.array([230.0, 180.0, 140.0])
    eyes = []
    for shift in (0, -6):
        a = _alpha(i, shift)[..., None]
        eyes.append(person * a + bg * (1 - a))
    return np.clip(np.concatenate(eyes, 1).round(), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("fov", [180, 190])
def test_passthrough_round_trip(tmp_path, fov):
    src = write_video(tmp_path / "clip.mp4", _frame, n=N, fps=30, audio=tone(N / 30 + 0.2), options={"crf": "10"})
    info = probe(src)
    packer = PassthroughPacker(E, fov)
    seg = tmp_path / "seg.mp4"
    expected = []
    with SegmentWriter(seg, "hevc", *packer.frame_size, info.time_base, info.fps, crf=16, preset="ultrafast") as w:
        for df in FrameReader(src, info):
            rgb = torch.from_numpy(df.rgb)
            al, ar = (torch.from_numpy(_alpha(df.index, s)).float() for s in (0, -6))
            packed = packer(rgb[:, :E], rgb[:, E:], al, ar)
            expected.append(packed.numpy().copy())
            w.write(packed.numpy(), df.pts, df.index, duration=df.duration)
    out = tmp_path / f"clip{player_tag(fov)}.mp4"
    join_segments([seg], out, src, True, info.time_base, spherical=passthrough_spherical(fov))

    assert out.name.endswith(f"_FISHEYE{fov}_alpha.mp4")
    assert audio_packets_digest(out) == audio_packets_digest(src) != []
    v = verify_output(out, info.frame_count, info.duration_s)
    assert v["frames_ok"] and v["duration_ok"]
    meta = read_spherical(out)
    assert meta is not None and meta.stereo == "left-right" and meta.projection == "mesh"

    back = EquirectProjector(E, E, fov)
    yy, xx = np.mgrid[0:E, 0:E]
    c = (np.arange(E) + 0.5) * 2 / E - 1
    # the picture: inside the circle the 180-degree source fills (180/fov of the radius), away from its hard edge
    # to black where 4:2:0 chroma bleeds across
    inside = (c[:, None] ** 2 + c[None, :] ** 2) <= (0.95 * 180 / fov) ** 2
    circles = np.concatenate([inside, inside], 1)
    with av.open(str(out)) as container:
        s = container.streams.video[0]
        assert s.codec_context.name == "hevc" and (s.width, s.height) == (2 * E, E)
        for i, frame in enumerate(container.decode(s)):
            img = frame.to_ndarray(format="rgb24")
            # picture inside the image circles: the reprojected source, within codec tolerance (CRF 16, 4:2:0)
            diff = np.abs(img.astype(int) - expected[i].astype(int))[circles]
            assert diff.mean() < 3.0 and np.percentile(diff, 99) < 12, (diff.mean(), np.percentile(diff, 99))
            # alpha from the corners -> eye size -> equirect: the alpha that went in
            ul, ur = unpack_alpha(torch.from_numpy(img))
            for small, shift in ((ul, 0), (ur, -6)):
                fish = F.interpolate(small[None, None], size=(E, E), mode="bilinear", align_corners=False)[0, 0]
                eq = back(fish).numpy() > 0.5
                truth = _alpha(i, shift) > 0.5
                iou = (eq & truth).sum() / (eq | truth).sum()
                assert iou >= 0.95, (i, shift, iou)
