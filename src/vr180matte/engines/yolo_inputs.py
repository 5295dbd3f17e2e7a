"""The person detector's network inputs (engines/yolo.py): what one detection frame puts through YOLO.

Per image a whole pass (the image letterboxed to the network input) and, when the image at the *detection
resolution* is larger than the network input, the overlapping tiles of that resolution; for following known
people, square windows resampled to one size. All of it on the device, no host copy (frames are already RGB
tensors there). The detection resolution is set by the eye (see :meth:`DetectionInputs.zoom`), so this keeps
the largest image side seen so far.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vr180matte.engines.yolo_batch import PAD, NetBatch, letterbox, to_float, window_batch
from vr180matte.engines.yolo_tiles import tile_grid


class DetectionInputs:
    """Builds a :class:`~vr180matte.engines.yolo_batch.NetBatch`. ``imgsz``/``stride``: the network input side and
    stride; ``half``: fp16 inputs; ``image_size``, ``upscale``, ``source_scale``: the detection resolution (see
    :class:`~vr180matte.engines.yolo.YoloDetector`); ``stats``: the detector's counters (tiles are counted here)."""

    def __init__(self, device: torch.device, imgsz: int, stride: int, half: bool, image_size: int | None,
                 upscale: float, source_scale: float, stats: dict) -> None:
        self.device, self.imgsz, self.stride, self.half = device, imgsz, stride, half
        self.image_size = None if image_size is None else int(image_size)
        self.upscale = float(upscale)
        self.source_scale = float(source_scale)
        self.stats = stats
        self.last_tiles = 0  # tiles of the last image looked at (0: its whole pass saw it all)
        self.eye_side = 0  # short side of the largest image seen: the eye (see zoom)

    def to_float(self, image: torch.Tensor) -> torch.Tensor:
        return to_float(image, self.device)

    def letterbox(self, image: torch.Tensor) -> tuple[torch.Tensor, float, tuple[int, int]]:
        return letterbox(image, self.device, self.imgsz, self.stride)

    def zoom(self, h: int, w: int) -> float:
        """Pixels of the detection image per pixel of an ``h`` x ``w`` input (1.0 when tiling is off).

        The zoom is set by the *eye*, the largest image this detector has been given (its short side, so a joint
        side-by-side frame counts as one eye high): the eye side becomes ``min(image_size, upscale x its source
        size)``. Smaller images (the equirect perspective crops) get the same zoom, i.e. the eye's pixel density,
        not a zoom of their own that would multiply their tiles.
        """
        if self.image_size is None:
            return 1.0
        self.eye_side = max(self.eye_side, min(h, w))
        return min(float(self.image_size) / self.eye_side, self.upscale * self.source_scale)

    def add_whole(self, nb: NetBatch, k: int, image: torch.Tensor, conf: float) -> None:
        x, gain, (left, top) = self.letterbox(image)
        nb.add((x.half() if self.half else x)[0], conf, ("whole", k, gain, left, top))

    def add_tiles(self, nb: NetBatch, k: int, image: torch.Tensor, conf: float) -> None:
        """The tiles of ``image`` at the detection resolution (none when that fits the network input: the whole
        pass already sees it all)."""
        H, W = image.shape[:2]
        zoom = self.zoom(H, W)
        dh, dw = max(1, round(H * zoom)), max(1, round(W * zoom))
        if max(dh, dw) <= self.imgsz * 1.15:  # one pass at the network input is the same resolution
            self.last_tiles = 0
            return
        x = self.to_float(image)
        if (dh, dw) != (H, W):
            x = F.interpolate(x, size=(dh, dw), mode="bilinear", align_corners=False, antialias=zoom < 1)
        if self.half:
            x = x.half()
        tiles = tile_grid(dh, dw, self.imgsz)
        self.last_tiles = len(tiles)
        self.stats["tiles"] += len(tiles)
        S = self.imgsz
        for t in tiles:
            x0, y0, x1, y1 = t
            crop = x[0, :, y0:y1, x0:x1]
            if crop.shape[-2:] != (S, S):  # a side shorter than a tile: padded as the letterbox pads
                crop = F.pad(crop, (0, S - (x1 - x0), 0, S - (y1 - y0)), value=PAD)
            nb.add(crop, conf, ("tile", k, t, tiles, zoom, dh, dw))

    def add_windows(self, nb: NetBatch, image: torch.Tensor, windows: np.ndarray, size: int, conf: float) -> None:
        """Every square window (``windows``: (n, 4) xyxy in ``image`` px) resampled to ``size`` x ``size``, in
        window order (meta: its index)."""
        x = window_batch(image, windows, int(size), self.device)
        if self.half:
            x = x.half()
        for i in range(len(windows)):
            nb.add(x[i], conf, i)
