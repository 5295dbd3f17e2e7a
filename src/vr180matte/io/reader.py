"""Streaming frame reader: PyAV decode in a background thread, a bounded queue, exact frame indices.

Why a thread: decoding (libavcodec, which releases the GIL) then overlaps with the model work of the consumer. Why a
bounded queue: a 6144x3072 RGB frame is 54 MiB, so the reader must never run ahead by more than ``read_ahead`` frames.
Why exact indices: chunked processing and resume need frame N to be the same frame whether decoding started at 0 or at
a seek; a seek lands on the keyframe before ``start`` and the frames before it are decoded and dropped.

The thread and its queue are :mod:`vr180matte.io.read_ahead`; the decoding steps (decoder set-up, seek, frame
placement, RGB conversion) are :mod:`vr180matte.io.frame_decode`; this module keeps the frame range and its checks.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from vr180matte.io import budget
from vr180matte.io.errors import InputError
from vr180matte.io.frame_decode import DecodedFrame, configure, decoded, frame_rgb, index_of, seek
from vr180matte.io.hwaccel import open_for
from vr180matte.io.probe import VideoInfo
from vr180matte.io.read_ahead import _END, ReadAhead, _Failure  # noqa: F401  (re-exported: they lived here)

log = logging.getLogger(__name__)


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
        self._ahead = ReadAhead(self.read_ahead)
        #: frames the decode thread has produced (for tests and progress); at most read_ahead + 1 ahead of the consumer
        self.frames_decoded = 0

    @property
    def max_queued(self) -> int:
        """Largest queue size observed (proves the bound in tests)."""
        return self._ahead.max_queued

    @property
    def _thread(self) -> threading.Thread | None:
        """The decode thread, once iteration started."""
        return self._ahead.thread

    # -- consumer side -------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[DecodedFrame]:
        if self._thread is not None:
            raise RuntimeError("a FrameReader can be iterated once; make a new one")
        if self.start == self.end:
            return
        self._ahead.start(self._run, name="vr180matte-decode")
        try:
            yield from self._ahead.items()
        finally:
            self.close()

    def close(self) -> None:
        """Stop the decode thread and drop queued frames; safe to call twice."""
        self._ahead.close()

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- producer side -------------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._decode()
        except InputError as exc:
            self._ahead.fail(exc)
        except av.error.FFmpegError as exc:
            self._ahead.fail(self._corrupt(self.frames_decoded + self.start, str(exc)))
        except BaseException as exc:  # surface anything else in the consumer's thread, not as a silent death
            self._ahead.fail(exc)

    def _corrupt(self, at: int, why: str) -> InputError:
        short = " ".join(why.split())[:160]
        return InputError(
            f"video {self.path} is truncated or corrupt at frame {at} of {self.info.frame_count} ({short}); "
            "re-export or re-download it"
        )

    def _decode(self) -> None:
        info = self.info
        frame_pts = info.frame_pts
        use_pts = frame_pts is not None and len(frame_pts) == info.frame_count
        try:
            container, choice = open_for(self.info, self.decode_device, self.path, cores=self.cores)
        except av.error.FFmpegError as exc:
            raise self._corrupt(self.start, str(exc)) from None
        with container:
            vs = container.streams[self.info.stream_index]
            self.decoder = configure(vs.codec_context, choice, self.threads, self.threads_asked, self.read_ahead)
            next_index = seek(container, vs, self.start, frame_pts if use_pts else None, self.path)
            expected = self.start
            for packet in container.demux(vs):
                t0 = time.perf_counter()
                for frame in packet.decode():
                    if self._ahead.stopped:
                        return
                    index = index_of(frame.pts, next_index, frame_pts if use_pts else None)
                    next_index = index + 1
                    if index < self.start:
                        continue
                    if index >= self.end:
                        return self._finish(expected)
                    if index != expected:
                        # a frame was skipped by the decoder (corrupt packet concealed by dropping)
                        raise self._corrupt(expected, f"frame {expected} missing, decoder jumped to {index}")
                    rgb = frame_rgb(frame, self.rgb_format, info.rotation)
                    if self._timer is not None:
                        self._timer.add("decode", time.perf_counter() - t0)
                    item = decoded(frame, index, rgb, info)
                    self.frames_decoded += 1
                    if not self._ahead.put(item):
                        return
                    expected += 1
                    t0 = time.perf_counter()
            self._finish(expected)

    def _finish(self, expected: int) -> None:
        if expected < self.end:
            raise self._corrupt(expected, f"stream ended after {expected} frames")
        self._ahead.finish()


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
