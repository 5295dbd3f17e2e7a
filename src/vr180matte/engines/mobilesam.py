"""The ``mobilesam`` engine: YOLOv8 person boxes prompt a GPU-resident MobileSAM, one batched predict per frame.

MobileSAM has no memory, so each track carries itself from frame to frame: its next prompt is the box of its
own previous mask, grown by a margin (a detector re-prompt replaces it). That box is computed on the device
and fed straight back as a tensor, so between prompts nothing on the hot path waits for or copies from the GPU:
frame (device) -> set_image -> one batched predict over all live tracks -> (H, W) float32 probabilities
(device). Temporal stability is left to the refinement stage, as the design says.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch

from vr180matte.engines.mobilesam_predictor import MobileSamPredictor, SamKpi, load_mobile_sam
from vr180matte.engines.yolo import OwnsDetector, detector_for
from vr180matte.runtime.models import resolve_weights

if TYPE_CHECKING:
    from vr180matte.config import Config

log = logging.getLogger(__name__)


def boxes_from_masks(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight xyxy boxes (N, 4) float32 of boolean masks (N, H, W) and which masks are non-empty (N,).

    Pure tensor ops (no ``nonzero``, no ``.item()``), so on CUDA it never synchronises with the host.
    ``x1``/``y1`` are exclusive (last pixel + 1), like a box drawn around whole pixels.
    """
    n, h, w = masks.shape
    rows = masks.any(dim=2)  # (N, H)
    cols = masks.any(dim=1)  # (N, W)
    valid = rows.any(dim=1)
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ys, h).amin(dim=1)
    y1 = torch.where(rows, ys, -1).amax(dim=1) + 1
    x0 = torch.where(cols, xs, w).amin(dim=1)
    x1 = torch.where(cols, xs, -1).amax(dim=1) + 1
    return torch.stack([x0, y0, x1, y1], dim=1).float(), valid


def expand_boxes(boxes: torch.Tensor, margin: float, width: int, height: int) -> torch.Tensor:
    """Grow xyxy boxes by ``margin`` of their size on every side, clipped to the image."""
    # Scalar arithmetic only: no constant tensors built per frame (each would be a host-to-device copy).
    pad = margin * (boxes[:, 2:] - boxes[:, :2])
    lo, hi = boxes[:, :2] - pad, boxes[:, 2:] + pad
    x0, x1 = lo[:, 0].clamp(0, width), hi[:, 0].clamp(0, width)
    y0, y1 = lo[:, 1].clamp(0, height), hi[:, 1].clamp(0, height)
    return torch.stack([x0, y0, x1, y1], dim=1)


class MobileSamSegmenter:
    """Per-frame MobileSAM for one view; implements :class:`~vr180matte.engines.base.Segmenter`.

    State per track is one box (4 floats) and, with ``use_mask_input``, the last low-res logits
    (256x256): bounded, independent of the number of frames seen.
    """

    name = "mobilesam"

    def __init__(
        self,
        predictor: MobileSamPredictor,
        *,
        view: str = "left",
        box_margin: float = 0.1,
        use_mask_input: bool = False,
    ):
        self.predictor = predictor
        self.view = view
        self.box_margin = box_margin
        # Feeding the previous frame's low-res logits back as mask_input needs return_low_res=True (more memory)
        # and only helps when all live tracks have logits (SAM batches "mask" and "no mask" prompts separately).
        self.use_mask_input = use_mask_input
        self._boxes: dict[int, torch.Tensor] = {}  # track -> (4,) float32 box on the device
        self._low: dict[int, torch.Tensor] = {}  # track -> (1, 256, 256) logits of its last mask

    @property
    def device(self) -> torch.device:
        return self.predictor.device

    def add_prompt(self, track_id: int, box: np.ndarray | None = None, mask: torch.Tensor | None = None, *,
                   box_is_mask: bool = False) -> None:
        """(Re-)prompt ``track_id`` from the next frame on; a mask prompt is reduced to its box (a given box wins,
        so ``box_is_mask`` changes nothing here)."""
        if isinstance(box, torch.Tensor):  # e.g. a box another stage already holds on the device
            b = box.to(self.device, torch.float32).reshape(4)
        elif box is not None:
            b = torch.as_tensor(np.asarray(box, dtype=np.float32).reshape(4)).to(self.device)
        elif mask is not None:
            m = mask.to(self.device)
            if m.ndim != 2:
                raise ValueError(f"mask prompt must be (H, W), got shape {tuple(m.shape)}")
            b, valid = boxes_from_masks((m > 0.5)[None])
            previous = self._boxes.get(track_id)
            if previous is None:
                # Off the hot path (prompts are rare): checking emptiness here may synchronise, which is fine.
                if not bool(valid[0]):
                    log.debug("view %s: empty mask prompt for new track %d ignored", self.view, track_id)
                    return
                b = b[0]
            else:  # an empty mask keeps the track's previous prompt, decided on the device
                b = torch.where(valid[:, None], b, previous)[0]
        else:
            raise ValueError("add_prompt needs a box or a mask")
        self._boxes[track_id] = b
        self._low.pop(track_id, None)  # a fresh detector prompt wins over the propagated logits

    def remove_track(self, track_id: int) -> None:
        self._boxes.pop(track_id, None)
        self._low.pop(track_id, None)

    def reset(self) -> None:
        self._boxes.clear()
        self._low.clear()
        self.predictor.reset_image()
        self._prefetched: int | None = None

    @staticmethod
    def prefetch_batch(segmenters: list["MobileSamSegmenter"], frame_idx: int, images: list[torch.Tensor]) -> None:
        """Both eyes' image embeddings from one encoder forward, ahead of their ``segment`` calls (parallel_eyes).

        The stereo stage steps the eyes one after the other (the right eye is seeded from the left's mask), but
        the embedding does not depend on prompts, so it is computed for both at once; ``segment`` then skips
        ``set_image`` for that frame."""
        from .mobilesam_predictor import set_image_batch

        set_image_batch([s.predictor for s in segmenters], list(images))
        for s in segmenters:
            s._prefetched = int(frame_idx)

    def segment(self, frame_idx: int, image: torch.Tensor) -> dict[int, torch.Tensor]:
        """One ``set_image`` and one batched ``predict`` for all live tracks: ``{track_id: (H, W) float32}``."""
        if not self._boxes:
            return {}
        ids = list(self._boxes)
        h, w = int(image.shape[0]), int(image.shape[1])
        if getattr(self, "_prefetched", None) != frame_idx:
            self.predictor.set_image(image)
        self._prefetched = None
        boxes = torch.stack([self._boxes[i] for i in ids])
        mask_input = None
        if self.use_mask_input and all(i in self._low for i in ids):
            mask_input = torch.stack([self._low[i] for i in ids])
        logits, _scores, low = self.predictor.predict(
            box=boxes,
            mask_input=mask_input,
            multimask_output=False,
            return_logits=True,
            as_numpy=False,
            return_low_res=self.use_mask_input,
        )
        logits = logits[:, 0]  # (N, H, W)
        probs = torch.sigmoid(logits)
        new_boxes, valid = boxes_from_masks(logits > 0)
        new_boxes = expand_boxes(new_boxes, self.box_margin, w, h)
        # A track whose mask vanished keeps its last prompt, so it can come back when the person reappears.
        new_boxes = torch.where(valid[:, None], new_boxes, boxes)
        out: dict[int, torch.Tensor] = {}
        for k, tid in enumerate(ids):
            self._boxes[tid] = new_boxes[k]
            if low is not None:
                self._low[tid] = low[k]
            out[tid] = probs[k]
        return out


def segment_batch(segmenters: list[MobileSamSegmenter], frame_idx: int, images: list[torch.Tensor]
                  ) -> list[dict[int, torch.Tensor]]:
    """``segment`` of several views (eyes, or one eye's person crops) with one encoder batch for those that have
    tracks and no embedding of this frame yet; idle views run nothing."""
    todo = [i for i, s in enumerate(segmenters) if s._boxes and getattr(s, "_prefetched", None) != frame_idx]
    if todo:
        MobileSamSegmenter.prefetch_batch([segmenters[i] for i in todo], frame_idx, [images[i] for i in todo])
    return [s.segment(frame_idx, img) for s, img in zip(segmenters, images)]


class MobileSamEngine(OwnsDetector):
    """Factory for the ``mobilesam`` engine's detector and per-view segmenters (both eyes share one model)."""

    name = "mobilesam"

    def __init__(
        self,
        cfg: Config,
        device: torch.device,
        *,
        random_init: bool = False,
        kpi_timing: bool = False,
        box_margin: float = 0.1,
        use_mask_input: bool = False,
        random_init_detector: bool | None = None,
    ):
        self.cfg = cfg
        self.device = torch.device(device)
        self.random_init = random_init
        self.box_margin = box_margin
        self.use_mask_input = use_mask_input
        # Resolve both files before building anything: a missing file is a one-line error (file, URL, folder) at once.
        checkpoint = None if random_init else resolve_weights("mobile_sam", cfg.models.dir)
        # The detector: the official detection.model file when present, else the bundled YOLOv8s (logged).
        self._detector = detector_for(cfg, self.device, random_init=random_init if random_init_detector is None
                                      else random_init_detector)
        self.yolo_weights = self._detector.weights
        self._detector_base = {"weights": None if self.yolo_weights is None else str(self.yolo_weights),
                              "source": self._detector.source}
        self.model = load_mobile_sam(checkpoint, self.device, random_init=random_init)
        self.kpi = SamKpi(self.device, timing=kpi_timing)
        self.autocast_dtype: torch.dtype | None = None
        if cfg.matting.fp16 and self.device.type == "cuda":
            self.autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        log.info(
            "mobilesam engine on %s (%s weights%s)",
            self.device,
            "random" if random_init else checkpoint,
            f", autocast {self.autocast_dtype}" if self.autocast_dtype else "",
        )


    def make_segmenter(self, view: str):
        """A segmenter for ``view`` with its own predictor state over the shared model and KPI counter; small
        people in their own crops per ``matting.roi_max_frac`` (engines/roi.py)."""
        from .roi import with_roi

        def inner() -> MobileSamSegmenter:
            predictor = MobileSamPredictor(self.model, kpi=self.kpi, autocast_dtype=self.autocast_dtype)
            return MobileSamSegmenter(
                predictor, view=view, box_margin=self.box_margin, use_mask_input=self.use_mask_input
            )

        return with_roi(self.cfg, inner, segment_batch, self.device)

    def kpi_summary(self) -> dict:
        """``sam_predict_output`` totals for stats.json (``masks_left_gpu`` > 0 on a GPU run deserves a warning)."""
        return self.kpi.summary()

    def kpi_warning(self) -> str | None:
        """The run-summary warning text when masks left the GPU, else None."""
        n = self.kpi.masks_left_gpu
        if self.device.type == "cuda" and n:
            return f"masks left the GPU on {n} predicts"
        return None
