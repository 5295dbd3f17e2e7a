"""Refinement quality on a DAVIS sequence (issue 5).

(1) Take the ground-truth masks, downscale them to 25% (what a coarse segmenter gives), upscale back to full
resolution with (a) bilinear and (b) the Refiner guided by the frames; print boundary F-measure and MAD
against the ground truth. (2) Run the embedded engine (detect every 10 frames, prompt the best box, segment
every frame) at scale 0.5, refine to full resolution, and print dtSSD against the ground truth without and
with temporal smoothing. The last line is one JSON object.

    .venv/bin/python benchmarks/refine_quality.py [--sequence davis2016_parkour] [--frames 100]
    .venv/bin/python benchmarks/refine_quality.py --smoke     # 2 frames: checks the script

If the engine part fails, the JSON line says null for its figures and the script exits 1 (a failed part is
never a silent success).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from vr180matte.matte.refine import Refiner  # noqa: E402
from vr180matte.matte.temporal import TemporalSmoother  # noqa: E402
from vr180matte.quality.metrics import boundary_f, dtssd, mad  # noqa: E402

MEDIA = REPO.parent / "shared" / "media"
SMOKE_KEYS = ("bilinear.boundary_f", "bilinear.mad", "refined.boundary_f", "refined.mad", "dtssd_raw",
              "dtssd_smoothed")


def load(seq: str, n: int):
    root = MEDIA / seq
    frames = sorted((root / "JPEGImages").glob("*.jpg"))[:n]
    masks = sorted((root / "Annotations").glob("*.png"))[:n]
    for f, m in zip(frames, masks):
        yield cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB), cv2.imread(str(m), cv2.IMREAD_GRAYSCALE) / 255.0


def upscale_part(seq: str, n: int) -> dict:
    ref = Refiner()
    acc = {"bilinear": ([], []), "refined": ([], [])}
    t_ref = 0.0
    for rgb, gt in load(seq, n):
        H, W = gt.shape
        low = torch.from_numpy(cv2.resize(gt.astype(np.float32), (round(W * 0.25), round(H * 0.25)),
                                          interpolation=cv2.INTER_AREA))
        bil = F.interpolate(low[None, None], size=(H, W), mode="bilinear", align_corners=False)[0, 0].numpy()
        t0 = time.perf_counter()
        alpha = ref(low, torch.from_numpy(rgb)).numpy()
        t_ref += time.perf_counter() - t0
        for k, a in (("bilinear", bil), ("refined", alpha)):
            acc[k][0].append(boundary_f(a, gt))
            acc[k][1].append(mad(a, gt))
    res = {k: {"boundary_f": round(float(np.mean(v[0])), 5), "mad": round(float(np.mean(v[1])), 4)}
           for k, v in acc.items()}
    print(f"upscale from 25% ({n} frames): bilinear BF {res['bilinear']['boundary_f']:.4f} MAD {res['bilinear']['mad']:.3f}"
          f" | refined BF {res['refined']['boundary_f']:.4f} MAD {res['refined']['mad']:.3f}"
          f" | refine {1000 * t_ref / n:.1f} ms/frame", flush=True)
    return res


def engine_part(seq: str, n: int, scale: float = 0.5, interval: int = 10) -> tuple[float, float]:
    from vr180matte.config import load_config
    from vr180matte.engines.embedded import EmbeddedEngine

    eng = EmbeddedEngine(load_config(None), torch.device("cpu"))
    det, seg = eng.make_detector(), eng.make_segmenter("left")
    ref, smoother = Refiner(), TemporalSmoother(strength=0.5)
    prev = None
    raw_d, sm_d = [], []
    tid = None
    for i, (rgb, gt) in enumerate(load(seq, n)):
        H, W = gt.shape
        small = torch.from_numpy(cv2.resize(rgb, (round(W * scale), round(H * scale)), interpolation=cv2.INTER_AREA))
        if i % interval == 0:
            dets = det.detect(small)
            if dets:
                tid = 1 if tid is None else tid
                seg.add_prompt(tid, box=dets[0].box)
        masks = seg.segment(i, small)
        prob = masks.get(tid) if tid is not None else None
        if prob is None:
            prob = torch.zeros(small.shape[:2])
        guide = torch.from_numpy(rgb)
        raw = ref(prob, guide).numpy()
        sm = smoother.step(torch.from_numpy(raw), guide).numpy()
        if prev is not None:
            raw_d.append(dtssd(prev[0], raw, prev[2], gt))
            sm_d.append(dtssd(prev[1], sm, prev[2], gt))
        prev = (raw, sm, gt)
    r, s = float(np.mean(raw_d)), float(np.mean(sm_d))
    print(f"embedded engine ({n} frames, scale {scale}): dtSSD raw {r:.3f} smoothed {s:.3f}", flush=True)
    return r, s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequence", default="davis2016_parkour")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--smoke", action="store_true", help="2 frames: checks the script")
    args = ap.parse_args()
    if args.smoke:
        args.frames = 2
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    res = upscale_part(args.sequence, args.frames)
    try:
        raw, sm = engine_part(args.sequence, args.frames)
        res["dtssd_raw"], res["dtssd_smoothed"] = round(raw, 4), round(sm, 4)
    except Exception as exc:  # noqa: BLE001 - report, do not hide: the JSON says null and why
        print(f"embedded engine part failed: {type(exc).__name__}: {exc}", flush=True)
        res["dtssd_raw"] = res["dtssd_smoothed"] = None
    print(json.dumps(res))
    if res["dtssd_raw"] is None:
        sys.exit(1)


if __name__ == "__main__":
    main()
