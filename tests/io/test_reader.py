"""FrameReader and split_eyes on real encoded clips (H.264, HEVC 8/10-bit, VFR real media)."""
from __future__ import annotations

import dataclasses
import time
from fractions import Fraction

import av
import numpy as np
import pytest

from synth import gradient_sbs, media, write_video
from vr180matte.io.errors import InputError
from vr180matte.io.probe import probe
from vr180matte.io.reader import FrameReader, split_eyes


def _frame(i: int) -> np.ndarray:
    """64x32 SBS with a per-frame brightness (so a wrong index shows in the pixels)."""
    f = gradient_sbs(i, 64, 32)
    f[:4, :4] = (i * 9) % 256
    return f


@pytest.fixture(scope="module")
def gop_clip(tmp_path_factory):
    """40 frames, keyframe every 12, B-frames on: a start at 17 is mid-GOP and needs reordering right."""
    p = tmp_path_factory.mktemp("reader") / "gop.mp4"
    return write_video(p, _frame, n=40, fps=Fraction(30000, 1001), options={"g": "12", "bf": "2", "crf": "10"})


def test_sequential_read_exact(gop_clip):
    info = probe(gop_clip)
    frames = list(FrameReader(gop_clip, info))
    assert [f.index for f in frames] == list(range(40))
    assert [f.pts for f in frames] == info.frame_pts.tolist()
    for f in frames:
        assert f.rgb.shape == (32, 64, 3) and f.rgb.dtype == np.uint8
        assert abs(float(f.rgb[:4, :4].mean()) - (f.index * 9) % 256) < 6
    assert frames[3].time_s == pytest.approx(3 * 1001 / 30000, abs=1e-6)


@pytest.mark.parametrize("start,end", [(17, 23), (12, 14), (35, 40), (1, 2)])
def test_seek_is_exact(gop_clip, start, end):
    info = probe(gop_clip)
    seq = {f.index: f.rgb for f in FrameReader(gop_clip, info)}
    part = list(FrameReader(gop_clip, info, start=start, end=end))
    assert [f.index for f in part] == list(range(start, end))
    for f in part:
        assert np.array_equal(f.rgb, seq[f.index])


def test_read_ahead_bound(gop_clip):
    info = probe(gop_clip)
    reader = FrameReader(gop_clip, info, read_ahead=3)
    consumed = 0
    lead = []
    for f in reader:
        if consumed == 0:
            # a consumer slower than any decoder: wait until the decoder is as far ahead as it may get (a logical
            # condition with a generous deadline, not a sleep that assumes the machine's speed)
            deadline = time.monotonic() + 60
            while reader.max_queued < 3 and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(0.05)  # room to run past the bound, if it would
        consumed += 1
        lead.append(reader.frames_decoded - consumed)
    assert consumed == 40
    assert reader.max_queued == 3  # it did read ahead, up to the bound and no further
    assert 2 <= max(lead) <= 3 + 1  # queue + the one frame the decoder holds while waiting


def test_early_close_stops_thread(gop_clip):
    info = probe(gop_clip)
    with FrameReader(gop_clip, info, read_ahead=2) as reader:
        for f in reader:
            if f.index == 2:
                break
    assert not reader._thread.is_alive()
    assert reader.frames_decoded <= 2 + 1 + 2 + 1


def _faststart(src, dst):
    """Remux with the index (moov) first, as web/camera files often are: cutting the file keeps the index."""
    with av.open(str(src)) as i, av.open(str(dst), "w", options={"movflags": "+faststart"}) as o:
        v = o.add_stream_from_template(i.streams.video[0])
        for pkt in i.demux(i.streams.video[0]):
            if pkt.size:
                pkt.stream = v
                o.mux(pkt)
    return dst


def test_truncated_file_raises(tmp_path):
    full = _faststart(write_video(tmp_path / "full.mp4", _frame, n=30, options={"crf": "0"}), tmp_path / "fs.mp4")
    info = probe(full)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as e:
        probe(cut)  # the index promises 30 frames, half are gone: caught before any processing
    assert "truncated" in str(e.value)
    # the reader's own check, for files that change or break after probing
    bad = dataclasses.replace(info, path=str(cut))
    got = []
    with pytest.raises(InputError) as e:
        for f in FrameReader(cut, bad):
            got.append(f.index)
    msg = str(e.value)
    assert "truncated or corrupt at frame" in msg and "of 30" in msg and "\n" not in msg
    assert 0 < len(got) < 30 and got == list(range(len(got)))
    assert f"at frame {len(got)} of 30" in msg


def test_reader_stops_short_raises(tmp_path):
    """A file with fewer frames than the probe promised (e.g. replaced between probe and decode)."""
    long = write_video(tmp_path / "long.mp4", _frame, n=20)
    short = write_video(tmp_path / "short.mp4", _frame, n=12)
    info = dataclasses.replace(probe(long), path=str(short), frame_pts=probe(short).frame_pts, frame_count=20)
    info.frame_pts = np.concatenate([info.frame_pts, info.frame_pts[-1] + 512 * np.arange(1, 9)])
    got = []
    with pytest.raises(InputError) as e:
        for f in FrameReader(short, info):
            got.append(f.index)
    assert got == list(range(12))
    assert "truncated or corrupt at frame 12 of 20" in str(e.value)


def test_vfr_every_frame_kept():
    path = media("talking_heads_audio_videoretalking", "face_1.mp4")
    info = probe(path)
    frames = list(FrameReader(path, info, read_ahead=4))
    assert len(frames) == info.frame_count == 135
    assert [f.pts for f in frames] == info.frame_pts.tolist()
    assert sum(f.duration for f in frames) == 93696  # every frame keeps its own duration (512 or 1024 ticks)


def test_hevc_10bit_decodes_to_rgb24(tmp_path):
    src = [_frame(i) for i in range(6)]
    path = write_video(tmp_path / "h10.mp4", src, codec="libx265", pix_fmt="yuv420p10le", options={"crf": "4"})
    info = probe(path)
    frames = list(FrameReader(path, info, start=2))
    assert [f.index for f in frames] == [2, 3, 4, 5]
    for f in frames:
        assert f.rgb.dtype == np.uint8 and f.rgb.shape == (32, 64, 3)
        assert np.abs(f.rgb.astype(int) - src[f.index]).mean() < 8  # 4:2:0 chroma on a 64x32 texture
        assert abs(float(f.rgb[:4, :4].mean()) - (f.index * 9) % 256) < 6  # the right frame


def test_hevc_10bit_high_bit_depth_decodes_to_rgb48(tmp_path):
    # 10-bit codes in a slow ramp: more than 256 distinct values per channel only survive a 16-bit decode
    def ramp(i):
        return np.repeat(np.linspace(0, 255, 64)[None, :, None], 32, 0).repeat(3, 2).astype(np.uint8)

    path = write_video(tmp_path / "h10.mp4", ramp, n=3, codec="libx265", pix_fmt="yuv420p10le", options={"crf": "4"})
    info = probe(path)
    assert info.bit_depth == 10
    frames = list(FrameReader(path, info, high_bit_depth=True))
    assert all(f.rgb.dtype == np.uint16 and f.rgb.shape == (32, 64, 3) for f in frames)
    assert np.abs(frames[0].rgb.astype(int) / 257 - ramp(0)).mean() < 2
    # an 8-bit source stays 8-bit even when 16-bit is asked for
    p8 = write_video(tmp_path / "h8.mp4", ramp, n=2)
    assert next(iter(FrameReader(p8, probe(p8), high_bit_depth=True))).rgb.dtype == np.uint8


def test_hevc_8bit(tmp_path):
    path = write_video(tmp_path / "h8.mp4", _frame, n=8, codec="libx265")
    info = probe(path)
    assert [f.index for f in FrameReader(path, info, start=5)] == [5, 6, 7]


def test_squeezed_web_copy(tmp_path):
    path = write_video(tmp_path / "web.mp4", lambda i: gradient_sbs(i, 960, 540), n=2)
    info = probe(path)
    (f,) = list(FrameReader(path, info, end=1))
    left, right = split_eyes(f.rgb, "sbs")
    assert left.shape == right.shape == (540, 480, 3)


def test_maryoculus_mid_clip():
    path = media("equirect360_sbs_stereo_cg_maryoculus", "MaryOculus.mp4")
    info = probe(path)
    frames = list(FrameReader(path, info, start=30, end=32))
    assert [f.index for f in frames] == [30, 31] and frames[0].rgb.shape == (1024, 2048, 3)
    assert frames[0].pts == info.frame_pts[30]


def test_split_eyes_views():
    rgb = np.arange(4 * 8 * 3, dtype=np.uint8).reshape(4, 8, 3)
    left, right = split_eyes(rgb, "sbs")
    assert np.shares_memory(left, rgb) and np.shares_memory(right, rgb)
    assert np.array_equal(left, rgb[:, :4]) and np.array_equal(right, rgb[:, 4:])
    rl = split_eyes(rgb, "sbs_rl")
    assert np.array_equal(rl[0], rgb[:, 4:]) and np.array_equal(rl[1], rgb[:, :4])
    top, bottom = split_eyes(rgb, "tb")
    assert top.shape == (2, 8, 3) and np.array_equal(bottom, rgb[2:])


def test_split_eyes_odd_width():
    with pytest.raises(InputError) as e:
        split_eyes(np.zeros((4, 7, 3), np.uint8), "sbs")
    assert "odd" in str(e.value) and "\n" not in str(e.value)


def test_bad_range(gop_clip):
    info = probe(gop_clip)
    with pytest.raises(ValueError):
        FrameReader(gop_clip, info, start=5, end=41)
