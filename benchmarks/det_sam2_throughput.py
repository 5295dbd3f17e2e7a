"""Det-SAM2 throughput and peak memory on a synthetic 6144x3072 SBS clip, at several processing scales.

For the GPU run issue 3 asks for (fps for both eyes and peak VRAM at scale 0.5 and 0.25; target >= 30 fps at 0.5
on an H100 with hiera-tiny, < 10 GB VRAM at every scale):

    .venv/bin/python benchmarks/det_sam2_throughput.py --device cuda --frames 120

Uses the real checkpoints when `vr180matte models` finds them, else random weights of the same architectures
(throughput and memory do not depend on the weights' values; masks do). Encoding is ProRes 4444 as in production,
so the script also prints the engine-only fps (the `segment` stage) next to the end-to-end fps. On a CPU, use a
few frames and a small SAM2 image size to check the script itself:

    .venv/bin/python benchmarks/det_sam2_throughput.py --device cpu --frames 3 --image-size 256 --scales 0.25

Last line: {"device": .., "weights": "real"|"random", "results": {scale: {"fps": .., "engine_fps": .., "peak_vram_mb": .., "peak_rss_mb": ..}}}
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

import vr180matte.pipeline as pipeline
from vr180matte.config import load_config
from vr180matte.engines.det_sam2 import DetSam2Engine, det_sam2_weights_present
from vr180matte.sample import mux_audio, tone


def make_clip(path: Path, frames: int, width: int, fps: int = 30) -> Path:
    """Two moving bright 'people' over texture in both eyes, with disparity; H.264 + AAC."""
    h, ew = width // 2, width // 2
    rng = np.random.default_rng(0)
    base = rng.integers(40, 200, (h // 16, width // 16, 3), dtype=np.uint8).repeat(16, 0).repeat(16, 1)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = width, h, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "20"}
        au = out.add_stream("aac", rate=48000)
        au.layout = "stereo"
        for i in range(frames):
            f = base.copy()
            for k, (x, y, d) in enumerate(((ew // 3, h // 3, 24), (ew // 2, h // 2, 12))):
                x += 6 * i * (1 if k else -1)
                f[y : y + h // 4, x : x + h // 10] = 250
                f[y : y + h // 4, ew + x - d : ew + x - d + h // 10] = 250
            for p in vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        mux_audio(out, au, tone(frames / fps), 48000)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--width", type=int, default=6144)
    ap.add_argument("--scales", default="0.5,0.25")
    ap.add_argument("--sam2-model", default="sam2.1_hiera_tiny")
    ap.add_argument("--image-size", type=int, default=None, help="override SAM2 image_size (CPU smoke runs)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    base_sets = [f"hardware.device={args.device}", "matting.engine=det-sam2", f"matting.sam2_model={args.sam2_model}",
                 "processing.chunk_size=0", "performance.profile_enabled=false", "detection.confidence_threshold=0.25"]
    real = det_sam2_weights_present(load_config(None, base_sets))
    overrides = [f"++model.image_size={args.image_size}"] if args.image_size else None
    if not real or overrides:
        def build(cfg, device):
            torch.manual_seed(0)
            return DetSam2Engine(cfg, device, random_init=not real, sam2_overrides=overrides)

        pipeline.build_engine = build
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = make_clip(tmp / "bench.mp4", args.frames, args.width)
        for scale in (float(s) for s in args.scales.split(",")):
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            r = pipeline.run(clip, out_dir=tmp / f"o{scale}", overrides=base_sets + [f"processing.scale_factor={scale}"],
                             quiet=True)
            s = r.stats
            seg = s["stages"].get("segment", 0.0)
            results[str(scale)] = {
                "fps": round(s["frames_out"] / s["seconds"], 3),
                "engine_fps": round(s["frames_out"] / seg, 3) if seg else None,
                "peak_vram_mb": s["peak_vram_mb"],
                "peak_rss_mb": s["peak_rss_mb"],
                "processing_size": s["processing_size"],
            }
            print(f"scale {scale}: {results[str(scale)]}")
    print(json.dumps({"device": args.device, "weights": "real" if real else "random", "results": results}))


if __name__ == "__main__":
    main()
