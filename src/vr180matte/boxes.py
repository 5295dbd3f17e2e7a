"""Box vocabulary: xyxy boxes (float32, end-exclusive pixels), their IoU, and the box of a mask.

Every module that compares boxes or turns a mask into a box uses these, so "IoU" and "the box of a mask" mean
the same thing in the detector, the tracker, the stereo stage and the benchmarks.
"""
from __future__ import annotations

import numpy as np
import torch

MASK_THRESHOLD = 0.5


def box_iou(a, b) -> np.ndarray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes -> ``(N, M)`` float32 (0 for empty boxes)."""
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou.astype(np.float32)


def iou(a, b) -> float:
    """IoU of two single xyxy boxes."""
    return float(box_iou(a, b)[0, 0])


def overlap_small(a, b) -> float:
    """Intersection over the smaller box's area: a box mostly inside another (a fragment of the same person)."""
    ix = max(0.0, min(float(a[2]), float(b[2])) - max(float(a[0]), float(b[0])))
    iy = max(0.0, min(float(a[3]), float(b[3])) - max(float(a[1]), float(b[1])))
    amin = min((float(a[2]) - float(a[0])) * (float(a[3]) - float(a[1])),
               (float(b[2]) - float(b[0])) * (float(b[3]) - float(b[1])))
    return ix * iy / max(amin, 1e-9)


def _box_of(m: torch.Tensor) -> torch.Tensor:
    """``[x0, y0, x1, y1]`` (int64, end-exclusive; x1 = 0 when empty) of a boolean mask, on its device."""
    h, w = m.shape[-2:]
    rows, cols = m.any(dim=-1), m.any(dim=-2)
    ys = torch.arange(h, device=m.device)
    xs = torch.arange(w, device=m.device)
    return torch.stack([
        torch.where(cols, xs, w).min(), torch.where(rows, ys, h).min(),
        torch.where(cols, xs, -1).max() + 1, torch.where(rows, ys, -1).max() + 1,
    ])


def mask_stats_on_device(prob: torch.Tensor, thresh: float = MASK_THRESHOLD) -> torch.Tensor:
    """``[x0, y0, x1, y1, area, prob_sum]`` of ``prob > thresh`` as a float tensor on ``prob``'s device.

    Built with reductions only (no ``nonzero``), so nothing synchronises with the host until the caller copies
    the numbers down, for many masks at once (track/tracker.py ``mask_stats``, stereo validation)."""
    m = prob > thresh
    psum = torch.where(m, prob, torch.zeros((), dtype=prob.dtype, device=prob.device)).float().sum()
    return torch.cat([_box_of(m).float(), m.sum().float()[None], psum[None]])


def mask_boxes(masks: list[torch.Tensor], threshold: float = MASK_THRESHOLD) -> list[np.ndarray | None]:
    """:func:`mask_box` of several tensors (any sizes, one device) in one download: one host read for all."""
    if not masks:
        return []
    return boxes_from_rows(box_rows(masks, threshold).cpu().numpy())


def box_rows(masks: list[torch.Tensor], threshold: float = MASK_THRESHOLD,
             device: torch.device | str | None = None) -> torch.Tensor:
    """(N, 4) float boxes of ``masks > threshold`` on their device (``device`` when there are none), no read
    (:func:`boxes_from_rows` reads them)."""
    if not masks:
        return torch.zeros((0, 4), device=device)
    return torch.stack([_box_of(m > threshold).float() for m in masks])


def boxes_from_rows(values) -> list[np.ndarray | None]:
    """The boxes of downloaded :func:`box_rows` values (None for an empty mask)."""
    v = np.asarray(values, np.float32).reshape(-1, 4)
    return [None if b[2] <= 0 else b.astype(np.float32) for b in v]


def mask_boxes_and(masks: list[torch.Tensor], extra: torch.Tensor,
                   threshold: float = MASK_THRESHOLD) -> tuple[list[np.ndarray | None], np.ndarray]:
    """:func:`mask_boxes` and the values of ``extra`` (a tensor on the masks' device) in the same download."""
    rows = box_rows(masks, threshold, extra.device).to(extra.device)
    v = torch.cat([rows.flatten(), extra.float().flatten()]).cpu().numpy()
    return boxes_from_rows(v[: 4 * len(masks)]), v[4 * len(masks):]


def mask_box(mask, threshold: float = MASK_THRESHOLD) -> np.ndarray | None:
    """Tight xyxy box of ``mask > threshold`` (float32, end-exclusive), or None when the mask is empty.

    Takes a numpy array or a torch tensor; a tensor is reduced on its own device and only four numbers come
    down to the host (:func:`mask_boxes` brings many masks' boxes down in one transfer).
    """
    if isinstance(mask, torch.Tensor):
        return mask_boxes([mask], threshold)[0]
    on = np.asarray(mask) > threshold
    rows = np.flatnonzero(on.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(on.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def shift_box(box: np.ndarray, dx: float, width: int) -> np.ndarray:
    """Box moved by ``-dx`` horizontally (left-eye box -> right-eye box for disparity ``dx``), clipped to the eye."""
    b = np.asarray(box, dtype=np.float32).copy()
    b[[0, 2]] = np.clip(b[[0, 2]] - dx, 0, width)
    return b


def pad_box(box: np.ndarray, pad: float, width: int, height: int) -> np.ndarray:
    """Box grown by ``pad`` pixels on every side, clipped to the image."""
    b = np.asarray(box, dtype=np.float32).copy()
    b[:2] -= pad
    b[2:] += pad
    return np.clip(b, 0, [width, height, width, height]).astype(np.float32)
