"""A GPU-resident MobileSAM predictor: the classic ``SamPredictor`` API, without the trips back to the host.

The model itself (TinyViT image encoder, SAM prompt encoder and mask decoder) comes from ultralytics, which
ships MobileSAM and whose module names match the official ``mobile_sam.pt`` checkpoint key for key
(``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``). The predictor wrapper is ours because the
stock predictors copy every result to numpy: on a GPU that is a device-to-host transfer and a stream
synchronisation per call, which costs more than the mask decoder itself.

What differs from the classic ``segment_anything.SamPredictor``:

* ``set_image`` takes a ``torch.uint8`` (H, W, 3) tensor on any device (or a numpy array) and does the
  resize-longest-side-to-1024 / normalise / pad on the model's device, like ``set_torch_image``.
* ``predict(..., as_numpy=False, return_low_res=True)``: by default results stay tensors on the model's device.
  ``as_numpy=True`` returns numpy arrays exactly as the classic predictor does ("legacy mode");
  ``return_low_res=False`` returns ``None`` for the low-resolution logits and frees them right away.
* A 2-D ``box`` of shape (B, 4) (or 3-D ``point_coords`` (B, N, 2), or 4-D ``mask_input``) is one batched call
  with batched outputs (B, C, H, W), like ``predict_torch``; a 1-D box (4,) gives the classic unbatched (C, H, W).
* Only the work the caller keeps: ``best_only=True`` (with ``multimask_output``) keeps each prompt's
  highest-scoring mask, chosen on the device, and upsamples only that one (a classic caller upsamples three and
  takes ``masks[scores.argmax()]`` on the host); boolean masks are upsampled at ``mask_dtype`` (default: the
  autocast dtype on CUDA, float32 on the CPU), since only their sign is kept. Logits stay float32.

Each call emits a ``sam_predict_output`` KPI event (see :class:`SamKpi`).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vr180matte.engines.base import EngineError

log = logging.getLogger(__name__)
kpi_log = logging.getLogger("vr180matte.kpi")

IMG_SIZE = 1024  # MobileSAM's encoder input side; the checkpoint's positional tables are built for it
LOW_RES = 256  # side of the decoder's low-resolution mask logits
MASK_THRESHOLD = 0.0  # logits above this are foreground (SAM's convention)

ArrayLike = np.ndarray | torch.Tensor


def build_mobile_sam_model() -> torch.nn.Module:
    """An uninitialised (random-weight) MobileSAM ``SAMModel`` on the CPU, in eval mode."""
    from vr180matte.compat.torchvision_ops import ensure_torchvision_ops

    ensure_torchvision_ops()  # ultralytics imports torchvision; its compiled ops may not match this torch
    from ultralytics.models.sam.build import build_mobile_sam

    return build_mobile_sam(checkpoint=None)


def load_mobile_sam(
    checkpoint: Path | str | None, device: torch.device | str = "cpu", *, random_init: bool = False
) -> torch.nn.Module:
    """MobileSAM on ``device`` with the weights of ``checkpoint`` (the public ``mobile_sam.pt``).

    ``random_init=True`` skips loading (tests, benchmarks). Any problem with the file is an
    :class:`EngineError` with a one-line message, because a bad download is the usual cause.
    """
    model = build_mobile_sam_model()
    if not random_init:
        if checkpoint is None:
            raise EngineError("MobileSAM needs its checkpoint mobile_sam.pt: give a path or use random_init=True")
        path = Path(checkpoint)
        if not path.is_file():
            raise EngineError(f"MobileSAM checkpoint not found: {path} (download mobile_sam.pt into that folder)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same user-facing advice
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise EngineError(f"cannot read MobileSAM checkpoint {path}: {first} (download mobile_sam.pt again)") from None
        for key in ("model", "state_dict"):  # training checkpoints nest the weights
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        if not isinstance(state, dict):
            raise EngineError(f"MobileSAM checkpoint {path} holds a {type(state).__name__}, not a state dict")
        expected = set(model.state_dict())
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        if missing or unexpected:
            raise EngineError(
                f"MobileSAM checkpoint {path} does not match the model: {len(missing)} missing keys"
                f"{' (e.g. ' + missing[0] + ')' if missing else ''}, {len(unexpected)} unexpected"
                f"{' (e.g. ' + unexpected[0] + ')' if unexpected else ''}; use the official mobile_sam.pt"
            )
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:  # shape mismatches
            first = str(exc).strip().splitlines()[-1].strip()
            raise EngineError(f"MobileSAM checkpoint {path} does not match the model: {first}") from None
    model = model.to(torch.device(device))
    model.requires_grad_(False)
    # TinyViT caches its attention biases in eval(); redo it after loading and moving so the cache is current.
    model.eval()
    return model


def _device_name(x: Any) -> str:
    if x is None:
        return "skipped"
    if isinstance(x, torch.Tensor):
        return str(x.device)
    return "cpu"  # numpy arrays live in host memory


class SamKpi:
    """Counts and logs ``sam_predict_output`` events; shared by all predictors of one engine.

    ``timing=True`` synchronises CUDA around each predict so ``latency_ms`` is the real device time; that
    stalls the host's run-ahead (the CPU can no longer queue the next frame's work while the GPU is busy), so it
    is off by default and ``latency_ms`` then is the host time to *enqueue* the call on CUDA (exact on CPU).
    """

    def __init__(self, device: torch.device | str, *, timing: bool = False):
        self.device = torch.device(device)
        self.timing = timing
        self.count = 0
        self.as_numpy = 0
        self.return_low_res = 0
        self.masks_left_gpu = 0
        self.total_ms = 0.0
        self._lock = threading.Lock()  # the two eyes' segmenters may predict from different threads

    @property
    def synced(self) -> bool:
        """Whether latencies are real device times (always on CPU; on CUDA only with ``timing``)."""
        return self.device.type != "cuda" or self.timing

    def start(self) -> float:
        if self.timing and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def record(self, t0: float, *, as_numpy: bool, return_low_res: bool, masks: Any, scores: Any, low: Any) -> dict:
        if self.timing and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        latency = (time.perf_counter() - t0) * 1000.0
        fields = {
            "as_numpy": as_numpy,
            "return_low_res": return_low_res,
            "mask_device": _device_name(masks),
            "iou_device": _device_name(scores),
            "low_device": _device_name(low),
            "latency_ms": round(latency, 3),
            "latency_synced": self.synced,
        }
        with self._lock:
            self.count += 1
            self.as_numpy += int(as_numpy)
            self.return_low_res += int(return_low_res)
            self.total_ms += latency
            if self.device.type == "cuda" and not fields["mask_device"].startswith("cuda"):
                self.masks_left_gpu += 1
        if kpi_log.isEnabledFor(logging.INFO):
            kpi_log.info(
                "sam_predict_output %s",
                json.dumps(fields, sort_keys=True),
                extra={"kpi": {"event": "sam_predict_output", **fields}},
            )
        return fields

    def summary(self) -> dict:
        """For stats.json: predict count, legacy/low-res counts, mean latency, and ``masks_left_gpu``."""
        return {
            "event": "sam_predict_output",
            "device": str(self.device),
            "predicts": self.count,
            "as_numpy": self.as_numpy,
            "return_low_res": self.return_low_res,
            "mean_latency_ms": round(self.total_ms / self.count, 3) if self.count else None,
            "latency_synced": self.synced,
            "masks_left_gpu": self.masks_left_gpu,
        }


def preprocess_shape(h: int, w: int, long_side: int = IMG_SIZE) -> tuple[int, int]:
    """Size after resizing the longest side to ``long_side`` (SAM's ``ResizeLongestSide.get_preprocess_shape``)."""
    scale = long_side / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


@torch.no_grad()
def preprocess_image(image: ArrayLike, image_format: str, device: torch.device, mean: torch.Tensor,
                     std: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """SAM's encoder input of an (H, W, 3) uint8 image on ``device``: resized longest side to 1024, normalised by
    ``mean``/``std``, padded; with the original and resized (H, W)."""
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"set_image expects an (H, W, 3) image, got shape {tuple(image.shape)}")
    if image_format.upper() == "BGR":
        image = image.flip(-1)
    elif image_format.upper() != "RGB":
        raise ValueError(f"image_format must be 'RGB' or 'BGR', not {image_format!r}")
    h, w = int(image.shape[0]), int(image.shape[1])
    x = image.to(device, non_blocking=True).permute(2, 0, 1).unsqueeze(0).float()
    nh, nw = preprocess_shape(h, w)
    # Same op as SamPredictor.set_torch_image (ResizeLongestSide.apply_image_torch).
    x = F.interpolate(x, (nh, nw), mode="bilinear", align_corners=False, antialias=True)
    x = (x - mean) / std
    x = F.pad(x, (0, IMG_SIZE - nw, 0, IMG_SIZE - nh))
    return x, (h, w), (nh, nw)


def _on(x: ArrayLike | None, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
    if x is None:
        return None
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    return torch.as_tensor(x).to(device, dtype=dtype, non_blocking=True)


def _scale_xy(coords: torch.Tensor, scale: tuple[float, float]) -> torch.Tensor:
    """Pixel coordinates of the original image -> the resized 1024 input (``ResizeLongestSide.apply_coords``).
    Scalar multiplies instead of a scale tensor: no small host-to-device copy on every call."""
    return torch.stack([coords[..., 0] * scale[0], coords[..., 1] * scale[1]], dim=-1)


def prompt_tensors(predictor: "MobileSamPredictor", point_coords, point_labels, box, mask_input):
    """``predict``'s prompts as batched tensors on the predictor's device in the 1024 input's coordinates, and
    whether the call was batched (its outputs keep a leading B)."""
    if point_coords is not None and point_labels is None:
        raise ValueError("point_labels must be given with point_coords")
    dev = predictor.device
    coords, labels = _on(point_coords, torch.float32, dev), _on(point_labels, torch.int64, dev)
    boxes, masks_in = _on(box, torch.float32, dev), _on(mask_input, torch.float32, dev)
    batched = (
        (boxes is not None and boxes.ndim == 2)
        or (coords is not None and coords.ndim == 3)
        or (masks_in is not None and masks_in.ndim == 4)
    )
    (ih, iw), (oh, ow) = predictor.input_size, predictor.original_size
    scale = (iw / ow, ih / oh)
    if coords is not None:
        coords = _scale_xy(coords, scale)
        if coords.ndim == 2:
            coords, labels = coords[None], labels[None]
    if boxes is not None:
        boxes = _scale_xy(boxes.reshape(-1, 2, 2), scale).reshape(-1, 4)
    if masks_in is not None and masks_in.ndim == 3:
        masks_in = masks_in[None]
    return coords, labels, boxes, masks_in, batched


class MobileSamPredictor:
    """``set_image`` once per image, then any number of (batched) ``predict`` calls against its embedding."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        kpi: SamKpi | None = None,
        autocast_dtype: torch.dtype | None = None,
        mask_dtype: torch.dtype | None = None,
    ):
        self.model = model
        self.device = next(model.parameters()).device
        self.kpi = kpi if kpi is not None else SamKpi(self.device)
        # Autocast only where it pays (CUDA); CPU autocast would change numbers and slow the encoder.
        self.autocast_dtype = autocast_dtype if self.device.type == "cuda" else None
        #: the dtype boolean masks are upsampled in: the sign of a logit survives half precision except within
        #: its rounding of zero (boundary pixels), and half the bytes move through the two interpolations
        self.mask_dtype = mask_dtype or self.autocast_dtype or torch.float32
        self.features: torch.Tensor | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None
        self._mean = model.pixel_mean.to(self.device).view(1, 3, 1, 1)
        self._std = model.pixel_std.to(self.device).view(1, 3, 1, 1)
        self._dense_pe: torch.Tensor | None = None

    # ----------------------------------------------------------------------------------------------- image
    def _autocast(self):
        if self.autocast_dtype is None:
            return torch.autocast(device_type=self.device.type, enabled=False)
        return torch.autocast(device_type="cuda", dtype=self.autocast_dtype)

    # no_grad, not inference_mode: inference tensors refuse in-place updates outside inference mode, and the
    # refinement stages downstream are free to edit the masks they are handed.
    @torch.no_grad()
    def set_image(self, image: ArrayLike, image_format: str = "RGB") -> None:
        """Compute the image embedding of an (H, W, 3) uint8 RGB image (tensor on any device, or numpy)."""
        x, original_size, input_size = self.preprocess(image, image_format)
        self.features = None  # free the previous embedding before the encoder allocates
        with self._autocast():
            self.features = self.model.image_encoder(x)
        self.original_size = original_size
        self.input_size = input_size

    def preprocess(
        self, image: ArrayLike, image_format: str = "RGB"
    ) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        """(1, 3, 1024, 1024) normalised, padded encoder input on the device, original and resized (H, W)."""
        return preprocess_image(image, image_format, self.device, self._mean, self._std)

    def reset_image(self) -> None:
        self.features = None
        self.original_size = None
        self.input_size = None

    @property
    def is_image_set(self) -> bool:
        return self.features is not None

    def get_image_embedding(self) -> torch.Tensor:
        if self.features is None:
            raise RuntimeError("call set_image() before get_image_embedding()")
        return self.features

    @torch.no_grad()
    def predict(
        self,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        *,
        as_numpy: bool = False,
        return_low_res: bool = True,
        best_only: bool = False,
    ) -> tuple[Any, Any, Any]:
        """Masks for the prompts on the current image: ``(masks, scores, low_res_logits)``.

        Shapes: unbatched prompts give masks (C, H, W), scores (C,), low-res (C, 256, 256); batched prompts
        (box (B, 4), points (B, N, 2), mask_input (B, 1, 256, 256)) give a leading B. C is 3 with
        ``multimask_output`` else 1, and 1 with ``best_only`` (each prompt's highest-scoring of the three, its
        score and low-res logits). Masks are bool unless ``return_logits``. Tensors stay on the model's device
        unless ``as_numpy``; low-res logits are ``None`` when ``return_low_res`` is false.
        """
        if self.features is None:
            raise RuntimeError("call set_image() before predict()")
        t0 = self.kpi.start()
        coords, labels, boxes, masks_in, batched = prompt_tensors(self, point_coords, point_labels, box, mask_input)

        with self._autocast():
            low, scores = self._decode(coords, labels, boxes, masks_in, multimask_output)
        if best_only and low.shape[1] > 1:
            low, scores = best_masks(low, scores)
        if return_logits:
            masks = self.postprocess_masks(low)
        else:
            masks = self.postprocess_masks(low, self.mask_dtype) > MASK_THRESHOLD
        scores = scores.float()
        if return_low_res:
            low = low.float()
        else:
            low = None  # frees the logits now instead of keeping them alive in the caller
        if not batched:
            masks, scores = masks[0], scores[0]
            low = low[0] if low is not None else None
        if as_numpy:
            masks = masks.cpu().numpy()
            scores = scores.cpu().numpy()
            low = low.cpu().numpy() if low is not None else None
        self.kpi.record(t0, as_numpy=as_numpy, return_low_res=return_low_res, masks=masks, scores=scores, low=low)
        return masks, scores, low

    def _decode(
        self,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        masks_in: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        prompt_encoder, decoder = self.model.prompt_encoder, self.model.mask_decoder
        points = (coords, labels) if coords is not None else None
        sparse, dense = prompt_encoder(points=points, boxes=boxes, masks=masks_in)
        if self._dense_pe is None:  # constant for the model: compute once, not per call
            self._dense_pe = prompt_encoder.get_dense_pe()
        return decoder(
            image_embeddings=self.features,
            image_pe=self._dense_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )

    def postprocess_masks(self, low: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Low-res logits (B, C, 256, 256) -> logits at the original image size (``Sam.postprocess_masks``), in
        ``dtype``."""
        x = F.interpolate(low.to(dtype), (IMG_SIZE, IMG_SIZE), mode="bilinear", align_corners=False)
        x = x[..., : self.input_size[0], : self.input_size[1]]
        return F.interpolate(x, self.original_size, mode="bilinear", align_corners=False)


def best_masks(low: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each prompt's highest-scoring candidate: low-res logits (B, C, h, w) and scores (B, C) -> (B, 1, ...),
    picked on the device (no read of the scores)."""
    best = scores.argmax(1, keepdim=True)  # (B, 1)
    pick = best[:, :, None, None].expand(-1, 1, *low.shape[-2:])
    return low.gather(1, pick), scores.gather(1, best)


@torch.no_grad()
def set_image_batch(predictors: list[MobileSamPredictor], images: list[ArrayLike], image_format: str = "RGB") -> None:
    """``predictors[i].set_image(images[i])`` for every view (both eyes), with one image-encoder call per model.

    Predictors that share a model (one MobileSAM for both eyes) get their embeddings from a single forward of
    a batch (the TinyViT encoder is most of MobileSAM's cost per frame; a batch of 2 keeps a GPU busier than two
    batches of 1). Each predictor then holds its own (1, 256, 64, 64) embedding, as after ``set_image``, so the
    prompts of each view are decoded against its own image. Equal to calling ``set_image`` per view (within
    float tolerance of a batched convolution)."""
    if len(predictors) != len(images):
        raise ValueError(f"set_image_batch needs one image per predictor, got {len(images)} for {len(predictors)}")
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(predictors):
        groups.setdefault(id(p.model), []).append(i)
    for members in groups.values():
        prepared = [predictors[i].preprocess(images[i], image_format) for i in members]
        lead = predictors[members[0]]
        for i in members:
            predictors[i].features = None  # free the previous embeddings before the encoder allocates
        with lead._autocast():
            feats = lead.model.image_encoder(torch.cat([x for x, _, _ in prepared], 0))
        for j, i in enumerate(members):
            p = predictors[i]
            p.features = feats[j : j + 1]
            p.original_size, p.input_size = prepared[j][1], prepared[j][2]
