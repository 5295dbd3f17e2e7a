"""Person recall on real multi-person footage: the bedroom clip (two children, motion blur, one leaves, re-enters
and hides behind the other) made into a side-by-side clip (the same frame in both eyes).

1. ``matting.engine=det-sam2``: the bundled YOLOv8s detector -> tracker -> streaming SAM2.1 with *random* weights
   (no SAM2 checkpoint here), so it measures the recall of boxes, not masks: ``track_recall`` is the share of
   hand-checked person boxes (both eyes) that a live track's box overlaps with IoU >= 0.5. A track's box is the
   box of the detection it was last matched to (within ``detect_interval`` frames), else its mask box. The stereo
   mode is ``independent`` so each eye's tracks come from its own detections (random-init SAM2 masks would make
   master-slave seeds meaningless). ``detection_recall``: the same on the detector's own boxes, on the annotated
   frames the detector ran on. Printed as the JSON line before the last one.
2. The whole pipeline on the embedded engine at the default scale (``processing.scale_factor`` auto: 1.0 on these
   540 px eyes since 2026-12-06, 0.5 before), alpha read
   back from the encoded output. A person box counts as found when alpha > 0.5 covers at least 20% of it; spill is
   the share of matted pixels (alpha > 0.5, annotated frames, both eyes) outside every person box padded by 10 px
   ("dontcare" boxes count as person boxes for spill). Printed as the last line:
   ``{"recall": r, "spill": s, "persons": n, "s_per_frame": t}`` with ``n`` the number of person boxes checked
   (5 annotated frames x boxes x 2 eyes) and ``t`` the pipeline's wall seconds per frame.

Targets (issue 9): recall >= 0.95, spill <= 0.10.

Usage: ``.venv/bin/python benchmarks/person_recall.py [--frames 200] [--skip-det-sam2] [--keep DIR]``.
``--smoke`` (1 frame, the annotated frame 0, embedded part only: the det-sam2 pipeline's smoke run is
``det_sam2_throughput.py --smoke``) checks the script; its figures are not measurements.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("YOLO_OFFLINE", "1")

MEDIA = ROOT.parent / "shared" / "media" / "sam2_bedroom_two_children"
FOUND_COVER = 0.2  # a box is found when alpha > 0.5 covers at least this share of it
SPILL_PAD = 10  # px around every person box that still counts as "on the person"
TRACK_IOU = 0.5
SMOKE_KEYS = ("recall", "spill", "persons", "s_per_frame")


def load_boxes(frames: int) -> dict[int, dict[str, list[list[float]]]]:
    raw = json.loads((MEDIA / "person_boxes.json").read_text())
    return {int(k): v for k, v in raw.items() if not k.startswith("_") and int(k) < frames}


def bedroom_sbs(path: Path, frames: int) -> Path:
    """The JPEG frames, the same one in both eyes (1920x540), H.264 crf 12 through PyAV."""
    import cv2
    from synth import write_video

    jpgs = sorted((MEDIA / "JPEGImages").glob("*.jpg"))[:frames]

    def sbs(i: int) -> np.ndarray:
        rgb = cv2.cvtColor(cv2.imread(str(jpgs[i])), cv2.COLOR_BGR2RGB)
        return np.concatenate([rgb, rgb], axis=1)

    return write_video(path, sbs, n=len(jpgs), fps=24, options={"crf": "12"})


def read_alpha(path: Path, keep: set[int]) -> dict[int, np.ndarray]:
    import av

    out = {}
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in keep:
                out[i] = f.to_ndarray(format="rgba")[..., 3].astype(np.float32) / 255.0
    return out


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def score_alpha(alphas: dict[int, np.ndarray], boxes: dict, eye_w: int) -> dict:
    found = total = 0
    spill_px = matted_px = 0
    for fi, ann in boxes.items():
        a = alphas[fi]
        for eye in (a[:, :eye_w], a[:, eye_w:]):
            on = eye > 0.5
            h, w = on.shape
            inside = np.zeros_like(on)
            for b in ann["must"] + ann["dontcare"]:
                x0, y0 = max(0, int(b[0]) - SPILL_PAD), max(0, int(b[1]) - SPILL_PAD)
                x1, y1 = min(w, int(np.ceil(b[2])) + SPILL_PAD), min(h, int(np.ceil(b[3])) + SPILL_PAD)
                inside[y0:y1, x0:x1] = True
            for b in ann["must"]:
                x0, y0, x1, y1 = int(b[0]), int(b[1]), int(np.ceil(b[2])), int(np.ceil(b[3]))
                total += 1
                found += int(on[y0:y1, x0:x1].mean() >= FOUND_COVER)
            matted_px += int(on.sum())
            spill_px += int((on & ~inside).sum())
    return {"recall": found / max(total, 1), "spill": spill_px / max(matted_px, 1), "persons": total}


def run_det_sam2(clip: Path, boxes: dict, out: Path, frames: int) -> dict:
    """The whole pipeline with det-sam2: bundled detector, random-init SAM2 (256 px), track boxes recorded."""
    import torch

    from vr180matte.engines.det_sam2 import DetSam2Engine
    from vr180matte.pipeline import run
    from vr180matte.track.view_matter import ViewMatter

    interval = 10
    seen: dict[tuple[str, int], list[np.ndarray]] = {}
    dets: dict[tuple[str, int], list[np.ndarray]] = {}
    built: dict = {}
    step = ViewMatter.step

    def recording_step(self, frame_idx, image, **kw):
        res = step(self, frame_idx, image, **kw)
        if frame_idx in boxes:
            if res.detections:
                dets[(self.view, frame_idx)] = [np.asarray(d.box) for d in res.detections]
            live = []
            for t in self.tracks.values():
                det_box = t.extra.get("det_box")
                if det_box is not None and frame_idx - t.last_matched < interval:
                    live.append(np.asarray(det_box))
                elif t.ref_box() is not None:
                    live.append(np.asarray(t.ref_box()))
            seen[(self.view, frame_idx)] = live
        return res

    def build(cfg, device):
        torch.manual_seed(0)
        eng = DetSam2Engine(cfg, device, random_init=True, random_init_detector=False,
                            sam2_overrides=["++model.image_size=256"])
        built["engine"] = eng
        return eng

    ViewMatter.step = recording_step
    try:
        t0 = time.perf_counter()
        r = run(clip, out_dir=out, quiet=True, engine=build, overrides=[
            "hardware.device=cpu", "matting.engine=det-sam2", "stereo.consistency_mode=independent",
            f"detection.detect_interval={interval}"])
        seconds = time.perf_counter() - t0
    finally:
        ViewMatter.step = step
    scale = float(r.stats["scale_factor"])
    hit = total = dhit = dtotal = 0
    for fi, ann in boxes.items():
        for view in ("left", "right"):
            live = [b / scale for b in seen.get((view, fi), [])]  # processing px -> source px
            found = [b / scale for b in dets.get((view, fi), [])]
            for b in ann["must"]:
                total += 1
                hit += int(any(box_iou(b, t) >= TRACK_IOU for t in live))
                if (view, fi) in dets or fi % interval == 0:  # frames the detector ran on
                    dtotal += 1
                    dhit += int(any(box_iou(b, t) >= TRACK_IOU for t in found))
    det = built["engine"].detector_stats()
    return {"engine": "det-sam2", "track_recall": round(hit / max(total, 1), 4), "persons": total,
            "detection_recall": round(dhit / max(dtotal, 1), 4),
            "detector": det["source"], "weights": Path(det["weights"]).name if det["weights"] else None,
            "tracks_started": {v: s["tracks_started"] for v, s in r.stats["tracks"].items()},
            "s_per_frame": round(seconds / frames, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--skip-det-sam2", action="store_true")
    ap.add_argument("--keep", type=Path, default=None, help="keep the clip and outputs in this folder")
    ap.add_argument("--smoke", action="store_true", help="1 annotated frame, embedded part only: checks the script")
    ns = ap.parse_args()
    if ns.smoke:
        ns.frames, ns.skip_det_sam2 = 1, True
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    boxes = load_boxes(ns.frames)
    work = ns.keep or Path(tempfile.mkdtemp(prefix="person_recall_"))
    work.mkdir(parents=True, exist_ok=True)
    clip = bedroom_sbs(work / "bedroom_sbs.mp4", ns.frames)

    if not ns.skip_det_sam2:
        print(json.dumps(run_det_sam2(clip, boxes, work / "det_sam2", ns.frames)), flush=True)

    from vr180matte.pipeline import run

    t0 = time.perf_counter()
    r = run(clip, out_dir=work / "embedded", quiet=True, overrides=["hardware.device=cpu", "matting.engine=embedded"])
    seconds = time.perf_counter() - t0
    alphas = read_alpha(r.outputs[0], set(boxes))
    res = score_alpha(alphas, boxes, eye_w=960)
    print("embedded: " + json.dumps({"tracks": {v: s["tracks_started"] for v, s in r.stats["tracks"].items()},
                                      "detector": r.stats.get("detector"), "stages": r.stats["stages"]}),
          file=sys.stderr, flush=True)
    print(json.dumps({"recall": round(res["recall"], 4), "spill": round(res["spill"], 4), "persons": res["persons"],
                      "s_per_frame": round(seconds / ns.frames, 3)}))


if __name__ == "__main__":
    main()
