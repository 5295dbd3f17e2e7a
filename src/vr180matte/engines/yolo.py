"""YOLOv8 person detector (ultralytics) for the det-sam2 and mobilesam engines.

Why not ``YOLO.predict``: the predictor takes BGR numpy images (a device -> host copy per frame and a channel
flip), letterboxes with OpenCV on the CPU and builds ``Results`` objects we do not need. Frames here are
already RGB tensors on the processing device, so we letterbox on the device, run the ultralytics
``DetectionModel`` directly and use ultralytics' own ``non_max_suppression`` restricted to the person class(es).

Small and distant people: the whole eye letterboxed to the network input (640 px) turns a 60 px person of a
3072 px eye into a 12 px speck that YOLO does not report. So the detector looks at the eye at a *detection
resolution* of its own (``detection.image_size`` source pixels at most, up to ``detection.upscale`` times the source
for small web eyes), independent of ``processing.scale_factor``, and when that image is larger than the network
input it is cut into overlapping tiles. Tile boxes are merged with the whole-eye pass: fragments of a person cut
by a tile border are joined, then one class-agnostic NMS over everything (engines/yolo_tiles.py).

One batched pass per detection frame: :meth:`YoloDetector.detect_many` puts the whole passes and the tiles of
several images (both eyes, the equirect crops) through the network together, in forwards of the device
policy's ``detector_batch`` images, with one batched NMS and one download (engines/yolo_batch.py). On a GPU the
fixed input shape is warmed up when the model loads (the policy's ``detector_warmup``).

Checkpoints are data (engines/yolo_weights.py). The detector's other parts, a file each: stride, input size
and warm-up of the network (engines/yolo_net.py); the network inputs of a detection frame and the detection
resolution (engines/yolo_inputs.py); the downloaded rows back to each image's boxes (engines/yolo_outputs.py).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from vr180matte.compat.torchvision_ops import ensure_torchvision_ops
from vr180matte.engines.base import Detection
from vr180matte.engines.yolo_batch import PAD, NetBatch, letterbox, to_float, unletterbox, window_batch  # noqa: F401
from vr180matte.engines.yolo_inputs import DetectionInputs
from vr180matte.engines.yolo_net import input_size, warm_up
from vr180matte.engines.yolo_outputs import image_detections, window_rows
from vr180matte.engines.yolo_tiles import TILE_OVERLAP, finish_image, merge_tiled_boxes, tile_boxes, tile_grid  # noqa: F401
from vr180matte.engines.yolo_weights import load_checkpoint_model, load_detector_net  # noqa: F401 - re-exported
from vr180matte.forward import Forward
from vr180matte.runtime.policy import DevicePolicy, choose_policy
from vr180matte.runtime.scale import processing_scale

log = logging.getLogger(__name__)

PERSON_CLASS = 0  # COCO "person"
BUNDLED_MAX_THRESHOLD = 0.6  # det-sam2 / mobilesam with the bundled detector (the embedded engine uses 0.5 + checks)
_PASS_CONF = 0.25  # candidates kept by the whole-eye pass before merging; the threshold applies after the merge


class YoloDetector:
    """Detector protocol implementation: persons only, boxes in image pixels, best first.

    ``imgsz``: the network input side (one tile). ``person_classes``: the classes that are people (COCO: 0; the
    bundled fall-detection YOLOv8s: 0 "Normal" and 1 "Fall", both people). ``source_scale``: source pixels per
    pixel of the images :meth:`detect` gets (1 / ``processing.scale_factor``); with ``image_size`` and ``upscale``
    it sets the detection resolution (see the module docstring). ``image_size=None`` disables tiling (one pass).
    ``batch``: network inputs per forward (the policy's ``detector_batch``); ``warmup``: run that batch shape once
    at load (the policy's ``detector_warmup``).
    """

    name = "yolov8"
    #: ``detect`` takes ``threshold=``: the stereo stage asks for candidates below the threshold (stereo/vouch.py)
    supports_threshold = True

    # Detection-resolution settings and counters live on the DetectionInputs; callers set ``source_scale`` for a
    # while (stereo/source_detect.py) and tests reset ``_eye_side`` through the detector.
    image_size = Forward("inputs.image_size")
    upscale = Forward("inputs.upscale")
    source_scale = Forward("inputs.source_scale")
    last_tiles = Forward("inputs.last_tiles")
    _eye_side = Forward("inputs.eye_side")

    def __init__(self, weights: Path | None, model: str = "yolov8n", confidence_threshold: float = 0.7,
                 device: torch.device | str = "cpu", imgsz: int = 640, random_init: bool = False,
                 iou_threshold: float = 0.7, max_det: int = 100, fp16: bool = False, min_box_area: float = 0.0,
                 person_classes: tuple[int, ...] = (PERSON_CLASS,), image_size: int | None = None,
                 upscale: float = 1.0, source_scale: float = 1.0, batch: int = 8, source: str | None = None,
                 warmup: bool = False):
        """``random_init`` builds ``{model}.yaml`` with random weights (tests); otherwise ``weights`` is loaded."""
        ensure_torchvision_ops()
        self.device = torch.device(device)
        self.confidence_threshold = float(confidence_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_det = int(max_det)
        self.min_box_area = float(min_box_area)  # fraction of the image area; smaller boxes are dropped
        self.person_classes = tuple(int(c) for c in person_classes)
        self.batch = max(1, int(batch))
        self.weights = None if weights is None else Path(weights)
        self.source = source or ("random" if random_init else "file")
        self.stats = {"calls": 0, "tiles": 0, "tile_boxes": 0, "joined_or_dropped": 0, "forwards": 0, "windows": 0}
        self.half = bool(fp16 and self.device.type == "cuda")  # half precision only where it is fast and safe
        self.net = load_detector_net(weights, model, random_init, self.device, self.half)
        self.stride, self.imgsz = input_size(self.net, imgsz)
        self.inputs = DetectionInputs(self.device, self.imgsz, self.stride, self.half, image_size, upscale,
                                      source_scale, self.stats)
        names = getattr(self.net, "names", None) or {}
        self.class_names = {int(k): str(v) for k, v in dict(names).items()}
        if self.person_classes == (PERSON_CLASS,) and names and names.get(PERSON_CLASS, "person") != "person":
            log.warning("class 0 of %s is %r, not 'person'", weights or model, names.get(PERSON_CLASS))
        if warmup:  # the fixed shape of a full batch of tiles, so the first detection frame does not pay for it
            warm_up(self.net, self.batch, self.imgsz, self.device, self.half)

    @property
    def info(self) -> dict:
        """What stats.json says about this detector."""
        return {"weights": None if self.weights is None else str(self.weights), "source": self.source,
                "classes": {str(c): self.class_names.get(c, str(c)) for c in self.person_classes},
                "input": self.imgsz, "image_size": self.image_size, "upscale": self.upscale, "batch": self.batch,
                **self.stats}

    def _float(self, image: torch.Tensor) -> torch.Tensor:
        return self.inputs.to_float(image)

    def _letterbox(self, image: torch.Tensor) -> tuple[torch.Tensor, float, tuple[int, int]]:
        return self.inputs.letterbox(image)

    def detection_zoom(self, h: int, w: int) -> float:
        """Pixels of the detection image per pixel of an ``h`` x ``w`` input (1.0 when tiling is off); set by the
        eye, the largest image seen (:meth:`DetectionInputs.zoom`)."""
        return self.inputs.zoom(h, w)

    def _run(self, nb: NetBatch, classes: tuple[int, ...]) -> list[np.ndarray]:
        self.stats["forwards"] += sum(-(-n // self.batch) for n in _shape_counts(nb))
        with torch.inference_mode():
            return nb.run(self.net, batch=self.batch, person_classes=classes, iou=self.iou_threshold,
                          max_det=self.max_det)

    # ------------------------------------------------------------------ detection
    def raw_detections(self, image: torch.Tensor, classes: list[int] | None = (), conf: float | None = None) -> torch.Tensor:
        """(N, 6) rows ``x0 y0 x1 y1 score cls`` in image pixels after NMS, one whole-image pass (no tiles).

        ``classes``: () = the person classes, None = every class.
        """
        classes = self.person_classes if classes == () else classes
        if classes is None:
            classes = tuple(range(len(self.class_names) or 80))
        nb = NetBatch()
        self.inputs.add_whole(nb, 0, image, self.confidence_threshold if conf is None else conf)
        rows = unletterbox(self._run(nb, tuple(classes))[0], nb.meta[0], *image.shape[:2])
        return torch.from_numpy(rows)

    def detect(self, image: torch.Tensor, threshold: float | None = None) -> list[Detection]:
        """All persons with score >= ``threshold`` (default ``confidence_threshold``), best first: whole-image pass
        plus tiles, merged."""
        return self.detect_many([image], threshold)[0]

    def detect_many(self, images: list[torch.Tensor], threshold: float | None = None) -> list[list[Detection]]:
        """:meth:`detect` of several images (both eyes, equirect crops) with one batched pass: every whole pass and
        tile through the network together, one NMS, one download (engines/yolo_batch.py)."""
        self.stats["calls"] += len(images)
        thr = self.confidence_threshold if threshold is None else float(threshold)
        nb = NetBatch()
        for k, image in enumerate(images):
            # The whole-eye pass keeps candidates down to _PASS_CONF: a whole-body box just under the threshold must
            # survive until a confident tile fragment of the same person vouches for it (merge); the threshold
            # applies after that. Tiles keep the threshold, so only confident fragments are joined or vouch.
            self.inputs.add_whole(nb, k, image, min(thr, _PASS_CONF))
            self.inputs.add_tiles(nb, k, image, thr)
        found = self._run(nb, self.person_classes)
        return image_detections(found, nb.meta, images, self.imgsz, thr, self.max_det, self.min_box_area, self.stats)

    def detect_windows(self, image: torch.Tensor, windows: np.ndarray, size: int, threshold: float
                       ) -> list[np.ndarray]:
        """Per square window (``windows``: (n, 4) xyxy in ``image`` px), its persons as (k, 5) rows ``x0 y0 x1 y1
        score`` in image px, best first: every window resampled to ``size`` x ``size`` and all of them through the
        network in one batch, one NMS, one download (no tiles, no merging: a window is already at the person's
        scale). For following known people between detection frames (stereo/follow.py)."""
        windows = np.asarray(windows, np.float32).reshape(-1, 4)
        if not len(windows):
            return []
        nb = NetBatch()
        self.inputs.add_windows(nb, image, windows, size, threshold)
        self.stats["windows"] += len(windows)
        return window_rows(self._run(nb, self.person_classes), windows, size)


def _shape_counts(nb: NetBatch) -> list[int]:
    counts: dict[tuple, int] = {}
    for x in nb.inputs:
        counts[tuple(x.shape)] = counts.get(tuple(x.shape), 0) + 1
    return list(counts.values())


def yolo_for(cfg, weights: Path | None, device, *, random_init: bool = False, source: str | None = None,
             person_classes: tuple[int, ...] = (PERSON_CLASS,), model: str | None = None,
             policy: DevicePolicy | None = None) -> YoloDetector:
    """The configured YOLOv8 person detector (``detection.*``, fp16), with tiling at the detection resolution;
    its batch and warm-up from the device policy (``hardware.policy``)."""
    det = cfg.detection
    policy = policy or choose_policy(torch.device(device), force=cfg.hardware.policy)
    return YoloDetector(
        weights,
        model=model or det.model,
        confidence_threshold=det.confidence_threshold,
        device=device,
        imgsz=int(det.tile_size),
        random_init=random_init,
        fp16=bool(cfg.matting.fp16),
        min_box_area=det.min_box_area,
        person_classes=person_classes,
        image_size=int(det.image_size),
        upscale=float(det.upscale),
        source_scale=1.0 / processing_scale(cfg.processing.scale_factor),
        source=source,
        batch=policy.detector_batch,
        warmup=policy.detector_warmup,
    )


def detector_for(cfg, device, *, random_init: bool = False) -> YoloDetector:
    """det-sam2 / mobilesam detector: the official ``{detection.model}.pt`` when present, else the bundled YOLOv8s
    (logged, and ``source`` "bundled" in stats.json), so the engines run with a trained detector out of the box."""
    from vr180matte.runtime.models import BUNDLED_DETECTOR, detector_weights

    if random_init:
        return yolo_for(cfg, None, device, random_init=True, source="random")
    weights, source = detector_weights(cfg.detection.model, cfg.models.dir)
    if source == "bundled":
        d = yolo_for(cfg, weights, device, source=source, person_classes=BUNDLED_DETECTOR.person_classes,
                     model="yolov8s")
        # This two-class model scores clearly visible people 0.6-0.85 (bedroom clip), lower than COCO YOLO, for
        # which the configured threshold is tuned; its false positives there scored <= 0.57.
        d.confidence_threshold = min(d.confidence_threshold, BUNDLED_MAX_THRESHOLD)
        return d
    return yolo_for(cfg, weights, device, source=source)


class OwnsDetector:
    """Engines that build one YOLOv8 detector in ``__init__`` (``self._detector``, ``self._detector_base``): the
    pipeline asks for it, the stereo stage owns it, stats.json reports it."""

    def make_detector(self) -> "YoloDetector":
        """The engine's YOLOv8 person detector (official weights when present, else the bundled YOLOv8s)."""
        return self._detector

    @property
    def detector_info(self) -> dict:
        """``detector`` entry of stats.json: weights, source (official | bundled | random) and tiling counters."""
        return {**self._detector_base, **self._detector.info}

    def detector_stats(self) -> dict:
        return self.detector_info
