"""End to end: real media through the whole pipeline (decode -> engine -> refine -> encode -> join -> verify)."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from synth import davis_frames, davis_sbs_clip, gradient_sbs, media, sbs_iou_to_davis, tone, write_video
from vr180matte.io.finalize import audio_packets_digest
from vr180matte.io.probe import probe
from vr180matte.io.spherical import read_spherical
from vr180matte.pipeline import run

CPU = ["hardware.device=cpu"]
PASS = CPU + ["matting.engine=passthrough"]


def read_alpha(path: Path) -> list[np.ndarray]:
    """Every frame's alpha plane as float [0, 1] (ProRes 4444 decodes to yuva444p1xle)."""
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgba")[..., 3].astype(np.float32) / 255.0)
    return out


def read_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgba") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def parkour_sbs(tmp_path_factory) -> Path:
    return davis_sbs_clip(tmp_path_factory.mktemp("davis") / "parkour_sbs.mp4", "davis2016_parkour")


def test_embedded_engine_quality_on_davis_parkour_both_eyes(parkour_sbs, tmp_path):
    """The issue's real-quality gate: mean IoU >= 0.85 against DAVIS ground truth in both eyes.

    The matte is what this gates; the runner fills much of the eye, so the detector looks at it at its own input
    size (640) instead of the default tiled 1536 (upscaled from the 854 px eye), which only finds small people and
    is checked by the small-people tests. Measured: the same IoU (0.928 both eyes either way), 40% less time."""
    result = run(parkour_sbs, out_dir=tmp_path, overrides=CPU + ["processing.scale_factor=1.0",
                                                                 "detection.image_size=640"], quiet=True)
    assert result.stats["engine"] == "embedded"
    alphas = read_alpha(result.outputs[0])
    _, masks = davis_frames("davis2016_parkour")
    assert len(alphas) == len(masks) == 100
    ious = sbs_iou_to_davis(alphas, masks)
    mean = {eye: float(np.mean(v)) for eye, v in ious.items()}
    print("parkour mean IoU", mean)
    assert mean["left"] >= 0.85 and mean["right"] >= 0.85, mean
    stats = result.stats
    assert stats["stereo"]["id_mismatches"] == 0
    assert stats["quality"]["frames"] > 0
    assert json.loads(result.stats_path.read_text())["frames_out"] == 100


def test_interrupted_run_resumes_to_identical_frames(tmp_path):
    # three chunks: the run is killed once the second is done, so the resumed run reuses two and redoes one
    clip = davis_sbs_clip(tmp_path / "p30.mp4", "davis2016_parkour", count=18)
    # a small detector input: the chunks' first frames are detection frames, and detection is not what this checks
    sets = CPU + ["processing.chunk_size=6", "processing.overlap_frames=3", "processing.scale_factor=0.5",
                  "detection.image_size=640"]
    whole = run(clip, out_dir=tmp_path / "whole", overrides=sets, quiet=True)

    out = tmp_path / "killed"
    args = [sys.executable, "-m", "vr180matte.cli", "run", str(clip), "-o", str(out), "--quiet"]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = out / ".vr180matte" / "p30" / "chunk_00001.done.json"
    deadline = time.time() + 240
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), proc.stderr.read().decode() if proc.poll() is not None else "timed out"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "p30.alpha.mov").exists(), "a killed run leaves no finished-looking output"

    resumed = run(clip, out_dir=out, overrides=sets, quiet=True)
    assert resumed.stats["resumed_chunks"] >= 2
    a, b = read_frames(whole.outputs[0]), read_frames(resumed.outputs[0])
    assert len(a) == len(b) == 18
    for fa, fb in zip(a, b):
        np.testing.assert_array_equal(fa, fb)
    assert not (out / ".vr180matte").exists(), "work folder removed after success"


def test_talking_head_audio_is_copied_bit_exact(tmp_path):
    src = media("talking_heads_audio_videoretalking", "face_2.mp4")
    result = run(src, out_dir=tmp_path, overrides=PASS + ["output.format=greenscreen"], quiet=True)
    out = result.outputs[0]
    assert audio_packets_digest(out) == audio_packets_digest(src)
    info_in, info_out = probe(src), probe(out)
    assert info_out.frame_count == info_in.frame_count
    assert abs(info_out.duration_s - info_in.duration_s) < 1 / float(info_in.fps)
    assert result.stats["audio"] == {"streams_in": 1, "streams_out": 1, "copied": True}


def test_variable_frame_rate_keeps_every_frame_and_timestamp(tmp_path):
    src = media("talking_heads_audio_videoretalking", "face_1.mp4")
    info = probe(src)
    assert info.is_vfr
    result = run(src, out_dir=tmp_path, overrides=PASS, quiet=True)
    with av.open(str(src)) as a, av.open(str(result.outputs[0])) as b:
        pa = [float(f.pts * f.time_base) for f in a.decode(video=0)]
        pb = [float(f.pts * f.time_base) for f in b.decode(video=0)]
    assert len(pa) == len(pb) == info.frame_count
    np.testing.assert_allclose(pb, pa, atol=1e-3)


def test_cg_360_sbs_clip_geometry(tmp_path):
    src = media("equirect360_sbs_stereo_cg_maryoculus", "MaryOculus.mp4")
    result = run(src, out_dir=tmp_path, overrides=PASS + ["output.format=greenscreen"], quiet=True)
    info = probe(result.outputs[0])
    assert (info.width, info.height, info.frame_count) == (2048, 1024, 120)
    assert result.stats["layout"]["layout"] == "sbs"


def test_6k_sbs_with_audio_through_the_embedded_engine(tmp_path):
    """6144x3072, 3 frames, an AAC tone: ProRes 4444 with alpha, audio copied, VR180 metadata added."""
    clip = write_video(tmp_path / "six_k.mp4", lambda i: gradient_sbs(i, 6144, 3072, disparity=40), n=3, fps=30,
                       audio=tone(0.1))
    result = run(clip, out_dir=tmp_path / "o", overrides=CPU + ["processing.scale_factor=0.25"], quiet=True)
    out = result.outputs[0]
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "prores" and s.codec_context.pix_fmt.startswith("yuva444p")
        assert (s.width, s.height) == (6144, 3072)
        assert len(c.streams.audio) == 1
    assert audio_packets_digest(out) == audio_packets_digest(clip)
    meta = read_spherical(out)
    assert meta is not None and meta.stereo == "left-right" and meta.fov_deg == 180.0
    assert result.stats["frames_out"] == 3


def test_separate_eyes_png_and_hevc_outputs(tmp_path):
    clip = write_video(tmp_path / "c.mp4", lambda i: gradient_sbs(i, 256, 128), n=6, audio=tone(0.2))
    r = run(clip, out_dir=tmp_path / "eyes", overrides=PASS + ["output.maintain_sbs=false"], quiet=True)
    assert sorted(p.name for p in r.outputs) == ["c_left.alpha.mov", "c_right.alpha.mov"]
    for p in r.outputs:
        info = probe(p)
        assert (info.width, info.height, info.frame_count) == (128, 128, 6)
        assert read_spherical(p).stereo == "mono"
    r = run(clip, out_dir=tmp_path / "png", overrides=PASS + ["output.codec=png"], quiet=True)
    (folder,) = r.outputs
    pngs = sorted(folder.glob("*.png"))
    assert len(pngs) == 6
    img = cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (128, 256, 4) and (img[..., 3] == 255).all()
    r = run(clip, out_dir=tmp_path / "hevc",
            overrides=PASS + ["output.format=greenscreen", "output.codec=hevc"], quiet=True)
    with av.open(str(r.outputs[0])) as c:
        assert c.streams.video[0].codec_context.name == "hevc"
        assert c.streams.video[0].frames == 6 or probe(r.outputs[0]).frame_count == 6


def test_output_that_does_not_verify_is_reported_not_silent(tmp_path, monkeypatch):
    """A frame-count mismatch must fail the run (exit 5 in the CLI) and be written into stats.json."""
    import vr180matte.io.finalize as finalize
    from vr180matte.pipeline import VerificationError

    clip = write_video(tmp_path / "v.mp4", lambda i: gradient_sbs(i, 128, 64), n=5)
    real = finalize.verify_output

    def short_by_one(path, frames, duration, tolerance_s=None):
        res = real(path, frames, duration, tolerance_s)
        res.update(frames=res["frames"] - 1, frames_ok=False)
        return res

    monkeypatch.setattr(finalize, "verify_output", short_by_one)
    with pytest.raises(VerificationError, match="4 frames"):
        run(clip, out_dir=tmp_path / "o", overrides=PASS, quiet=True)
    stats = json.loads((tmp_path / "o" / "v.stats.json").read_text())
    assert stats["verification"]["sbs"]["frames_ok"] is False and stats["frames_out"] == 4


def test_squeezed_web_copy_is_processed_desqueezed_and_written_at_its_own_size(tmp_path):
    """960x540 SBS (each eye squeezed to 480x540): eyes are de-squeezed to square for processing, output keeps 960x540."""
    clip = write_video(tmp_path / "web.mp4", lambda i: gradient_sbs(i, 960, 540), n=3, audio=tone(0.1))
    r = run(clip, out_dir=tmp_path / "o", overrides=PASS + ["processing.scale_factor=0.5"], quiet=True)
    assert r.stats["layout"]["squeezed"] is True
    assert r.stats["processing_size"] == [270, 270]  # square 180-degree eyes at half scale
    info = probe(r.outputs[0])
    assert (info.width, info.height, info.frame_count) == (960, 540, 3)


def test_cfr_policy_retimes_variable_rate_input_evenly(tmp_path):
    src = media("talking_heads_audio_videoretalking", "face_1.mp4")
    info = probe(src)
    r = run(src, out_dir=tmp_path, overrides=PASS + ["processing.vfr_policy=cfr"], quiet=True)
    with av.open(str(r.outputs[0])) as c:
        t = np.array([float(f.pts * f.time_base) for f in c.decode(video=0)])
    assert len(t) == info.frame_count
    np.testing.assert_allclose(np.diff(t), 1 / float(info.fps), atol=1e-3)
