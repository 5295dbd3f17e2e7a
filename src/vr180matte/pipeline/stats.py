"""Run statistics: the stats.json document (the contract in DESIGN.md plus the product's own blocks)."""
from __future__ import annotations

import os

from ..config import Config
from ..io.probe import streams_report
from ..io.rotation import rotation_report
from ..runtime.profile import MemorySampler, StageTimer
from .plan import RunPlan


def run_stats(cfg: Config, plan: RunPlan, runner, matter, engine, timer: StageTimer, verification: dict,
              mem: MemorySampler, seconds: float, first_chunk: int, spherical: dict | None,
              extra_outputs: list[str]) -> dict:
    info = plan.info
    first = next(iter(verification.values()))
    out_audio = first.get("audio_streams", 0)
    geo = runner.geo
    stats = {
        "input": str(plan.input),
        "engine": engine.name,
        "engine_reason": plan.engine_reason,
        "device": str(plan.device),
        "policy": plan.policy.as_dict(),
        "frames_in": info.frame_count,
        "frames_out": first["frames"],
        "fps": f"{info.fps.numerator}/{info.fps.denominator}",
        "duration_in_s": round(info.duration_s, 6),
        "duration_out_s": round(first["duration_s"], 6),
        "audio": {
            "streams_in": len(info.audio_streams),
            "streams_out": out_audio,
            "copied": bool(cfg.audio.preserve_audio and info.audio_streams and out_audio == len(info.audio_streams)),
        },
        "outputs": [os.path.relpath(p, plan.out_dir) for p in plan.output.paths.values()] + list(extra_outputs),
        "stages": timer.as_dict(),
        "concurrency": {"overlap": bool(cfg.processing.memory_pipeline), **timer.summary()},
        "seconds": round(seconds, 3),
        "fps_processed": round(sum(c["frames"] for c in runner.chunk_log) / seconds, 3) if seconds else None,
        "peak_rss_mb": round(mem.peak_rss_mb, 1),
        "peak_vram_mb": None if mem.peak_vram_mb is None else round(mem.peak_vram_mb, 1),
        "chunks": runner.chunk_log,
        "resumed_chunks": first_chunk,
        "oom_retries": runner.oom_retries,
        "layout": {"layout": geo.layout.name, "source": plan.layout_source, "squeezed": geo.squeezed},
        "rotation": rotation_report(info.rotation),
        "streams": streams_report(info, plan.output.codec.container is not None),
        "processing_size": [geo.proc_w, geo.proc_h],
        "scale_factor": geo.scale,
        "vr180_metadata": spherical,
        "alpha": "premultiplied" if cfg.refine.premultiplied else "straight",
        "verification": verification,
    }
    io_report = getattr(runner, "io_report", None)  # decoder/encoder that ran, why, busy seconds (issue 20)
    if io_report is not None:
        stats["io"] = io_report()
    detector = getattr(engine, "detector_info", None)
    if detector:
        stats["detector"] = detector() if callable(detector) else detector
    stats.update(matter.report())
    return stats
