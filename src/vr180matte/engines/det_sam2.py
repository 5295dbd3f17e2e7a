"""The det-sam2 engine: YOLOv8 finds people, a streaming SAM2.1 carries each of them through the video.

This module only wires the parts: weights from the models folder (runtime/models.py), the official SAM2.1
Hydra config for the chosen size, one SAM2 model shared by both eyes (each eye gets its own streaming state,
engines/sam2_stream.py) and one YOLO detector per caller (engines/yolo.py). Tracking (which detection prompts
which track) lives in track/, chunking and OOM retries in the pipeline.
"""
from __future__ import annotations

import logging
import threading

import torch

from vr180matte.config import Config
from vr180matte.engines.base import EngineError
from vr180matte.engines.sam2_stream import StreamingSam2Segmenter
from vr180matte.engines.yolo import OwnsDetector, detector_for
from vr180matte.runtime.models import bundled_detector_info, resolve_weights, weights_present

log = logging.getLogger(__name__)

# matting.sam2_model -> official Hydra config shipped inside the sam2 package
SAM2_CONFIGS: dict[str, str] = {
    "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}


def det_sam2_weights_present(cfg: Config) -> bool:
    """Whether this config's SAM2.1 checkpoint is in the models folder and a trained detector is available (the
    official ``detection.model`` file, or the bundled YOLOv8s) (``matting.engine: auto``)."""
    try:
        detector = weights_present(cfg.detection.model, cfg.models.dir) or bundled_detector_info()["path"] is not None
        return detector and weights_present(cfg.matting.sam2_model, cfg.models.dir)
    except EngineError:
        return False


def build_sam2_model(name: str, ckpt: str | None, device: torch.device, overrides: list[str] | None = None):
    """The official SAM2.1 video model for ``name`` (random weights when ``ckpt`` is None)."""
    try:
        config = SAM2_CONFIGS[name]
    except KeyError:
        raise EngineError(f"unknown SAM2 model '{name}': choose one of {', '.join(SAM2_CONFIGS)}") from None
    try:
        from sam2.build_sam import build_sam2_video_predictor
    except ImportError as exc:
        raise EngineError(f"the det-sam2 engine needs the sam2 package ({exc}); install sam2==1.1.0") from None
    try:
        model = build_sam2_video_predictor(
            config, ckpt_path=ckpt, device=str(device), hydra_overrides_extra=list(overrides or [])
        )
    except RuntimeError as exc:
        if ckpt is None:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "its keys do not match the model"
        raise EngineError(
            f"cannot load SAM2 weights {ckpt} into {name} ({first}); check matting.sam2_model matches the file"
        ) from None
    return model


class DetSam2Engine(OwnsDetector):
    """Engine protocol implementation; ``random_init`` and ``sam2_overrides`` are for tests and benchmarks."""

    name = "det-sam2"

    def __init__(
        self,
        cfg: Config,
        device: torch.device,
        *,
        random_init: bool = False,
        sam2_overrides: list[str] | None = None,
        random_init_detector: bool | None = None,
    ):
        """``random_init_detector`` (default: ``random_init``): False keeps a trained detector (official or bundled)
        in front of a random-init SAM2, which is how tests and benchmarks run the real Det-SAM2 path here."""
        random_init_detector = random_init if random_init_detector is None else random_init_detector
        self.cfg = cfg
        self.device = torch.device(device)
        self.random_init = random_init
        # The SAM2 file is resolved before anything is built: a missing file is a one-line error, at once.
        sam2_ckpt = None if random_init else resolve_weights(cfg.matting.sam2_model, cfg.models.dir)
        self.sam2 = build_sam2_model(cfg.matting.sam2_model, str(sam2_ckpt) if sam2_ckpt else None, self.device,
                                     sam2_overrides)
        # The detector: the official detection.model file when present, else the bundled YOLOv8s (logged). Built
        # after SAM2, so a random-init SAM2 (tests, benchmarks) gets the same weights for a seed as it always did.
        self._detector = detector_for(cfg, self.device, random_init=random_init_detector)
        self.yolo_weights = self._detector.weights
        self._detector_base = {"weights": None if self.yolo_weights is None else str(self.yolo_weights),
                               "source": self._detector.source}
        self.detect_interval = int(cfg.detection.detect_interval)
        self._lock = threading.Lock()
        log.info(
            "det-sam2: detector %s (%s) + %s on %s (image_size %d, window %d, cond %d, fp16 %s, offload %s)",
            self._detector_base["weights"] or f"random {cfg.detection.model}", self._detector_base["source"],
            cfg.matting.sam2_model, self.device, self.sam2.image_size,
            cfg.matting.memory_window, cfg.matting.max_conditioning_frames, cfg.matting.fp16,
            cfg.matting.memory_offload,
        )


    def make_segmenter(self, view: str):
        """A fresh streaming state for ``view`` over the one shared SAM2 model (weights are loaded once); small
        people in their own crops, each with its own memory bank, per ``matting.roi_max_frac`` (engines/roi.py)."""
        from .roi import with_roi
        from .sam2_stream import segment_batch

        def inner() -> StreamingSam2Segmenter:
            return StreamingSam2Segmenter(
                self.sam2,
                self.device,
                memory_window=int(self.cfg.matting.memory_window),
                max_conditioning_frames=int(self.cfg.matting.max_conditioning_frames),
                fp16=bool(self.cfg.matting.fp16),
                offload_to_cpu=bool(self.cfg.matting.memory_offload),
            )

        return with_roi(self.cfg, inner, segment_batch)
