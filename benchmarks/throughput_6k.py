"""6K throughput against the speed of its I/O (issue 14).

A 6144x3072 side-by-side clip with people (DAVIS parkour frames upscaled to 3072x3072 per eye, the right eye
shifted a little for disparity; H.264 like a camera file) goes through ``vr180matte run`` with the embedded
engine and ProRes 4444 with alpha, at ``processing.scale_factor`` 0.25 and 0.5. In the same run the ffmpeg
command line (the static binary of the imageio-ffmpeg wheel, requirements/dev.txt) decodes the same clip and
does the same encode (prores_ks 4444, yuva444p10le, 16-bit alpha): the I/O floor.

Like for like: ``fps_025``/``fps_05`` and ``ratio_025`` time our WHOLE command (interpreter start, probe, model
loading, processing, join, verify: what a user waits for) against ffmpeg's whole command. The processing-only
figure (stats.json ``concurrency.wall_s``: decode to last encode) is printed beside it as
``fps_025_processing``/``ratio_025_processing``; ``wall_s``, ``busiest_stage_s`` and ``efficiency`` (processing
wall / busiest stage: 1.0 = the run goes at the speed of its slowest stage) come from the 0.25 run.
The last line is one JSON object:

    {"fps_025", "fps_05", "ffmpeg_fps", "ratio_025", "busiest_stage_s", "wall_s", "efficiency",
     "pipeline_efficiency", "core_utilization", "passthrough_fps", "fps_025_processing", "ratio_025_processing",
     "command_s"}

The first seven are the issue's. ``pipeline_efficiency`` is wall / the busiest overlapping stage (a thread:
segment, finish = refine + temporal + quality + composite, encode), ``core_utilization`` the process's CPU
seconds / (wall x cores) of the 0.25 run, and ``passthrough_fps`` our own pipeline with the passthrough engine
(decode, alpha 1, the same encode: no matting at all) on the same clip: the I/O floor inside vr180matte.

Targets on the project's 2 cores: ratio_025 >= 0.5, efficiency <= 1.15. Heavy (tens of minutes on 2 cores):
run it alone. ``--frames 4 --small`` is a small mode (1536x768); ``--smoke`` (2 frames, 512x256, scale 0.25)
only checks the script itself.

    .venv/bin/python benchmarks/throughput_6k.py [--frames 30] [--small] [--scales 0.25 0.5]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMOKE_KEYS = ("fps_025", "fps_05", "ffmpeg_fps", "ratio_025", "busiest_stage_s", "wall_s", "efficiency",
              "pipeline_efficiency", "core_utilization", "passthrough_fps", "fps_025_processing",
              "ratio_025_processing", "command_s")
MEDIA = REPO.parent / "shared" / "media" / "davis2016_parkour" / "JPEGImages"


def make_clip(path: Path, frames: int, eye: int, fps: int = 24) -> Path:
    """``frames`` DAVIS frames, each eye resized to ``eye`` x ``eye``, side by side, H.264 (crf 16)."""
    import av
    import cv2
    import numpy as np

    jpgs = sorted(MEDIA.glob("*.jpg"))
    if len(jpgs) < frames:
        raise SystemExit(f"need {frames} DAVIS frames under {MEDIA}, found {len(jpgs)}")
    shift = max(2, eye // 384)  # a few pixels of disparity, like a distant subject
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = 2 * eye, eye, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "16"}
        for f in jpgs[:frames]:
            rgb = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
            left = cv2.resize(rgb, (eye, eye), interpolation=cv2.INTER_CUBIC)
            sbs = np.concatenate([left, np.roll(left, -shift, axis=1)], axis=1)
            for p in vs.encode(av.VideoFrame.from_ndarray(sbs, format="rgb24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
    return path


def run_ffmpeg(ffmpeg: str, clip: Path, out: Path) -> float:
    cmd = [
        ffmpeg, "-nostdin", "-y", "-v", "error", "-i", str(clip), "-map", "0:v",
        "-c:v", "prores_ks", "-profile:v", "4444", "-vendor", "apl0", "-alpha_bits", "16",
        "-pix_fmt", "yuva444p10le", str(out),
    ]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"ffmpeg failed: {res.stderr[-1500:]}")
    return time.perf_counter() - t0


def run_ours(clip: Path, out: Path, scale: float, extra: list[str] = ()) -> dict:
    cmd = [
        sys.executable, "-m", "vr180matte.cli", "run", str(clip), "-o", str(out), "--quiet",
        "--set", "matting.engine=embedded", "--set", "hardware.device=cpu", "--set", "output.format=alpha",
        "--set", "output.codec=prores4444", "--set", "input.layout=sbs",
        "--set", f"processing.scale_factor={scale}",
    ]
    for kv in extra:
        cmd += ["--set", kv]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    total = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"vr180matte run failed (exit {res.returncode}): {res.stderr[-2000:]}")
    stats = json.loads((out / f"{clip.stem}.stats.json").read_text())
    conc = stats.get("concurrency") or {}
    frames = int(stats["frames_out"])
    wall = float(conc.get("wall_s") or stats.get("seconds") or total)
    st = stats.get("stereo") or {}
    print(f"  detector runs: {sum(v.get('detections_run', 0) + v.get('detections_supplied', 0) for v in (stats.get('tracks') or {}).values())}"
          f" (per eye, supplied by the stereo stage), vouching: {st.get('vouching')}", file=sys.stderr)
    return {"frames": frames, "wall_s": wall, "total_s": total, "fps": frames / total,
            "fps_processing": frames / wall, "stages": stats["stages"],
            "busiest_stage": conc.get("busiest_stage"), "busiest_stage_s": conc.get("busiest_stage_s"),
            "efficiency": conc.get("efficiency"), "wait_s": conc.get("wait_s"),
            "pipeline_busy_s": conc.get("pipeline_busy_s"), "pipeline_efficiency": conc.get("pipeline_efficiency"),
            "cpu_s": conc.get("cpu_s"), "core_utilization": conc.get("core_utilization")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--small", action="store_true", help="smoke mode: 768 px eyes instead of 3072")
    ap.add_argument("--scales", type=float, nargs="+", default=[0.25, 0.5])
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="extra config override for our runs (e.g. detection.image_size=1536)")
    ap.add_argument("--smoke", action="store_true", help="2 frames, 256-px eyes, scale 0.25: checks the script")
    ap.add_argument("--keep", type=Path, default=None, help="keep the clip and outputs in this folder")
    args = ap.parse_args()
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    eye = 768 if args.small else 3072
    if args.smoke:
        args.frames, args.scales, eye = 2, [0.25], 256
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        clip = make_clip(work / "davis_sbs_6k.mp4", args.frames, eye)
        print(f"clip: {2 * eye}x{eye} SBS, {args.frames} frames (DAVIS parkour upscaled), H.264", flush=True)
        t_ff = run_ffmpeg(ffmpeg, clip, work / "ffmpeg.mov")
        ffmpeg_fps = args.frames / t_ff
        print(f"ffmpeg decode + ProRes 4444 encode: {t_ff:.1f} s, {ffmpeg_fps:.3f} fps", flush=True)
        runs = {}
        for s in args.scales:
            r = runs[s] = run_ours(clip, work / f"out_{s}", s, args.extra)
            print(f"vr180matte scale {s}: {r['frames']} frames, whole command {r['total_s']:.1f} s "
                  f"({r['fps']:.3f} fps), processing wall {r['wall_s']:.1f} s ({r['fps_processing']:.3f} fps); busiest {r['busiest_stage']} "
                  f"{r['busiest_stage_s']} s, efficiency {r['efficiency']}", flush=True)
            print(f"  busy seconds per stage: {json.dumps(r['stages'])}", flush=True)
            print(f"  queue waits: {json.dumps(r['wait_s'])}", flush=True)
            print(f"  busy seconds per overlapping stage (thread): {json.dumps(r['pipeline_busy_s'])}, pipeline "
                  f"efficiency {r['pipeline_efficiency']}; process CPU {r['cpu_s']} s, cores "
                  f"{r['core_utilization']} busy", flush=True)
        p = run_ours(clip, work / "out_passthrough", min(args.scales), ["matting.engine=passthrough"])
        print(f"vr180matte passthrough engine (the same decode and encode, no matting): whole command "
              f"{p['total_s']:.1f} s ({p['fps']:.3f} fps), processing {p['wall_s']:.1f} s, process CPU {p['cpu_s']} s", flush=True)
    q = runs.get(0.25) or next(iter(runs.values()))
    h = runs.get(0.5)
    busiest = q["busiest_stage_s"]
    print(json.dumps({
        "fps_025": round(q["fps"], 4),
        "fps_05": round(h["fps"], 4) if h else None,
        "ffmpeg_fps": round(ffmpeg_fps, 4),
        "ratio_025": round(q["fps"] / ffmpeg_fps, 4),
        "busiest_stage_s": busiest,
        "wall_s": round(q["wall_s"], 3),
        "efficiency": round(q["wall_s"] / busiest, 4) if busiest else None,
        "pipeline_efficiency": q["pipeline_efficiency"],
        "core_utilization": q["core_utilization"],
        "passthrough_fps": round(p["fps"], 4),
        "fps_025_processing": round(q["fps_processing"], 4),
        "ratio_025_processing": round(q["fps_processing"] / ffmpeg_fps, 4),
        "command_s": round(q["total_s"], 3),
    }))


if __name__ == "__main__":
    main()
