"""The person detector's results (engines/yolo.py): a detection frame's downloaded rows back to each image.

After the batched NMS (engines/yolo_batch.py) every network input has its rows in input pixels. Here they go
back to their image: a whole pass un-letterboxed, a tile's rows out of the detection resolution (and joined
with the whole pass: engines/yolo_tiles.py), a window's rows scaled and shifted into the image. Host numpy
only: the frame's one download has already happened.
"""
from __future__ import annotations

import numpy as np
import torch

from vr180matte.engines.base import Detection
from vr180matte.engines.yolo_batch import unletterbox
from vr180matte.engines.yolo_tiles import finish_image, tile_boxes


def image_detections(found: list[np.ndarray], metas: list, images: list[torch.Tensor], imgsz: int, thr: float,
                     max_det: int, min_box_area: float, stats: dict) -> list[list[Detection]]:
    """Per image, its persons (score >= ``thr``) best first: its whole pass and its tiles' boxes merged.
    ``found``/``metas``: per network input, its rows and what it stands for (``DetectionInputs.add_*``)."""
    per_image: list[dict] = [{"whole": None, "tiles": []} for _ in images]
    for rows, meta in zip(found, metas):
        k = meta[1]
        H, W = images[k].shape[:2]
        if meta[0] == "whole":
            per_image[k]["whole"] = unletterbox(rows, meta, H, W)
        elif len(rows):
            _, _, t, tiles, zoom, dh, dw = meta
            b, s, c = tile_boxes(rows, t, tiles, imgsz, dh, dw)
            per_image[k]["tiles"].append((b / zoom, s, c))
    return [finish_image(p["whole"], p["tiles"], *images[k].shape[:2], thr, max_det, min_box_area, stats)
            for k, p in enumerate(per_image)]


def window_rows(found: list[np.ndarray], windows: np.ndarray, size: int) -> list[np.ndarray]:
    """Per window, its rows as (k, 5) ``x0 y0 x1 y1 score`` in image px (from the ``size`` x ``size`` input)."""
    out = []
    for rows, (wx0, wy0, wx1, wy1) in zip(found, windows):
        f = np.float32([(wx1 - wx0) / size, (wy1 - wy0) / size] * 2)
        out.append(np.concatenate([rows[:, :4] * f + np.float32([wx0, wy0, wx0, wy0]), rows[:, 4:5]], 1))
    return out
