"""Hardware video decode (NVDEC through PyAV's hwaccel) where the codec and size allow it, else the CPU.

Why a separate, small module: the decision is pure data (codec, coded size, bit depth, chroma, the device the
run uses, the device types this FFmpeg build knows) and can be tested on a machine without a GPU; opening the
decoder is the one place that touches the hardware, and its failure is not an error: the CPU decoder reads
every file NVDEC reads. One log line says which decoder a run got and why.

NVDEC limits (NVIDIA Video Codec SDK decoder support matrix, pre-Blackwell): HEVC 8/10/12-bit 4:2:0 (4:4:4 from
Turing) up to 8192x8192; H.264 8-bit 4:2:0 only, up to 4096x4096 (a 5760x2880 or 8K H.264 VR180 file must be
decoded on the CPU); VP9 and AV1 up to 8192x8192. H100/A100-class GPUs have NVDEC (and no NVENC).
The encoders are chosen in :mod:`vr180matte.io.writer` from ``Codec.hardware_encoder`` with the same fallback.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import av

log = logging.getLogger(__name__)

#: codec -> (max width, max height, max bit depth, 4:4:4 allowed)
NVDEC_LIMITS: dict[str, tuple[int, int, int, bool]] = {
    "hevc": (8192, 8192, 12, True),
    "h264": (4096, 4096, 8, False),
    "vp9": (8192, 8192, 12, False),
    "av1": (8192, 8192, 10, False),
}


@dataclass(frozen=True)
class DecodeChoice:
    """``hardware``: open with NVDEC; ``reason``: the one line the log gets; ``device``: the CUDA index."""

    hardware: bool
    reason: str
    device: str | None = None


def _chroma_444(pix_fmt: str) -> bool:
    return "444" in (pix_fmt or "") or pix_fmt in ("gbrp", "gbrp10le", "gbrp12le")


def choose_decoder(
    codec: str, width: int, height: int, *, bit_depth: int = 8, pix_fmt: str = "yuv420p", device: str = "cpu",
    available: tuple[str, ...] | None = None,
) -> DecodeChoice:
    """Whether to decode on the GPU: only for a CUDA run, with an FFmpeg that knows CUDA, a codec NVDEC decodes,
    and a size, bit depth and chroma within its limits. Width and height are the coded (stored) size."""
    dev = str(device)
    if not dev.startswith("cuda"):
        return DecodeChoice(False, "CPU run")
    if available is None:
        available = tuple(av.codec.hwaccel.hwdevices_available())
    if "cuda" not in available:
        return DecodeChoice(False, "this FFmpeg build has no CUDA device type")
    lim = NVDEC_LIMITS.get(codec)
    if lim is None:
        return DecodeChoice(False, f"NVDEC does not decode {codec}")
    max_w, max_h, max_bits, yuv444 = lim
    if width > max_w or height > max_h:
        return DecodeChoice(False, f"{codec} {width}x{height} is above NVDEC's {max_w}x{max_h}")
    if bit_depth > max_bits:
        return DecodeChoice(False, f"NVDEC decodes {codec} up to {max_bits}-bit, this is {bit_depth}-bit")
    if _chroma_444(pix_fmt) and not yuv444:
        return DecodeChoice(False, f"NVDEC does not decode 4:4:4 {codec}")
    index = dev.split(":", 1)[1] if ":" in dev else None
    return DecodeChoice(True, f"NVDEC {codec} {width}x{height}", index)


def open_input(path: str, choice: DecodeChoice | None = None):
    """``av.open(path)`` with the hardware decoder when ``choice`` says so; if the device cannot be opened
    (no GPU, driver too old, decoder busy) the file is opened for the CPU decoder and one line is logged.
    Decoded frames are downloaded to system memory (``is_hw_owned=False``), so callers see ordinary frames."""
    if choice is not None and choice.hardware:
        from av.codec.hwaccel import HWAccel

        try:
            container = av.open(path, "r", hwaccel=HWAccel("cuda", device=choice.device, allow_software_fallback=True))
            log.info("decoding %s with %s", path, choice.reason)
            return container
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            log.warning("hardware decode unavailable (%s); decoding %s on the CPU", " ".join(str(exc).split())[:120], path)
    return av.open(path, "r")


def open_for(info, device: str = "cpu", path: str | None = None):
    """:func:`open_input` for a probed :class:`~vr180matte.io.probe.VideoInfo` (``path`` defaults to
    ``info.path``; coded size = displayed size turned back by the rotation)."""
    w, h = (info.height, info.width) if getattr(info, "rotation", 0) in (90, 270) else (info.width, info.height)
    choice = choose_decoder(info.codec, w, h, bit_depth=info.bit_depth, pix_fmt=info.pix_fmt, device=device)
    if choice.hardware is False and str(device).startswith("cuda"):
        log.info("decoding %s on the CPU: %s", path or info.path, choice.reason)
    return open_input(str(path or info.path), choice)
