"""Tiles of a detection image and the merge of their boxes into one box per person (host side, numpy).

Why tiles: the whole eye letterboxed to the network input turns a distant person into a speck YOLO does not
report; the detector looks at the eye at a detection resolution of its own, cut into overlapping network-sized
tiles (engines/yolo.py). A person cut by a tile border comes back as fragments; :func:`merge_tiled_boxes` joins
them, drops fragments inside a whole box, then runs one class-agnostic NMS.
"""
from __future__ import annotations

import math

import numpy as np

from vr180matte.compat.torchvision_ops import nms_numpy

TILE_OVERLAP = 0.3  # share of a tile repeated in its neighbour: people up to this size fit whole in one tile
_EDGE_PX = 2.0  # minimum gap for "goes past a border" when joining
# A box side within this share of the tile of an inner tile border was cut by it: YOLO boxes of a body that runs
# off the tile stop a few pixels short of the edge (measured on the bedroom clip: up to ~20 px of 640).
CUT_FRAC = 0.04


def tile_grid(h: int, w: int, tile: int, overlap: float = TILE_OVERLAP) -> list[tuple[int, int, int, int]]:
    """Overlapping ``tile`` x ``tile`` windows (x0, y0, x1, y1) covering an ``h`` x ``w`` image, evenly spread.

    A side no longer than ``tile`` gets one window (clipped to the image); otherwise neighbours share at least
    ``overlap * tile`` pixels.
    """
    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        step = tile * (1.0 - overlap)
        k = math.ceil((n - tile) / step) + 1
        return [round(i * (n - tile) / (k - 1)) for i in range(k)]

    return [(x, y, min(w, x + tile), min(h, y + tile)) for y in starts(h) for x in starts(w)]


def merge_tiled_boxes(
    boxes: np.ndarray, scores: np.ndarray, cut: np.ndarray, iou_threshold: float = 0.5, inside: float = 0.7,
    join_overlap: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge boxes from overlapping tiles (and a whole-image pass) into one box per person.

    ``cut``: (N, 4) bool, which sides (x0, y0, x1, y1) of each box lie on an inner tile border (the person goes on
    past it). Steps: (1) join: a box cut on one side and another box that reaches past that border and overlaps it
    along the border by ``join_overlap`` (1-D IoU) are one person cut in two: replaced by their union (repeated
    until nothing joins); (2) a cut box lying mostly (``inside``) inside another box is a fragment: dropped;
    (3) class-agnostic NMS at ``iou_threshold``. Returns (boxes, scores), best first.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    scores = np.asarray(scores, np.float32).reshape(-1).copy()
    cut = np.asarray(cut, bool).reshape(-1, 4).copy()
    alive = np.ones(len(boxes), bool)

    def overlap1d(a0, a1, b0, b1):
        inter = max(0.0, min(a1, b1) - max(a0, b0))
        union = max(a1, b1) - min(a0, b0)
        return inter / union if union > 0 else 0.0

    changed = True
    while changed:
        changed = False
        for i in range(len(boxes)):
            if not alive[i] or not cut[i].any():
                continue
            a = boxes[i]
            for j in range(len(boxes)):
                if j == i or not alive[j]:
                    continue
                b = boxes[j]
                # Both must be fragments cut facing each other (a on its right, b on its left, ...) and overlap
                # across the border: two whole people side by side are never cut, so they are never joined.
                join = False
                if cut[i, 2] and cut[j, 0] and b[2] > a[2] + _EDGE_PX and b[0] < a[2]:
                    join = overlap1d(a[1], a[3], b[1], b[3]) >= join_overlap
                elif cut[i, 3] and cut[j, 1] and b[3] > a[3] + _EDGE_PX and b[1] < a[3]:
                    join = overlap1d(a[0], a[2], b[0], b[2]) >= join_overlap
                if join:
                    boxes[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                    scores[i] = max(scores[i], scores[j])
                    # The union is cut only where both were cut on the side that survives.
                    cut[i] = [cut[i, 0] if a[0] <= b[0] else cut[j, 0], cut[i, 1] if a[1] <= b[1] else cut[j, 1],
                              cut[i, 2] if a[2] >= b[2] else cut[j, 2], cut[i, 3] if a[3] >= b[3] else cut[j, 3]]
                    alive[j] = False
                    changed = True
                    a = boxes[i]
    idx = np.flatnonzero(alive)
    boxes, scores, cut = boxes[idx], scores[idx], cut[idx]
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep = np.ones(len(boxes), bool)
    for i in range(len(boxes)):
        if not cut[i].any() or area[i] <= 0:
            continue
        ix = np.clip(np.minimum(boxes[i, 2], boxes[:, 2]) - np.maximum(boxes[i, 0], boxes[:, 0]), 0, None)
        iy = np.clip(np.minimum(boxes[i, 3], boxes[:, 3]) - np.maximum(boxes[i, 1], boxes[:, 1]), 0, None)
        frac = ix * iy / area[i]
        frac[i] = 0.0
        host = np.flatnonzero((frac > inside) & (area > area[i]))
        if host.size:
            keep[i] = False  # a fragment of a bigger box, which it vouches for: the host keeps the better score
            k = host[np.argmax(scores[host])]  # the most confident host (not the largest: a loose 0.2 box)
            scores[k] = max(scores[k], scores[i])
    boxes, scores = boxes[keep], scores[keep]
    if len(boxes) == 0:
        return boxes, scores
    # A few dozen boxes already on the host: greedy NMS there (same contract as torchvision's), no tensors.
    order = nms_numpy(boxes, scores, iou_threshold)
    return boxes[order], scores[order]


def tile_boxes(out: np.ndarray, tile: tuple[int, int, int, int], tiles: list[tuple[int, int, int, int]], imgsz: int,
               dh: int, dw: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One tile's NMS rows (x0 y0 x1 y1 score ...) in tile pixels -> (boxes in detection-image pixels, scores, cut
    sides), without the cut boxes another tile holds whole (that tile's own box stands for the object)."""
    x0, y0, x1, y1 = tile
    b = out[:, :4].copy()
    b[:, [0, 2]] = (b[:, [0, 2]].clip(0, x1 - x0) + x0)
    b[:, [1, 3]] = (b[:, [1, 3]].clip(0, y1 - y0) + y0)
    # Sides on a border shared with another tile: the person may go on in the neighbour.
    e = CUT_FRAC * imgsz
    c = np.stack([
        (b[:, 0] <= x0 + e) & (x0 > 0), (b[:, 1] <= y0 + e) & (y0 > 0),
        (b[:, 2] >= x1 - e) & (x1 < dw), (b[:, 3] >= y1 - e) & (y1 < dh),
    ], axis=1)
    # A cut box that another tile holds whole was seen uncut there: a fragment it did not confirm is a border
    # artefact (a bed edge, a curtain).
    whole = np.array([
        any(tx0 <= bb[0] and ty0 <= bb[1] and bb[2] <= tx1 and bb[3] <= ty1 and (tx0, ty0) != (x0, y0)
            for tx0, ty0, tx1, ty1 in tiles)
        for bb in b
    ], dtype=bool).reshape(-1)
    keep = ~(c.any(axis=1) & whole)
    return b[keep], out[keep, 4], c[keep]


def finish_image(whole: np.ndarray, tiles: list, H: int, W: int, thr: float, max_det: int, min_box_area: float,
                 stats: dict) -> list:
    """One image's whole-pass rows (image pixels) and tile boxes ``[(boxes, scores, cut)]`` -> its detections:
    merged, thresholded, best first, degenerate and too-small boxes dropped (``stats`` counters updated)."""
    from vr180matte.engines.base import Detection

    boxes, scores = whole[:, :4].astype(np.float32), whole[:, 4].astype(np.float32)
    if tiles:
        tb = np.concatenate([t[0] for t in tiles]).astype(np.float32)
        tb[:, [0, 2]] = tb[:, [0, 2]].clip(0, W)
        tb[:, [1, 3]] = tb[:, [1, 3]].clip(0, H)
        ts = np.concatenate([t[1] for t in tiles]).astype(np.float32)
        tc = np.concatenate([t[2] for t in tiles])
        stats["tile_boxes"] += len(tb)
        n_in = len(boxes) + len(tb)
        boxes, scores = merge_tiled_boxes(np.concatenate([boxes, tb]), np.concatenate([scores, ts]),
                                          np.concatenate([np.zeros((len(boxes), 4), bool), tc]), iou_threshold=0.5)
        stats["joined_or_dropped"] += n_in - len(boxes)
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= thr]
    min_area = min_box_area * H * W
    dets = []
    for i in order[:max_det]:
        box = boxes[i].astype(np.float32)
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            continue  # degenerate after clipping to the image
        if (box[2] - box[0]) * (box[3] - box[1]) < min_area:
            continue  # too small to matte usefully (distant specks, false positives)
        dets.append(Detection(box=box, score=float(scores[i])))
    return dets
