"""Det-SAM2 throughput and peak memory on a 6144x3072 SBS clip with people, at several processing scales.

For the GPU run issue 3 asks for (fps for both eyes and peak VRAM at scale 0.5 and 0.25; target >= 30 fps at 0.5
on an H100 with hiera-tiny, < 10 GB VRAM at every scale):

    .venv/bin/python benchmarks/det_sam2_throughput.py --device cuda --frames 120

The clip is DAVIS parkour (a real person, so the detector prompts SAM2 and the segmenter really runs) upscaled to
3072x3072 per eye, side by side, H.264 (``throughput_6k.make_clip``). The engine is built by this script and
handed to ``vr180matte.pipeline.run(..., engine=factory)``: the SAM2.1 checkpoint when ``vr180matte models``
finds it, else random weights of the same architecture (throughput and memory do not depend on the weights'
values; masks do), with the bundled trained detector in front either way; ``--image-size`` overrides SAM2's
input size in both cases. Encoding is ProRes 4444 as in production, so the script also prints the engine-only
fps (the ``segment`` stage) next to the end-to-end fps. Every stage time is taken with
``performance.profile_sync=true``: on CUDA each stage synchronises the device on entry and exit, so the segment
seconds are the device's time, not the time to queue kernels (runtime/profile.py); on a CPU it changes nothing.

    .venv/bin/python benchmarks/det_sam2_throughput.py --smoke     # 1 frame, 512x256, SAM2 at 256 px, CPU

Last line: {"device": .., "weights": "real"|"random", "image_size": .., "profile_sync": true,
            "results": {scale: {"fps": .., "engine_fps": .., "peak_vram_mb": .., "peak_rss_mb": ..,
                                "processing_size": .., "tracks": ..}}}
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput_6k import make_clip  # noqa: E402

from vr180matte.config import load_config  # noqa: E402
from vr180matte.engines.det_sam2 import DetSam2Engine, det_sam2_weights_present  # noqa: E402
from vr180matte.pipeline import run  # noqa: E402

SMOKE_KEYS = ("device", "weights", "image_size", "profile_sync", "results.0.5.fps", "results.0.5.engine_fps",
              "results.0.5.peak_rss_mb", "results.0.5.tracks")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--eye", type=int, default=3072, help="eye side of the synthetic clip (px)")
    ap.add_argument("--scales", default="0.5,0.25")
    ap.add_argument("--sam2-model", default="sam2.1_hiera_tiny")
    ap.add_argument("--image-size", type=int, default=None, help="override SAM2 image_size (CPU runs)")
    ap.add_argument("--smoke", action="store_true", help="1 frame, 256-px eyes, SAM2 at 256 px: checks the script")
    args = ap.parse_args()
    if args.smoke:
        args.frames, args.eye, args.scales, args.image_size = 1, 256, "0.5", 256
    logging.basicConfig(level=logging.WARNING)
    base_sets = [f"hardware.device={args.device}", "matting.engine=det-sam2", f"matting.sam2_model={args.sam2_model}",
                 "processing.chunk_size=0", "performance.profile_enabled=false", "performance.profile_sync=true"]
    real = det_sam2_weights_present(load_config(None, base_sets))
    overrides = [f"++model.image_size={args.image_size}"] if args.image_size else None
    built: list[DetSam2Engine] = []

    def factory(cfg, device):
        torch.manual_seed(0)
        eng = DetSam2Engine(cfg, device, random_init=not real, random_init_detector=False, sam2_overrides=overrides)
        built.append(eng)
        return eng

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = make_clip(tmp / "bench.mp4", args.frames, args.eye)
        for scale in (float(s) for s in args.scales.split(",")):
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            r = run(clip, out_dir=tmp / f"o{scale}", overrides=base_sets + [f"processing.scale_factor={scale}"],
                    quiet=True, engine=factory)
            s = r.stats
            seg = s["stages"].get("segment", 0.0)
            results[str(scale)] = {
                "fps": round(s["frames_out"] / s["seconds"], 3),
                "engine_fps": round(s["frames_out"] / seg, 3) if seg else None,
                "peak_vram_mb": s["peak_vram_mb"],
                "peak_rss_mb": s["peak_rss_mb"],
                "processing_size": s["processing_size"],
                "tracks": {v: t["tracks_started"] for v, t in (s.get("tracks") or {}).items()},
            }
            print(f"scale {scale}: {results[str(scale)]}", flush=True)
    # the engine really was ours, with the requested SAM2 input size (the old module-attribute hook was ignored)
    assert built and all(isinstance(e, DetSam2Engine) for e in built), "run() did not use the benchmark's engine"
    image_size = int(built[0].sam2.image_size)
    if args.image_size and image_size != args.image_size:
        raise SystemExit(f"--image-size {args.image_size} was not applied: SAM2 ran at {image_size}")
    print(json.dumps({"device": args.device, "weights": "real" if real else "random", "image_size": image_size,
                      "profile_sync": True, "results": results}))


if __name__ == "__main__":
    main()
