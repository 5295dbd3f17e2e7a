"""SegmentWriter round trips: ProRes 4444 with alpha, RGBA PNG, H.264 and HEVC, source timestamps passed through."""
from __future__ import annotations

import os
from fractions import Fraction

import av
import cv2
import numpy as np
from pathlib import Path

import pytest

from vr180matte.io import encoder_config
from vr180matte.io.errors import OutputError
from vr180matte.io.writer import SegmentWriter

H, W = 48, 96
TB = Fraction(1, 15360)
VFR_PTS = [507, 1019, 2043, 2555, 3579]  # 1/30 s and 2/30 s steps, like face_1.mp4


def _rgba(i: int) -> np.ndarray:
    img = np.zeros((H, W, 4), np.uint8)
    img[..., 0] = (np.arange(W) * 2)[None, :]
    img[..., 1] = (np.arange(H) * 5)[:, None]
    img[..., 2] = 40 * i
    img[..., 3] = (np.arange(W) * 255 // (W - 1))[None, :]  # alpha ramp 0..255
    img[: H // 4, : W // 4, 3] = 0
    return img


def _plane16(plane) -> np.ndarray:
    """A 16-bit-per-sample plane as (H, W) (rows padded to line_size)."""
    rows = np.frombuffer(bytes(plane), np.uint16).reshape(plane.height, plane.line_size // 2)
    return rows[:, : plane.width]


def _packets(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [(p.pts, p.dts, p.duration) for p in c.demux(s) if p.size], Fraction(s.time_base)


def test_prores4444_keeps_alpha(tmp_path):
    path = tmp_path / "seg.mov"
    frames = [_rgba(i) for i in range(3)]
    w = SegmentWriter(path, "prores4444", W, H, TB, Fraction(30))
    for i, (img, pts) in enumerate(zip(frames, VFR_PTS)):
        w.write(img, pts, i, duration=512)
    w.close()
    w.close()  # idempotent
    assert w.frames_written == 3
    packets, tb = _packets(path)
    assert tb == TB and [p[0] for p in packets] == VFR_PTS[:3]
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "prores" and s.codec_tag == "ap4h"
        assert s.codec_context.profile in ("4444", "4444 XQ")
        decoded = list(c.decode(s))
    assert len(decoded) == 3
    for f, img in zip(decoded, frames):
        # the ProRes decoder reports 4444 as yuva444p12le; the encoder was fed yuva444p10le
        assert f.format.name.startswith("yuva444p")
        a10 = _plane16(f.reformat(format="yuva444p10le").planes[3])
        assert a10.shape == (H, W) and a10.max() <= 1023
        want = np.round(img[..., 3].astype(float) * 1023 / 255)
        assert np.abs(a10.astype(float) - want).max() <= 2  # alpha within 10-bit rounding
        rgba = f.to_ndarray(format="rgba")
        assert np.abs(rgba[..., 3].astype(int) - img[..., 3]).max() <= 1
        assert np.abs(rgba[..., :3].astype(int) - img[..., :3]).mean() < 2


def test_png_rgba_exact(tmp_path):
    folder = tmp_path / "seg_png"
    w = SegmentWriter(folder, "png", W, H, TB, Fraction(30))
    frames = [_rgba(i) for i in range(3)]
    for k, img in enumerate(frames):
        w.write(img, VFR_PTS[k], 100 + k)
    w.close()
    assert sorted(p.name for p in folder.iterdir()) == ["000100.png", "000101.png", "000102.png"]
    for k, img in enumerate(frames):
        back = cv2.imread(str(folder / f"{100 + k:06d}.png"), cv2.IMREAD_UNCHANGED)
        assert back.shape == (H, W, 4)
        assert np.array_equal(cv2.cvtColor(back, cv2.COLOR_BGRA2RGBA), img)


@pytest.mark.parametrize("codec", ["prores4444", "png"])
def test_colour_and_alpha_apart_write_the_rgba_frames_bytes(tmp_path, codec):
    """A straight-alpha frame handed over as colour and alpha apart (io/picture.py) is written exactly as its
    interleaved RGBA frame: the same ProRes packets, the same PNG files. Parts that do not make a frame are
    refused before anything is written."""
    from vr180matte.io.picture import RgbAlpha

    outs = []
    for name, apart in (("rgba", False), ("apart", True)):
        path = tmp_path / (f"{name}.mov" if codec != "png" else name)
        with SegmentWriter(path, codec, W, H, TB, Fraction(30)) as w:
            for k in range(3):
                img = _rgba(k)
                w.write(RgbAlpha(img[..., :3], img[..., 3].copy()) if apart else img, VFR_PTS[k], k)
        if codec == "png":
            outs.append([(path / f).read_bytes() for f in sorted(os.listdir(path))])
        else:
            with av.open(str(path)) as c:
                outs.append([bytes(p) for p in c.demux(video=0) if p.size])
    assert len(outs[0]) == 3 and outs[0] == outs[1]
    w = SegmentWriter(tmp_path / "bad.mov", codec if codec != "png" else "prores4444", W, H, TB, Fraction(30))
    img = _rgba(0)
    with pytest.raises(ValueError, match="alpha"):
        w.write(RgbAlpha(img[..., :3], img[1:, :, 3].copy()), 0, 0)
    with pytest.raises(ValueError, match="uint16"):
        w.write(RgbAlpha(img[..., :3], img[..., 3].astype(np.uint16)), 0, 0)
    assert w.frames_written == 0
    w.close()


@pytest.mark.parametrize("codec,name,tag", [("h264", "h264", "avc1"), ("hevc", "hevc", "hvc1")])
def test_h264_hevc_vfr_pts_no_bframes(tmp_path, codec, name, tag):
    path = tmp_path / f"seg_{codec}.mp4"
    frames = [_rgba(i)[..., :3].copy() for i in range(5)]
    with SegmentWriter(path, codec, W, H, TB, Fraction(1350, 61), crf=8, preset="ultrafast") as w:
        for i, (img, pts) in enumerate(zip(frames, VFR_PTS)):
            w.write(img, pts, i, duration=1024 if i == 4 else None)
    packets, tb = _packets(path)
    assert tb == TB
    assert [p[0] for p in packets] == VFR_PTS  # source timestamps, variable rate kept
    assert all(p[0] == p[1] for p in packets)  # no B-frames: DTS == PTS (joinable by stream copy)
    assert packets[-1][2] == 1024  # the last frame keeps its own duration
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.codec_context.pix_fmt, s.codec_tag) == (name, "yuv420p", tag)
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
    assert len(decoded) == 5
    for got, img in zip(decoded, frames):
        assert np.abs(got.astype(int) - img).mean() < 4


def test_pts_from_index_when_missing(tmp_path):
    path = tmp_path / "n.mov"
    with SegmentWriter(path, "prores4444", W, H, Fraction(1, 30000), Fraction(30000, 1001)) as w:
        for i in range(3):
            w.write(_rgba(i), None, 10 + i)
    packets, _ = _packets(path)
    assert [p[0] for p in packets] == [10010, 11011, 12012]


def test_rejects_non_increasing_pts(tmp_path):
    w = SegmentWriter(tmp_path / "x.mov", "prores4444", W, H, TB, Fraction(30))
    w.write(_rgba(0), 512, 0)
    with pytest.raises(ValueError):
        w.write(_rgba(1), 512, 1)
    with pytest.raises(ValueError):
        w.write(np.zeros((H + 2, W, 4), np.uint8), 1024, 1)
    w.close()


def test_odd_size_h264_refused(tmp_path):
    with pytest.raises(OutputError):
        SegmentWriter(tmp_path / "o.mp4", "h264", 95, 48, TB, Fraction(30))


def test_output_under_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for codec, name in (("prores4444", "seg.mov"), ("png", "seg_png")):
        with pytest.raises(OutputError) as e:
            SegmentWriter(blocker / name, codec, W, H, TB, Fraction(30))
        assert "\n" not in str(e.value)


def _writable(folder: Path) -> bool:
    try:
        (folder / ".probe").touch()
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


@pytest.fixture
def unwritable_folder(tmp_path):
    """A folder nobody can create files in, root included: mode 0500 for a normal user; as root (who ignores
    permissions) an immutable folder (``chattr +i``), else a read-only bind mount; else the test is skipped with
    the reason. Each way is checked by trying to write before it is used, and undone afterwards."""
    import shutil
    import subprocess

    ro = tmp_path / "ro"
    ro.mkdir()
    undo = []
    if os.geteuid() != 0:
        ro.chmod(0o500)
        undo.append(lambda: ro.chmod(0o700))
    elif shutil.which("chattr") and subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode == 0:
        undo.append(lambda: subprocess.run(["chattr", "-i", str(ro)], capture_output=True))
    elif shutil.which("mount") and subprocess.run(["mount", "--bind", str(ro), str(ro)],
                                                  capture_output=True).returncode == 0:
        undo.append(lambda: subprocess.run(["umount", str(ro)], capture_output=True))
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True)
    try:
        if _writable(ro):
            pytest.skip("running as root with neither chattr +i nor a read-only bind mount available here: "
                        "no folder root cannot write to")
        yield ro
    finally:
        for f in reversed(undo):
            f()


def test_unwritable_folder(unwritable_folder):
    """A segment in a folder that cannot be written fails with one OutputError line (exit 7) and leaves nothing.
    PyAV opens the file only when the header is written, so the error comes at the first frame or at close, not
    at construction (the pipeline refuses an unwritable output folder before any work: run._check_writable)."""
    with pytest.raises(OutputError) as e:
        w = SegmentWriter(unwritable_folder / "seg.mov", "prores4444", W, H, TB, Fraction(30))
        w.write(np.zeros((H, W, 4), np.uint8), 0, 0)
        w.close()
    assert "\n" not in str(e.value) and "seg.mov" in str(e.value)
    assert not any(unwritable_folder.iterdir())


def test_bt709_input_is_encoded_with_the_bt709_matrix_and_tagged(tmp_path):
    """Players assume BT.709 for HD+ video: a BT.709 source must come out encoded and tagged BT.709."""
    from vr180matte.io.probe import probe
    from vr180matte.io.writer import SegmentWriter

    red = np.zeros((64, 64, 3), np.uint8)
    red[:] = (219, 38, 39)
    src = tmp_path / "src709.mp4"
    with av.open(str(src), "w") as out:
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        s.codec_context.colorspace = s.codec_context.color_primaries = s.codec_context.color_trc = 1
        f = av.VideoFrame.from_ndarray(red, format="rgb24").reformat(format="yuv420p", dst_colorspace=1)
        f.pts = 0
        for p in [*s.encode(f), *s.encode()]:
            out.mux(p)
    info = probe(src)
    assert info.color["colorspace"] == 1
    dst = tmp_path / "out.mp4"
    w = SegmentWriter(dst, "h264", 64, 64, info.time_base, info.fps, crf=0, color=info.color)
    w.write(red, 0, 0)
    w.close()
    with av.open(str(dst)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.colorspace, cc.color_primaries, cc.color_trc) == (1, 1, 1)
        frame = next(c.decode(video=0))
        luma = float(frame.to_ndarray(format="yuv420p")[:64].mean())  # the Y plane
    bt709 = 16 + 219 * (0.2126 * 219 + 0.7152 * 38 + 0.0722 * 39) / 255  # 81.7; BT.601 would give 95.2
    assert abs(luma - bt709) < 1.5, luma


def _gradient16(h: int = 64, w: int = 1024) -> np.ndarray:
    """16-bit RGB holding 10-bit codes (value = code * 64): a 1024-level horizontal ramp, others slower."""
    x = np.arange(w)[None, :].repeat(h, 0)
    code_r = x * 1023 // (w - 1)
    code_g = (x // 2 + 200) % 1024
    code_b = np.full_like(x, 512)
    return (np.stack([code_r, code_g, code_b], -1) * 64).astype(np.uint16)


def test_prores_from_16bit_keeps_10bit_colour(tmp_path):
    rgb = _gradient16()
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 65535, np.uint16)], -1)
    path = tmp_path / "ten.mov"
    with SegmentWriter(path, "prores4444", rgb.shape[1], rgb.shape[0], TB, Fraction(30), bit_depth=10) as w:
        w.write(rgba, 0, 0)
    with av.open(str(path)) as c:
        f = next(c.decode(video=0))
        back = f.to_ndarray(format="rgba64le")
        y = _plane16(f.reformat(format="yuva444p10le").planes[0])
    assert len(np.unique(y)) > 256  # an 8-bit path would leave at most 256 luma levels
    assert len(np.unique(back[..., 0] >> 6)) > 256
    err = np.abs(back[..., :3].astype(np.int64) - rgb.astype(np.int64)) / 64.0
    assert err.max() <= 2.0, err.max()
    assert int(back[..., 3].min()) >= 65535 - 64


def test_hevc_main10_for_10bit_sources(tmp_path):
    rgb = _gradient16(64, 512)
    path = tmp_path / "ten.mp4"
    with SegmentWriter(path, "hevc", 512, 64, TB, Fraction(30), crf=4, preset="ultrafast", bit_depth=10) as w:
        w.write(rgb, 0, 0)
        w.write(rgb, 512, 1)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.pix_fmt == "yuv420p10le" and s.codec_context.profile == "Main 10"
        f = next(c.decode(s))
        back = f.to_ndarray(format="rgb48le")
        y = _plane16(f.planes[0])
    assert len(np.unique(y)) > 256
    # the red ramp survives at 10-bit precision (chroma subsampling blurs, so compare the mean error)
    assert (np.abs(back.astype(np.int64) - rgb.astype(np.int64)) / 64.0).mean() < 2.0


def test_hardware_encoder_falls_back_to_the_cpu(tmp_path, caplog):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine may have NVENC; the fallback is checked on CPU-only machines")
    path = tmp_path / "hw.mp4"
    with SegmentWriter(path, "hevc", W, H, TB, Fraction(30), preset="ultrafast", hardware=True) as w:
        w.write(_rgba(0)[..., :3], 0, 0)
    assert w.encoder == "libx265"
    assert any("hevc_nvenc unavailable" in r.getMessage() for r in caplog.records)
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "hevc" and c.streams.video[0].frames in (0, 1)


def test_png_from_16bit_is_16bit(tmp_path):
    rgb = _gradient16(32, 300)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 40000, np.uint16)], -1)
    folder = tmp_path / "png16"
    with SegmentWriter(folder, "png", 300, 32, TB, Fraction(30), bit_depth=10) as w:
        w.write(rgba, 0, 7)
    back = cv2.cvtColor(cv2.imread(str(folder / "000007.png"), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
    assert back.dtype == np.uint16 and np.array_equal(back, rgba)


@pytest.mark.parametrize("codec,cpu", [("h264", "libx264"), ("hevc", "libx265")])
def test_nvenc_refusal_falls_back_to_the_cpu_encoder_with_a_warning(tmp_path, caplog, monkeypatch, codec, cpu):
    """A GPU without NVENC (H100/H200) refuses at avcodec_open2: faked here, so the CPU path is checked on any
    machine. The segment is written by the CPU encoder, one warning says so, and the writer reports why."""
    hw = f"{codec}_nvenc"
    monkeypatch.setattr(av, "codecs_available", set(av.codecs_available) | {hw})
    opened = []

    def refuse(settings, container, encoder):
        opened.append(encoder)
        raise av.error.ExternalError(1, "OpenEncodeSessionEx failed: unsupported device (2): (no details)")

    monkeypatch.setattr(encoder_config, "open_hardware", refuse)
    path = tmp_path / f"hw_{codec}.mp4"
    with caplog.at_level("WARNING", logger="vr180matte.io.encoder_config"):
        for _ in range(2):  # a run opens a writer per chunk: the warning is given once
            with SegmentWriter(path, codec, W, H, TB, Fraction(30), preset="ultrafast", hardware=True) as w:
                for i in range(3):
                    w.write(_rgba(i)[..., :3], i * 512, i)
    assert opened == [hw, hw]
    assert w.encoder == cpu and w.encoder_reason.startswith(f"{hw} refused (") and "unsupported device" in w.encoder_reason
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and f"{hw} unavailable" in warnings[0] and cpu in warnings[0]
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == codec and len(list(c.decode(video=0))) == 3


def test_a_cpu_run_never_opens_nvenc(tmp_path, monkeypatch):
    def refuse(*a):
        raise AssertionError("NVENC opened on a CPU run")

    monkeypatch.setattr(encoder_config, "open_hardware", refuse)
    with SegmentWriter(tmp_path / "c.mp4", "h264", W, H, TB, Fraction(30), preset="ultrafast") as w:
        w.write(_rgba(0)[..., :3], 0, 0)
    assert w.encoder == "libx264" and w.encoder_reason == "CPU run"
