"""probe(): real media from ../shared/media and synthetic clips encoded by the test."""
from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from synth import gradient_sbs, media, tone, write_audio_only, write_video
from vr180matte.io.errors import InputError
from vr180matte.io.probe import probe

HEADS = media("talking_heads_audio_videoretalking")


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 300, msg
    return msg


@pytest.mark.parametrize(
    "name,frames,fps,size",
    [("face_1.mp4", 135, Fraction(1350, 61), 700), ("face_2.mp4", 125, Fraction(25), 844),
     ("face_3.mp4", 125, Fraction(25), 590), ("face_4.mp4", 199, Fraction(30), 700), ("face_5.mp4", 122, Fraction(25), 524)],
)
def test_talking_heads_have_audio(name, frames, fps, size):
    info = probe(HEADS / name)
    assert (info.width, info.height) == (size, size)
    assert info.frame_count == frames
    assert info.fps == fps
    assert info.codec == "h264" and info.pix_fmt == "yuv420p" and info.bit_depth == 8
    assert len(info.audio_streams) == 1
    a = info.audio_streams[0]
    assert (a.codec, a.sample_rate, a.channels) == ("aac", 44100, a.channels) and a.channels >= 1
    assert a.duration_s == pytest.approx(info.duration_s, abs=0.3)
    assert info.is_vfr == (name == "face_1.mp4")
    assert len(info.frame_pts) == frames and np.all(np.diff(info.frame_pts) > 0)


def test_face1_is_variable_frame_rate():
    info = probe(HEADS / "face_1.mp4")
    assert info.is_vfr
    steps = set(np.diff(info.frame_pts).tolist())
    assert steps == {512, 1024}  # 1/30 s and 2/30 s frames in a 1/15360 time base
    assert info.duration_s == pytest.approx(6.1, abs=1e-9)


def test_maryoculus_sbs_geometry():
    info = probe(media("equirect360_sbs_stereo_cg_maryoculus", "MaryOculus.mp4"))
    assert (info.width, info.height) == (2048, 1024)
    assert (info.eye_width, info.eye_height) == (1024, 1024)
    assert info.frame_count == 120 and info.fps == 24
    assert not info.is_vfr  # 42/41 ms millisecond-rounded timestamps are a constant rate
    assert info.audio_streams == []


def test_davis_derived_mp4():
    info = probe(media("davis2016_parkour", "derived_frames_24fps.mp4"))
    assert (info.width, info.height, info.frame_count, info.fps) == (854, 480, 100, 24)
    assert info.duration_s == pytest.approx(100 / 24)


def test_ntsc_fraction_kept_exact(tmp_path):
    path = write_video(tmp_path / "ntsc.mp4", lambda i: gradient_sbs(i, 64, 32), n=12, fps=Fraction(30000, 1001))
    info = probe(path)
    assert info.fps == Fraction(30000, 1001)
    assert info.frame_count == 12
    assert info.duration_s == pytest.approx(12 * 1001 / 30000, abs=1e-6)
    d = json.loads(json.dumps(info.to_json()))
    assert d["fps"] == "30000/1001" and d["frame_count"] == 12 and "frame_pts" not in d


def test_hevc_10bit(tmp_path):
    path = write_video(tmp_path / "h10.mp4", lambda i: gradient_sbs(i, 64, 32), n=5, codec="libx265", pix_fmt="yuv420p10le")
    info = probe(path)
    assert (info.codec, info.pix_fmt, info.bit_depth, info.frame_count) == ("hevc", "yuv420p10le", 10, 5)


def test_frame_count_counted_when_container_has_none(tmp_path):
    path = write_video(tmp_path / "clip.mkv", lambda i: gradient_sbs(i, 64, 32), n=9)
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 0  # Matroska does not store a frame count
    assert probe(path).frame_count == 9


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as e:
        probe(tmp_path / "nope.mp4")
    assert "not found" in _one_line(e)


def test_text_file_is_not_a_video(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("hello, not a video\n" * 50)
    with pytest.raises(InputError) as e:
        probe(p)
    assert "not a video file" in _one_line(e)


def test_audio_only_file(tmp_path):
    p = write_audio_only(tmp_path / "a.m4a")
    with pytest.raises(InputError) as e:
        probe(p)
    assert "no video stream" in _one_line(e)


@pytest.mark.parametrize("faststart", [False, True])
def test_truncated_file(tmp_path, faststart):
    opts = {"movflags": "+faststart"} if faststart else None
    full = tmp_path / "full.mp4"
    # movflags is a muxer option; write_video passes options to the encoder, so remux for faststart
    write_video(full, lambda i: gradient_sbs(i, 64, 32), n=20)
    if faststart:
        fs = tmp_path / "fs.mp4"
        with av.open(str(full)) as src, av.open(str(fs), "w", options=opts) as dst:
            o = dst.add_stream_from_template(src.streams.video[0])
            for pkt in src.demux(src.streams.video[0]):
                if pkt.size:
                    pkt.stream = o
                    dst.mux(pkt)
        full = fs
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as e:
        probe(cut)
    assert "truncated" in _one_line(e)


def test_spherical_metadata_read(tmp_path):
    import vr180matte.io.spherical as spherical
    path = write_video(tmp_path / "vr.mp4", lambda i: gradient_sbs(i, 64, 32), n=3)
    assert probe(path).layout is None
    spherical.write_spherical(path, stereo="left-right", projection="equirectangular", fov_deg=180.0)
    info = probe(path)
    assert (info.layout, info.projection, info.fov_deg) == ("sbs", "equirectangular", 180.0)
    assert (info.eye_width, info.eye_height) == (32, 32)
    tb = tmp_path / "tb.mp4"
    shutil.copy(path, tb)
    spherical.write_spherical(tb, stereo="top-bottom", projection="equirectangular", fov_deg=180.0)
    info = probe(tb)
    assert info.layout == "tb" and (info.eye_width, info.eye_height) == (64, 16)


def _info(tmp_path, w=64, h=32, layout=None):
    info = probe(write_video(tmp_path / f"c{w}x{h}.mp4", lambda i: np.zeros((h, w, 3), np.uint8), n=2,
                             codec="libx264rgb" if w % 2 or h % 2 else "libx264",
                             pix_fmt="rgb24" if w % 2 or h % 2 else "yuv420p"))
    info.layout = layout
    return info


def test_resolve_layout(tmp_path):
    from vr180matte.io.probe import resolve_layout

    info = _info(tmp_path)
    assert resolve_layout(info) == "sbs"
    assert resolve_layout(info, "tb") == "tb"
    info.layout = "sbs_rl"
    assert resolve_layout(info) == "sbs_rl"
    info.layout = "tb"
    assert resolve_layout(info) == "tb"  # auto follows top-bottom metadata, as `probe` reports it
    assert resolve_layout(info, "sbs") == "sbs"  # the user overrides
    info.layout = "mono"
    with pytest.raises(InputError) as e:
        resolve_layout(info)
    assert "input.layout=sbs or tb" in _one_line(e)
    assert resolve_layout(info, "mono") == "mono"  # the user overrides
    with pytest.raises(InputError):
        resolve_layout(info, "diagonal")


def test_odd_width_is_not_sbs(tmp_path):
    from vr180matte.io.probe import resolve_layout

    info = _info(tmp_path, w=63, h=32)
    assert info.width == 63
    with pytest.raises(InputError) as e:
        resolve_layout(info)
    assert "odd" in _one_line(e) and "mono" not in _one_line(e)  # mono is refused later: never suggest it
    assert resolve_layout(info, "tb") == "tb"  # the hint it gives instead works for an odd-width top-bottom


def _remux(src: Path, dst: Path) -> Path:
    """Stream-copy every audio/video stream of ``src`` into ``dst`` (container from the suffix)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        streams = [s for s in inp.streams if s.type in ("video", "audio")]
        mapping = {s.index: out.add_stream_from_template(s) for s in streams}
        for packet in inp.demux(streams):
            if packet.dts is None:
                continue
            packet.stream = mapping[packet.stream.index]
            out.mux(packet)
    return dst


@pytest.mark.parametrize("audio", [False, True])
def test_truncated_mkv_is_refused_by_its_declared_duration(tmp_path, audio):
    full = write_video(tmp_path / "full.mkv", lambda i: gradient_sbs(i, 128, 64), n=30, fps=24, codec="ffv1",
                       pix_fmt="yuv444p", audio=tone(1.25) if audio else None)
    assert probe(full).frame_count == 30  # the intact file is fine
    cut = tmp_path / "cut.mkv"
    data = full.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.55)])  # Matroska declares no frame count, only a duration
    with pytest.raises(InputError, match="truncated or corrupt") as exc:
        probe(cut)
    assert "1.250s" in _one_line(exc)


def test_variable_rate_clip_remuxed_to_mkv_is_not_called_truncated(tmp_path):
    mkv = _remux(HEADS / "face_1.mp4", tmp_path / "face_1.mkv")
    info = probe(mkv)
    assert info.frame_count == 135 and info.is_vfr
