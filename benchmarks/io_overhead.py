"""I/O overhead of the pipeline, and peak memory flatness in video length.

1. On a synthetic 6144x3072 SBS clip (H.264 + AAC tone), time ``vr180matte run`` with the passthrough engine
   (alpha = 1, ProRes 4444 with alpha) against the plain ``ffmpeg`` command line doing the same decode and the
   same encode (prores_ks 4444, yuva444p10le, audio copied), in one run. Prints the ratio (target <= 1.3).
2. Peak RSS of the pipeline for a clip of N and 4N frames (target: 4N <= 1.15 x N).

The last line of output is one JSON object: {"overhead_ratio": r, "rss_mb_n": a, "rss_mb_4n": b}.
Needs the ffmpeg binary from the imageio-ffmpeg wheel (requirements/dev.txt). Takes ~10 minutes on 2 cores.

    .venv/bin/python benchmarks/io_overhead.py [--frames 60] [--width 6144]
    .venv/bin/python benchmarks/io_overhead.py --smoke     # 8 frames at 256x128: checks the script
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

import av
import numpy as np

from vr180matte.sample import mux_audio, tone

SMOKE_KEYS = ("overhead_ratio", "rss_mb_n", "rss_mb_4n")


def make_clip(path: Path, frames: int, width: int, fps: int = 30) -> Path:
    h = width // 2
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h // 8, width // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    rate = 48000
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = width, h, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "23"}
        au = out.add_stream("aac", rate=rate)
        au.layout = "stereo"
        for i in range(frames):
            frame = np.roll(base, 4 * i, axis=1)
            for p in vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        mux_audio(out, au, tone(frames / fps, rate), rate)
    return path


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB of that child alone, from wait4's rusage)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{err[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def ours(clip: Path, out: Path, chunk: int) -> list[str]:
    return [
        sys.executable, "-m", "vr180matte.cli", "run", str(clip), "-o", str(out), "--quiet",
        "--set", "matting.engine=passthrough", "--set", "hardware.device=cpu",
        "--set", f"processing.chunk_size={chunk}", "--set", "performance.profile_enabled=false",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=60, help="4N: frames of the long clip (N = frames / 4)")
    ap.add_argument("--width", type=int, default=6144)
    ap.add_argument("--chunk", type=int, default=0, help="processing.chunk_size for our runs")
    ap.add_argument("--smoke", action="store_true", help="8 frames at 256x128: checks the script")
    args = ap.parse_args()
    if args.smoke:
        args.frames, args.width = 8, 256
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        long_clip = make_clip(tmp / "long.mp4", args.frames, args.width)
        short_clip = make_clip(tmp / "short.mp4", args.frames // 4, args.width)
        print(f"clips: {args.width}x{args.width // 2}, {args.frames} and {args.frames // 4} frames, H.264 + AAC")

        ref_cmd = [
            ffmpeg, "-nostdin", "-y", "-v", "error", "-i", str(long_clip), "-map", "0:v", "-map", "0:a",
            "-c:v", "prores_ks", "-profile:v", "4444", "-vendor", "apl0", "-alpha_bits", "16",
            "-pix_fmt", "yuva444p10le", "-c:a", "copy", str(tmp / "ffmpeg.mov"),
        ]
        t_ref, rss_ref = timed(ref_cmd)
        print(f"ffmpeg CLI      : {t_ref:8.1f} s  ({args.frames / t_ref:.2f} fps)  peak RSS {rss_ref:.0f} MB")
        t_ours, rss_4n = timed(ours(long_clip, tmp / "o_long", args.chunk))
        print(f"vr180matte run  : {t_ours:8.1f} s  ({args.frames / t_ours:.2f} fps)  peak RSS {rss_4n:.0f} MB")
        _t, rss_n = timed(ours(short_clip, tmp / "o_short", args.chunk))
        ratio = t_ours / t_ref
        print(f"overhead ratio  : {ratio:.3f}  (target <= 1.3)")
        print(f"peak RSS N={args.frames // 4}: {rss_n:.0f} MB, 4N={args.frames}: {rss_4n:.0f} MB, "
              f"ratio {rss_4n / rss_n:.3f} (target <= 1.15)")
    print(json.dumps({"overhead_ratio": round(ratio, 3), "rss_mb_n": round(rss_n, 1), "rss_mb_4n": round(rss_4n, 1)}))


if __name__ == "__main__":
    main()
