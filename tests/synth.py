"""Synthetic test media, made by the tests themselves (real encoded files through PyAV).

Everything here writes genuine H.264/HEVC/AAC streams so the code under test reads real containers.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable

import av
import numpy as np

from vr180matte.sample import mux_audio
from vr180matte.sample import tone as _tone

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media"


def media(*parts: str) -> Path:
    """A file under ../shared/media (read by path, never copied)."""
    return MEDIA.joinpath(*parts)


def tone(seconds: float, rate: int = 48000, freq: float = 440.0, channels: int = 2) -> np.ndarray:
    return _tone(seconds, rate, freq, channels, level=0.2)


def write_audio_only(path: Path, seconds: float = 0.5, rate: int = 48000) -> Path:
    """An AAC file with no video stream (.m4a)."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("aac", rate=rate)
        s.layout = "stereo"
        mux_audio(out, s, tone(seconds, rate), rate)
    return Path(path)


def write_video(
    path: Path,
    frames: Iterable[np.ndarray] | Callable[[int], np.ndarray],
    n: int | None = None,
    fps: Fraction | int = 30,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    audio: np.ndarray | None = None,
    audio_rate: int = 48000,
    options: dict | None = None,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
) -> Path:
    """Encode RGB uint8 frames (an iterable, or ``f(i)`` with ``n``) to ``path``; optional AAC audio (C, S) float32.

    ``pts`` with ``time_base`` gives explicit (e.g. variable-rate) timestamps.
    """
    path = Path(path)
    fps = Fraction(fps)
    source = (frames(i) for i in range(n)) if callable(frames) else iter(frames)
    with av.open(str(path), "w") as out:
        first = next(source)
        h, w = first.shape[:2]
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        if time_base is not None:
            vs.time_base = time_base
        vs.options = {"preset": "ultrafast", **(options or {})} if codec in ("libx264", "libx265") else (options or {})
        if codec == "libx265":
            vs.options = {**vs.options, "x265-params": "log-level=error"}
        astream = None
        if audio is not None:
            astream = out.add_stream("aac", rate=audio_rate)
            astream.layout = "stereo" if audio.shape[0] == 2 else "mono"
        for i, rgb in enumerate(_chain(first, source)):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = time_base
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if astream is not None:
            mux_audio(out, astream, audio, audio_rate)
    return path


def _chain(first, rest):
    yield first
    yield from rest


def gradient_sbs(i: int, w: int, h: int, disparity: int = 8) -> np.ndarray:
    """A textured SBS frame with a bright square ("person") at a known disparity; deterministic in ``i``."""
    ew = w // 2
    yy, xx = np.mgrid[0:h, 0:ew]
    base = np.stack([(xx * 255 // max(ew - 1, 1)), (yy * 255 // max(h - 1, 1)), np.full_like(xx, (i * 7) % 256)], -1)
    left = base.astype(np.uint8).copy()
    right = left.copy()
    s = max(h // 4, 2)
    x0, y0 = ew // 3 + i, h // 3
    left[y0 : y0 + s, x0 : x0 + s] = 255
    right[y0 : y0 + s, x0 - disparity : x0 - disparity + s] = 255
    return np.concatenate([left, right], axis=1)


def davis_frames(sequence: str, count: int | None = None) -> tuple[list[Path], list[Path]]:
    """Paths of a DAVIS sequence's JPEG frames and ground-truth masks (sorted, aligned)."""
    root = media(sequence)
    frames = sorted((root / "JPEGImages").glob("*.jpg"))[:count]
    masks = sorted((root / "Annotations").glob("*.png"))[:count]
    return frames, masks


def davis_sbs_clip(path: Path, sequence: str = "davis2016_parkour", count: int | None = None, fps: int = 24) -> Path:
    """A side-by-side clip with the same DAVIS frame in both eyes (854x480 each -> 1708x480)."""
    import cv2

    frames, _ = davis_frames(sequence, count)

    def sbs(i: int) -> np.ndarray:
        rgb = cv2.cvtColor(cv2.imread(str(frames[i])), cv2.COLOR_BGR2RGB)
        return np.concatenate([rgb, rgb], axis=1)

    return write_video(path, sbs, n=len(frames), fps=fps, options={"crf": "12"})


_SPRITES: dict = {}


def sprite(sequence: str, index: int, margin: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rgb float32 (h, w, 3), alpha float32 (h, w)) of a DAVIS person cut out by its ground-truth mask and
    cropped to the mask's box grown by ``margin`` pixels: a person to paste into other footage with exact truth."""
    import cv2

    key = (sequence, index, margin)
    if key not in _SPRITES:
        frames, masks = davis_frames(sequence)
        i = index % len(frames)
        rgb = cv2.cvtColor(cv2.imread(str(frames[i])), cv2.COLOR_BGR2RGB).astype(np.float32)
        alpha = (cv2.imread(str(masks[i]), cv2.IMREAD_GRAYSCALE) > 127).astype(np.float32)
        ys, xs = np.nonzero(alpha)
        y0, y1 = max(ys.min() - margin, 0), min(ys.max() + margin + 1, alpha.shape[0])
        x0, x1 = max(xs.min() - margin, 0), min(xs.max() + margin + 1, alpha.shape[1])
        _SPRITES[key] = (rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1])
    return _SPRITES[key]


def sbs_iou_to_davis(alphas: Iterable[np.ndarray], masks: list[Path]) -> dict[str, list[float]]:
    """Per-frame IoU of each eye's alpha (>= 0.5; SBS, both eyes showing the DAVIS frame) to its ground truth."""
    import cv2

    ious: dict[str, list[float]] = {"left": [], "right": []}
    for alpha, mask_path in zip(alphas, masks):
        gt = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 127
        w = gt.shape[1]
        for eye, a in (("left", alpha[:, :w]), ("right", alpha[:, w:])):
            pred = a >= 0.5
            union = (pred | gt).sum()
            ious[eye].append(float((pred & gt).sum() / union) if union else 1.0)
    return ious
