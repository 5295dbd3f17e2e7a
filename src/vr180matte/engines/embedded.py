"""The embedded engine: person detection and segmentation from models bundled in the mediapipe 0.10.21 wheel.

It is the default when no SAM2/YOLO weights are present because it needs nothing downloaded: the BlazePose
detector (``pose_detection.tflite``) and the pose landmark + segmentation model (``pose_landmark_full.tflite``,
``model_complexity=1``) are files inside the installed package. mediapipe runs on the CPU only; masks are handed
to the rest of the pipeline as tensors on the engine's device.

See ``embedded_detector.py`` (several people per view) and ``embedded_segmenter.py`` (streaming, per track).
"""
from __future__ import annotations

import logging

import torch

from ..config import Config
from .embedded_detector import EmbeddedDetector
from .embedded_segmenter import EmbeddedSegmenter

log = logging.getLogger(__name__)

__all__ = ["EmbeddedEngine", "EmbeddedDetector", "EmbeddedSegmenter", "EMBEDDED_MAX_THRESHOLD"]

# The BlazePose detector's scores run lower than YOLO's (0.6 is typical for a clearly visible person), and every
# candidate is verified by the landmark model's presence check, so a YOLO-tuned threshold is capped at this value.
EMBEDDED_MAX_THRESHOLD = 0.5


class EmbeddedEngine:
    """Factory for the embedded engine's per-view detector and segmenters."""

    name = "embedded"

    def __init__(self, cfg: Config, device: torch.device) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        det = cfg.detection
        self.confidence_threshold = min(float(det.confidence_threshold), EMBEDDED_MAX_THRESHOLD)
        self.max_persons = int(det.max_persons)
        self.min_box_area = float(det.min_box_area)
        log.info(
            "embedded engine: mediapipe BlazePose detector + pose segmentation (bundled models, CPU), "
            "threshold %.2f, up to %d persons per eye, masks on %s",
            self.confidence_threshold, self.max_persons, self.device,
        )

    def make_detector(self) -> EmbeddedDetector:
        """A detector for one view (each owns its mediapipe graphs)."""
        return EmbeddedDetector(
            confidence_threshold=self.confidence_threshold,
            max_persons=self.max_persons,
            min_box_area=self.min_box_area,
            device=self.device,
        )

    def make_segmenter(self, view: str) -> EmbeddedSegmenter:
        """A fresh streaming segmenter for ``view``."""
        return EmbeddedSegmenter(view=view, device=self.device)
