"""yuva444p10le planes built in numpy (io/planes.py) against swscale's conversion of the same RGB(A) frame."""
from __future__ import annotations

import av
import numpy as np
import pytest

from vr180matte.io.planes import PlaneBuilder, _plane, supports


def _image(dtype, channels: int = 4, h: int = 70, w: int = 300) -> np.ndarray:
    rng = np.random.default_rng(3)
    top = np.iinfo(dtype).max
    img = rng.integers(0, top + 1, (h, w, channels), dtype=dtype)
    img[0] = 0  # black, white and the primaries, where rounding is most visible
    img[1] = top
    img[2, :, :3] = 0
    img[2, :100, 0] = img[2, 100:200, 1] = img[2, 200:, 2] = top
    if channels == 4:
        ramp = np.arange(w) * top // (w - 1)
        img[3, :, 3] = ramp.astype(dtype)
        if dtype == np.uint8:
            img[4, :256, 3] = np.arange(256)  # every 8-bit alpha value
    return img


def _swscale(img: np.ndarray, sws_colorspace: int | None) -> list[np.ndarray]:
    wide = img.dtype == np.uint16
    fmt = ("rgba64le" if wide else "rgba") if img.shape[2] == 4 else ("rgb48le" if wide else "rgb24")
    f = av.VideoFrame.from_ndarray(img, format=fmt)
    kw = {"dst_colorspace": sws_colorspace} if sws_colorspace else {}
    return [_plane(p).astype(np.int64) for p in f.reformat(format="yuva444p10le", **kw).planes]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("sws_colorspace", [None, 1, 5, 9])  # untagged (BT.601), BT.709, BT.601, BT.2020
def test_planes_match_swscale_within_one_code(dtype, sws_colorspace):
    """Tolerance: Y, U, V within one 10-bit code of swscale, and off by one on at most 10% of the samples;
    alpha bit-exact (the golden test hashes it)."""
    img = _image(dtype)
    ours = [_plane(p).astype(np.int64) for p in PlaneBuilder(300, 70, sws_colorspace).build(img).planes]
    ref = _swscale(img, sws_colorspace)
    for name, a, b in zip("YUV", ours[:3], ref[:3]):
        diff = np.abs(a - b)
        assert diff.max() <= 1, (name, diff.max())
        assert (diff > 0).mean() <= 0.10, (name, (diff > 0).mean())
    np.testing.assert_array_equal(ours[3], ref[3])
    assert ours[0][1].min() == ref[0][1].min()  # white's luma exactly (940, or swscale's 943 for 16-bit input)


def test_rgb_without_alpha_is_opaque():
    img = _image(np.uint8, channels=3)
    y, u, v, a = (_plane(p) for p in PlaneBuilder(300, 70).build(img).planes)
    assert (a == 1023).all()
    assert np.abs(y.astype(np.int64) - _swscale(img, None)[0]).max() <= 1


def test_the_frame_is_reused_and_refilled():
    b = PlaneBuilder(300, 70)
    first = b.build(_image(np.uint8))
    y_first = _plane(first.planes[0]).copy()
    second = b.build(np.zeros((70, 300, 4), np.uint8))
    assert second is first
    assert (_plane(second.planes[0]) == 64).all() and not (y_first == 64).all()  # black luma, refilled
    with pytest.raises(ValueError, match="300x70"):
        b.build(np.zeros((70, 200, 4), np.uint8))


def test_frames_are_cycled_and_filled_alike():
    one, ring = PlaneBuilder(300, 70), PlaneBuilder(300, 70, frames=3)
    images = [_image(np.uint8), np.zeros((70, 300, 4), np.uint8), _image(np.uint8)[::-1].copy(), _image(np.uint8)]
    got = []
    for img in images:
        a, b = one.build(img), ring.build(img)
        got.append(b)
        assert b is ring.frame
        for pa, pb in zip(a.planes, b.planes):
            np.testing.assert_array_equal(_plane(pa), _plane(pb))
    assert len({id(f) for f in got[:3]}) == 3 and got[3] is got[0]


def _buffers(builder: PlaneBuilder) -> list[int]:
    return [f.planes[0].buffer_ptr for f in builder._frames]


def test_a_frame_threaded_encoder_never_makes_a_refilled_frame_copy(tmp_path):
    """ProRes with 2 frame threads keeps at most 2 pictures in flight after a send returns: with threads + 1
    frames the writer's builder refills only released ones, so the buffers it allocated are never replaced by
    FFmpeg's copy. (With one frame they are replaced whenever a worker still holds the picture, which depends on
    the workers' timing, so that case is not asserted.)"""
    from fractions import Fraction

    from vr180matte.io.writer import SegmentWriter

    w = SegmentWriter(tmp_path / "x.mov", "prores4444", 300, 70, Fraction(1, 30), Fraction(30), threads=2)
    assert w.thread_type == "frame"
    builder = next(iter(w._av._builders.values()))
    assert len(builder._frames) == 3
    start = _buffers(builder)
    kept = []
    with w:
        for i in range(8):
            w.write(_image(np.uint8) // (i + 1), i, i)
            kept.append(_buffers(builder) == start)
    assert w.frames_written == 8
    assert all(kept)


def test_supports_only_yuva444p10le_rgb_images():
    img = np.zeros((4, 4, 4), np.uint8)
    assert supports("yuva444p10le", img) and supports("yuva444p10le", img[..., :3].astype(np.uint16))
    assert not supports("yuv420p", img) and not supports("yuva444p10le", img.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_colour_and_alpha_apart_give_the_interleaved_frames_planes(dtype):
    """A straight-alpha output handed over as the decoded frame's view and an alpha plane (io/picture.py) gives
    the very planes of the interleaved RGBA frame; the colour may be a strided eye view of a wider frame."""
    from vr180matte.io.picture import RgbAlpha

    img = _image(dtype)
    wide = np.concatenate([img[..., :3], img[..., :3][:, ::-1]], axis=1)  # an SBS frame; the left eye is a view
    apart = RgbAlpha(wide[:, :300], np.ascontiguousarray(img[..., 3]))
    assert not apart.rgb.flags.c_contiguous and supports("yuva444p10le", apart)
    want = [_plane(p).copy() for p in PlaneBuilder(300, 70).build(img).planes]
    got = [_plane(p) for p in PlaneBuilder(300, 70).build(apart).planes]
    for name, a, b in zip("YUVA", got, want):
        np.testing.assert_array_equal(a, b, err_msg=name)
