"""The encoders of one chunk's outputs, opened the same way by the sequential runner and the chunk-parallel
workers: each writes under a temporary name (``WorkDir.partial``) and is renamed only when the segment is whole.
"""
from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..runtime.chunks import WorkDir
from ..runtime.policy import DevicePolicy
from .plan import RunPlan

__all__ = ["open_segment_writers", "encoder_info"]


def open_segment_writers(cfg: Config, plan: RunPlan, work: WorkDir, paths: dict[str | None, Path], *,
                         policy: DevicePolicy | None = None) -> dict:
    """``{eye: (SegmentWriter, partial path, final path)}`` for the final ``paths`` of one chunk's outputs.

    ``policy``: the run's encoder contexts and FFmpeg threads, split over the outputs written at once (the
    sequential runner, which owns the machine); None leaves the writer's defaults (a chunk-parallel task, which
    shares its worker's cores with the others)."""
    from ..io.writer import SegmentWriter

    out, info = plan.output, plan.info
    split = {} if policy is None else dict(encoders=max(1, policy.encoders // len(paths)),
                                            threads=max(1, policy.codec_threads // len(paths)))
    writers = {}
    for eye, final in paths.items():
        partial = work.partial(final)
        writers[eye] = (SegmentWriter(partial, out.codec.name, out.width, out.height, info.time_base, info.fps,
                                      crf=cfg.output.crf, color=info.color, bit_depth=info.bit_depth,
                                      hardware=plan.device.type == "cuda", **split),
                        partial, final)
    return writers


def encoder_info(writers: dict) -> dict:
    """What stats.json says of the encoder: name, hardware or not, contexts, threads (by frames or slices for
    an intra-only codec) and why it was chosen."""
    w = next(iter(writers.values()))[0]
    return {"name": w.encoder, "hardware": w.encoder != w.spec.encoder, "contexts": w.encoders,
            "threads": w.threads, "thread_type": w.thread_type, "reason": w.encoder_reason}
