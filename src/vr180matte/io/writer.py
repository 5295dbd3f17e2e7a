"""Segment writer: encodes one chunk's frames once, in the final codec, with the source's timestamps.

Why per-chunk segments in the final codec: a chunk's segment is its checkpoint for resume, and segments are joined by
stream copy (``finalize.join_segments``), so nothing is ever encoded twice. Why source timestamps: the output keeps
the input's exact timing, variable frame rate included (no frame dropped or duplicated), so the stream's time base is
the input's.

Codecs are rows of ``io/codecs.py`` (suffix, container, encoder, pixel formats, hardware encoder):
- ``prores4444``: prores_ks profile 4444, ``yuva444p10le`` (alpha kept), .mov
- ``png``: ``path`` is a folder of RGBA (or RGB) PNG files named ``{frame_index:06d}.png``; 16-bit PNG for
  >8-bit sources
- ``h264`` (libx264) / ``hevc`` (libx265, tag hvc1): ``yuv420p`` .mp4 for greenscreen and passthrough,
  ``yuv420p10le`` (High 10 / Main10) for >8-bit sources. B-frames are off (``bf=0``):
  with B-frames the encoder emits DTS before PTS, and for variable-frame-rate input the DTS of a segment's first
  packets can fall at or before the previous segment's last DTS, which makes the stream-copy join invalid (the muxer
  rejects non-increasing DTS). Without B-frames DTS == PTS, and source PTS are strictly increasing across chunks.
  The cost is a somewhat larger file at the same CRF.

Bit depth: frames come as uint8 (8-bit sources) or uint16 (>8-bit sources, decoded as 16-bit RGB) and are
converted to the encoder's pixel format by swscale in one step, so a 10-bit source reaches ProRes 4444
(``yuva444p10le``) or HEVC Main10 with its 10 bits. ``bit_depth`` > 8 picks the codec's 10-bit pixel format.

Hardware: ``hardware=True`` prefers the codec's NVENC encoder (``hevc_nvenc``/``h264_nvenc``) when PyAV has it;
when the GPU has no NVENC (A100/H100 class) or the driver refuses, it falls back to the CPU encoder with a warning
(once per process and encoder). ``encoder`` / ``encoder_reason`` say what ran and why (stats.json's ``io`` block).

Parallel: ``encoders`` > 1 for an intra-only codec (ProRes, PNG: ``Codec.intra``) encodes consecutive frames on
that many contexts (:mod:`vr180matte.io.parallel_encode`); the packets are the ones a single context makes.

The FFmpeg side of a segment (encoder opening and fallback, parallel contexts, muxing) is
:class:`vr180matte.io.av_segment.AvSegment`; a PNG folder is :class:`vr180matte.io.png_sequence.PngSequence`. This
module keeps what a segment is and the checks every frame passes.
"""
from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np

from vr180matte.io import budget
from vr180matte.io.av_segment import AvSegment
from vr180matte.io.codecs import CODECS as _TABLE
from vr180matte.io.codecs import get_codec
from vr180matte.io.encoder_config import EncoderSettings, sws_colorspace
from vr180matte.io.errors import OutputError
from vr180matte.io.picture import RgbAlpha
from vr180matte.io.png_sequence import PngSequence

log = logging.getLogger(__name__)

CODECS = tuple(_TABLE)


def mov_options(time_base: Fraction) -> dict[str, str]:
    """mov/mp4 muxer options that keep source timestamps exact.

    ``video_track_timescale``: the track keeps the source's time base (the muxer otherwise doubles small timescales).
    ``movie_timescale``: the edit list that carries a non-zero first timestamp is written in the movie timescale
    (default 1000); in milliseconds a first pts of 35323/15360 s comes back as 35313, so it uses the track's.
    """
    tb = Fraction(time_base)
    if tb.numerator != 1:
        return {}
    den = str(tb.denominator)
    return {"video_track_timescale": den, "movie_timescale": den}


def container_suffix(codec: str) -> str:
    """File suffix of a segment/output for ``codec`` ("" for a PNG folder)."""
    return get_codec(codec).suffix


class SegmentWriter:
    """Encodes one chunk segment in the final codec."""

    def __init__(
        self,
        path: Path,
        codec: str,
        width: int,
        height: int,
        time_base: Fraction,
        fps: Fraction,
        crf: int = 18,
        pix_fmt_in: str = "rgba",
        preset: str = "medium",
        threads: int = 0,
        color: dict | None = None,
        bit_depth: int = 8,
        hardware: bool = False,
        encoders: int = 1,
    ) -> None:
        self.spec = get_codec(codec)
        self.pix_fmt = self.spec.pix_fmt_10bit if bit_depth > 8 and self.spec.pix_fmt_10bit else self.spec.pix_fmt
        if "420" in self.pix_fmt and (width % 2 or height % 2):
            raise OutputError(f"{codec} with {self.pix_fmt} needs an even frame size, got {width}x{height}; use prores4444 or png")
        self.path = Path(path)
        self.codec = codec
        self.bit_depth = int(bit_depth)
        self.encoder = self.spec.encoder
        self.width, self.height = int(width), int(height)
        self.time_base = Fraction(time_base)
        self.fps = Fraction(fps)
        self.pix_fmt_in = pix_fmt_in
        self.frames_written = 0
        self._closed = False
        self._last_pts: int | None = None
        #: where the frames go: the FFmpeg encoder(s) and muxer, or the PNG folder (None until opened)
        self._av: AvSegment | None = None
        self._png: PngSequence | None = None
        # intra-only codecs only; as many contexts as io/budget.py's host-memory budget affords at this size
        self.encoders_asked = max(1, int(encoders)) if self.spec.intra else 1
        self.encoders = budget.encoder_contexts(self.encoders_asked, width, height)
        #: FFmpeg threads of the writer, split over its contexts (0 = FFmpeg's choice, one per core, for a single
        #: context; parallel contexts then get one each, or they would oversubscribe the cores N times)
        self.threads = int(threads)
        self.context_threads = max(1, self.threads // self.encoders) if self.encoders > 1 else self.threads
        self.encoder_reason = "CPU run"
        # The reader converted YUV->RGB with the input's tagged matrix; encode back with the same matrix and the
        # same tags, or players (which assume BT.709 for HD and larger when untagged) shift the colours.
        # Untagged input stays untagged and uses swscale's default, exactly as it was read.
        self._sws_colorspace = sws_colorspace(color)
        self._settings = EncoderSettings(
            self.spec, self.pix_fmt, self.width, self.height, self.fps, self.time_base,
            dict(color or {}) if self._sws_colorspace is not None else {}, crf, preset, self.context_threads,
            budget.encoder_frame_threads(self.encoders, self.context_threads, width, height))
        if self.spec.is_sequence:
            self._png = PngSequence(self.path, self.encoders)
        else:
            self._av = AvSegment(self.path, self._settings, mov_options(self.time_base), hardware, self.encoders,
                                 self.encoders_asked, self._sws_colorspace)
            self.encoder, self.encoder_reason = self._av.encoder, self._av.reason

    @property
    def thread_type(self) -> str:
        """How FFmpeg's threads share the work: ``frame`` or ``slice`` (intra-only codecs), else ``auto``."""
        if not self.spec.intra:
            return "auto"
        return "frame" if self._settings.frame_threads else "slice"

    @property
    def busy_s(self) -> float:
        """Seconds the parallel encoder contexts worked (0 when encoding inline: the caller times that)."""
        return self._pool.busy_s if self._pool is not None else 0.0

    @property
    def _pool(self):
        """The parallel contexts (EncodePool) or PNG writer threads (FilePool); None when encoding inline."""
        sink = self._av or self._png
        return sink.pool if sink is not None else None

    @property
    def _container(self):
        return self._av.container if self._av is not None else None

    @property
    def _stream(self):
        return self._av.stream if self._av is not None else None

    # -- writing -------------------------------------------------------------------------------------------------
    def write(self, image: np.ndarray | RgbAlpha, pts: int | None, index: int, duration: int | None = None) -> None:
        """Encode one frame: (H, W, 3|4) pixels, or straight colour and alpha apart (io/picture.py). ``pts`` is the
        SOURCE timestamp in ``time_base`` units (None: derived from ``index``); ``duration`` (ticks, optional, e.g.
        ``DecodedFrame.duration``) keeps a variable-rate last frame's length."""
        if self._closed:
            raise OutputError(f"segment {self.path} is already closed")
        if isinstance(image, RgbAlpha):
            image.check()  # two parts that make one (H, W, 4) frame; its shape and dtype are checked below
        if image.dtype not in (np.uint8, np.uint16) or len(image.shape) != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f"expected (H, W, 3|4) uint8 or uint16, got {image.shape} {image.dtype}")
        if image.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame is {image.shape[1]}x{image.shape[0]}, segment is {self.width}x{self.height}")
        if pts is None:
            pts = int(round(Fraction(index) / self.fps / self.time_base))
        if self._last_pts is not None and pts <= self._last_pts:
            raise ValueError(f"pts must increase: {pts} after {self._last_pts} (frame {index})")
        self._last_pts = pts
        if self._png is not None:
            self._png.write(image, index)
        else:
            self._av.encode(image, pts, duration, self.frames_written)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finish the file; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._png is not None:
            self._png.close()
        else:
            self._av.close()

    def __enter__(self) -> "SegmentWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
