"""Which decoder reads the input: the CPU decoder by default, NVDEC (PyAV's hwaccel) only where it pays.

The rule (measured, issue 20; one NVIDIA H200 with 16 cores, a 6144x3072 HEVC clip): NVDEC decoded to RGB at
37 fps *with the frames downloaded and converted on the CPU*, PyAV's CPU decoder with 16 threads at 62 fps
(3.9 fps per core). So NVDEC is chosen only

* when the decoded frames stay on the device (``resident``): then the download and the CPU colour conversion,
  which is what made NVDEC slow, do not happen. PyAV 18.1 can do this (``HWAccel(..., is_hw_owned=True)`` keeps
  the frame in CUDA memory and ``VideoFrame.planes[i]`` export ``__dlpack__``, so ``torch.from_dlpack`` takes the
  NV12/P010 planes without a copy), but the product's stages take host RGB frames today, so no caller asks for
  it yet (``resident=False`` everywhere) and the decision says so;
* or when the machine has too few cores for the CPU decoder to match NVDEC + download:
  ``cores * CPU_FPS_PER_CORE < NVDEC_DOWNLOAD_FPS`` (both per 6K frame, so the frame size cancels), i.e. fewer
  than :data:`NVDEC_BELOW_CORES` cores.

A CPU run never asks FFmpeg for a hardware device. After the rule, the NVDEC limits below still apply.

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
#: measured decode rates at 6144x3072 HEVC (module docstring): CPU per core, NVDEC with download to host RGB
CPU_FPS_PER_CORE = 62.0 / 16
NVDEC_DOWNLOAD_FPS = 37.0
#: below this many cores NVDEC + download is expected to beat the CPU decoder (37 / 3.9 = 9.5)
NVDEC_BELOW_CORES = int(NVDEC_DOWNLOAD_FPS // CPU_FPS_PER_CORE) + 1

NVDEC_LIMITS: dict[str, tuple[int, int, int, bool]] = {
    "hevc": (8192, 8192, 12, True),
    "h264": (4096, 4096, 8, False),
    "vp9": (8192, 8192, 12, False),
    "av1": (8192, 8192, 10, False),
}


@dataclass(frozen=True)
class DecodeChoice:
    """``hardware``: open with NVDEC; ``reason``: the one line the log and stats.json get; ``device``: the CUDA
    index."""

    hardware: bool
    reason: str
    device: str | None = None


def _chroma_444(pix_fmt: str) -> bool:
    return "444" in (pix_fmt or "") or pix_fmt in ("gbrp", "gbrp10le", "gbrp12le")


def choose_decoder(
    codec: str, width: int, height: int, *, bit_depth: int = 8, pix_fmt: str = "yuv420p", device: str = "cpu",
    available: tuple[str, ...] | None = None, resident: bool = False, cores: int | None = None,
) -> DecodeChoice:
    """Whether to decode on the GPU: only for a CUDA run where the frames stay on the device (``resident``) or
    ``cores`` (default: this process's) are too few for the CPU decoder (module docstring), with an FFmpeg that
    knows CUDA, a codec NVDEC decodes, and a size, bit depth and chroma within its limits. Width and height are
    the coded (stored) size."""
    dev = str(device)
    if not dev.startswith("cuda"):
        return DecodeChoice(False, "CPU run")
    if cores is None:
        from vr180matte.compat import machine

        cores = machine.available_cores()
    if not resident and cores >= NVDEC_BELOW_CORES:
        return DecodeChoice(False, f"frames are used on the host and {cores} cores decode faster than NVDEC + "
                                   f"download (measured {CPU_FPS_PER_CORE:.1f} fps/core vs {NVDEC_DOWNLOAD_FPS:g} fps)")
    why = "frames stay on the device" if resident else f"only {cores} cores (< {NVDEC_BELOW_CORES})"
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
    return DecodeChoice(True, f"NVDEC {codec} {width}x{height}: {why}", index)


def open_input(path: str, choice: DecodeChoice | None = None):
    """``(container, choice that ran)``: ``av.open(path)`` with the hardware decoder when ``choice`` says so; if
    the device cannot be opened (no GPU, driver too old, decoder busy) the file is opened for the CPU decoder,
    one line is logged and the returned choice says so. Decoded frames are downloaded to system memory
    (``is_hw_owned=False``), so callers see ordinary frames."""
    if choice is not None and choice.hardware:
        from av.codec.hwaccel import HWAccel

        try:
            container = av.open(path, "r", hwaccel=HWAccel("cuda", device=choice.device, allow_software_fallback=True))
            log.info("decoding %s with %s", path, choice.reason)
            return container, choice
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            why = " ".join(str(exc).split())[:120]
            log.warning("hardware decode unavailable (%s); decoding %s on the CPU", why, path)
            choice = DecodeChoice(False, f"NVDEC chosen ({choice.reason}) but unavailable: {why}")
    return av.open(path, "r"), choice or DecodeChoice(False, "CPU run")


def open_for(info, device: str = "cpu", path: str | None = None, *, cores: int | None = None,
             resident: bool = False):
    """:func:`open_input` for a probed :class:`~vr180matte.io.probe.VideoInfo` (``path`` defaults to
    ``info.path``; coded size = displayed size turned back by the rotation)."""
    w, h = (info.height, info.width) if getattr(info, "rotation", 0) in (90, 270) else (info.width, info.height)
    choice = choose_decoder(info.codec, w, h, bit_depth=info.bit_depth, pix_fmt=info.pix_fmt, device=device,
                            cores=cores, resident=resident)
    if not choice.hardware:
        log.info("decoding %s on the CPU: %s", path or info.path, choice.reason)
    return open_input(str(path or info.path), choice)
