"""Everything a detection frame looks at, through the network together: one batched forward, one NMS, one download.

A detection frame asks YOLO about several images: the whole-eye pass of each eye, the tiles of each eye at the
detection resolution, and the equirect perspective crops (each with a whole pass and tiles of its own). Run one
by one, that is a forward, an NMS and a device-to-host copy per image or tile batch, each copy a synchronisation
on a GPU. :class:`NetBatch` collects the network inputs of all of them (each with its own score floor), runs
them in forwards of at most ``batch`` images of the same shape (the device policy's ``detector_batch``), keeps
each input's candidates (best class a person class, score above its floor), suppresses duplicates with one
batched NMS (``torchvision.ops.batched_nms``: inputs never suppress each other), keeps ``max_det`` per input and
downloads all kept rows at once.

Per input this is what ultralytics' ``non_max_suppression`` (class-agnostic, person classes, ``max_det``) gives
for that input alone; the batch changes only float rounding of batched kernels (tested on real frames).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vr180matte.compat.torchvision_ops import ensure_torchvision_ops


PAD = 114 / 255.0  # ultralytics' letterbox grey


def to_float(image: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float in [0, 1] on ``device``."""
    if image.dim() != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {tuple(image.shape)}")
    return image.to(device, non_blocking=True).permute(2, 0, 1)[None].float().div_(255.0)


def nhwc(x: torch.Tensor) -> torch.Tensor:
    """A network batch in the detector's layout: channels-last, like its weights (engines/yolo_weights.py)."""
    return x.contiguous(memory_format=torch.channels_last)


def letterbox(image: torch.Tensor, device: torch.device, imgsz: int, stride: int
              ) -> tuple[torch.Tensor, float, tuple[int, int]]:
    """(1,3,h,w) float batch scaled to fit ``imgsz``, padded to a stride multiple, on the device; returns the gain
    and (pad_x, pad_y). A square image fills the network input exactly (so it batches with the tiles)."""
    H, W = image.shape[:2]
    x = to_float(image, device)
    gain = min(imgsz / H, imgsz / W)
    h, w = max(1, round(H * gain)), max(1, round(W * gain))
    if (h, w) != (H, W):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=gain < 1)
    ph = math.ceil(h / stride) * stride - h
    pw = math.ceil(w / stride) * stride - w
    top, left = ph // 2, pw // 2
    x = F.pad(x, (left, pw - left, top, ph - top), value=PAD)
    return x, gain, (left, top)


def unletterbox(rows: np.ndarray, meta, H: int, W: int) -> np.ndarray:
    """Whole-pass rows from network-input pixels back to image pixels (``meta``: ("whole", k, gain, left, top))."""
    _, _, gain, left, top = meta
    rows = rows.copy()
    rows[:, [0, 2]] = ((rows[:, [0, 2]] - left) / np.float32(gain)).clip(0, W)
    rows[:, [1, 3]] = ((rows[:, [1, 3]] - top) / np.float32(gain)).clip(0, H)
    return rows


def window_batch(image: torch.Tensor, windows: np.ndarray, size: int, device: torch.device) -> torch.Tensor:
    """(n, 3, size, size) network inputs: the square ``windows`` (n, 4 xyxy, image px, may reach past the image,
    where the letterbox grey fills in) of the (H, W, 3) uint8 ``image``, resampled bilinearly in one
    ``grid_sample``. Only the region the windows cover is converted to float (a 6K eye is 113 MB as float)."""
    H, W = int(image.shape[0]), int(image.shape[1])
    n = len(windows)
    x0 = int(max(0, np.floor(windows[:, 0].min())))
    y0 = int(max(0, np.floor(windows[:, 1].min())))
    x1 = int(min(W, np.ceil(windows[:, 2].max()) + 1))
    y1 = int(min(H, np.ceil(windows[:, 3].max()) + 1))
    if x1 <= x0 or y1 <= y0:
        return torch.full((n, 3, size, size), PAD, device=device)
    region = to_float(image[y0:y1, x0:x1], device) - PAD  # zero padding below is the letterbox grey
    rh, rw = region.shape[-2:]
    # Pixel centres of every window's output grid, in the region's normalised coordinates (align_corners=False).
    t = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
    w = torch.as_tensor(windows, dtype=torch.float32, device=device)
    gx = w[:, None, 0] + t[None] * (w[:, None, 2] - w[:, None, 0]) - x0  # (n, size) region px
    gy = w[:, None, 1] + t[None] * (w[:, None, 3] - w[:, None, 1]) - y0
    grid = torch.stack([(2 * gx / rw - 1)[:, None, :].expand(n, size, size),
                        (2 * gy / rh - 1)[:, :, None].expand(n, size, size)], -1)  # (n, size, size, 2)
    out = F.grid_sample(region, grid.reshape(1, n * size, size, 2), mode="bilinear", padding_mode="zeros",
                        align_corners=False)  # one sample for all windows: (1, 3, n * size, size)
    return out.reshape(3, n, size, size).transpose(0, 1) + PAD


def _xywh2xyxy(x: torch.Tensor) -> torch.Tensor:
    """Centre/size boxes to corners, the same ops as ultralytics' ``xywh2xyxy`` (same rounding)."""
    y = torch.empty_like(x)
    xy, wh = x[..., :2], x[..., 2:] / 2
    y[..., :2] = xy - wh
    y[..., 2:] = xy + wh
    return y


class NetBatch:
    """Network inputs of one detection frame and what each one stands for (``meta``, kept for the caller)."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []  # (3, h, w) float network inputs
        self.conf: list[float] = []  # each input's score floor
        self.meta: list[Any] = []

    def add(self, x: torch.Tensor, conf: float, meta: Any) -> None:
        self.inputs.append(x)
        self.conf.append(float(conf))
        self.meta.append(meta)

    def __len__(self) -> int:
        return len(self.inputs)

    def run(self, net: torch.nn.Module, *, batch: int, person_classes: tuple[int, ...], iou: float,
            max_det: int) -> list[np.ndarray]:
        """Per input, its detections as (n, 6) float32 rows ``x0 y0 x1 y1 score cls`` in input pixels, best first.

        One NMS over every input's candidates and one download for the whole frame."""
        ensure_torchvision_ops()
        from torchvision.ops import batched_nms

        if not self.inputs:
            return []
        dev = self.inputs[0].device
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, x in enumerate(self.inputs):
            by_shape.setdefault(tuple(x.shape[-2:]), []).append(i)
        classes = torch.tensor(person_classes, device=dev)
        boxes, scores, cls, owner = [], [], [], []
        for members in by_shape.values():
            for k in range(0, len(members), batch):
                idx = members[k : k + batch]
                preds = net(nhwc(torch.stack([self.inputs[i] for i in idx])))
                preds = preds[0] if isinstance(preds, (list, tuple)) else preds
                p = preds.transpose(-1, -2)  # (B, anchors, 4 + classes)
                conf, j = p[..., 4:].max(-1)
                floor = torch.tensor([self.conf[i] for i in idx], device=dev, dtype=conf.dtype)[:, None]
                keep = (conf > floor) & (j[..., None] == classes).any(-1)
                b, a = keep.nonzero(as_tuple=True)
                boxes.append(_xywh2xyxy(p[b, a, :4]))
                scores.append(conf[b, a])
                cls.append(j[b, a])
                owner.append(torch.tensor(idx, device=dev)[b])
        boxes_t, scores_t = torch.cat(boxes).float(), torch.cat(scores).float()
        cls_t, owner_t = torch.cat(cls).float(), torch.cat(owner)
        kept = batched_nms(boxes_t, scores_t, owner_t, iou)  # best first; inputs never suppress each other
        # max_det per input: rank of each kept row within its input (kept is sorted by score already)
        own = owner_t[kept]
        order = torch.sort(own, stable=True).indices
        counts = torch.bincount(own, minlength=len(self.inputs))
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=dev) - starts[own[order]]
        kept = kept[rank < max_det]
        rows = torch.cat([owner_t[kept, None].float(), boxes_t[kept], scores_t[kept, None], cls_t[kept, None]], 1)
        rows = rows.cpu().numpy()  # the one download of the detection frame
        out = []
        for i in range(len(self.inputs)):
            mine = rows[rows[:, 0] == i]
            out.append(np.ascontiguousarray(mine[:, 1:7], dtype=np.float32))
        return out
