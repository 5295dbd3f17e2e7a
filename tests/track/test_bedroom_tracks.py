"""Tracks per person on real multi-person footage, both eyes: the embedded engine's real models (bundled YOLOv8s
detector, mediapipe pose segmentation) driven by the real ViewMatter on the bedroom clip (two children, motion blur;
one leaves, re-enters and hides behind the other). Ground truth: person_boxes.json (hand-checked boxes).

The right eye is the left frame shifted 6 px (a disparity), so the two eyes are different images of the same scene.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from synth import media
from vr180matte.config import load_config
from vr180matte.engines.embedded import EmbeddedEngine
from vr180matte.track.ids import IdAllocator
from vr180matte.track.tracker import box_iou
from vr180matte.track.view_matter import ViewMatter

torch.set_num_threads(2)
BEDROOM = media("sam2_bedroom_two_children")
SCALE = 0.5  # processing scale: 960x540 -> 480x270
SHIFT = 6


def _eyes(i: int) -> dict[str, torch.Tensor]:
    rgb = cv2.cvtColor(cv2.imread(str(BEDROOM / "JPEGImages" / f"{i:05d}.jpg")), cv2.COLOR_BGR2RGB)
    left = cv2.resize(rgb, (480, 270), interpolation=cv2.INTER_AREA)
    right = np.roll(left, -SHIFT, axis=1)
    right[:, -SHIFT:] = left[:, -1:]
    return {"left": torch.from_numpy(np.ascontiguousarray(left)), "right": torch.from_numpy(np.ascontiguousarray(right))}


def _views(*sets: str) -> dict[str, ViewMatter]:
    cfg = load_config(None, ["hardware.device=cpu", f"processing.scale_factor={SCALE}", *sets])
    eng = EmbeddedEngine(cfg, torch.device("cpu"))
    ids = IdAllocator()
    return {
        eye: ViewMatter(eye, eng.make_segmenter(eye), eng.make_detector(), ids=ids,
                        detect_interval=int(cfg.detection.detect_interval),
                        iou_threshold=float(cfg.matting.track_iou_threshold),
                        max_missed=int(cfg.matting.track_max_missed), max_persons=int(cfg.detection.max_persons),
                        confirm_end_runs=int(cfg.matting.track_confirm_end_runs))
        for eye in ("left", "right")
    }


def _owner(matte, box: np.ndarray) -> tuple[int | None, float]:
    """The track whose mask covers the most of ``box`` (processing px), and that share."""
    best, share = None, 0.0
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    for tid, tm in matte.tracks.items():
        s = float((tm.prob[y0:y1, x0:x1] > 0.5).float().mean())
        if s > share:
            best, share = tid, s
    return best, share


def test_two_children_one_track_each_in_both_eyes():
    """Frames 0-5: each child is matted by exactly one track of its own, in both eyes, and the tracks persist (the
    boy starts to go behind the girl after frame ~8: the slow whole-clip test covers that)."""
    truth = json.loads((BEDROOM / "person_boxes.json").read_text())["0"]["must"]
    # 960 px detection image (2 tiles) keeps the test short on CPU; detection on frames 0 and 5 only
    views = _views("detection.upscale=1.0", "detection.detect_interval=5")
    owners: dict[str, list[int]] = {}
    for i in range(6):
        eyes = _eyes(i)
        for eye, vm in views.items():
            matte = vm.step(i, eyes[eye])
            if i == 0:
                got = []
                for b in truth:
                    box = np.array(b, np.float32) * SCALE
                    if eye == "right":
                        box[[0, 2]] -= SHIFT
                    tid, share = _owner(matte, box)
                    assert share >= 0.2, f"{eye}: child {b} not matted ({share:.2f})"
                    got.append(tid)
                assert len(set(got)) == 2, f"{eye}: both children in one track {got}"
                owners[eye] = got
    for eye, vm in views.items():
        st = vm.stats
        live = [t for t in vm.tracks.values() if t.box is not None]
        assert sorted(t.id for t in live) == sorted(owners[eye]), (eye, st, [(t.id, t.box) for t in live])
        assert st["detections_run"] == 2  # frames 0 and 5: detection is every detect_interval frames
        # any other track started was a false or duplicate detection, ended at once (no third live track)
        assert len(vm.live_ids) == 2 and st["tracks_started"] - st["stillborn"] - st["duplicates_merged"] <= 3, st
    # the two eyes found the same two people (ids are per view here: only the count and placement must agree)
    assert len(owners["left"]) == len(owners["right"]) == 2


@pytest.mark.slow
def test_exit_and_reentry_whole_clip_both_eyes():
    """All 200 frames: the hand-checked person boxes are matted in both eyes (at least 14 of 16); the child who
    leaves is re-found when he comes back (re-entry after the track ended takes a new id by design). The number of tracks is not bounded
    here: false detections (pillow, mirror) still start short tracks (docs/benchmarks.md, issue 9)."""
    truth = {int(k): v for k, v in json.loads((BEDROOM / "person_boxes.json").read_text()).items() if k[0] != "_"}
    views = _views()
    found = total = 0
    for i in range(200):
        eyes = _eyes(i)
        for eye, vm in views.items():
            matte = vm.step(i, eyes[eye])
            for b in truth.get(i, {"must": []})["must"]:
                box = np.array(b, np.float32) * SCALE
                if eye == "right":
                    box[[0, 2]] -= SHIFT
                total += 1
                found += int(_owner(matte, box)[1] >= 0.2)
    # Measured 14 of 16 with independent eyes (no stereo stage); the whole pipeline gets 16 of 16
    # (benchmarks/person_recall.py).
    assert total == 16 and found >= 14, (found, total)
    for eye, vm in views.items():
        st = vm.stats
        assert st["tracks_started"] - st["stillborn"] - st["duplicates_merged"] >= 2, (eye, st)  # both children
