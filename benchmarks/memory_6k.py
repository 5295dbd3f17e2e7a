"""Peak host memory of the I/O path at 6144x3072 for N and 4N frames, with FFmpeg told to use 16 threads.

Each figure is one ``vr180matte`` run in its own process (peak RSS from ``wait4``'s rusage, so nothing else in
this process counts) on a synthetic SBS clip: decode -> frame matter -> ProRes 4444 with alpha, with the
passthrough engine (alpha = 1: the models are not what this measures; their memory has its own benchmarks),
the default config otherwise, and the machine made to look like the 16-core H200 host of issue 20: the device
policy sees 16 cores (``hardware.policy=gpu``: 8 encoder contexts) and the reader and the encoders are given 16
FFmpeg threads each (the writer splits its 16 over its contexts). The child also reports tracemalloc's peak (numpy frames
in flight; FFmpeg's own buffers are not traced) and its glibc arena cap.

Runs: the default (MALLOC_ARENA_MAX not set: this machine's glibc default) at N and 4N, and N with glibc's
default arena cap as on a 16-core machine (8 x 16 = 128). The long run's RSS is also sampled from ``/proc``:
the highest RSS of each half of its wall time tells a plateau from growth. ``--engine auto`` runs the default
config's engine instead of passthrough (models included; the CPU policy, as this machine has no GPU).
Targets (issue 20): peak <= 4096 MB and 4N / N <= 1.1. Last line: one JSON object (SMOKE_KEYS first).

    flock /tmp/vr180-heavy.lock nice .venv/bin/python benchmarks/memory_6k.py [--frames 24] [--engine auto]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

SMOKE_KEYS = ("frames_n", "rss_mb_n", "rss_mb_4n", "threads", "ratio", "py_peak_mb_n", "rss_mb_4n_halves", "met")

THREADS = 16


def make_clip(path: Path, frames: int, width: int, height: int) -> Path:
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=Fraction(30))
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "23"}
        for i in range(frames):
            for p in vs.encode(av.VideoFrame.from_ndarray(np.roll(base, 4 * i, axis=1), format="rgb24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
    return path


def child(clip: str, out_dir: str, engine: str) -> None:
    """One pipeline run as on a 16-core machine; prints one JSON line with tracemalloc's peak."""
    import tracemalloc

    import vr180matte.compat.machine as machine

    machine.available_cores = lambda: THREADS  # the policy (encoders, FFmpeg threads) and the decoder rule see 16
    import vr180matte.io.reader as reader

    orig = reader.FrameReader.__init__

    def with_threads(self, *a, **k):  # the reader told to use 16 threads, as on the 16-core host
        k["threads"] = THREADS
        orig(self, *a, **k)

    reader.FrameReader.__init__ = with_threads
    import vr180matte.io.writer as writer

    orig_w = writer.SegmentWriter.__init__

    def writer_threads(self, *a, **k):  # and the encoders: 16 FFmpeg threads, split over the contexts
        k["threads"] = THREADS
        orig_w(self, *a, **k)

    writer.SegmentWriter.__init__ = writer_threads
    from vr180matte.pipeline import run
    # what run() imports only after its input checks, imported before tracing starts: the peak is then the run's
    # own allocations (frames in flight), not torch's and the engines' import-time objects, and the smoke run is
    # not slowed by tracing every import (a 512x256 child took 20 s traced from here, 6 s untraced)
    import cv2  # noqa: F401
    import matplotlib

    matplotlib.use("Agg")  # as the report does (quality/report.py)
    import matplotlib.pyplot  # noqa: F401
    import torch  # noqa: F401
    import vr180matte.engines  # noqa: F401
    import vr180matte.pipeline.chunk_runner  # noqa: F401
    import vr180matte.pipeline.frame_matter  # noqa: F401
    import vr180matte.pipeline.stats  # noqa: F401
    import vr180matte.quality.report  # noqa: F401

    tracemalloc.start()
    # the passthrough (I/O) run takes the GPU policy's encoder count; a model engine runs here on the CPU, where a
    # forced GPU policy would put its "device" tensors (whole-frame work) in host memory, so it keeps the policy
    # the machine gets (auto: the CPU policy, seeing 16 cores)
    policy = "gpu" if engine == "passthrough" else "auto"
    result = run(clip, out_dir=out_dir, overrides=["hardware.device=cpu", f"hardware.policy={policy}",
                                                   f"matting.engine={engine}"], quiet=True)
    _, peak = tracemalloc.get_traced_memory()
    print(json.dumps({"py_peak_mb": round(peak / 2**20, 1), "io": result.stats.get("io"),
                      "frames": result.stats["frames_out"]}))


def measure(clip: Path, out_dir: Path, arenas: str | None, engine: str = "passthrough") -> dict:
    env = dict(os.environ)
    env.pop("MALLOC_ARENA_MAX", None)
    if arenas is not None:
        env["MALLOC_ARENA_MAX"] = arenas
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(clip), str(out_dir), engine], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    trace: list[tuple[float, float]] = []  # (s since start, RSS MB): does the run plateau, or keep growing?
    done = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not done.wait(0.25):
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    rss = next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS"))
                trace.append((time.monotonic() - t0, rss / 1024))
            except (OSError, StopIteration):  # not Linux, or the child is exiting
                pass

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _pid, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"run failed:\n{err[-3000:]}")
    rep = json.loads(out.strip().splitlines()[-1])
    rep["rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    # the highest RSS in each half of the run's wall time (the tail, where frames drain and buffers are freed,
    # included): equal halves mean a plateau, a higher second half means memory still growing with the frames
    half = trace[-1][0] / 2 if trace else 0.0
    rep["rss_mb_halves"] = [round(max((r for t, r in trace if (t < half) == first), default=0.0), 1)
                            for first in (True, False)]
    return rep


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3], sys.argv[4])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # N must be past the ramp-up, or the comparison measures the filling, not growth with length: RSS sampled
    # through a 64-frame run at 6K rose for its first ~20 frames (read-ahead, stage queues, encoder contexts,
    # FFmpeg's frame pools and glibc's arenas filling) and then stayed flat to the end; a 16-frame run ends
    # inside the ramp (16 -> 64 frames: 1.12, with the same plateau)
    ap.add_argument("--frames", type=int, default=24, help="N (the long run has 4N)")
    ap.add_argument("--width", type=int, default=6144)
    ap.add_argument("--engine", default="passthrough",
                    help="matting.engine of the runs: passthrough (the I/O path alone, the default) or auto (the "
                         "default config's engine: the whole default run, models included)")
    ap.add_argument("--smoke", action="store_true", help="tiny run (512x256, N=2)")
    args = ap.parse_args()
    if args.smoke:
        args.width, args.frames = 512, 2
    n, w = args.frames, args.width
    with tempfile.TemporaryDirectory(prefix="vr180-mem6k-") as tmp:
        t = Path(tmp)
        clip_n = make_clip(t / "n.mp4", n, w, w // 2)
        clip_4n = make_clip(t / "4n.mp4", 4 * n, w, w // 2)
        a = measure(clip_n, t / "o1", None, args.engine)
        print(f"{n} frames: peak RSS {a['rss_mb']} MB (tracemalloc peak {a['py_peak_mb']} MB)", flush=True)
        b = measure(clip_4n, t / "o2", None, args.engine)
        print(f"{4 * n} frames: peak RSS {b['rss_mb']} MB (tracemalloc peak {b['py_peak_mb']} MB; highest RSS in the "
              f"first and second half of the run: {b['rss_mb_halves']} MB)", flush=True)
        # the arena comparison is of the I/O path; the smoke run stays short
        c = None if args.smoke or args.engine != "passthrough" else measure(clip_n, t / "o3", "128", args.engine)
        if c is not None:
            print(f"{n} frames, MALLOC_ARENA_MAX=128: peak RSS {c['rss_mb']} MB", flush=True)
    ratio = round(b["rss_mb"] / a["rss_mb"], 3)
    out = {"frames_n": n, "rss_mb_n": a["rss_mb"], "rss_mb_4n": b["rss_mb"], "threads": THREADS, "ratio": ratio,
           "py_peak_mb_n": a["py_peak_mb"], "py_peak_mb_4n": b["py_peak_mb"], "rss_mb_n_arenas_128": c and c["rss_mb"],
           "rss_mb_4n_halves": b["rss_mb_halves"],
           "engine": args.engine, "width": w, "height": w // 2, "target_mb": 4096, "target_ratio": 1.1,
           "met": bool(max(a["rss_mb"], b["rss_mb"]) <= 4096 and ratio <= 1.1), "io": a["io"]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
