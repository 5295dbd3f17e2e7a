"""YOLOv8 detector with random weights on CPU: real ultralytics model, real loading code, real NMS."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vr180matte.compat.torchvision_ops import ensure_torchvision_ops
from vr180matte.engines.base import Detection, Detector, EngineError
from vr180matte.engines.yolo import YoloDetector

torch.set_num_threads(2)


def _image(h=120, w=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g)


@pytest.fixture(scope="module")
def det0():
    torch.manual_seed(0)
    return YoloDetector(None, "yolov8n", confidence_threshold=0.0, imgsz=160, random_init=True, max_det=50)


def test_protocol_and_default_threshold_returns_list():
    torch.manual_seed(0)
    det = YoloDetector(None, "yolov8n", confidence_threshold=0.7, imgsz=160, random_init=True)
    assert isinstance(det, Detector) and det.name == "yolov8"
    out = det.detect(_image())
    assert isinstance(out, list)
    assert all(isinstance(d, Detection) for d in out)


def test_threshold_on_real_detections_of_people():
    """The bundled trained detector on a DAVIS frame with a person: at threshold 0.7 it finds the person and every
    detection kept scores >= 0.7, while at 0.05 it also returns weaker ones (so the threshold really filtered)."""
    import cv2

    from synth import davis_frames
    from vr180matte.runtime.models import bundled_detector_path

    frames, _ = davis_frames("davis2016_parkour", 1)
    img = torch.from_numpy(np.ascontiguousarray(cv2.cvtColor(cv2.imread(str(frames[0])), cv2.COLOR_BGR2RGB)))
    kw = dict(person_classes=(0, 1), image_size=640, upscale=1.0, source="bundled")
    strict = YoloDetector(bundled_detector_path(), "yolov8s", confidence_threshold=0.7, **kw).detect(img)
    loose = YoloDetector(bundled_detector_path(), "yolov8s", confidence_threshold=0.05, **kw).detect(img)
    assert len(strict) >= 1, "the trained detector found no person in a frame with one"
    assert all(d.score >= 0.7 for d in strict)
    assert any(d.score < 0.7 for d in loose) and len(loose) > len(strict)
    assert max(d.score for d in loose) == pytest.approx(max(d.score for d in strict), abs=1e-6)


def test_zero_threshold_gives_person_boxes_only(det0):
    img = _image()
    rows = det0.raw_detections(img)
    assert rows.shape[0] > 0
    assert torch.all(rows[:, 5] == 0)  # class filter really applied
    all_rows = det0.raw_detections(img, classes=None)
    assert (all_rows[:, 5] != 0).any()  # ...and it matters: other classes exist without it
    dets = det0.detect(img)
    assert 0 < len(dets) <= 50
    scores = [d.score for d in dets]
    assert scores == sorted(scores, reverse=True)
    for d in dets:
        assert d.box.dtype == np.float32 and d.box.shape == (4,)
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 < x1 <= 200 and 0 <= y0 < y1 <= 120  # image pixels, not letterbox pixels


def test_box_coordinates_follow_image_scale(det0):
    """The same content at twice the size gives boxes about twice as large (letterbox undone correctly)."""
    small = _image(96, 160, seed=3)
    big = small.repeat_interleave(2, 0).repeat_interleave(2, 1)
    a = det0.raw_detections(small)
    b = det0.raw_detections(big)
    assert a.shape[0] > 0 and b.shape[0] > 0
    # Both letterbox to the same 160-px input, so the network sees nearly the same pixels.
    assert torch.allclose(b[0, :4], a[0, :4] * 2, atol=6.0)


def test_rejects_bad_shape(det0):
    with pytest.raises(ValueError, match="expected an"):
        det0.detect(torch.zeros(3, 32, 32, dtype=torch.uint8))


def test_load_saved_pt_through_real_loader(tmp_path):
    ensure_torchvision_ops()
    from ultralytics import YOLO

    torch.manual_seed(1)
    y = YOLO("yolov8n.yaml", task="detect")
    path = tmp_path / "yolov8n.pt"
    y.save(str(path))
    torch.manual_seed(1)
    ref = YoloDetector(None, "yolov8n", confidence_threshold=0.0, imgsz=160, random_init=True)
    loaded = YoloDetector(path, "yolov8n", confidence_threshold=0.0, imgsz=160)
    img = _image(seed=5)
    ra, rb = ref.raw_detections(img), loaded.raw_detections(img)
    assert ra.shape[0] > 0
    # The file is saved in fp16, so the loaded network differs only by rounding.
    assert abs(ra.shape[0] - rb.shape[0]) <= max(2, ra.shape[0] // 10)
    # fp16 weights move a score by about 0.2% of itself (random-init scores are ~1e-4, so an absolute tolerance
    # would accept anything) and a box corner by a fraction of a pixel
    top_a, top_b = ra[:5, 4].sort(descending=True).values, rb[:5, 4].sort(descending=True).values
    assert torch.allclose(top_a, top_b, rtol=2e-2, atol=0.0), (top_a, top_b)
    assert torch.allclose(ra[0, :4], rb[0, :4], atol=1.0), (ra[0, :4], rb[0, :4])


def test_corrupt_pt_is_engine_error(tmp_path):
    path = tmp_path / "yolov8n.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(EngineError, match="cannot load YOLO weights"):
        YoloDetector(path, "yolov8n")


def test_min_box_area_drops_small_boxes(det0):
    img = _image()
    dets = det0.detect(img)
    areas = sorted((d.box[2] - d.box[0]) * (d.box[3] - d.box[1]) for d in dets)
    cut = float(np.median(areas)) / (120 * 200)
    try:
        det0.min_box_area = cut
        kept = det0.detect(img)
    finally:
        det0.min_box_area = 0.0
    assert 0 < len(kept) < len(dets)
    assert all((d.box[2] - d.box[0]) * (d.box[3] - d.box[1]) >= cut * 120 * 200 for d in kept)
