"""Debug views: the detection-visualisation video and per-pixel confidence maps.

The detection video is small on purpose (longest side ``max_side``, H.264): it is for looking at what the
detector and the tracker did, per eye, not for grading. Boxes of TrackMasks and Detections are in
processing-resolution pixels; the scale to the full-resolution eye is taken from the track's mask shape
(exact), else from ``scale`` (the processing scale factor), else 1.
"""
from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from vr180matte.engines.base import FrameMatte

log = logging.getLogger(__name__)

_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def _color(track_id: int) -> tuple[int, int, int]:
    return _PALETTE[track_id % len(_PALETTE)]


class DetectionVisualizer:
    """Writes ``<stem>.detections.mp4``: each eye with track masks tinted, track boxes with ``#id score``,
    raw detections as thin white boxes with their score."""

    def __init__(self, path: Path, width: int, height: int, fps, max_side: int = 1280, scale: float | None = None):
        self.path = Path(path)
        f = min(1.0, max_side / max(width, height))
        self.w = max(2, int(round(width * f / 2)) * 2)
        self.h = max(2, int(round(height * f / 2)) * 2)
        self.src_w, self.src_h = width, height
        self.scale = scale
        rate = Fraction(fps).limit_denominator(100000) if not isinstance(fps, Fraction) else fps
        self._out = av.open(str(self.path), "w")
        self._stream = self._out.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height, self._stream.pix_fmt = self.w, self.h, "yuv420p"
        self._stream.options = {"preset": "veryfast", "crf": "23"}
        self.frames = 0

    def _draw_eye(self, img: np.ndarray, fm: FrameMatte, eye_w_src: int, eye_h_src: int) -> None:
        h, w = img.shape[:2]
        proc_scale = None
        for tm in fm.tracks.values():
            proc_scale = (tm.prob.shape[1] / eye_w_src, tm.prob.shape[0] / eye_h_src)
            break
        if proc_scale is None:
            s = self.scale or 1.0
            proc_scale = (s, s)
        fx, fy = w / (eye_w_src * proc_scale[0]), h / (eye_h_src * proc_scale[1])
        for tid, tm in sorted(fm.tracks.items()):
            m = tm.prob.detach().float()
            m = torch.nn.functional.interpolate(m[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            m = m.cpu().numpy()[..., None]
            img[:] = (img * (1 - 0.35 * m) + np.array(_color(tid)) * 0.35 * m).astype(np.uint8)
        th = max(1, h // 300)
        font = max(0.35, h / 900)
        for d in fm.detections:
            x0, y0, x1, y1 = (d.box * [fx, fy, fx, fy]).astype(int)
            cv2.rectangle(img, (x0, y0), (x1, y1), (255, 255, 255), th)
            cv2.putText(img, f"{d.score:.2f}", (x0 + 2, y1 - 4), cv2.FONT_HERSHEY_SIMPLEX, font, (255, 255, 255), th)
        for tid, tm in sorted(fm.tracks.items()):
            if tm.box is None:
                continue
            x0, y0, x1, y1 = (np.asarray(tm.box) * [fx, fy, fx, fy]).astype(int)
            c = _color(tid)
            cv2.rectangle(img, (x0, y0), (x1, y1), c, th + 1)
            label = f"#{tid} {tm.score:.2f}"
            (tw, tht), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, th)
            ly = y0 if y0 - tht - 6 >= 0 else y0 + tht + 6  # label above the box, inside it at the top edge
            cv2.rectangle(img, (x0, ly - tht - 6), (x0 + tw + 4, ly), c, -1)
            cv2.putText(img, label, (x0 + 2, ly - 4), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), th)

    def write(self, sbs_rgb: np.ndarray, left: FrameMatte, right: FrameMatte | None) -> None:
        """Draw one SBS frame (H, W, 3) uint8 RGB (full resolution); ``right`` None for a mono input."""
        small = cv2.resize(np.ascontiguousarray(sbs_rgb), (self.w, self.h), interpolation=cv2.INTER_AREA)
        if right is None:
            self._draw_eye(small, left, self.src_w, self.src_h)
        else:
            half = self.w // 2
            for fm, x0, x1 in ((left, 0, half), (right, half, self.w)):
                eye = small[:, x0:x1].copy()
                self._draw_eye(eye, fm, self.src_w // 2, self.src_h)
                small[:, x0:x1] = eye
            cv2.putText(small, f"L  frame {left.frame_idx}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1)
            cv2.putText(small, "R", (half + 6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1)
        frame = av.VideoFrame.from_ndarray(small, format="rgb24")
        for p in self._stream.encode(frame):
            self._out.mux(p)
        self.frames += 1

    def close(self) -> None:
        if self._out is None:
            return
        for p in self._stream.encode():
            self._out.mux(p)
        self._out.close()
        self._out = None
        log.info("detection visualisation: %s (%d frames)", self.path, self.frames)


def save_confidence_map(path: Path, prob: torch.Tensor, max_side: int = 512) -> None:
    """The segmenter's per-pixel probability as a TURBO-coloured PNG (blue = surely background, dark red =
    surely person, green/yellow = uncertain, p ~ 0.5), longest side at most ``max_side``."""
    p = prob.detach().float().clamp(0, 1)
    h, w = p.shape
    f = min(1.0, max_side / max(h, w))
    if f < 1.0:
        p = torch.nn.functional.interpolate(p[None, None], size=(max(1, round(h * f)), max(1, round(w * f))),
                                            mode="area")[0, 0]
    img = cv2.applyColorMap((p.cpu().numpy() * 255).round().astype(np.uint8), cv2.COLORMAP_TURBO)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write the confidence map {path}: check the output folder is writable")
