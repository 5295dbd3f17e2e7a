"""Host-memory budgets of the I/O path: how many frames, FFmpeg threads and encoder contexts a frame size affords.

Why: what the I/O path holds grows with the frame size times a count the machine chooses (read-ahead frames,
FFmpeg's frame threads, parallel encoder contexts). At 6144x3072 on the 16-core H200 host, counts sized by
cores alone took the run to 10-13 GB (issue 20). Measured on 6144x3072 (benchmarks/memory_6k.py, docs/io.md):

* the decoder: H.264 with 16 frame threads held ~725 MB more than with 1 (each thread keeps its own picture
  and references), about 1.6 decoded YUV frames per thread;
* a ProRes 4444 encoder context: ~440 MB with a frame of noisy content (the reused ``yuva444p10le`` frame,
  151 MB, plus the packet buffer FFmpeg sizes for the worst case and the coded packet, up to 128 MB);
* a read-ahead frame: 54 MB (RGB, 8-bit), 108 MB for a 10-bit source read as 16-bit.

Each count is capped so its part stays within its budget below (together ~1.66 GB, leaving ~2.4 GB of a 4 GB
host budget to the stage queues, the models' host side and the interpreter, ~1.8 GB measured with the embedded
engine at 6K), and never below what keeps the path working (1 context, 2 threads, 2 frames). At 6144x3072 that
is 8 decoder threads (4 for 10-bit) and 2 ProRes contexts: with 11 threads and 3 contexts the default config
peaked at 4.2-4.5 GB, with 8 and 2 at 3.7 GB (docs/benchmarks.md, issue 20). Small frames are not capped in practice: at 1920x960 the
caps are far above any core count.
"""
from __future__ import annotations

MB = 2**20
DECODER_BUDGET = 384 * MB  # FFmpeg's decoder threads (frame pools)
ENCODER_BUDGET = 1024 * MB  # parallel ProRes/PNG contexts
READ_AHEAD_BUDGET = 256 * MB  # decoded RGB frames queued ahead of the stages

#: measured multipliers (module docstring)
DECODER_FRAMES_PER_THREAD = 1.6  # decoded YUV frames each decoder thread holds
ENCODER_FRAMES_PER_CONTEXT = 2.9  # yuva444p10le frames' worth each ProRes context holds (440 / 151 MB)


def _yuv420_bytes(width: int, height: int, bit_depth: int) -> int:
    return int(width * height * 1.5 * (2 if bit_depth > 8 else 1))


def _threads(asked: int) -> int:
    """The FFmpeg threads ``asked`` stands for: 0 is one per core, as FFmpeg does."""
    from ..compat import machine

    return asked if asked > 0 else machine.available_cores()


def decoder_threads(threads: int, width: int, height: int, bit_depth: int = 8) -> int:
    """FFmpeg decoder threads for ``threads`` asked (0 = one per core, as FFmpeg does) within DECODER_BUDGET."""
    asked = _threads(threads)
    per_thread = DECODER_FRAMES_PER_THREAD * _yuv420_bytes(width, height, bit_depth)
    return max(2, min(asked, int(DECODER_BUDGET // per_thread))) if asked > 1 else 1


def encoder_contexts(n: int, width: int, height: int) -> int:
    """Parallel encoder contexts for ``n`` asked, within ENCODER_BUDGET (yuva444p10le: 8 bytes a pixel)."""
    per_context = ENCODER_FRAMES_PER_CONTEXT * width * height * 8
    return max(1, min(int(n), int(ENCODER_BUDGET // per_context)))


def encoder_frame_threads(contexts: int, threads: int, width: int, height: int) -> bool:
    """Whether an intra-only encoder threads by frames (else by slices).

    One context on few cores threads by frames: nothing else gives it frame-level parallelism, and slice threads
    leave cores idle (on 2 cores the ProRes 4444 encoder kept them 82% busy with slices, 97% with frames, and the
    passthrough run took 10% less wall time; docs/benchmarks.md). Each frame thread holds a picture in flight
    (:func:`encoder_frame_ring`), so frames are afforded only while ``threads`` more frames fit ENCODER_BUDGET
    next to the context's own; parallel contexts already give frame parallelism and hold their frames, so they
    thread by slices. ``threads`` 0 is one per core."""
    if contexts > 1:
        return False
    return (ENCODER_FRAMES_PER_CONTEXT + _threads(threads)) * width * height * 8 <= ENCODER_BUDGET


def encoder_frame_ring(frame_threads: bool, threads: int) -> int:
    """Reused frames an encoder context cycles through (io/planes.py): threads + 1 when it threads by frames
    (FFmpeg keeps at most ``threads`` pictures in flight, each referencing its frame, so the one refilled is always
    released), else one."""
    return _threads(threads) + 1 if frame_threads else 1


def read_ahead(frames: int, width: int, height: int, bytes_per_sample: int = 1) -> int:
    """Decoded frames queued ahead for ``frames`` asked, within READ_AHEAD_BUDGET (RGB)."""
    per_frame = width * height * 3 * bytes_per_sample
    return max(2, min(int(frames), int(READ_AHEAD_BUDGET // per_frame))) if frames > 1 else 1
