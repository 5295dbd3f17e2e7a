"""Streaming frame reader: PyAV decode in a background thread, a bounded queue, exact frame indices.

Why a thread: decoding (libavcodec, which releases the GIL) then overlaps with the model work of the consumer. Why a
bounded queue: a 6144x3072 RGB frame is 54 MiB, so the reader must never run ahead by more than ``read_ahead`` frames.
Why exact indices: chunked processing and resume need frame N to be the same frame whether decoding started at 0 or at
a seek; a seek lands on the keyframe before ``start`` and the frames before it are decoded and dropped.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from vr180matte.io import budget
from vr180matte.io.errors import InputError
from vr180matte.io.hwaccel import open_for
from vr180matte.io.probe import VideoInfo
from vr180matte.io.rotation import upright

log = logging.getLogger(__name__)

_END = object()  # sentinel: decoding finished normally


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


class _Failure:
    """Carries an exception from the decode thread to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class FrameReader:
    """Iterate frames ``start .. end-1`` of a video in presentation order, decoded ahead in a background thread.

    A short or undecodable file raises :class:`InputError` at the point where frames go missing; a short video is
    never yielded silently.
    """

    def __init__(
        self,
        path: str | Path,
        info: VideoInfo,
        start: int = 0,
        end: int | None = None,
        read_ahead: int = 8,
        threads: int = 0,
        timer=None,
        high_bit_depth: bool = False,
        decode_device: str = "cpu",
        cores: int | None = None,
    ) -> None:
        self.path = str(path)
        self.decode_device = decode_device  # "cuda[:N]": NVDEC where io/hwaccel.py's rule says it pays
        self.cores = cores  # cores the rule weighs (None: this process's)
        #: the decoder that actually ran (set when the file is opened): ``{"name", "hardware", "threads", "reason"}``
        self.decoder: dict | None = None
        #: decode >8-bit sources (10-bit HEVC from VR180 cameras) as 16-bit RGB, so their colour reaches a 10-bit
        #: output intact; 8-bit sources stay uint8 (no doubled memory for nothing)
        self.rgb_format = "rgb48le" if high_bit_depth and info.bit_depth > 8 else "rgb24"
        # busy seconds of the decode thread go to timer("decode") (a StageTimer), if given
        self._timer = timer
        self.info = info
        end = info.frame_count if end is None else end
        if not (0 <= start <= end <= info.frame_count):
            raise ValueError(f"frame range [{start}, {end}) outside 0..{info.frame_count}")
        if read_ahead < 1:
            raise ValueError("read_ahead must be >= 1")
        self.start, self.end = start, end
        # host memory bounded by frame size (io/budget.py): at 6K, 8 queued RGB frames are 432 MB and 16 FFmpeg
        # frame threads ~725 MB, so both counts are capped there; small frames keep what was asked
        wide = 2 if self.rgb_format == "rgb48le" else 1
        self.read_ahead = budget.read_ahead(read_ahead, info.width, info.height, wide)
        self.threads_asked = threads
        self.threads = budget.decoder_threads(threads, info.width, info.height, info.bit_depth)
        self._queue: queue.Queue = queue.Queue(maxsize=self.read_ahead)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: frames the decode thread has produced (for tests and progress); at most read_ahead + 1 ahead of the consumer
        self.frames_decoded = 0
        #: largest queue size observed (proves the bound in tests)
        self.max_queued = 0

    # -- consumer side -------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[DecodedFrame]:
        if self._thread is not None:
            raise RuntimeError("a FrameReader can be iterated once; make a new one")
        if self.start == self.end:
            return
        self._thread = threading.Thread(target=self._run, name="vr180matte-decode", daemon=True)
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the decode thread and drop queued frames; safe to call twice."""
        self._stop.set()
        t = self._thread
        if t is not None and t.is_alive():
            while t.is_alive():  # unblock a producer waiting on a full queue
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                t.join(timeout=0.05)
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- producer side -------------------------------------------------------------------------------------------
    def _put(self, item) -> bool:
        """Blocking put that gives up when the reader is closed; False means stop."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                self.max_queued = max(self.max_queued, self._queue.qsize())
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            self._decode()
        except InputError as exc:
            self._put(_Failure(exc))
        except av.error.FFmpegError as exc:
            self._put(_Failure(self._corrupt(self.frames_decoded + self.start, str(exc))))
        except BaseException as exc:  # surface anything else in the consumer's thread, not as a silent death
            self._put(_Failure(exc))

    def _corrupt(self, at: int, why: str) -> InputError:
        short = " ".join(why.split())[:160]
        return InputError(
            f"video {self.path} is truncated or corrupt at frame {at} of {self.info.frame_count} ({short}); "
            "re-export or re-download it"
        )

    def _decode(self) -> None:
        info = self.info
        tb = info.time_base
        frame_pts = info.frame_pts
        use_pts = frame_pts is not None and len(frame_pts) == info.frame_count
        try:
            container, choice = open_for(self.info, self.decode_device, self.path, cores=self.cores)
        except av.error.FFmpegError as exc:
            raise self._corrupt(self.start, str(exc)) from None
        with container:
            vs = container.streams[self.info.stream_index]
            cc = vs.codec_context
            cc.thread_type = "AUTO"
            cc.thread_count = self.threads
            self.decoder = {"name": f"{cc.name} ({'NVDEC' if choice.hardware else 'CPU'})",
                            "hardware": choice.hardware, "threads": self.threads, "threads_asked": self.threads_asked,
                            "read_ahead": self.read_ahead, "reason": choice.reason}
            next_index = 0
            if self.start > 0:
                if use_pts:
                    container.seek(int(frame_pts[self.start]), stream=vs, backward=True, any_frame=False)
                    next_index = -1  # unknown until the first frame's pts is mapped
                else:
                    log.warning("no frame timestamps for %s: decoding from frame 0 to reach %d", self.path, self.start)
            expected = self.start
            for packet in container.demux(vs):
                t0 = time.perf_counter()
                for frame in packet.decode():
                    if self._stop.is_set():
                        return
                    index = self._index_of(frame.pts, next_index, frame_pts if use_pts else None)
                    next_index = index + 1
                    if index < self.start:
                        continue
                    if index >= self.end:
                        return self._finish(expected)
                    if index != expected:
                        # a frame was skipped by the decoder (corrupt packet concealed by dropping)
                        raise self._corrupt(expected, f"frame {expected} missing, decoder jumped to {index}")
                    rgb = upright(frame.to_ndarray(format=self.rgb_format), info.rotation)  # display matrix
                    if self._timer is not None:
                        self._timer.add("decode", time.perf_counter() - t0)
                    pts = frame.pts
                    time_s = float(pts * tb) if pts is not None else float(index / info.fps)
                    self.frames_decoded += 1
                    dur = int(frame.duration) if getattr(frame, "duration", None) else None
                    if not self._put(DecodedFrame(index=index, pts=pts, time_s=time_s, rgb=rgb, duration=dur)):
                        return
                    expected += 1
                    t0 = time.perf_counter()
            self._finish(expected)

    def _finish(self, expected: int) -> None:
        if expected < self.end:
            raise self._corrupt(expected, f"stream ended after {expected} frames")
        self._put(_END)

    @staticmethod
    def _index_of(pts: int | None, next_index: int, frame_pts: np.ndarray | None) -> int:
        """Exact presentation index of a decoded frame: from its pts when known, else the running count."""
        if frame_pts is not None and pts is not None:
            i = int(np.searchsorted(frame_pts, pts))
            if i < len(frame_pts) and frame_pts[i] == pts:
                return i
        if next_index < 0:
            raise InputError(f"cannot place a decoded frame (pts {pts}) after a seek; the file's timestamps are broken")
        return next_index


def split_eyes(rgb: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) eye views of a stereo frame, without copying (the geometry is ``io/layouts.py``'s)."""
    from .layouts import LAYOUTS

    lay = LAYOUTS.get(layout)
    if lay is None or not lay.stereo:
        raise InputError(f"unknown stereo layout {layout!r}; use sbs, sbs_rl or tb")
    h, w = rgb.shape[:2]
    if not lay.fits(w, h):
        side, n = ("width", w) if lay.axis == 1 else ("height", h)
        raise InputError(f"frame {side} {n} is odd, so it cannot be {lay.words} stereo; give a video whose {side} "
                         "is even (each eye half of it)")
    return lay.split(rgb)
