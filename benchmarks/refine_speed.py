"""Full-resolution post-processing cost per 3072x3072 eye (issue 14, item 3), in process CPU seconds.

DAVIS parkour frames upscaled to 3072x3072 (one eye of a 6K SBS frame), coarse mask = ground truth at the
processing scale. Measured with ``time.process_time`` (CPU seconds of every thread of the process, OpenCV's
worker threads included; ``thread_time`` missed those) with one torch thread, so the figures hold on a shared,
loaded machine (wall time would not). The temporal smoother's first frame only initialises its state, so its
figures average frames 2..n (the smoother is timed on at least 2 frames). Compares, on the same frames:

* refiner: every tile filtered (``skip_uniform = False``, what the refiner did before) vs only the tiles
  whose support touches the edge band; share of tiles refined;
* temporal smoother: guide = the full-resolution eye vs the processing-size eye;
* quality monitor: every frame with the full-resolution guide vs ``every=5`` at processing size.

The last line is one JSON object.

    .venv/bin/python benchmarks/refine_speed.py [--frames 6] [--scale 0.25]
    .venv/bin/python benchmarks/refine_speed.py --smoke     # 2 frames, 512-px eye: checks the script
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from vr180matte.matte.refine import Refiner  # noqa: E402
from vr180matte.matte.temporal import TemporalSmoother  # noqa: E402
from vr180matte.quality.monitor import QualityMonitor  # noqa: E402

MEDIA = REPO.parent / "shared" / "media" / "davis2016_parkour"
EYE = 3072
SMOKE_KEYS = ("eye", "frames", "s_per_eye_frame.refine_all_tiles", "s_per_eye_frame.refine_band_tiles",
              "s_per_eye_frame.temporal_full_guide", "s_per_eye_frame.temporal_proc_guide",
              "s_per_eye_frame.quality_every_frame", "s_per_eye_frame.quality_every_5_proc",
              "tiles_refined_share", "max_abs_diff")


def frames(n: int, scale: float, eye: int = EYE):
    for i in range(n):
        rgb = cv2.cvtColor(cv2.imread(str(MEDIA / "JPEGImages" / f"{30 + i:05d}.jpg")), cv2.COLOR_BGR2RGB)
        gt = cv2.imread(str(MEDIA / "Annotations" / f"{30 + i:05d}.png"), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
        guide = cv2.resize(rgb, (eye, eye), interpolation=cv2.INTER_CUBIC)
        k = round(eye * scale)
        prob = cv2.resize(gt, (k, k), interpolation=cv2.INTER_AREA)
        proc = cv2.resize(guide, (k, k), interpolation=cv2.INTER_AREA)
        yield torch.from_numpy(prob), torch.from_numpy(guide), torch.from_numpy(proc)


def cpu(fn, *a):
    t = time.process_time()
    out = fn(*a)
    return out, time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--eye", type=int, default=EYE)
    ap.add_argument("--smoke", action="store_true", help="2 frames of a 512-px eye: checks the script")
    args = ap.parse_args()
    if args.smoke:
        args.frames, args.eye = 2, 512
    args.frames = max(2, args.frames)  # the smoother's first frame is not timed
    torch.set_num_threads(1)
    data = list(frames(args.frames, args.scale, args.eye))
    fast, full = Refiner(), Refiner()
    full.skip_uniform = False
    fast(data[0][0], data[0][1])  # warm-up
    t = {k: 0.0 for k in ("refine_all_tiles", "refine_band_tiles", "temporal_full_guide", "temporal_proc_guide",
                          "quality_every_frame", "quality_every_5_proc")}
    share, alphas, diff = [], [], 0.0
    for prob, guide, _ in data:
        a_full, s = cpu(full, prob, guide)
        t["refine_all_tiles"] += s
        a, s = cpu(fast, prob, guide)
        t["refine_band_tiles"] += s
        diff = max(diff, float((a - a_full).abs().max()))
        share.append(fast.last_stats["tiles_refined"] / fast.last_stats["tiles"])
        alphas.append(a)
    sm_full, sm_proc = TemporalSmoother(), TemporalSmoother()
    q_all, q_k = QualityMonitor(every=1), QualityMonitor(every=5)
    for i, ((_, guide, proc), a) in enumerate(zip(data, alphas)):
        _, s = cpu(sm_full.step, a, guide)
        t["temporal_full_guide"] += s if i else 0.0  # frame 0 only initialises the smoother's state
        _, s = cpu(sm_proc.step, a, proc)
        t["temporal_proc_guide"] += s if i else 0.0
        _, s = cpu(q_all.update, "left", i, a, guide)
        t["quality_every_frame"] += s
        _, s = cpu(lambda: q_k.update("left", i, a, proc) if q_k.wants(i) else None)
        t["quality_every_5_proc"] += s
    n = len(data)
    per = {k: round(v / (n - 1 if k.startswith("temporal") else n), 4) for k, v in t.items()}
    for k, v in per.items():
        print(f"{k:24s} {1000 * v:8.1f} ms / eye-frame (process CPU, 1 torch thread)")
    print(f"tiles refined: {100 * np.mean(share):.1f}% of 256-px tiles; max |band-only - all tiles| = {diff:g}")
    print(json.dumps({"eye": args.eye, "scale": args.scale, "frames": n, "s_per_eye_frame": per,
                      "tiles_refined_share": round(float(np.mean(share)), 4), "max_abs_diff": diff}))


if __name__ == "__main__":
    main()
