"""YOLOv8 person detector (ultralytics) for the det-sam2 and mobilesam engines.

Why not ``YOLO.predict``: the predictor takes BGR numpy images (a device -> host copy per frame and a channel
flip), letterboxes with OpenCV on the CPU and builds ``Results`` objects we do not need. Frames here are
already RGB tensors on the processing device, so we letterbox on the device, run the ultralytics
``DetectionModel`` directly and use ultralytics' own ``non_max_suppression`` restricted to the person class.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vr180matte.compat.torchvision_ops import ensure_torchvision_ops
from vr180matte.engines.base import Detection, EngineError

log = logging.getLogger(__name__)

PERSON_CLASS = 0  # COCO "person"


class YoloDetector:
    """Detector protocol implementation: persons only, boxes in image pixels, best first."""

    name = "yolov8"

    def __init__(
        self,
        weights: Path | None,
        model: str = "yolov8n",
        confidence_threshold: float = 0.7,
        device: torch.device | str = "cpu",
        imgsz: int = 640,
        random_init: bool = False,
        iou_threshold: float = 0.7,
        max_det: int = 100,
        fp16: bool = False,
        min_box_area: float = 0.0,
    ):
        """``random_init`` builds ``{model}.yaml`` with random weights (tests); otherwise ``weights`` is loaded."""
        ensure_torchvision_ops()
        from ultralytics import YOLO

        self.device = torch.device(device)
        self.confidence_threshold = float(confidence_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_det = int(max_det)
        self.min_box_area = float(min_box_area)  # fraction of the image area; smaller boxes are dropped
        if random_init:
            yolo = YOLO(f"{model}.yaml", task="detect")
        else:
            if weights is None:
                raise EngineError(f"no weights given for detector {model}: pass the path from resolve_weights()")
            try:
                yolo = YOLO(str(weights), task="detect")
            except Exception as exc:  # noqa: BLE001 - ultralytics raises many types for a bad file
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise EngineError(f"cannot load YOLO weights {weights}: {first}; delete the file and download again") from None
        net = yolo.model
        if not isinstance(net, torch.nn.Module):
            raise EngineError(f"{weights} is not a PyTorch YOLO model")
        net = net.float().to(self.device).eval()
        # Half precision only where it is fast and safe (CUDA).
        self.half = bool(fp16 and self.device.type == "cuda")
        if self.half:
            net = net.half()
        self.net = net
        self.stride = int(max(int(net.stride.max()), 32)) if hasattr(net, "stride") else 32
        self.imgsz = int(math.ceil(imgsz / self.stride) * self.stride)
        names = getattr(net, "names", None) or {}
        if names and names.get(PERSON_CLASS, "person") != "person":
            log.warning("class 0 of %s is %r, not 'person'", weights or model, names.get(PERSON_CLASS))

    def _letterbox(self, image: torch.Tensor) -> tuple[torch.Tensor, float, tuple[int, int]]:
        """(1,3,h,w) float batch scaled to fit imgsz, padded to a stride multiple; returns gain and (pad_x, pad_y)."""
        if image.dim() != 3 or image.shape[-1] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {tuple(image.shape)}")
        H, W = image.shape[:2]
        x = image.to(self.device, non_blocking=True).permute(2, 0, 1)[None].float().div_(255.0)
        gain = min(self.imgsz / H, self.imgsz / W)
        h, w = max(1, round(H * gain)), max(1, round(W * gain))
        if (h, w) != (H, W):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=gain < 1)
        ph = math.ceil(h / self.stride) * self.stride - h
        pw = math.ceil(w / self.stride) * self.stride - w
        top, left = ph // 2, pw // 2
        x = F.pad(x, (left, pw - left, top, ph - top), value=114 / 255.0)
        return x, gain, (left, top)

    @torch.inference_mode()
    def raw_detections(self, image: torch.Tensor, classes: list[int] | None = (PERSON_CLASS,)) -> torch.Tensor:
        """(N, 6) rows ``x0 y0 x1 y1 score cls`` in image pixels after NMS (exposed for tests and debugging)."""
        from ultralytics.utils.nms import non_max_suppression

        H, W = image.shape[:2]
        x, gain, (left, top) = self._letterbox(image)
        if self.half:
            x = x.half()
        preds = self.net(x)
        out = non_max_suppression(
            preds,
            conf_thres=self.confidence_threshold,
            iou_thres=self.iou_threshold,
            classes=list(classes) if classes is not None else None,
            max_det=self.max_det,
        )[0].float()
        boxes = out[:, :4]
        boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - left) / gain).clamp(0, W)
        boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - top) / gain).clamp(0, H)
        return out[:, :6]

    def detect(self, image: torch.Tensor) -> list[Detection]:
        """All persons with score >= confidence_threshold, best first (one host copy of a few numbers)."""
        rows = self.raw_detections(image)
        if rows.shape[0] == 0:
            return []
        rows = rows[rows[:, 4].argsort(descending=True)].cpu().numpy()
        min_area = self.min_box_area * image.shape[0] * image.shape[1]
        dets = []
        for r in rows:
            box = r[:4].astype(np.float32)
            if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                continue  # degenerate after clipping to the image
            if (box[2] - box[0]) * (box[3] - box[1]) < min_area:
                continue  # too small to matte usefully (distant specks, false positives)
            dets.append(Detection(box=box, score=float(r[4])))
        return dets


def yolo_for(cfg, weights: Path | None, device, *, random_init: bool = False) -> YoloDetector:
    """The configured YOLOv8 person detector (``detection.model``, ``detection.confidence_threshold``, fp16)."""
    return YoloDetector(
        weights,
        model=cfg.detection.model,
        confidence_threshold=cfg.detection.confidence_threshold,
        device=device,
        random_init=random_init,
        fp16=bool(cfg.matting.fp16),
        min_box_area=cfg.detection.min_box_area,
    )
