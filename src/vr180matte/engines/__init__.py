"""Matting engines and their selection (``matting.engine``)."""
from __future__ import annotations

import logging

import torch

from ..config import Config
from .base import EngineError

log = logging.getLogger(__name__)

ENGINES = ("embedded", "det-sam2", "mobilesam", "passthrough")


def choose_engine(cfg: Config) -> tuple[str, str]:
    """(engine name, why): ``auto`` picks det-sam2 when its weights are found, else the embedded engine."""
    name = cfg.matting.engine
    if name != "auto":
        return name, "configured"
    from .det_sam2 import det_sam2_weights_present

    if det_sam2_weights_present(cfg):
        from ..runtime.models import weights_present

        detector = (f"{cfg.detection.model}.pt" if weights_present(cfg.detection.model, cfg.models.dir)
                    else "the bundled YOLOv8s detector")
        return "det-sam2", f"auto: SAM2.1 weights found, detector {detector}"
    return "embedded", "auto: no SAM2/YOLO weights configured, using the embedded engine (no download needed)"


def build_engine(cfg: Config, device: torch.device):
    """Instantiate the configured engine; raises EngineError with a one-line fix on missing weights."""
    name, why = choose_engine(cfg)
    log.info("engine: %s (%s)", name, why)
    if name == "embedded":
        from .embedded import EmbeddedEngine

        return EmbeddedEngine(cfg, device)
    if name == "det-sam2":
        from .det_sam2 import DetSam2Engine

        return DetSam2Engine(cfg, device)
    if name == "mobilesam":
        from .mobilesam import MobileSamEngine

        return MobileSamEngine(
            cfg, device, kpi_timing=cfg.performance.kpi_timing, box_margin=cfg.matting.mobilesam_box_margin,
            use_mask_input=cfg.matting.mobilesam_mask_input,
        )
    if name == "passthrough":
        from .passthrough import PassthroughEngine

        return PassthroughEngine(cfg, device)
    raise EngineError(f"unknown engine '{name}': choose one of {', '.join(ENGINES)}")
