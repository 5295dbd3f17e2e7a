"""The Det-SAM2 engine through the whole pipeline: real SAM2.1 code (random weights, small image size) with chunk
hand-off, an out-of-memory fallback, an empty first chunk, and the debug outputs.

The only stand-in is the person detector: a random-weight YOLO's boxes are noise, so a scripted detector boxes
the synthetic "person" (the bright square of tests/synth.gradient_sbs) where it really is.
"""
import json
import logging

import numpy as np
import pytest
import torch

import vr180matte.pipeline as pipeline
from synth import gradient_sbs, tone, write_video
from vr180matte.engines.base import Detection
from vr180matte.engines.det_sam2 import DetSam2Engine

W, H = 512, 256  # SBS; each eye 256x256
# roi off: random SAM2 weights give ~0.5 everywhere, so a person's own crop would re-anchor every frame; these
# tests are about the pipeline around SAM2 (the crops are tested in tests/engines/test_roi.py)
SETS = ["hardware.device=cpu", "matting.engine=det-sam2", "processing.scale_factor=1.0",
        "detection.detect_interval=4", "detection.equirect_crops=false", "matting.roi_max_frac=0"]


class SquareDetector:
    """Boxes the bright square of gradient_sbs (left eye at x = ew//3 + i, right shifted by the disparity)."""

    name = "scripted"

    def __init__(self, appear_at: int = 0):
        self.appear_at = appear_at
        self.calls = 0

    def detect(self, image: torch.Tensor) -> list[Detection]:
        self.calls += 1
        # The square is pure white (255,255,255): find it like a detector would, from the pixels.
        white = (image.min(dim=2).values == 255).numpy()
        if not white.any():
            return []
        ys, xs = np.nonzero(white)
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        return [Detection(box=box, score=0.95)]


def square_clip(path, n=12, appear_at=0):
    def frame(i):
        f = gradient_sbs(i, W, H, disparity=6)
        if i < appear_at:  # no person yet: paint the square out
            f[f.min(axis=2) == 255] = 128
        return f

    return write_video(path, frame, n=n, fps=24, audio=tone(n / 24), options={"crf": "10"})


@pytest.fixture
def det_sam2():
    """A factory the pipeline is given (``run(..., engine=...)``): Det-SAM2 with random SAM2.1 weights at 256 px
    and the scripted detector."""
    built = {}

    def build(cfg, device):
        torch.manual_seed(0)  # the same random weights whatever ran before (their masks are arbitrary but fixed)
        eng = DetSam2Engine(cfg, device, random_init=True, sam2_overrides=["++model.image_size=256"])
        det = SquareDetector()
        eng.make_detector = lambda: det
        built["engine"], built["detector"] = eng, det
        return eng

    built["build"] = build
    return built


def test_chunks_hand_off_tracks_and_every_frame_is_written(det_sam2, tmp_path):
    clip = square_clip(tmp_path / "sq.mp4", n=12)
    r = pipeline.run(clip, out_dir=tmp_path / "o",
                     overrides=SETS + ["processing.chunk_size=6", "processing.overlap_frames=2"], quiet=True, engine=det_sam2["build"])
    s = r.stats
    assert s["engine"] == "det-sam2" and s["frames_out"] == 12
    assert [(c["start"], c["end"]) for c in s["chunks"]] == [(0, 4), (4, 12)]
    # One person, the same id in both eyes and across the chunk boundary (hand-off, not a new track).
    assert s["stereo"]["id_mismatches"] == 0
    assert s["stereo"]["frames"] == 12, "overlap frames are reported once, not by both chunks"
    assert s["stereo"]["persons_left"] == {"max": 1, "mean": 1.0}  # exactly one person on every frame
    assert s["tracks"]["left"]["tracks_resumed"] == 1 and s["tracks"]["right"]["tracks_resumed"] == 1, s["tracks"]
    assert s["audio"]["copied"]


def test_empty_first_chunk_is_normal(det_sam2, tmp_path):
    clip = square_clip(tmp_path / "late.mp4", n=12, appear_at=7)
    r = pipeline.run(clip, out_dir=tmp_path / "o",
                     overrides=SETS + ["processing.chunk_size=6", "processing.overlap_frames=0"], quiet=True, engine=det_sam2["build"])
    assert r.stats["frames_out"] == 12
    assert r.stats["stereo"]["persons_left"]["max"] == 1  # found once it appears, in the second chunk
    assert r.stats["chunks"][0]["start"] == 0


def test_out_of_memory_lowers_the_scale_and_retries_the_chunk(det_sam2, tmp_path, caplog):
    clip = square_clip(tmp_path / "oom.mp4", n=8)
    real_build = det_sam2["build"]

    def build(cfg, device):
        eng = real_build(cfg, device)
        forward = eng.sam2.forward_image
        state = {"raised": False}

        def flaky(x):
            if not state["raised"]:
                state["raised"] = True
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
            return forward(x)

        eng.sam2.forward_image = flaky
        return eng

    with caplog.at_level(logging.WARNING, logger="vr180matte.pipeline"):
        r = pipeline.run(clip, out_dir=tmp_path / "o", overrides=SETS + ["processing.chunk_size=0"], quiet=True,
                         engine=build)
    assert r.stats["oom_retries"] == 1
    assert r.stats["scale_factor"] == pytest.approx(0.75)
    assert r.stats["frames_out"] == 8
    assert any("out of memory" in m and "retrying" in m for m in caplog.messages)


def test_debug_outputs_detection_video_confidence_maps_and_report(det_sam2, tmp_path):
    clip = square_clip(tmp_path / "dbg.mp4", n=6)
    out = tmp_path / "o"
    r = pipeline.run(clip, out_dir=out, overrides=SETS + [
        "debugging.save_detection_visualization=true", "debugging.save_confidence_maps=true",
        "processing.chunk_size=0"], quiet=True, engine=det_sam2["build"])
    assert (out / "dbg.detections.mp4").exists()
    assert len(list((out / "dbg.confidence").glob("*.png"))) >= 2
    report = json.loads((out / "dbg.report.json").read_text())
    assert report and (out / "dbg.report.png").stat().st_size > 1000
    assert "dbg.detections.mp4" in r.stats["outputs"]


def test_interrupted_run_resumes_to_the_same_frames(det_sam2, tmp_path, monkeypatch):
    """Ctrl-C in the second chunk, run again: finished chunks are reused and the output equals an unbroken run."""
    import av

    clip = square_clip(tmp_path / "res.mp4", n=12)
    sets = SETS + ["processing.chunk_size=6", "processing.overlap_frames=2"]
    whole = pipeline.run(clip, out_dir=tmp_path / "whole", overrides=sets, quiet=True, engine=det_sam2["build"])

    from vr180matte.pipeline.chunk_runner import ChunkRunner

    real = ChunkRunner.run_chunk
    calls = {"n": 0}

    def interrupt_second_chunk(self, chunk, bar):
        calls["n"] += 1
        if chunk.index == 1 and calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, chunk, bar)

    monkeypatch.setattr(ChunkRunner, "run_chunk", interrupt_second_chunk)
    out = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(clip, out_dir=out, overrides=sets, quiet=True, engine=det_sam2["build"])
    assert not (out / "res.alpha.mov").exists()
    resumed = pipeline.run(clip, out_dir=out, overrides=sets, quiet=True, engine=det_sam2["build"])
    assert resumed.stats["resumed_chunks"] == 1

    def frames(p):
        with av.open(str(p)) as c:
            return [f.to_ndarray(format="rgba") for f in c.decode(video=0)]

    a, b = frames(whole.outputs[0]), frames(resumed.outputs[0])
    assert len(a) == len(b) == 12
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_parallel_eyes_batches_the_encoder_and_keeps_the_matte(det_sam2, tmp_path):
    """processing.parallel_eyes=true: one SAM2 image-encoder forward of batch 2 per frame (both eyes), refine and
    temporal smoothing as one batch; the alpha equals the eye-by-eye run (a batched kernel may round the last bit)."""
    import av

    clip = square_clip(tmp_path / "pe.mp4", n=6)
    outs, batches = [], []
    for flag in ("false", "true"):
        def build(cfg, device):
            eng = det_sam2["build"](cfg, device)
            real = eng.sam2.forward_image
            seen = []
            batches.append(seen)
            eng.sam2.forward_image = lambda x: (seen.append(int(x.shape[0])), real(x))[1]
            return eng

        r = pipeline.run(clip, out_dir=tmp_path / flag, quiet=True, engine=build,
                         overrides=SETS + ["processing.chunk_size=0", f"processing.parallel_eyes={flag}"])
        with av.open(str(r.outputs[0])) as c:
            outs.append([f.to_ndarray(format="rgba")[..., 3].astype(np.int16) for f in c.decode(video=0)])
    assert set(batches[0]) == {1} and set(batches[1]) == {2}, batches
    for a, b in zip(*outs):
        assert np.mean(np.abs(a - b) > 1) < 1e-3
