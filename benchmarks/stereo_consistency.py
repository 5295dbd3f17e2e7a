"""Stereo consistency benchmark: each stereo mode on the same synthetic VR180 clip with exact ground truth.

The clip (tests/stereo/stereo_synth.py): two real DAVIS people (dance-twirl, parkour) rendered as billboards into
two 180-degree equirect eyes at known, different, changing disparities (9 -> 13 px and 5.5 -> 3.5 px at 256 px),
over a textured background at 2 px, with independent sensor noise per eye.

Per mode it reports
* ``stereo_agreement``: per frame and ground-truth person, IoU of the left mask vs the right mask mapped back by
  the TRUE disparity (predicted tracks are assigned to GT persons by overlap, so ids do not matter), averaged;
* ``iou_gt_left`` / ``iou_gt_right``: IoU of each eye's combined person mask vs the ground truth, averaged.

Usage: ``.venv/bin/python benchmarks/stereo_consistency.py [--frames 24] [--size 256] [--engine auto|embedded|gt]``.
``auto`` uses the embedded engine (mediapipe, bundled models) when it imports, else the ground-truth test doubles
(which segment perfectly, so only the coupling is measured) and says so. The last line of output is one JSON
object keyed by mode. ``--smoke`` (2 frames, the ground-truth doubles as engine) checks the script; its figures
are not measurements.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "stereo"))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("YOLO_OFFLINE", "1")

from stereo_synth import GTDetector, GTSegmenter, two_people  # noqa: E402

from vr180matte.config import load_config  # noqa: E402
from vr180matte.stereo.consistency import StereoStage, mask_iou  # noqa: E402
from vr180matte.stereo.disparity import shift_mask  # noqa: E402
from vr180matte.track.ids import IdAllocator  # noqa: E402
from vr180matte.track.view_matter import ViewMatter  # noqa: E402

MODES = ("independent", "master_slave", "joint")
SMOKE_KEYS = ("independent.stereo_agreement", "independent.iou_gt_left", "independent.iou_gt_right",
              "master_slave.stereo_agreement", "master_slave.iou_gt_left", "master_slave.iou_gt_right",
              "joint.stereo_agreement", "joint.iou_gt_left", "joint.iou_gt_right")


def build(mode: str, engine: str, clip, method: str, interval: int, crops: bool):
    cfg = load_config(None, [f"stereo.consistency_mode={mode}", f"stereo.correction_method={method}",
                             f"detection.detect_interval={interval}", f"detection.equirect_crops={str(crops).lower()}",
                             "hardware.device=cpu"])
    ids = IdAllocator()
    kw = dict(ids=ids, detect_interval=interval, iou_threshold=float(cfg.matting.track_iou_threshold),
              max_missed=int(cfg.matting.track_max_missed), max_persons=int(cfg.detection.max_persons))
    if engine == "embedded":
        from vr180matte.engines.embedded import EmbeddedEngine

        eng = EmbeddedEngine(cfg, torch.device("cpu"))
        det = eng.make_detector()
        left = ViewMatter("left", eng.make_segmenter("left"), None, **kw)
        right = ViewMatter("right", eng.make_segmenter("right"), None, **kw)
    else:
        det = GTDetector(clip)
        left = ViewMatter("left", GTSegmenter(clip.gt_left), None, **kw)
        # The doubles are perfect; a few broken right-eye frames give the stereo stage something to catch.
        right = ViewMatter("right", GTSegmenter(clip.gt_right, corrupt={4: 0.4, 11: 0.5, 17: 0.3}), None, **kw)
    stage = StereoStage(cfg, left, right, det)
    stage.reset()
    return stage


def evaluate(res, clip, t) -> tuple[list[float], float, float]:
    """(per-GT-person agreement with the true disparity, IoU to GT left, IoU to GT right)."""
    P = clip.gt_left.shape[1]
    shape = clip.gt_left.shape[2:]
    per = []
    assigned = {}
    for eye, fm, gt in (("l", res.left, clip.gt_left), ("r", res.right, clip.gt_right)):
        groups = [torch.zeros(shape) for _ in range(P)]
        for tm in fm.tracks.values():
            p = tm.prob.detach().float().cpu()
            k = int(np.argmax([float((torch.from_numpy(gt[t, q]) * p).sum()) for q in range(P)]))
            groups[k] = torch.maximum(groups[k], p)
        assigned[eye] = groups
    for k in range(P):
        lk, rk = assigned["l"][k], assigned["r"][k]
        if (lk > 0.5).sum() == 0 and (rk > 0.5).sum() == 0:
            continue
        per.append(mask_iou(lk, shift_mask(rk, -float(clip.disparity[t, k]))))
    gl = mask_iou(res.left.combined(shape).cpu(), torch.from_numpy(clip.gt_left[t].max(0)))
    gr = mask_iou(res.right.combined(shape).cpu(), torch.from_numpy(clip.gt_right[t].max(0)))
    return per, gl, gr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--engine", choices=["auto", "embedded", "gt"], default="auto")
    ap.add_argument("--method", choices=["transfer", "reprocess", "ensemble"], default="transfer")
    ap.add_argument("--detect-interval", type=int, default=5)
    ap.add_argument("--equirect-crops", action="store_true", help="also detect on perspective crops (slower)")
    ap.add_argument("--smoke", action="store_true", help="2 frames, ground-truth doubles: checks the script")
    args = ap.parse_args()
    if args.smoke:
        args.frames, args.engine = 2, "gt"
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    engine = args.engine
    if engine == "auto":
        try:
            import mediapipe  # noqa: F401

            engine = "embedded"
        except ImportError:
            engine = "gt"
    print(f"engine: {engine}" + ("" if engine == "embedded" else " (ground-truth test doubles: perfect segmenter, "
                                 "injected right-eye failures; measures the stereo coupling only)"))
    clip = two_people(args.frames, args.size)
    print(f"clip: {clip.frames} frames, two {args.size}x{args.size} equirect eyes, 2 people, "
          f"true disparity {clip.disparity.min():.1f}-{clip.disparity.max():.1f} px, background {clip.bg_disparity} px")
    results, extra = {}, {}
    for mode in MODES:
        stage = build(mode, engine, clip, args.method, args.detect_interval, args.equirect_crops)
        agree, gl, gr = [], [], []
        t0 = time.perf_counter()
        for t in range(clip.frames):
            li, ri = clip.tensors(t)
            res = stage.step(t, li, ri)
            a, l_, r_ = evaluate(res, clip, t)
            agree += a
            gl.append(l_)
            gr.append(r_)
        dt = time.perf_counter() - t0
        rep = stage.report()
        results[mode] = {"stereo_agreement": round(float(np.mean(agree)), 4),
                         "iou_gt_left": round(float(np.mean(gl)), 4), "iou_gt_right": round(float(np.mean(gr)), 4)}
        extra[mode] = {"agreement_min": round(float(np.min(agree)), 4), "corrections": rep["corrections"],
                       "id_mismatches": rep["id_mismatches"], "persons_left_mean": rep["persons_left"]["mean"],
                       "persons_right_mean": rep["persons_right"]["mean"], "fps": round(clip.frames / dt, 2)}
    print(f"{'mode':<14}{'agreement':>10}{'min':>8}{'iou_gt_L':>10}{'iou_gt_R':>10}{'corr':>6}{'id_mis':>8}"
          f"{'persL':>7}{'persR':>7}{'fps':>7}")
    for mode in MODES:
        r, e = results[mode], extra[mode]
        print(f"{mode:<14}{r['stereo_agreement']:>10.4f}{e['agreement_min']:>8.3f}{r['iou_gt_left']:>10.4f}"
              f"{r['iou_gt_right']:>10.4f}{e['corrections']:>6}{e['id_mismatches']:>8}{e['persons_left_mean']:>7.2f}"
              f"{e['persons_right_mean']:>7.2f}{e['fps']:>7.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
