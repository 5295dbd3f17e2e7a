"""``vr180matte estimate``: expected wall time and cost of a job, before renting the GPUs for it.

Two sources of throughput, and the output says which one it used:

* **measured** (default): a probe run of the real pipeline, with the user's config, on the first ``--frames``
  frames of the input, on this machine, as one chunk. Its wall time splits into a fixed part (start-up, imports,
  model loading, joining, verifying: everything outside the chunk loop) and seconds per processed frame (the
  chunk loop); the estimate is ``fixed + per_frame * frames the full run processes`` (chunk overlaps are
  processed twice, so they count). The probe's frames stand for the whole video: content that gets busier later
  (more people) makes the real run slower than estimated.
* **table** (``--gpu NAME``): the per-GPU figures in :data:`GPU_TABLE`. Only **measured** rows are shipped,
  each with where and on what code it was measured; a GPU that was never measured is answered "not measured"
  (measure it with a probe run on that machine). See ``docs/cluster.md``.

Cost = wall hours x ``--price`` (USD per GPU-hour); without ``--price`` no cost is printed (no price is assumed).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

from ..config import Config, load_config

log = logging.getLogger(__name__)

_REF_PIXELS = 6144 * 3072  # the table's figures are for full-size 6K VR180 SBS frames


@dataclass(frozen=True)
class GpuFigure:
    """Measured end-to-end throughput of one GPU class on 6144x3072 SBS, det-sam2 (hiera-tiny), scale 0.5."""

    fps: float
    source: str  # "measured"
    basis: str  # where, when, on what code and with what settings it was measured


# Only measured figures. The one GPU run so far (the lent H200 of issue 19, recorded in docs/cluster.md and
# docs/benchmarks.md) ran the code *before* the GPU frame path work; benchmarks/gpu_check.sh re-measures it.
GPU_TABLE: dict[str, GpuFigure] = {
    "h200": GpuFigure(0.61, "measured", "H200 + 16 cores, 2026-12-04, 60-frame 6K street clip, det-sam2 hiera-tiny "
                      "(random-init SAM2 weights), scale 0.5, ProRes 4444; code before issue 19's GPU path"),
}
# GPUs people ask for that nobody has measured: answered "not measured", never with a guess.
NOT_MEASURED = ("rtx3080", "rtx4090", "a40", "l40s", "a100", "h100")


@dataclass
class Estimate:
    input: str
    frames: int
    duration_s: float
    frames_processed: int  # including chunk overlaps, which are processed twice
    source: str  # always "measured": a probe run here, or a measured GPU table row
    basis: str  # what the figure comes from, in words
    fixed_s: float
    s_per_frame: float
    wall_s: float
    usd_per_hour: float | None
    cost_usd: float | None
    cost_per_30s_clip_usd: float | None
    probe: dict | None = None  # the probe run's own figures (measured mode)

    def text(self) -> str:
        m, s = divmod(round(self.wall_s), 60)
        h, m = divmod(m, 60)
        wall = f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"
        lines = [
            f"{Path(self.input).name}: {self.frames} frames ({self.duration_s:.1f} s), "
            f"{self.frames_processed} processed with chunk overlaps",
            f"  throughput: {1 / self.s_per_frame:.3f} fps ({self.source}: {self.basis})",
            f"  wall time:  {wall} ({self.wall_s:.1f} s = {self.fixed_s:.1f} s fixed + {self.s_per_frame:.3f} s/frame"
            f" x {self.frames_processed})",
        ]
        if self.cost_usd is not None:
            lines.append(f"  cost:       ${self.cost_usd:.3f} at ${self.usd_per_hour:.2f}/h; "
                         f"${self.cost_per_30s_clip_usd:.3f} per 30-second clip")
        else:
            lines.append("  cost:       give --price USD_PER_HOUR for a cost")
        return "\n".join(lines)


def processed_frames(cfg: Config, frame_count: int, eye_w: int, eye_h: int) -> int:
    """Frames the full run pushes through the engine: every frame once, plus every chunk's leading overlap."""
    from ..runtime.chunks import plan_chunks

    chunk_size = cfg.processing.chunk_size
    if chunk_size == "auto":
        from ..runtime.device import auto_chunk_size, resolve_device
        from ..runtime.scale import processing_scale

        chunk_size = auto_chunk_size(eye_w, eye_h, processing_scale(cfg.processing.scale_factor, min(eye_w, eye_h)),
                                     resolve_device(cfg.hardware.device), cfg.hardware.max_vram_gb,
                                     cfg.processing.max_memory_gb)
    chunks = plan_chunks(frame_count, int(chunk_size), int(cfg.processing.overlap_frames))
    return sum(c.process_end - c.process_start for c in chunks)


def _head_clip(src: Path, dst: Path, frames: int) -> int:
    """The first ``frames`` frames of ``src`` as a near-lossless H.264 file (no audio); returns frames written."""
    import av

    n = 0
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        rate = vin.average_rate or vin.guessed_rate or Fraction(30)
        vout = out.add_stream("libx264", rate=rate)
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        vout.options = {"crf": "10", "preset": "ultrafast"}  # quality close to the source, encoded quickly
        for frame in inp.decode(vin):
            # A fresh frame without the source's timestamps: the encoder times it evenly (the probe measures
            # compute, not timing).
            fresh = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            for packet in vout.encode(fresh):
                out.mux(packet)
            n += 1
            if n >= frames:
                break
        for packet in vout.encode():
            out.mux(packet)
    return n


def _cost(wall_s: float, price: float | None, frames: int, fps: float, s_per_frame: float, fixed_s: float):
    if price is None:
        return None, None
    per_clip_s = fixed_s + s_per_frame * 30.0 * fps  # a 30-second clip of the same kind (overlap ignored)
    return round(wall_s / 3600 * price, 4), round(per_clip_s / 3600 * price, 4)


def estimate(
    input_path: str | Path,
    config: Config | str | Path | None = None,
    overrides: Sequence[str] = (),
    gpu: str | None = None,
    price: float | None = None,
    probe_frames: int = 24,
    startup_s: float = 0.0,
) -> Estimate:
    """Expected wall time (and cost) of ``vr180matte run`` on ``input_path`` with ``config``.

    ``startup_s``: interpreter start-up and imports, measured by the CLI in its own process and added to the
    fixed part (a ``vr180matte run`` pays it too).
    """
    from ..io.errors import InputError
    from ..io.probe import probe, resolve_layout

    from ..config import ConfigError

    cfg = config if isinstance(config, Config) else load_config(config, overrides)
    if price is not None and not (price >= 0 and math.isfinite(price)):
        raise ConfigError(f"--price {price}: give the machine's price in USD per hour, e.g. 2.4")
    src = Path(input_path)
    if not src.is_file():
        raise InputError(f"input not found: {src}")
    info = probe(src)
    if info.frame_count <= 0:
        raise InputError(f"{src.name}: the video stream has no frames")
    layout = resolve_layout(info, cfg.input.layout) if cfg.input.layout != "mono" else "sbs"
    eye_w, eye_h = (info.width // 2, info.height) if layout in ("sbs", "sbs_rl") else (info.width, info.height // 2)
    total = processed_frames(cfg, info.frame_count, eye_w, eye_h)
    fps = float(info.fps)

    if gpu is not None:
        key = gpu.lower().replace(" ", "").replace("-", "").replace("nvidia", "").replace("geforce", "")
        if key in NOT_MEASURED:
            raise ConfigError(f"--gpu {gpu}: not measured (no figure for this GPU); run `vr180matte estimate` on "
                              f"that machine for a probe run, or use a measured row: {', '.join(GPU_TABLE)}")
        if key not in GPU_TABLE:
            raise ConfigError(f"unknown GPU '{gpu}': measured rows are {', '.join(GPU_TABLE)} (or omit --gpu to "
                              "measure this machine)")
        row = GPU_TABLE[key]
        # Per-frame work scales with the source pixels (refine, composite and encode run at full resolution).
        s_per_frame = (1.0 / row.fps) * (info.width * info.height) / _REF_PIXELS
        fixed = 0.0  # start-up was not measured on that machine: only the per-frame part is quoted
        wall = fixed + s_per_frame * total
        cost, per_clip = _cost(wall, price, info.frame_count, fps, s_per_frame, fixed)
        return Estimate(str(src), info.frame_count, round(info.duration_s, 3), total, row.source,
                        f"GPU table row '{key}' ({row.fps} fps at 6144x3072, scaled to {info.width}x{info.height}; "
                        f"{row.basis})", fixed, round(s_per_frame, 5), round(wall, 1), price, cost, per_clip)

    t_import = time.perf_counter()
    from ..pipeline import run  # a `vr180matte run` pays this import too (torch, the engines): part of the fixed cost

    startup_s += time.perf_counter() - t_import
    # One chunk of n frames. (A two-chunk probe that times only its second chunk was tried: on the embedded engine
    # a chunk start re-creates per-track segmenters, so the "steady" chunk was the slower one.)
    n = max(2, min(int(probe_frames), info.frame_count))
    tmp = Path(tempfile.mkdtemp(prefix="vr180matte-estimate-"))
    try:
        head = tmp / f"{src.stem}.probe.mp4"
        n = _head_clip(src, head, n)
        # Same config, but the probe writes nothing the user sees, keeps the input's stereo layout (the
        # re-encoded head carries no stereo metadata) and runs the sequential chunk runner (one GPU's throughput).
        sets = [f"input.layout={layout}", "performance.preserve_intermediates=false", "processing.chunk_parallel=false",
                "processing.chunk_size=0"]
        probe_cfg = load_config(None, sets, base=cfg._flat)
        t0 = time.perf_counter()
        result = run(head, probe_cfg, tmp / "out", quiet=True)
        probe_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    chunk_s = sum(c["seconds"] for c in result.stats["chunks"])
    s_per_frame = chunk_s / n  # includes the first frames' warm-up: errs on the safe side for long videos
    fixed = max(0.0, probe_s - chunk_s) + startup_s  # start-up, imports, model loading, joining, verifying
    wall = fixed + s_per_frame * total
    cost, per_clip = _cost(wall, price, info.frame_count, fps, s_per_frame, fixed)
    return Estimate(
        str(src), info.frame_count, round(info.duration_s, 3), total, "measured",
        f"{n}-frame probe run on this machine ({result.stats['engine']} engine, {result.stats['device']})",
        round(fixed, 3), round(s_per_frame, 5), round(wall, 1), price, cost, per_clip,
        probe={"frames": n, "seconds": round(probe_s, 3), "chunk_seconds": round(chunk_s, 3),
               "startup_seconds": round(startup_s, 3), "engine": result.stats["engine"],
               "device": result.stats["device"]},
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``estimate`` subcommand's arguments (the CLI calls this)."""
    p.add_argument("input", help="input video")
    p.add_argument("-c", "--config", help="YAML or TOML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--gpu", default=None, help=f"use the project's measured figure for a GPU: {', '.join(GPU_TABLE)} "
                   "(default: measure a probe run on this machine)")
    p.add_argument("--price", type=float, default=None, metavar="USD_PER_HOUR", help="price of the machine per hour")
    p.add_argument("--frames", type=int, default=24, help="frames in the probe run (default 24)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def estimate_command(args: argparse.Namespace) -> int:
    import psutil

    # What this process took to start and import (torch, ...): a `vr180matte run` pays the same.
    startup = max(0.0, time.time() - psutil.Process().create_time())
    est = estimate(args.input, args.config, args.overrides, gpu=args.gpu, price=args.price, probe_frames=args.frames,
                   startup_s=startup)
    print(json.dumps(asdict(est), indent=2) if args.json else est.text())
    return 0


__all__ = ["GPU_TABLE", "NOT_MEASURED", "Estimate", "GpuFigure", "estimate", "estimate_command", "add_arguments", "processed_frames"]
