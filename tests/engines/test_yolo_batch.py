"""One batched detector pass per detection frame (engines/yolo_batch.py, YoloDetector.detect_many) against the
previous per-call path, on real frames with people and the real bundled YOLOv8s: the same boxes (within float
rounding of batched kernels), fewer forwards, one download."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from synth import davis_frames, media
from vr180matte.engines.yolo import YoloDetector, merge_tiled_boxes, tile_boxes, tile_grid
from vr180matte.runtime.models import bundled_detector_path

torch.set_num_threads(2)
BEDROOM = media("sam2_bedroom_two_children")


def _rgb(path) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)))


@pytest.fixture(scope="module")
def det() -> YoloDetector:
    return YoloDetector(bundled_detector_path(), "yolov8s", confidence_threshold=0.5, person_classes=(0, 1),
                        image_size=1536, upscale=2.0, source_scale=2.0, source="bundled", batch=8)


def _reference(det: YoloDetector, image: torch.Tensor, thr: float) -> list[tuple[np.ndarray, float]]:
    """The previous path, call by call: a whole pass with ultralytics' own NMS, then the tiles in groups of 8, each
    group's NMS downloaded on its own, merged the same way."""
    from ultralytics.utils.nms import non_max_suppression as nms

    H, W = image.shape[:2]
    run = lambda x, conf: nms(det.net(x), conf_thres=conf, iou_thres=det.iou_threshold,  # noqa: E731
                              classes=list(det.person_classes), agnostic=True, max_det=det.max_det)
    with torch.inference_mode():
        x, gain, (left, top) = det._letterbox(image)
        out = run(x, min(thr, 0.25))[0].float()
        b = out[:, :4]
        b[:, [0, 2]] = ((b[:, [0, 2]] - left) / gain).clamp(0, W)
        b[:, [1, 3]] = ((b[:, [1, 3]] - top) / gain).clamp(0, H)
        rows = out.numpy()
        boxes, scores = rows[:, :4].astype(np.float32), rows[:, 4].astype(np.float32)
        zoom = det.detection_zoom(H, W)
        dh, dw = round(H * zoom), round(W * zoom)
        tb, ts, tc = [], [], []
        if max(dh, dw) > det.imgsz * 1.15:
            big = torch.nn.functional.interpolate(det._float(image), size=(dh, dw), mode="bilinear",
                                                  align_corners=False, antialias=zoom < 1)
            tiles = tile_grid(dh, dw, det.imgsz)
            for k in range(0, len(tiles), 8):
                group = tiles[k : k + 8]
                batch = big.new_full((len(group), 3, det.imgsz, det.imgsz), 114 / 255.0)
                for i, (x0, y0, x1, y1) in enumerate(group):
                    batch[i, :, : y1 - y0, : x1 - x0] = big[0, :, y0:y1, x0:x1]
                for t, o in zip(group, run(batch, thr)):
                    if o.shape[0]:
                        bb, s, c = tile_boxes(o.float().numpy(), t, tiles, det.imgsz, dh, dw)
                        tb.append(bb / zoom), ts.append(s), tc.append(c)
    if tb:
        t_b = np.concatenate(tb).astype(np.float32)
        t_b[:, [0, 2]] = t_b[:, [0, 2]].clip(0, W)
        t_b[:, [1, 3]] = t_b[:, [1, 3]].clip(0, H)
        boxes, scores = merge_tiled_boxes(np.concatenate([boxes, t_b]), np.concatenate([scores, *ts]),
                                          np.concatenate([np.zeros((len(boxes), 4), bool), *tc]), iou_threshold=0.5)
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= thr]
    return [(boxes[i], float(scores[i])) for i in order if boxes[i][2] - boxes[i][0] >= 1 and boxes[i][3] - boxes[i][1] >= 1]


def _frames():
    bedroom = [_rgb(BEDROOM / "JPEGImages" / f"{i:05d}.jpg") for i in (0, 150)]
    frames, _ = davis_frames("davis2016_dance-twirl", 1)
    twirl = _rgb(frames[0])
    crop = twirl[60:380, 200:520].contiguous()  # a square crop (an equirect crop's shape)
    return [cv2_resize(bedroom[0], 480, 270), cv2_resize(bedroom[1], 480, 270), twirl, crop]


def cv2_resize(img: torch.Tensor, w: int, h: int) -> torch.Tensor:
    return torch.from_numpy(cv2.resize(img.numpy(), (w, h), interpolation=cv2.INTER_AREA))


def test_detect_many_equals_the_per_call_path_on_real_frames():
    # detected at up to 1024 px (the eye: the 854 px dance frame, x1.2): every image still gets tiles, half as many
    # as at 1536, and each path runs them all
    det = YoloDetector(bundled_detector_path(), "yolov8s", confidence_threshold=0.5, person_classes=(0, 1),
                       image_size=1024, upscale=2.0, source_scale=2.0, source="bundled", batch=8)
    images = _frames()
    for thr in (0.4,):
        det._eye_side = 0
        got = det.detect_many(images, thr)
        det._eye_side = 0
        ref = [_reference(det, im, thr) for im in images]
        assert sum(len(r) for r in ref) >= 6  # real people: the two children, the dancer and the crowd
        for g, r in zip(got, ref):
            assert len(g) == len(r), ([d.box for d in g], [b for b, _ in r])
            for d, (box, score) in zip(g, r):
                assert np.abs(d.box - box).max() < 0.05 and abs(d.score - score) < 1e-3, (d.box, box, d.score, score)


class _Reads(torch.overrides.TorchFunctionMode):
    """Host reads and downloads made by the detector's device work. Left out: reads inside the NMS op (here the
    compat layer's pure-torch stand-in, as this machine's torchvision has no compiled ops; on a GPU torchvision's
    kernel) and the tile merge (yolo_tiles.py), which works on host numpy data after the download."""

    def __init__(self):
        super().__init__()
        self.downloads = self.reads = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        import traceback

        name = getattr(func, "__name__", "")
        if name in ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__", "cpu"):
            files = [f.filename for f in traceback.extract_stack()[:-1]]
            if not any("torchvision" in f or f.endswith("yolo_tiles.py") for f in files):
                if name == "cpu":
                    self.downloads += 1
                else:
                    self.reads += 1
        return func(*args, **(kwargs or {}))


def test_one_batched_forward_and_one_download_per_detection_frame(det, monkeypatch):
    """Both eyes and two crops of a detection frame: whole passes and tiles in forwards of `batch` images, one NMS
    and one download for all of them."""
    images = _frames()
    square = [images[3], images[3].flip(1).contiguous()]  # 320x320 eyes: whole pass + 4 tiles each at 2x
    forwards = []
    real = det.net.forward
    monkeypatch.setattr(det.net, "forward", lambda x, *a, **k: forwards.append(x.shape[0]) or real(x, *a, **k))
    det._eye_side = 0
    with _Reads() as r:
        det.detect_many(square + [images[3][:200, :200].contiguous()] * 2)
    zoom = det.detection_zoom(320, 320)  # the eyes set the zoom; the small crops are looked at with it too
    n_inputs = sum(1 + len(tile_grid(round(s * zoom), round(s * zoom), det.imgsz)) for s in (320, 320, 200, 200))
    assert n_inputs == 30
    assert sum(forwards) == n_inputs and len(forwards) == -(-n_inputs // det.batch)
    assert r.downloads == 1 and r.reads <= 1, (r.downloads, r.reads)  # the download, then its rows as numpy


def test_policy_sets_batch_and_warm_up(monkeypatch):
    """The detector's batch and warm-up come from the device policy (GPU: 32 and a warm-up at load)."""
    from vr180matte.config import load_config
    from vr180matte.engines.yolo import yolo_for

    cfg = load_config(None, ["hardware.device=cpu", "hardware.policy=gpu"])
    from vr180matte.engines import yolo

    shapes = []
    real = yolo.load_detector_net

    def spy(*a):
        net = real(*a)
        monkeypatch.setattr(net, "forward", lambda x, *q, **k: shapes.append(tuple(x.shape)))
        return net

    monkeypatch.setattr(yolo, "load_detector_net", spy)
    d = yolo_for(cfg, None, torch.device("cpu"), random_init=True)
    assert d.batch == 32 and shapes == []  # a forced GPU policy on a CPU: GPU batch, no warm-up (nothing to warm)
    from vr180matte.runtime.policy import choose_policy

    p = choose_policy(torch.device("cpu"), force="gpu")
    p = type(p)(**{**p.__dict__, "detector_warmup": True})
    d = yolo_for(cfg, None, torch.device("cpu"), random_init=True, policy=p)
    assert shapes == [(32, 3, 640, 640)]
