"""How one encoder context is set up, and the swscale frame conversion for the codecs io/planes.py does not cover.

Why a module of its own: the stream's context and the parallel contexts of io/parallel_encode.py must be set up
identically (that is what makes their packets the single encoder's), and the settings are data (codec row, pixel
format, size, timing, colour tags, quality) that the writer owns but does not need to spell out.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vr180matte.io.codecs import Codec
from vr180matte.io.errors import OutputError

log = logging.getLogger(__name__)
_warned: set[tuple[str, str]] = set()  # (warning, folder) already said: every chunk of a run opens writers


def _warn_once(folder: Path, msg: str, *args) -> None:
    text = msg % args
    if (text, str(folder)) not in _warned:
        _warned.add((text, str(folder)))
        log.warning(text)

UNSPECIFIED = 2  # AVCOL_SPC_UNSPECIFIED
#: AVColorSpace (stream tag) -> swscale colour matrix (SWS_CS_*)
SWS_COLORSPACE = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}


def sws_colorspace(color: dict | None) -> int | None:
    """The swscale matrix for the input's colour tags; None for untagged input (swscale's default, as read)."""
    spc = int((color or {}).get("colorspace") or UNSPECIFIED)
    return SWS_COLORSPACE.get(spc) if spc != UNSPECIFIED else None


@dataclass(frozen=True)
class EncoderSettings:
    """Everything an encoder's output depends on. ``color``: the tags written (empty for untagged input);
    ``threads``: FFmpeg threads of one context; ``frame_threads``: an intra-only codec's threads work on frames,
    not slices (io/budget.py ``encoder_frame_threads``)."""

    spec: Codec
    pix_fmt: str
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    color: dict
    crf: int
    preset: str
    threads: int
    frame_threads: bool = False

    @property
    def rate(self) -> Fraction:
        return self.fps if self.fps > 0 else Fraction(30)

    def add_stream(self, container, encoder: str):
        """A stream of ``container`` encoding with ``encoder``, its context configured."""
        s = container.add_stream(encoder, rate=self.rate)
        if self.spec.codec_tag:
            s.codec_tag = self.spec.codec_tag
        s.time_base = self.time_base
        self.configure(s.codec_context, encoder)
        return s

    def context(self, encoder: str):
        """A bare context (a parallel one), configured as the stream's."""
        return self.configure(av.CodecContext.create(encoder, "w"), encoder)

    def configure(self, cc, encoder: str):
        cc.framerate = self.rate
        # NVENC takes 10-bit 4:2:0 as P010 (semi-planar), not yuv420p10le; same samples, so same Main10 stream
        cc.pix_fmt = "p010le" if encoder.endswith("_nvenc") and self.pix_fmt == "yuv420p10le" else self.pix_fmt
        opts = dict(self.spec.options)
        if encoder.endswith("_nvenc"):
            # constant-quality VBR is NVENC's CRF; B-frames off for the same DTS == PTS reason as the CPU encoders
            opts.update({"rc": "vbr", "cq": str(self.crf), "preset": "p5", "bf": "0"})
            opts.pop("x265-params", None)
        elif encoder in ("libx264", "libx265"):
            opts.update({"crf": str(self.crf), "preset": self.preset})
        cc.options = opts
        if self.spec.name in ("h264", "hevc"):
            cc.max_b_frames = 0
        cc.width, cc.height = self.width, self.height
        for key in ("colorspace", "color_primaries", "color_trc"):
            if self.color.get(key) not in (None, 0, UNSPECIFIED):
                setattr(cc, key, self.color[key])
        cc.time_base = self.time_base
        # Intra-only codecs thread by slices unless the budget affords frames: frame threads each hold a frame
        # (151 MB at 6K in yuva444p10le: 16 threads, 2.4 GB); parallel contexts supply the frame parallelism then
        cc.thread_type = ("FRAME" if self.frame_threads else "SLICE") if self.spec.intra else "AUTO"
        cc.thread_count = self.threads
        return cc


def open_container(path: Path, spec: Codec, options: dict):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return av.open(str(path), "w", format=spec.container, options=options)
    except (OSError, av.error.FFmpegError) as exc:
        raise OutputError(f"cannot write {path}: {exc}; choose a writable output folder") from None


def open_hardware(settings: EncoderSettings, container, encoder: str):
    """The NVENC stream, opened now: a GPU without NVENC (A100/H100/H200) refuses here, not at frame 1."""
    s = settings.add_stream(container, encoder)
    s.codec_context.open()
    return s


def open_stream(path: Path, settings: EncoderSettings, options: dict, hardware: bool):
    """``(container, stream, encoder, reason)``: the codec's NVENC encoder when ``hardware`` asks and it opens,
    else the CPU encoder; a refusal or a missing NVENC is warned once per output folder and is the reason."""
    spec = settings.spec
    container = open_container(path, spec, options)
    hw = spec.hardware_encoder if hardware else None
    reason = "CPU run"
    if hardware and not hw:
        reason = f"{spec.name} has no hardware encoder"
    elif hw and hw not in av.codecs_available:
        reason = f"this PyAV build has no {hw}"
        _warn_once(path.parent, "%s is not in this PyAV build; encoding with %s on the CPU", hw, spec.encoder)
    elif hw:
        try:
            return container, open_hardware(settings, container, hw), hw, "NVENC on the GPU"
        except (av.error.FFmpegError, ValueError) as exc:
            why = " ".join(str(exc).split())[:120]
            reason = f"{hw} refused ({why})"
            _warn_once(path.parent, "%s unavailable (%s); encoding with %s on the CPU", hw, why, spec.encoder)
            container.close()
            container = open_container(path, spec, options)
    return container, settings.add_stream(container, spec.encoder), spec.encoder, reason


def swscale_frame(image: np.ndarray, alpha: bool, pix_fmt: str, colorspace: int | None) -> av.VideoFrame:
    """``image`` (RGB(A), 8 or 16 bit) as a frame for the encoder, converted by swscale (4:2:0 codecs)."""
    if not alpha and image.shape[2] == 4:
        image = image[..., :3]  # yuv420p has no alpha: greenscreen frames are composited before this
    wide = image.dtype == np.uint16
    fmt = ("rgba64le" if wide else "rgba") if image.shape[2] == 4 else ("rgb48le" if wide else "rgb24")
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=fmt)
    if colorspace is not None:
        frame = frame.reformat(format=pix_fmt, dst_colorspace=colorspace)
    elif wide:
        # convert here, once, so the encoder is not left to pick a lower-depth intermediate
        frame = frame.reformat(format=pix_fmt)
    return frame
