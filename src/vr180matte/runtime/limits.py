"""Sizes refused before decoding starts: frames the chosen encoder cannot take, or the host memory cannot hold.

Without this a 16384x8192 input decodes for half a minute and gigabytes, then fails inside the ProRes encoder.
The checks are cheap: the encoder is opened (not fed) at the output size with the run's pixel format and
options, which catches hard dimension limits; a table adds limits found only when a frame is encoded (measured,
see the tests); and a working-set estimate per pixel is compared with the memory available.
"""
from __future__ import annotations

import logging
from fractions import Fraction

import av
import psutil

from ..errors import ResourceError

log = logging.getLogger(__name__)

#: encoder -> largest frame (pixels) known to encode. prores_ks opens at 16384x8192 but fails on the first frame
#: (measured: 8192x8192 encodes, 16384x8192 does not; tests/runtime/test_limits.py keeps both facts checked).
MAX_ENCODE_PIXELS = {"prores_ks": 8192 * 8192}

#: bytes per output pixel the pipeline holds at once besides the read-ahead queue (composited RGBA frame, alpha,
#: refine buffers, the encoder's converted frame) -- a deliberate over-estimate, so a refusal is never wrong by
#: much and an accepted size really fits
_WORKING_BYTES_PER_PIXEL = 40


def _fmt_gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB"


def check_encoder(encoder: str, width: int, height: int, pix_fmt: str, options: dict | None = None) -> None:
    """Raise :class:`ResourceError` when ``encoder`` cannot take ``width`` x ``height`` frames."""
    limit = MAX_ENCODE_PIXELS.get(encoder)
    if limit is not None and width * height > limit:
        raise ResourceError(
            f"{encoder} cannot encode {width}x{height} frames (at most {limit / 1e6:.0f} megapixels); write each "
            "eye separately (output.maintain_sbs=false), use output.codec=png, or downscale the input first"
        )
    try:
        cc = av.CodecContext.create(encoder, "w")
        cc.width, cc.height, cc.pix_fmt = width, height, pix_fmt
        cc.time_base, cc.framerate = Fraction(1, 30), Fraction(30)
        if options:
            cc.options = {k: str(v) for k, v in options.items()}
        cc.open()
    except av.error.FFmpegError as exc:
        raise ResourceError(
            f"{encoder} cannot encode {width}x{height} frames ({' '.join(str(exc).split())[:80]}); write each eye "
            "separately (output.maintain_sbs=false), use another output.codec, or downscale the input first"
        ) from None
    except av.codec.codec.UnknownCodecError:  # pragma: no cover - a build without it fails later with its own error
        log.debug("encoder %s not available for the size check", encoder)


def frame_memory_bytes(width: int, height: int, read_ahead: int, bytes_per_sample: int = 1,
                       stage_queue: int = 2) -> int:
    """Estimated bytes the pipeline holds for frames of ``width`` x ``height``: the reader's queue, the decoded
    frames between segment and finish, the output images (RGBA) between finish and encode, one in each stage."""
    decoded = width * height * 3 * bytes_per_sample
    output = width * height * 4 * bytes_per_sample
    return (decoded * (read_ahead + stage_queue + 2) + output * (stage_queue + 1)
            + width * height * _WORKING_BYTES_PER_PIXEL)


def check_memory(width: int, height: int, read_ahead: int, max_memory_gb: float, bytes_per_sample: int = 1,
                 stage_queue: int = 2) -> None:
    """Raise :class:`ResourceError` when frames this large cannot be held within the memory budget."""
    need = frame_memory_bytes(width, height, read_ahead, bytes_per_sample, stage_queue)
    budget = min(max_memory_gb * 2**30, psutil.virtual_memory().total)
    if need > budget:
        per = width * height * 3 * bytes_per_sample
        rest = need - per * read_ahead  # everything but the reader's queue
        fewer = int((budget - rest) // per)
        hint = (f"lower processing.read_ahead (to {fewer})" if 1 <= fewer < read_ahead
                else "lower processing.stage_queue or downscale the input first")
        raise ResourceError(
            f"{width}x{height} frames need about {_fmt_gb(need)} at processing.read_ahead={read_ahead}, more than "
            f"the {_fmt_gb(budget)} available (processing.max_memory_gb / RAM); {hint}"
        )


def check_sizes(plan, cfg) -> None:
    """Both checks for a run plan (output size and codec from the plan, memory from the config)."""
    out = plan.output
    codec = out.codec
    high = plan.info.bit_depth > 8  # the chunk runner decodes >8-bit sources as 16-bit RGB
    pix_fmt = (codec.pix_fmt_10bit or codec.pix_fmt) if high else codec.pix_fmt
    check_encoder(codec.encoder, out.width, out.height, pix_fmt, codec.options)
    check_memory(plan.info.width, plan.info.height, int(cfg.processing.read_ahead), float(cfg.processing.max_memory_gb),
                 2 if high else 1, int(cfg.processing.stage_queue))
