"""End to end at 6K on the GPU: fps, stage split, GPU busy share, peak VRAM and host RSS (issue 19).

One ``vr180matte.pipeline.run`` of a 6144x3072 side-by-side clip with people (``throughput_6k.make_clip``: DAVIS
parkour upscaled per eye, H.264) with the det-sam2 engine: the SAM2.1 checkpoint when ``vr180matte models`` finds
it, else random weights of the same architecture, the bundled trained detector in front either way. While it
runs, a thread samples the GPU's utilisation (NVML, every 0.2 s) for ``gpu_busy_pct`` (the mean of the samples:
the share of time a kernel was running, as nvidia-smi reports it; null without NVML or a GPU). ``stages`` is the
busy seconds per stage from stats.json. ``--config`` runs a preset (e.g. configs/h100.yaml); ``--set`` adds
overrides (e.g. ``output.format=greenscreen``).

Why its own script: benchmarks/gpu_check.sh needs one figure set per configuration that a GPU run can be judged
by (issue 19's targets); det_sam2_throughput.py reports the engine alone.

    .venv/bin/python benchmarks/gpu_e2e.py --frames 60 [--config configs/h100.yaml] [--set output.format=greenscreen]
    .venv/bin/python benchmarks/gpu_e2e.py --smoke      # 2 frames, 256-px eyes, SAM2 at 256 px, CPU: checks the script

Last line: one JSON object with SMOKE_KEYS.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput_6k import make_clip  # noqa: E402

from vr180matte.config import load_config  # noqa: E402
from vr180matte.engines.det_sam2 import DetSam2Engine, det_sam2_weights_present  # noqa: E402
from vr180matte.pipeline import run  # noqa: E402

SMOKE_KEYS = ("device", "weights", "frames", "scale", "fps", "engine_fps", "stages", "gpu_busy_pct", "peak_vram_mb",
              "peak_rss_mb", "tracks")


class GpuSampler(threading.Thread):
    """Samples NVML's GPU utilisation every ``period`` s until stopped; ``mean`` is None without NVML/GPU."""

    def __init__(self, period: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.period, self.samples, self._stop_evt = period, [], threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml, self._handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # noqa: BLE001 - no NVML library or no GPU: nothing to sample
            self._nvml = self._handle = None

    def run(self) -> None:
        while self._handle is not None and not self._stop_evt.wait(self.period):
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)

    def stop(self) -> float | None:
        self._stop_evt.set()
        if self.is_alive():
            self.join()
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--eye", type=int, default=3072, help="eye side of the synthetic clip (px)")
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--config", default=None, help="a preset, e.g. configs/h100.yaml")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--image-size", type=int, default=None, help="override SAM2 image_size (CPU runs)")
    ap.add_argument("--smoke", action="store_true", help="2 frames, 256-px eyes, SAM2 at 256 px")
    args = ap.parse_args()
    if args.smoke:
        args.frames, args.eye, args.image_size = 2, 256, 256
    logging.basicConfig(level=logging.WARNING)
    sets = [f"hardware.device={args.device}", "matting.engine=det-sam2", "processing.chunk_size=0",
            "performance.profile_sync=false", *([] if args.config else [f"processing.scale_factor={args.scale}"]),
            *args.extra]
    cfg = load_config(args.config, sets)
    real = det_sam2_weights_present(cfg)
    overrides = [f"++model.image_size={args.image_size}"] if args.image_size else None

    def factory(cfg, device):
        torch.manual_seed(0)
        return DetSam2Engine(cfg, device, random_init=not real, random_init_detector=False, sam2_overrides=overrides)

    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "e2e.mp4", args.frames, args.eye)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        sampler = GpuSampler()
        sampler.start()
        try:
            r = run(clip, cfg, out_dir=Path(tmp) / "out", quiet=True, engine=factory)
        finally:
            busy = sampler.stop()
    s = r.stats
    seg = s["stages"].get("segment", 0.0)
    print(json.dumps({
        "device": args.device, "weights": "real" if real else "random", "frames": s["frames_out"],
        "scale": cfg.processing.scale_factor, "config": args.config, "sets": args.extra,
        "fps": round(s["frames_out"] / s["seconds"], 3),
        "engine_fps": round(s["frames_out"] / seg, 3) if seg else None,
        "stages": {k: round(v, 2) for k, v in s["stages"].items()},
        "gpu_busy_pct": busy, "peak_vram_mb": s["peak_vram_mb"], "peak_rss_mb": s["peak_rss_mb"],
        "tracks": {v: t["tracks_started"] for v, t in (s.get("tracks") or {}).items()},
    }))


if __name__ == "__main__":
    main()
