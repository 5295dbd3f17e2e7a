"""join_segments / verify_output / audio_packets_digest: stream-copy joins of real encoded segments."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from synth import gradient_sbs, media, tone, write_video
from vr180matte.io.errors import OutputError
from vr180matte.io.finalize import audio_packets_digest, join_segments, temp_path, verify_output
from vr180matte.io.probe import probe
from vr180matte.io.reader import FrameReader
from vr180matte.io.writer import SegmentWriter, container_suffix


def _segments(src: Path, out: Path, codec: str, bounds, rgba: bool = True) -> tuple[list[Path], object]:
    """Read ``src`` chunk by chunk and encode each chunk once, as the pipeline does (alpha = a constant)."""
    info = probe(src)
    segs = []
    for k, (a, b) in enumerate(bounds):
        seg = out / f"seg{k:03d}{container_suffix(codec)}"
        with SegmentWriter(seg, codec, info.width, info.height, info.time_base, info.fps, preset="ultrafast") as w:
            for f in FrameReader(src, info, start=a, end=b):
                img = np.dstack([f.rgb, np.full(f.rgb.shape[:2], 255, np.uint8)]) if rgba else f.rgb
                w.write(img, f.pts, f.index, f.duration)
        segs.append(seg)
    return segs, info


@pytest.fixture(scope="module")
def tone_clip(tmp_path_factory):
    """24 frames of 64x32 SBS at 30000/1001 with a 1 s AAC tone."""
    p = tmp_path_factory.mktemp("fin") / "tone.mp4"
    return write_video(p, lambda i: gradient_sbs(i, 64, 32), n=24, fps=Fraction(30000, 1001), audio=tone(0.85))


def _video_pts(path: Path) -> list[int]:
    return probe(path).frame_pts.tolist()


@pytest.mark.parametrize("codec", ["h264", "hevc", "prores4444"])
def test_join_three_segments_with_audio(tmp_path, tone_clip, codec):
    segs, info = _segments(tone_clip, tmp_path, codec, [(0, 8), (8, 17), (17, 24)], rgba=codec == "prores4444")
    out = tmp_path / f"final{container_suffix(codec)}"
    join_segments(segs, out, tone_clip, True, info.time_base)
    assert out.exists() and not temp_path(out).exists()
    got = verify_output(out, info.frame_count, info.duration_s)
    assert got["frames"] == 24 == sum(b - a for a, b in [(0, 8), (8, 17), (17, 24)])
    assert got["frames_ok"] and got["duration_ok"] and got["audio_streams"] == 1
    assert got["duration_s"] == pytest.approx(info.duration_s, abs=1e-6)
    assert _video_pts(out) == info.frame_pts.tolist()
    assert probe(out).fps == Fraction(30000, 1001)
    digest = audio_packets_digest(out)
    assert len(digest) == 1 and digest == audio_packets_digest(tone_clip)
    # The joined file keeps the segments' container tag: ProRes 4444 stays 'ap4h' (an 'apch' tag says ProRes HQ,
    # no alpha, to an editor) and HEVC 'hvc1' (Apple players refuse 'hev1').
    with av.open(str(segs[0])) as a, av.open(str(out)) as b:
        tag = a.streams.video[0].codec_tag
        assert tag == {"h264": "avc1", "hevc": "hvc1", "prores4444": "ap4h"}[codec]
        assert b.streams.video[0].codec_tag == tag
        if codec == "prores4444":
            assert b.streams.video[0].codec_context.profile in ("4444", "4444 XQ")


def test_join_interleaves_audio(tmp_path, tone_clip):
    """Audio packets sit between video packets in the file (not all at the end: the muxer never buffered it all)."""
    segs, info = _segments(tone_clip, tmp_path, "h264", [(0, 12), (12, 24)], rgba=False)
    out = tmp_path / "final.mp4"
    join_segments(segs, out, tone_clip, True, info.time_base)
    with av.open(str(out)) as c:
        order = [p.stream.type for p in c.demux() if p.size]
    first_audio, last_video = order.index("audio"), len(order) - 1 - order[::-1].index("video")
    assert first_audio < last_video
    switches = sum(1 for a, b in zip(order, order[1:]) if a != b)
    assert switches >= 4


def test_join_without_audio(tmp_path, tone_clip):
    segs, info = _segments(tone_clip, tmp_path, "h264", [(0, 24)], rgba=False)
    out = tmp_path / "mute.mp4"
    join_segments(segs, out, tone_clip, False, info.time_base)
    assert verify_output(out, 24, info.duration_s)["audio_streams"] == 0


def test_vfr_real_clip_join(tmp_path):
    """face_1.mp4 (variable frame rate, AAC speech): every frame and timestamp kept, audio bit-identical."""
    src = media("talking_heads_audio_videoretalking", "face_1.mp4")
    segs, info = _segments(src, tmp_path, "h264", [(0, 45), (45, 90), (90, 135)], rgba=False)
    out = tmp_path / "face_1_out.mp4"
    join_segments(segs, out, src, True, info.time_base)
    oi = probe(out)
    assert oi.frame_count == 135 and oi.is_vfr
    assert oi.frame_pts.tolist() == info.frame_pts.tolist()
    assert oi.duration_s == pytest.approx(info.duration_s, abs=1e-9)
    assert audio_packets_digest(out) == audio_packets_digest(src)


def test_png_join_with_audio_sidecar(tmp_path, tone_clip):
    segs, info = _segments(tone_clip, tmp_path, "png", [(0, 10), (10, 24)])
    out = tmp_path / "tone_png"
    join_segments(segs, out, tone_clip, True, info.time_base)
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{i:06d}.png" for i in range(24)]
    side = tmp_path / "tone_png.audio.m4a"
    assert side.exists()
    assert audio_packets_digest(side) == audio_packets_digest(tone_clip)
    got = verify_output(out, 24, info.duration_s)
    assert got["frames_ok"] and got["duration_ok"] and got["audio_streams"] == 1
    assert not (tmp_path / ".tone_png.partial").exists()


def test_verify_reports_mismatch(tmp_path, tone_clip):
    segs, info = _segments(tone_clip, tmp_path, "h264", [(0, 20)], rgba=False)  # 4 frames short
    out = tmp_path / "short.mp4"
    join_segments(segs, out, tone_clip, True, info.time_base)
    got = verify_output(out, info.frame_count, info.duration_s)
    assert got["frames"] == 20 and not got["frames_ok"] and not got["duration_ok"]


def test_failed_join_leaves_nothing(tmp_path, tone_clip):
    segs, info = _segments(tone_clip, tmp_path, "h264", [(0, 12)], rgba=False)
    out = tmp_path / "final.mp4"
    with pytest.raises(OutputError):
        join_segments(segs + [tmp_path / "missing.mp4"], out, tone_clip, True, info.time_base)
    # a segment encoded with other settings cannot be stream-copied behind the first one
    other = tmp_path / "other.mp4"
    with SegmentWriter(other, "h264", 64, 32, info.time_base, info.fps, crf=30, preset="veryfast") as w:
        w.write(np.zeros((32, 64, 3), np.uint8), int(info.frame_pts[12]), 12)
    with pytest.raises(OutputError):
        join_segments(segs + [other], out, tone_clip, True, info.time_base)
    assert not out.exists() and not temp_path(out).exists()
    with pytest.raises(OutputError):
        join_segments(segs, tone_clip, tone_clip, True, info.time_base)  # output == input


def test_restarting_timestamps_are_shifted(tmp_path, tone_clip):
    """Segments written without source pts (each from 0) still join into increasing timestamps."""
    info = probe(tone_clip)
    segs = []
    for k in range(2):
        seg = tmp_path / f"s{k}.mov"
        with SegmentWriter(seg, "prores4444", 64, 32, info.time_base, info.fps) as w:
            for i in range(3):
                w.write(np.zeros((32, 64, 4), np.uint8), None, i)
        segs.append(seg)
    out = tmp_path / "j.mov"
    join_segments(segs, out, None, False, info.time_base)
    pts = _video_pts(out)
    assert len(pts) == 6 and all(b > a for a, b in zip(pts, pts[1:]))


def test_spherical_metadata_copied(tmp_path):
    import vr180matte.io.spherical as spherical
    src = write_video(tmp_path / "vr.mp4", lambda i: gradient_sbs(i, 64, 32), n=6, audio=tone(0.25))
    spherical.write_spherical(src, stereo="left-right", projection="equirectangular", fov_deg=180.0)
    segs, info = _segments(src, tmp_path, "prores4444", [(0, 3), (3, 6)])
    out = tmp_path / "vr_out.mov"
    join_segments(segs, out, src, True, info.time_base)
    meta = spherical.read_spherical(out)
    assert meta is not None and (meta.stereo, meta.projection, meta.fov_deg) == ("left-right", "equirectangular", 180.0)
    # an input without metadata: written when asked, absent otherwise
    plain = write_video(tmp_path / "plain.mp4", lambda i: gradient_sbs(i, 64, 32), n=3)
    segs, info = _segments(plain, tmp_path / "p", "h264", [(0, 3)], rgba=False) if (tmp_path / "p").mkdir() is None else None
    join_segments(segs, tmp_path / "none.mp4", plain, True, info.time_base)
    assert spherical.read_spherical(tmp_path / "none.mp4") is None
    join_segments(segs, tmp_path / "forced.mp4", plain, True, info.time_base,
                  spherical={"stereo": "left-right", "projection": "equirectangular", "fov_deg": 180.0})
    assert spherical.read_spherical(tmp_path / "forced.mp4").stereo == "left-right"


def test_full_size_sbs_prores_with_audio(tmp_path):
    """6144x3072 SBS, 3 frames with an AAC tone: read -> ProRes 4444 -> join, audio bit-exact, alpha present."""
    def big(i: int) -> np.ndarray:  # gradient_sbs at 1/16 size, upscaled (full-size numpy gradients are slow)
        return cv2.resize(gradient_sbs(i, 384, 192), (6144, 3072), interpolation=cv2.INTER_NEAREST)

    src = write_video(tmp_path / "big.mp4", big, n=3, audio=tone(0.2))
    info = probe(src)
    assert (info.width, info.height, info.eye_width, info.eye_height) == (6144, 3072, 3072, 3072)
    seg = tmp_path / "seg000.mov"
    with SegmentWriter(seg, "prores4444", info.width, info.height, info.time_base, info.fps, threads=2) as w:
        for f in FrameReader(src, info, read_ahead=2):
            alpha = np.zeros(f.rgb.shape[:2], np.uint8)
            alpha[:, :3072] = 255  # left eye opaque, right eye transparent
            w.write(np.dstack([f.rgb, alpha]), f.pts, f.index, f.duration)
    out = tmp_path / "big_out.mov"
    join_segments([seg], out, src, True, info.time_base)
    got = verify_output(out, 3, info.duration_s)
    assert got["frames_ok"] and got["duration_ok"] and got["audio_streams"] == 1
    assert audio_packets_digest(out) == audio_packets_digest(src)
    with av.open(str(out)) as c:
        frame = next(c.decode(video=0))
    assert frame.format.name.startswith("yuva444p") and (frame.width, frame.height) == (6144, 3072)
    a = frame.to_ndarray(format="rgba")[::512, ::512, 3]
    assert (a[:, :6] == 255).all() and (a[:, 6:] == 0).all()


def test_output_spherical_modes(tmp_path):
    import dataclasses

    from vr180matte.io.finalize import output_spherical

    src = write_video(tmp_path / "sq.mp4", lambda i: gradient_sbs(i, 64, 32), n=1)  # 2:1, square eyes
    info = probe(src)
    vr180 = {"stereo": "left-right", "projection": "equirectangular", "fov_deg": 180.0}
    assert output_spherical(info, "auto") == vr180  # VR180-shaped without metadata: added
    assert output_spherical(info, "never") is None
    assert output_spherical(info, "auto", maintain_sbs=False)["stereo"] == "mono"
    web = dataclasses.replace(info, width=960, height=540)
    assert output_spherical(web, "auto") is None and output_spherical(web, "always") == vr180
    full360 = dataclasses.replace(info, layout="sbs", projection="equirectangular", fov_deg=360.0)
    assert output_spherical(full360, "auto")["fov_deg"] == 360.0  # the input's own metadata is kept
