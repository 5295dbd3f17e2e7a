"""One segment file (mov/mp4) being encoded: its encoder opened, its parallel contexts, and its muxer.

Why a module of its own: :class:`vr180matte.io.writer.SegmentWriter` decides what a segment is (codec row, pixel
format, timing, how many contexts the budget affords) and checks each frame; this is the FFmpeg side that turns
those frames into packets in the file. The encoder is opened by :func:`vr180matte.io.encoder_config.open_stream`
(NVENC when asked and it opens, else the CPU encoder with a warning); an intra-only codec may run N contexts on
consecutive frames (:mod:`vr180matte.io.parallel_encode`), whose packets are the ones a single context makes.
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from vr180matte.io import budget, encoder_config
from vr180matte.io.encoder_config import EncoderSettings, swscale_frame
from vr180matte.io.errors import OutputError
from vr180matte.io.parallel_encode import EncodePool
from vr180matte.io.picture import RgbAlpha
from vr180matte.io.planes import PlaneBuilder
from vr180matte.io.planes import supports as planes_support


class AvSegment:
    """Encodes frames into one container: inline on the stream's context, or on ``encoders`` parallel contexts.

    ``encoder`` / ``reason`` say what ran and why (the writer reports them)."""

    def __init__(self, path: Path, settings: EncoderSettings, options: dict, hardware: bool, encoders: int,
                 encoders_asked: int, sws_colorspace: int | None) -> None:
        self.path = path
        self._settings = settings
        self._sws_colorspace = sws_colorspace
        self._durations: dict[int, int] = {}  # pts -> source frame duration, until its packet is muxed
        #: intra-only codecs: N contexts on consecutive frames (None: the stream's own context, inline)
        self.pool: EncodePool | None = None
        self._builders: dict[int, PlaneBuilder] = {}  # id(encoder context) -> its reused frame (yuva444p10le)
        spec = settings.spec
        self.container, self.stream, self.encoder, self.reason = encoder_config.open_stream(
            path, settings, options, hardware)
        if self.encoder != spec.encoder:
            return  # NVENC: an inter codec, one context
        contexts = [self.stream.codec_context]
        if encoders > 1:
            # the stream's context is context 0; the others are configured the same way
            contexts += [settings.context(spec.encoder) for _ in range(encoders - 1)]
            self.pool = EncodePool(contexts, self._encode_job, self._mux)
            self.reason += f"; {encoders} {spec.encoder} contexts on consecutive frames"
        if encoders < encoders_asked:
            self.reason += f" ({encoders_asked} asked; host-memory budget at {settings.width}x{settings.height})"
        if settings.pix_fmt == "yuva444p10le":
            # reused frames per context, their planes written straight (io/planes.py), no swscale
            ring = budget.encoder_frame_ring(settings.frame_threads, settings.threads)
            self._builders = {id(c): PlaneBuilder(settings.width, settings.height, sws_colorspace, ring)
                              for c in contexts}

    def encode(self, image: np.ndarray | RgbAlpha, pts: int, duration: int | None, written: int) -> None:
        """Encode one frame; ``written``: frames encoded before it (for the error message)."""
        if duration:
            # PyAV's pixel-format conversion drops frame.duration, so the packet gets it back in _mux
            self._durations[pts] = int(duration)
        try:
            if self.pool is not None:
                self.pool.submit((image, pts), pts)  # converted and encoded in a worker, muxed here in order
                return
            for packet in self.stream.encode(self._frame(image, pts, self.stream.codec_context)):
                self._mux(packet)
        except av.error.FFmpegError as exc:
            raise OutputError(f"encoding {self.path} failed at frame {written}: {exc}") from None

    def _encode_job(self, ctx, item) -> list:
        """One frame on one of the parallel contexts (a worker thread): convert, encode, return its packets."""
        image, pts = item
        return ctx.encode(self._frame(image, pts, ctx))

    def _frame(self, image: np.ndarray | RgbAlpha, pts: int, ctx) -> av.VideoFrame:
        """The encoder's frame for ``image`` (RGB(A), 8 or 16 bit, or colour and alpha apart): ``ctx``'s reused
        frame with its planes built directly where :mod:`vr180matte.io.planes` covers the pixel format, else a
        swscale conversion (of the interleaved frame)."""
        builder = self._builders.get(id(ctx))
        if builder is not None and planes_support(self._settings.pix_fmt, image):
            frame = builder.build(image)
        else:
            if isinstance(image, RgbAlpha):
                image = image.rgba()
            frame = swscale_frame(image, self._settings.spec.alpha, self.stream.pix_fmt, self._sws_colorspace)
        frame.pts = pts
        frame.time_base = self._settings.time_base
        frame.pict_type = av.video.frame.PictureType.NONE  # let the encoder choose frame types
        return frame

    def _mux(self, packet: av.Packet) -> None:
        if self.pool is not None:
            packet.stream = self.stream  # from a bare context: the muxer needs to know its stream
        dur = self._durations.pop(packet.pts, None)
        if dur and not packet.duration:
            packet.duration = dur
        self.container.mux(packet)

    def close(self) -> None:
        """Flush the encoder(s) and finish the file."""
        try:
            if self.pool is not None:
                self.pool.close(flush=lambda ctx: ctx.encode(None))
            else:
                for packet in self.stream.encode():
                    self._mux(packet)
        except av.error.FFmpegError as exc:
            raise OutputError(f"finishing {self.path} failed: {exc}") from None
        finally:
            self.container.close()
