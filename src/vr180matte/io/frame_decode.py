"""The decoding steps of the reader: set up the opened decoder, seek to a frame, place frames, convert them to RGB.

Why a module of its own: :class:`vr180matte.io.reader.FrameReader` owns the frame range and its guarantees (no
frame skipped, a short file raises), and reads as that loop; how a decoder is configured, where a seek lands and
what a decoded frame becomes (upright RGB, its timestamp and duration) are separate steps it calls. The decoder
itself is chosen and opened by :mod:`vr180matte.io.hwaccel`.

Why exact indices: chunked processing and resume need frame N to be the same frame whether decoding started at 0 or
at a seek; a seek lands on the keyframe before ``start`` and the frames before it are decoded and dropped.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from vr180matte.io.errors import InputError
from vr180matte.io.probe import VideoInfo
from vr180matte.io.rotation import upright

# the reader's logger, as before these steps had a module of their own (log filters and records name it)
log = logging.getLogger("vr180matte.io.reader")


@dataclass
class DecodedFrame:
    """One decoded frame: its exact index in presentation order, its source timestamp and full-resolution RGB."""

    index: int
    pts: int | None
    time_s: float
    rgb: np.ndarray  # (H, W, 3) uint8, or uint16 (rgb48) for a >8-bit source read with ``high_bit_depth``
    #: the frame's duration in time_base ticks when the container says (passed to the writer so the last frame of a
    #: variable-rate video keeps its own length)
    duration: int | None = None


def configure(cc, choice, threads: int, threads_asked: int, read_ahead: int) -> dict:
    """Set the opened decoder's FFmpeg threads; returns what ran (``FrameReader.decoder``)."""
    cc.thread_type = "AUTO"
    cc.thread_count = threads
    return {"name": f"{cc.name} ({'NVDEC' if choice.hardware else 'CPU'})",
            "hardware": choice.hardware, "threads": threads, "threads_asked": threads_asked,
            "read_ahead": read_ahead, "reason": choice.reason}


def seek(container, vs, start: int, frame_pts: np.ndarray | None, path: str) -> int:
    """Seek to the keyframe before frame ``start``; returns the index of the next decoded frame (-1: unknown until
    the first frame's pts is mapped). Without timestamps decoding starts at frame 0."""
    if start > 0:
        if frame_pts is not None:
            container.seek(int(frame_pts[start]), stream=vs, backward=True, any_frame=False)
            return -1
        log.warning("no frame timestamps for %s: decoding from frame 0 to reach %d", path, start)
    return 0


def index_of(pts: int | None, next_index: int, frame_pts: np.ndarray | None) -> int:
    """Exact presentation index of a decoded frame: from its pts when known, else the running count."""
    if frame_pts is not None and pts is not None:
        i = int(np.searchsorted(frame_pts, pts))
        if i < len(frame_pts) and frame_pts[i] == pts:
            return i
    if next_index < 0:
        raise InputError(f"cannot place a decoded frame (pts {pts}) after a seek; the file's timestamps are broken")
    return next_index


def frame_rgb(frame, rgb_format: str, rotation) -> np.ndarray:
    """The frame as RGB in ``rgb_format``, turned upright by the stream's display matrix."""
    return upright(frame.to_ndarray(format=rgb_format), rotation)  # display matrix


def decoded(frame, index: int, rgb: np.ndarray, info: VideoInfo) -> DecodedFrame:
    """The :class:`DecodedFrame` of ``frame`` (its pts, time in seconds, duration when the container says)."""
    pts = frame.pts
    time_s = float(pts * info.time_base) if pts is not None else float(index / info.fps)
    dur = int(frame.duration) if getattr(frame, "duration", None) else None
    return DecodedFrame(index=index, pts=pts, time_s=time_s, rgb=rgb, duration=dur)
