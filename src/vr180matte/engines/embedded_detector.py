"""Multi-person detector of the embedded engine, built from models bundled in the mediapipe 0.10.21 wheel.

Why not ``mp.solutions.pose.Pose``: that solution tracks exactly one person. Its graph is made of subgraphs that
the wheel also registers on their own, so we assemble two small graphs ourselves:

* ``PoseDetectionCpu`` (``pose_detection.tflite``) returns *every* person candidate in one pass (after NMS), each
  with four keypoints: hip centre, a point on the full-body circle, shoulder centre, upper-body circle.
* ``PoseLandmarkByRoiCpu`` (``pose_landmark_full.tflite``, ``model_complexity=1``, the only bundled one) runs the
  landmark + segmentation model on a rotated region of interest and returns landmarks, the two auxiliary
  landmarks used to derive the next frame's ROI, and a full-image segmentation probability. It emits nothing
  when the model's pose-presence check fails, which we use to verify detector candidates.

Nothing here downloads anything: both models are files inside the installed wheel.

The detector finds small people as well as large ones by also running on overlapping tiles (the detector sees a
224x224 letterboxed image, so a person shorter than ~1/6 of the frame is otherwise missed), and finds people that
NMS suppressed behind another person by masking out everyone found so far and running again.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..boxes import iou, mask_box
from .base import Detection, EngineError

log = logging.getLogger(__name__)

_ROI_SCALE = 1.25  # PoseDetectionToRoi / PoseLandmarksToRoi enlarge the body circle by this factor
_NEUTRAL = 127  # fill colour for people already found (masking-out passes)


def _import_mediapipe():
    """Import the mediapipe graph API lazily (it is heavy and only this engine needs it)."""
    try:
        from google.protobuf import text_format
        from mediapipe.framework import calculator_pb2
        from mediapipe.framework.formats import rect_pb2
        from mediapipe.python.solution_base import SolutionBase
    except ImportError as exc:  # pragma: no cover - environment problem
        raise EngineError(
            f"the embedded engine needs mediapipe 0.10.21 ({exc}); install the project's requirements"
        ) from exc
    return text_format, calculator_pb2, rect_pb2, SolutionBase


_DETECT_GRAPH = """
input_stream: "image"
output_stream: "detections"
node { calculator: "PoseDetectionCpu" input_stream: "IMAGE:image" output_stream: "DETECTIONS:detections" }
"""

_LANDMARK_GRAPH = """
input_stream: "image"
input_stream: "roi"
output_stream: "landmarks"
output_stream: "aux"
output_stream: "mask"
input_side_packet: "model_complexity"
input_side_packet: "enable_segmentation"
node {
  calculator: "PoseLandmarkByRoiCpu"
  input_stream: "IMAGE:image"
  input_stream: "ROI:roi"
  output_stream: "LANDMARKS:landmarks"
  output_stream: "AUXILIARY_LANDMARKS:aux"
  output_stream: "SEGMENTATION_MASK:segmask"
  input_side_packet: "MODEL_COMPLEXITY:model_complexity"
  input_side_packet: "ENABLE_SEGMENTATION:enable_segmentation"
}
node { calculator: "FromImageCalculator" input_stream: "IMAGE:segmask" output_stream: "IMAGE_CPU:mask" }
"""


@dataclass
class Roi:
    """A rotated square region around one body, in pixels (what the landmark model is run on)."""

    cx: float
    cy: float
    size: float  # side length in pixels (already enlarged by _ROI_SCALE)
    rotation: float  # radians, as mediapipe's NormalizedRect.rotation

    @staticmethod
    def from_points(p0: tuple[float, float], p1: tuple[float, float]) -> "Roi":
        """ROI from hip centre ``p0`` and body-circle point ``p1`` (mediapipe's AlignmentPointsRects, angle 90)."""
        dx, dy = p1[0] - p0[0], p1[1] - p0[1]
        rot = math.pi / 2 - math.atan2(-dy, dx)
        rot = (rot + math.pi) % (2 * math.pi) - math.pi
        return Roi(p0[0], p0[1], 2.0 * math.hypot(dx, dy) * _ROI_SCALE, rot)

    @staticmethod
    def from_box(box: np.ndarray) -> "Roi":
        """Upright ROI for a person box (when no keypoints are known): centred, long side enlarged."""
        x0, y0, x1, y1 = (float(v) for v in box)
        return Roi((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * _ROI_SCALE, 0.0)

    def box(self) -> np.ndarray:
        """Axis-aligned bounding box of the (rotated) square, xyxy pixels."""
        half = self.size / 2 * (abs(math.cos(self.rotation)) + abs(math.sin(self.rotation)))
        return np.array([self.cx - half, self.cy - half, self.cx + half, self.cy + half], dtype=np.float32)


@dataclass
class PoseResult:
    """Output of the landmark model on one ROI."""

    mask: np.ndarray  # (H, W) float32 probability, full image
    next_roi: Roi  # ROI for the next frame, from the auxiliary landmarks
    landmark_box: np.ndarray  # xyxy of the landmarks that lie in the image (fallback box)


class PoseGraphs:
    """The two mediapipe graphs (detection, ROI landmarks+segmentation); one set per detector/segmenter.

    Each instance owns its graphs so views never share mediapipe state. ``close()`` frees them.
    """

    def __init__(self) -> None:
        text_format, calculator_pb2, rect_pb2, solution_base = _import_mediapipe()
        self._rect_pb2 = rect_pb2
        self._det = solution_base(
            graph_config=text_format.Parse(_DETECT_GRAPH, calculator_pb2.CalculatorGraphConfig()),
            outputs=["detections"],
        )
        self._lmk = solution_base(
            graph_config=text_format.Parse(_LANDMARK_GRAPH, calculator_pb2.CalculatorGraphConfig()),
            side_inputs={"model_complexity": 1, "enable_segmentation": True},
            outputs=["landmarks", "aux", "mask"],
        )

    def detect(self, rgb: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[tuple[float, Roi]]:
        """Person candidates in ``rgb`` as (score, ROI in the coordinates of the image ``offset`` belongs to)."""
        h, w = rgb.shape[:2]
        res = self._det.process({"image": np.ascontiguousarray(rgb)})
        out: list[tuple[float, Roi]] = []
        for d in res.detections or []:
            kps = d.location_data.relative_keypoints
            if len(kps) < 2:
                continue
            p0 = (kps[0].x * w + offset[0], kps[0].y * h + offset[1])
            p1 = (kps[1].x * w + offset[0], kps[1].y * h + offset[1])
            out.append((float(d.score[0]) if d.score else 0.0, Roi.from_points(p0, p1)))
        return out

    def landmarks(self, rgb: np.ndarray, roi: Roi) -> PoseResult | None:
        """Run the landmark+segmentation model on ``roi``; None when the model says no person is there."""
        h, w = rgb.shape[:2]
        rect = self._rect_pb2.NormalizedRect(
            x_center=roi.cx / w, y_center=roi.cy / h, width=roi.size / w, height=roi.size / h, rotation=roi.rotation
        )
        res = self._lmk.process({"image": np.ascontiguousarray(rgb), "roi": rect})
        if res.aux is None or res.landmarks is None:
            return None
        aux = res.aux.landmark
        nxt = Roi.from_points((aux[0].x * w, aux[0].y * h), (aux[1].x * w, aux[1].y * h))
        pts = np.array([(p.x * w, p.y * h) for p in res.landmarks.landmark], dtype=np.float32)
        pts[:, 0] = pts[:, 0].clip(0, w)
        pts[:, 1] = pts[:, 1].clip(0, h)
        lbox = np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()], dtype=np.float32)
        mask = np.asarray(res.mask, dtype=np.float32) if res.mask is not None else np.zeros((h, w), np.float32)
        if mask.ndim == 3:
            mask = mask[..., 0]
        return PoseResult(mask=mask, next_roi=nxt, landmark_box=lbox)

    def close(self) -> None:
        """Free both graphs (idempotent)."""
        for g in (self._det, self._lmk):
            try:
                g.close()
            except Exception:  # already closed
                pass


def _tiles(h: int, w: int, tile_frac: float = 0.6) -> list[tuple[int, int, int, int]]:
    """Overlapping square-ish tiles (x0, y0, x1, y1) covering the image, for finding small people."""
    side = int(max(min(h, w) * tile_frac, 64))
    out = []
    nx = max(1, math.ceil((w - side) / (side * 0.8)) + 1)
    ny = max(1, math.ceil((h - side) / (side * 0.8)) + 1)
    for iy in range(ny):
        for ix in range(nx):
            x0 = 0 if nx == 1 else round(ix * (w - side) / (nx - 1))
            y0 = 0 if ny == 1 else round(iy * (h - side) / (ny - 1))
            out.append((x0, y0, min(w, x0 + side), min(h, y0 + side)))
    return out


class EmbeddedDetector:
    """Finds several people per view with the bundled BlazePose detector, each verified by the landmark model.

    Every returned :class:`Detection` carries the person's segmentation probability as ``mask`` (full image), so a
    tracker can seed a segmenter with it, and a tight box taken from that mask.
    """

    name = "mediapipe-pose"

    def __init__(
        self,
        confidence_threshold: float = 0.5,
        max_persons: int = 8,
        min_box_area: float = 0.0005,
        tiles: bool = True,
        masking_passes: int = 2,
        device: torch.device | str = "cpu",
    ) -> None:
        self.confidence_threshold = float(confidence_threshold)
        self.max_persons = int(max_persons)
        self.min_box_area = float(min_box_area)
        self.tiles = tiles
        self.masking_passes = int(masking_passes)
        self.device = torch.device(device)
        self._graphs: PoseGraphs | None = None

    @property
    def graphs(self) -> PoseGraphs:
        if self._graphs is None:
            self._graphs = PoseGraphs()
        return self._graphs

    def detect(self, image: torch.Tensor) -> list[Detection]:
        """All verified persons in ``image`` ((H, W, 3) uint8 RGB), best score first, at most ``max_persons``."""
        t0 = time.perf_counter()
        rgb = np.ascontiguousarray(image.detach().to("cpu").numpy())
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise EngineError(f"embedded detector needs an (H, W, 3) uint8 RGB image, got {tuple(rgb.shape)} {rgb.dtype}")
        h, w = rgb.shape[:2]
        found: list[tuple[float, np.ndarray, np.ndarray]] = []  # (score, box, mask)
        covered = np.zeros((h, w), dtype=bool)
        calls = 0

        def consider(cands: list[tuple[float, Roi]], src: np.ndarray) -> int:
            nonlocal calls
            added = 0
            for score, roi in sorted(cands, key=lambda c: -c[0]):
                if score < self.confidence_threshold or len(found) >= self.max_persons:
                    continue
                if any(iou(roi.box(), Roi.from_box(b).box()) > 0.7 for _, b, _ in found):
                    continue  # the same person seen again (full frame vs tile)
                res = self.graphs.landmarks(src, roi)
                calls += 1
                if res is None:
                    continue
                box = mask_box(res.mask)
                if box is None:
                    continue
                on = res.mask > 0.5
                area = on.sum()
                if area == 0 or (covered & on).sum() > 0.5 * area:
                    continue  # mostly someone already found
                bw, bh = box[2] - box[0], box[3] - box[1]
                if bw * bh < self.min_box_area * h * w:
                    continue
                found.append((score, box, res.mask))
                covered[:] |= on
                added += 1
            return added

        work = rgb
        consider(self.graphs.detect(work), work)
        for _ in range(self.masking_passes):
            if not found or len(found) >= self.max_persons:
                break
            work = rgb.copy()
            work[_dilate(covered, max(3, int(0.01 * max(h, w))))] = _NEUTRAL
            if consider(self.graphs.detect(work), rgb) == 0:
                break
        if self.tiles and len(found) < self.max_persons and min(h, w) >= 128:
            for x0, y0, x1, y1 in _tiles(h, w):
                crop = rgb[y0:y1, x0:x1].copy()
                crop[covered[y0:y1, x0:x1]] = _NEUTRAL
                consider(self.graphs.detect(crop, offset=(x0, y0)), rgb)
        found.sort(key=lambda f: -f[0])
        dets = [
            Detection(box=b, score=s, mask=torch.from_numpy(np.array(m, dtype=np.float32)).to(self.device))
            for s, b, m in found[: self.max_persons]
        ]
        log.debug(
            "embedded detector: %d person(s) in %dx%d, %d landmark call(s), %.1f ms",
            len(dets), w, h, calls, (time.perf_counter() - t0) * 1e3,
        )
        return dets

    def close(self) -> None:
        """Free the mediapipe graphs."""
        if self._graphs is not None:
            self._graphs.close()
            self._graphs = None


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """Grow a boolean mask by ``px`` pixels (so masking-out also hides the person's fuzzy border)."""
    import cv2

    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask.astype(np.uint8), k) > 0
