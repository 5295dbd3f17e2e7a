"""Equirectangular awareness for detection in 180-degree VR eyes.

A VR180 eye is an equirectangular image: x is linear in longitude (-90..+90 deg), y in latitude. An object
of angular width ``a`` at latitude ``phi`` covers ``a / cos(phi)`` degrees of longitude, so people near the
top and bottom of the eye (a person standing next to the camera, seen from above; someone sitting below it)
are stretched sideways by 1.5-3x, and anything large near the edges and corners is bent. Person detectors
are trained on perspective photos and miss such shapes.

What we do (documented in docs/stereo.md): besides detecting on the whole eye, we render a few
undistorted perspective (gnomonic) crops looking at the stretched regions, run the same detector on each,
map every box back to equirect pixels by sampling its outline through the inverse projection, and merge all
boxes with non-maximum suppression. Crops cost one extra detector call each, so ``EquirectDetector`` uses a
small fixed set (default: 4 crops, pitch +-50 deg at yaw +-45 deg, plus 2 at yaw +-60 deg on the horizon)
and only on detection frames (every ``detect_interval``).
"""
from __future__ import annotations

import functools
import logging
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vr180matte.engines.base import Detection, Detector, detect_at
from vr180matte.boxes import box_iou, mask_box, overlap_small

log = logging.getLogger(__name__)

# (yaw, pitch) of the default perspective crops, degrees; pitch positive = up.
DEFAULT_CROPS: tuple[tuple[float, float], ...] = ((-45.0, 50.0), (45.0, 50.0), (-45.0, -50.0), (45.0, -50.0),
                                                  (-60.0, 0.0), (60.0, 0.0))


def _rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Camera-to-world rotation for a camera looking at (yaw, pitch); world: x right, y down, z forward."""
    y, p = math.radians(yaw_deg), math.radians(pitch_deg)
    # Pitch up (positive) rotates the forward axis towards -y (up).
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]], dtype=np.float64)
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]], dtype=np.float64)
    return ry @ rx


def _crop_rays(xs: np.ndarray, ys: np.ndarray, yaw_deg: float, pitch_deg: float, fov_deg: float,
               size: int) -> np.ndarray:
    """World ray directions for crop pixel coordinates (continuous, pixel centres at +0.5)."""
    f = (size / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    cam = np.stack([(xs - size / 2.0) / f, (ys - size / 2.0) / f, np.ones_like(xs, dtype=np.float64)], -1)
    return cam @ _rotation(yaw_deg, pitch_deg).T


def _rays_to_equirect(rays: np.ndarray, eye_w: int, eye_h: int, eye_fov_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Equirect pixel coordinates (continuous) of world rays; the eye covers eye_fov x eye_fov degrees."""
    x, y, z = rays[..., 0], rays[..., 1], rays[..., 2]
    lon = np.arctan2(x, z)
    lat = np.arctan2(-y, np.hypot(x, z))
    fov = math.radians(eye_fov_deg)
    u = (lon / fov + 0.5) * eye_w
    v = (0.5 - lat / fov) * eye_h
    return u, v


def equirect_to_rays(u: np.ndarray, v: np.ndarray, eye_w: int, eye_h: int, eye_fov_deg: float = 180.0) -> np.ndarray:
    """World ray directions of equirect pixel coordinates (inverse of the projection above)."""
    fov = math.radians(eye_fov_deg)
    lon = (np.asarray(u, dtype=np.float64) / eye_w - 0.5) * fov
    lat = (0.5 - np.asarray(v, dtype=np.float64) / eye_h) * fov
    return np.stack([np.cos(lat) * np.sin(lon), -np.sin(lat), np.cos(lat) * np.cos(lon)], -1)


@functools.lru_cache(maxsize=32)
def _crop_grid(H: int, W: int, yaw_deg: float, pitch_deg: float, fov_deg: float, size: int, eye_fov_deg: float,
               device: str) -> torch.Tensor:
    """The (1, size, size, 2) grid_sample grid of a perspective crop, on ``device``. Cached: a run's crops keep
    their direction and size, so the grid is built in numpy once, not on every detection frame (a few MB each;
    32 kept: both eyes' crops of a run and then some)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    u, v = _rays_to_equirect(_crop_rays(xs, ys, yaw_deg, pitch_deg, fov_deg, size), W, H, eye_fov_deg)
    # grid_sample normalised coords (align_corners=False): -1 = left edge of pixel 0.
    grid = np.stack([u / W * 2 - 1, v / H * 2 - 1], -1).astype(np.float32)
    return torch.from_numpy(grid).to(device)[None]


def perspective_crop(eye: torch.Tensor, yaw_deg: float, pitch_deg: float, fov_deg: float, size: int,
                     eye_fov_deg: float = 180.0) -> torch.Tensor:
    """An undistorted ``size`` x ``size`` pinhole view of the equirect ``eye`` (H, W, 3) uint8.

    The view looks at (``yaw_deg``, ``pitch_deg``) (degrees, pitch positive up) with horizontal and vertical
    field of view ``fov_deg``. Bilinear sampling on the eye's device; returns uint8 (size, size, 3).
    """
    return perspective_crops(eye, ((yaw_deg, pitch_deg),), fov_deg, size, eye_fov_deg)[0]


def perspective_crops(eye: torch.Tensor, views, fov_deg: float, size: int, eye_fov_deg: float = 180.0
                      ) -> torch.Tensor:
    """:func:`perspective_crop` of every (yaw, pitch) in ``views`` -> (n, size, size, 3) uint8, in one pass: the
    eye is made float once and all crops come from one ``grid_sample`` (their grids stacked), where a call per
    crop converted the whole eye each time (a 3072 px eye: 113 MB of float, ~0.1 s a crop on 2 cores). Each
    output pixel is the same computation, so the crops equal the per-crop ones exactly."""
    H, W = int(eye.shape[0]), int(eye.shape[1])
    grids = [_crop_grid(H, W, float(yaw), float(pitch), float(fov_deg), int(size), float(eye_fov_deg), str(eye.device))
             for yaw, pitch in views]
    src = eye.permute(2, 0, 1)[None].float()
    out = F.grid_sample(src, torch.cat(grids, 1), mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0].unflatten(1, (len(grids), int(size))).permute(1, 2, 3, 0).round().clamp(0, 255).to(torch.uint8)


def crop_box_to_equirect(box, yaw_deg: float, pitch_deg: float, fov_deg: float, size: int, eye_w: int, eye_h: int,
                         eye_fov_deg: float = 180.0) -> np.ndarray:
    """Map an xyxy box in a perspective crop to the enclosing xyxy box in equirect pixels (float32).

    Straight box edges become curves in the equirect image, so we sample 16 points along each edge (plus the
    centre) and take their bounds; the corners alone underestimate the box where an edge bulges. Points whose
    ray falls outside the eye's field of view (a crop looking past the eye's edge) are ignored.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    t = np.linspace(0.0, 1.0, 16)
    xs = np.concatenate([x0 + (x1 - x0) * t, np.full_like(t, x1), x1 - (x1 - x0) * t, np.full_like(t, x0),
                         [0.5 * (x0 + x1)]])
    ys = np.concatenate([np.full_like(t, y0), y0 + (y1 - y0) * t, np.full_like(t, y1), y1 - (y1 - y0) * t,
                         [0.5 * (y0 + y1)]])
    u, v = _rays_to_equirect(_crop_rays(xs, ys, yaw_deg, pitch_deg, fov_deg, size), eye_w, eye_h, eye_fov_deg)
    ok = (u >= 0) & (u <= eye_w) & (v >= 0) & (v <= eye_h)
    if not ok.any():
        return np.zeros(4, dtype=np.float32)
    u, v = u[ok], v[ok]
    out = np.array([u.min(), v.min(), u.max(), v.max()], dtype=np.float32)
    out[[0, 2]] = np.clip(out[[0, 2]], 0, eye_w)
    out[[1, 3]] = np.clip(out[[1, 3]], 0, eye_h)
    return out


def crop_mask_to_equirect(mask: torch.Tensor, region: np.ndarray, yaw_deg: float, pitch_deg: float, fov_deg: float,
                          eye_w: int, eye_h: int, eye_fov_deg: float = 180.0) -> torch.Tensor:
    """Warp a crop's (size, size) probability mask into an (eye_h, eye_w) equirect mask.

    Only the equirect ``region`` (xyxy, e.g. from :func:`crop_box_to_equirect`) is computed, so the cost is that
    of the person, not of the eye. Pixels outside the crop are 0.
    """
    size = int(mask.shape[-1])
    out = torch.zeros((eye_h, eye_w), dtype=torch.float32, device=mask.device)
    x0, y0 = int(max(0, math.floor(region[0]))), int(max(0, math.floor(region[1])))
    x1, y1 = int(min(eye_w, math.ceil(region[2]))), int(min(eye_h, math.ceil(region[3])))
    if x1 <= x0 or y1 <= y0:
        return out
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
    rays = equirect_to_rays(xs, ys, eye_w, eye_h, eye_fov_deg) @ _rotation(yaw_deg, pitch_deg)  # world -> camera
    f = (size / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    z = rays[..., 2]
    front = z > 1e-6
    zz = np.where(front, z, 1.0)
    cx = np.where(front, f * rays[..., 0] / zz + size / 2.0, -size)
    cy = np.where(front, f * rays[..., 1] / zz + size / 2.0, -size)
    grid = np.stack([cx / size * 2 - 1, cy / size * 2 - 1], -1).astype(np.float32)
    g = torch.from_numpy(grid).to(mask.device)[None]
    warped = F.grid_sample(mask.float()[None, None], g, mode="bilinear", padding_mode="zeros", align_corners=False)
    out[y0:y1, x0:x1] = warped[0, 0]
    return out


def merge_detections(dets: Sequence[Detection], iou: float = 0.5, contain: float = 0.8) -> list[Detection]:
    """Greedy NMS, best score first; also drops a box mostly contained in a kept one (same person seen in
    the full eye and in a crop whose box mapped back slightly differently)."""
    kept: list[Detection] = []
    for d in sorted(dets, key=lambda d: -d.score):
        if any(box_iou(d.box, k.box)[0, 0] > iou or overlap_small(d.box, k.box) > contain for k in kept):
            continue
        kept.append(d)
    return kept


class EquirectDetector:
    """Wraps any :class:`Detector`: full-eye detection plus perspective crops of the stretched regions.

    ``crops``: (yaw, pitch) centres in degrees; ``fov_deg``: field of view of each crop; ``size``: crop side in
    pixels (default: the eye height times fov / eye_fov, at least 64, so a crop keeps about the eye's own pixel
    density at its centre). Crop detections come back in equirect pixels; when the wrapped detector gives masks,
    they are warped back too and give the tight box.
    """

    def __init__(self, detector: Detector, crops: Sequence[tuple[float, float]] = DEFAULT_CROPS,
                 fov_deg: float = 75.0, size: int | None = None, eye_fov_deg: float = 180.0, nms_iou: float = 0.5):
        self.detector = detector
        self.name = f"equirect({getattr(detector, 'name', type(detector).__name__)})"
        self.crops = tuple(crops)
        self.fov_deg = fov_deg
        self.size = size
        self.eye_fov_deg = eye_fov_deg
        self.nms_iou = nms_iou
        self.stats = {"calls": 0, "crop_boxes": 0, "crop_only": 0, "crop_replaced": 0}

    def _crop_size(self, eye_h: int) -> int:
        if self.size:
            return int(self.size)
        # Match the eye's angular pixel density at the crop centre.
        return max(64, int(round(eye_h * self.fov_deg / self.eye_fov_deg)))

    @property
    def confidence_threshold(self) -> float:
        return float(self.detector.confidence_threshold)

    @property
    def supports_threshold(self) -> bool:
        return bool(getattr(self.detector, "supports_threshold", False))

    def _detect_all(self, eye: torch.Tensor, threshold: float | None, with_eye: bool
                    ) -> tuple[list[Detection] | None, list[Detection]]:
        """(the eye's own detections when ``with_eye``, else None; the crops' detections in equirect pixels).

        A detector with ``detect_many`` (YOLO) looks at the eye and all its crops in one batched pass (one forward
        batch, one NMS, one download: engines/yolo_batch.py); any other detector is called image by image."""
        H, W = eye.shape[:2]
        size = self._crop_size(H)
        crops = list(perspective_crops(eye, self.crops, self.fov_deg, size, self.eye_fov_deg).unbind(0))
        images = [eye, *crops] if with_eye else crops
        many = getattr(self.detector, "detect_many", None)
        if many is not None:
            found = many(images, threshold) if threshold is not None else many(images)
        else:
            found = [detect_at(self.detector, im, threshold) for im in images]
        full = found[0] if with_eye else None
        out: list[Detection] = []
        for (yaw, pitch), dets in zip(self.crops, found[1:] if with_eye else found):
            for d in dets:
                cx, cy = 0.5 * (d.box[0] + d.box[2]), 0.5 * (d.box[1] + d.box[3])
                u, v = _rays_to_equirect(_crop_rays(np.array([cx]), np.array([cy]), yaw, pitch, self.fov_deg, size),
                                         W, H, self.eye_fov_deg)
                if not (0 <= u[0] <= W and 0 <= v[0] <= H):
                    continue  # centred outside the eye's field of view (the crop looks past its edge)
                box = crop_box_to_equirect(d.box, yaw, pitch, self.fov_deg, size, W, H, self.eye_fov_deg)
                mask = None
                if d.mask is not None:
                    # A mask gives the tight box: the crop box's corners map to a loose region near the poles.
                    mask = crop_mask_to_equirect(d.mask, box, yaw, pitch, self.fov_deg, W, H, self.eye_fov_deg)
                    tight = mask_box(mask)
                    if tight is None:
                        continue
                    box = tight
                if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                    continue
                out.append(Detection(box=box, score=float(d.score), mask=mask))
        self.stats["crop_boxes"] += len(out)
        return full, out

    def detect_crops(self, eye: torch.Tensor, threshold: float | None = None) -> list[Detection]:
        """Detections found on the perspective crops only, boxes in equirect pixels of ``eye``."""
        return self._detect_all(eye, threshold, with_eye=False)[1]

    def detect(self, image: torch.Tensor, threshold: float | None = None) -> list[Detection]:
        """All persons in the equirect eye ``image``: full-eye detections merged with crop detections.

        ``threshold``: passed to the wrapped detector (only when it ``supports_threshold``)."""
        self.stats["calls"] += 1
        full, crops = self._detect_all(image, threshold, with_eye=True)
        return self.merge(full, crops)

    def merge(self, full: list[Detection], crops: list[Detection]) -> list[Detection]:
        """Merge crop detections into full-eye ones.

        A crop detection of a person the full eye also found replaces the full-eye one when its box is larger:
        on a stretched person the full-eye detector typically fires on part of the body only, while the crop
        sees the whole, undistorted person. Otherwise duplicates are dropped (NMS).
        """
        merged = merge_detections(full, self.nms_iou)
        from_full = [True] * len(merged)
        area = lambda b: float((b[2] - b[0]) * (b[3] - b[1]))  # noqa: E731
        for c in merge_detections(crops, self.nms_iou):
            dup = [i for i, f in enumerate(merged)
                   if box_iou(c.box, f.box)[0, 0] > self.nms_iou or overlap_small(c.box, f.box) > 0.8]
            if not dup:
                merged.append(c)
                from_full.append(False)
                self.stats["crop_only"] += 1
                continue
            i = dup[0]
            if from_full[i] and area(c.box) > 1.2 * area(merged[i].box):
                merged[i] = Detection(box=c.box, score=max(c.score, merged[i].score), mask=c.mask)
                from_full[i] = False
                self.stats["crop_replaced"] += 1
        return merged
