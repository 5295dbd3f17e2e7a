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
from vr180matte.runtime.device import resolve_max_vram_gb
from vr180matte.runtime.models import bundled_detector_info, resolve_weights, weights_present
from vr180matte.runtime.policy import DevicePolicy, choose_policy

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


# What one stored memory entry costs, for the ``memory_offload: auto`` decision: SAM2's memory features are
# (mem_dim, S/16, S/16) in bf16. STATE_VRAM_SHARE: the share of hardware.max_vram_gb the state may take at most,
# counted at its worst (every track of both eyes full, twice over for rows of ended tracks still in the window).
STATE_VRAM_SHARE = 0.25


def sam2_state_bytes_bound(cfg: Config, image_size: int, mem_dim: int) -> int:
    """An upper bound of the streaming SAM2 state of a run: both eyes, ``detection.max_persons`` tracks each,
    every window full (engines/sam2_memory.py keeps step outputs shared, so ended tracks' rows linger: x2)."""
    entry = int(mem_dim) * (int(image_size) // 16) ** 2 * 2 + 256 * 4
    entries = int(cfg.matting.memory_window) + int(cfg.matting.max_conditioning_frames)
    return 2 * 2 * int(cfg.detection.max_persons) * entries * entry


def state_offload(cfg: Config, device: torch.device, policy: DevicePolicy, image_size: int, mem_dim: int
                  ) -> tuple[bool, str]:
    """(keep SAM2's memory on the host?, why) from ``matting.memory_offload`` (true | false | auto).

    auto: on the device when the device policy keeps state there (the GPU policy) and the state's upper bound
    fits STATE_VRAM_SHARE of ``hardware.max_vram_gb``; on the host otherwise. On a CPU both are the same memory."""
    value = cfg.matting.memory_offload
    if value is not True and value is not False and value != "auto":
        raise EngineError(f"matting.memory_offload must be auto, true or false, got {value!r}")
    if value != "auto":
        return bool(value), f"matting.memory_offload={str(value).lower()}"
    if device.type != "cuda":
        return False, "auto: no GPU, the state is in host memory either way"
    if not policy.sam2_state_on_device:
        return True, f"auto: the {policy.kind} policy keeps SAM2 state on the host"
    bound = sam2_state_bytes_bound(cfg, image_size, mem_dim) / 2**30
    cap = resolve_max_vram_gb(cfg.hardware.max_vram_gb, device) * STATE_VRAM_SHARE
    if bound <= cap:
        return False, f"auto: state bound {bound:.2f} GB fits {cap:.2f} GB of VRAM"
    return True, f"auto: state bound {bound:.2f} GB exceeds {cap:.2f} GB of VRAM, kept on the host"


def build_sam2_model(name: str, ckpt: str | None, device: torch.device, overrides: list[str] | None = None,
                     compile: bool = False):
    """The official SAM2.1 video model for ``name`` (random weights when ``ckpt`` is None). ``compile``: SAM2's
    own ``vos_optimized`` predictor (torch.compile of its image encoder, memory encoder and mask decoder) when this
    torch build has ``torch.compile``; not measured on a GPU here, hence off by default."""
    if compile and not hasattr(torch, "compile"):
        log.warning("matting.compile=true but this torch build has no torch.compile: running SAM2 uncompiled")
        compile = False
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
            config, ckpt_path=ckpt, device=str(device), hydra_overrides_extra=list(overrides or []),
            vos_optimized=bool(compile),
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
        policy: DevicePolicy | None = None,
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
                                     sam2_overrides, compile=bool(cfg.matting.compile))
        self.policy = policy or choose_policy(self.device, force=cfg.hardware.policy)
        self.offload, self.offload_reason = state_offload(cfg, self.device, self.policy, int(self.sam2.image_size),
                                                          int(getattr(self.sam2, "mem_dim", 64)))
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
            f"{self.offload} ({self.offload_reason})",
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
                offload_to_cpu=self.offload,
            )

        return with_roi(self.cfg, inner, segment_batch, self.device)
