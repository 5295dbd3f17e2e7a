"""``run``: the whole job, as one typed function whose arguments mirror ``vr180matte run``.

plan (probe, decide, refuse early) -> work folder (resume) -> engine -> frame matter -> chunk runner
-> finalize (join, audio, metadata, verify, atomic rename) -> stats.json.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..config import Config, load_config
from ..errors import InputError, LockedError, OutputError, VerificationError
from ..runtime.chunks import WorkDir, atomic_write_json, fingerprint
from ..runtime.limits import check_sizes
from ..runtime.profile import MemorySampler, StageTimer
from .plan import VIDEO_SUFFIXES, RunPlan, make_plan, resolved_config

# Why no torch (nor the stages, which import it) at the top: the plan refuses bad input before torch is imported
# (pipeline/plan.py), so `vr180matte run missing.mp4` answers in well under a second instead of after ~4 s of
# imports; _run_locked imports them once the plan stands.

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    stats: dict
    stats_path: Path
    outputs: list[Path] = field(default_factory=list)


def _resolve_paths(input_path, cfg: Config, out_dir) -> tuple[Path, Path, Path | None]:
    src = Path(input_path or cfg.input.video_path or "")
    if not str(src) or str(src) == ".":
        raise InputError("no input video: give a path (vr180matte run INPUT) or set input.video_path")
    if not src.exists():
        raise InputError(f"input not found: {src}")
    if src.is_dir():
        raise InputError(f"input is a folder, not a video file: {src}")
    out = Path(out_dir) if out_dir is not None else Path(cfg.output.path or "out")
    out_file = None
    if out.suffix.lower() in VIDEO_SUFFIXES:  # `-o clip.mov` names the output file, not a folder
        out_file, out = out, out.parent
    return src, out, out_file


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_file = out / f".vr180matte-write-test-{os.getpid()}"
        probe_file.write_bytes(b"")
        probe_file.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write to output folder {out}: {exc.strerror or exc}; choose another with -o") from None


def _build_engine(cfg: Config, plan: RunPlan, engine: Any):
    """The engine to use: ``engine`` as given (an instance, or a ``(cfg, device) -> engine`` factory), else built."""
    cfg = resolved_config(cfg, plan)
    if engine is None:
        from ..engines import build_engine

        return build_engine(cfg, plan.device)
    if callable(engine) and not hasattr(engine, "make_segmenter"):
        return engine(cfg, plan.device)
    return engine


def run(
    input_path: str | Path | None = None,
    config: Config | str | Path | None = None,
    out_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    quiet: bool = False,
    *,
    engine: Any | Callable | None = None,
) -> RunResult:
    """Matte every person in a VR180 stereo video.

    Args mirror the CLI: ``vr180matte run INPUT -c CONFIG -o OUT_DIR --set k=v ... --quiet``. ``engine`` (for
    tests and embedding) replaces the configured engine: an engine object or a ``(cfg, device)`` factory.
    Raises the classes of :mod:`vr180matte.errors`, each with a one-line message and its exit code.
    """
    cfg = config if isinstance(config, Config) else load_config(config, overrides)
    if isinstance(config, Config) and overrides:
        cfg = load_config(None, overrides, base=config._flat)
    src, out, out_file = _resolve_paths(input_path, cfg, out_dir)
    t_start = time.perf_counter()
    timer = StageTimer()
    with timer("probe"):
        plan = make_plan(src, cfg, out, out_file)  # every input/config check, before a model loads or a file is written
        check_sizes(plan, cfg)  # frames the encoder or memory cannot take are refused before decoding
    out_created = not out.exists()
    _check_writable(out)
    work = WorkDir(out, plan.stem)
    try:
        with work.lock():  # one run per output: a second one is refused, naming this one (runtime/lock.py)
            if cfg.processing.chunk_parallel:  # independent chunks, on Ray workers when connected
                from .chunk_parallel import run_chunk_parallel

                return run_chunk_parallel(src, cfg, out, out_file, quiet, plan=plan, work=work, timer=timer,
                                          t_start=t_start)
            return _run_locked(cfg, plan, work, src, out, quiet, engine, timer, t_start)
    except LockedError:
        raise  # the work folder is the other run's
    except BaseException:
        work.discard_if_unstarted(len(plan.chunks), out_created)  # a refused run leaves no folder or manifest
        raise


def _run_locked(cfg: Config, plan: RunPlan, work: WorkDir, src: Path, out: Path, quiet: bool, engine: Any,
                timer: StageTimer, t_start: float) -> RunResult:
    import torch

    from ..runtime.device import peak_vram_mb
    from ..runtime.policy import thread_pools
    from .chunk_runner import ChunkRunner
    from .frame_matter import make_frame_matter
    from .stats import run_stats

    first = work.prepare(fingerprint(src), plan.digest, list(plan.chunks))

    report = None
    if cfg.performance.profile_enabled:
        from ..quality.report import ProcessingReport

        report = ProcessingReport()
    vram = None
    if plan.device.type == "cuda":
        if cfg.performance.profile_sync:  # stage seconds = device time (runtime/profile.py); off in production
            timer.sync = lambda: torch.cuda.synchronize(plan.device)
        torch.cuda.reset_peak_memory_stats(plan.device)
        vram = lambda: peak_vram_mb(plan.device)  # noqa: E731
    runner: ChunkRunner | None = None
    on_sample = (lambda t, rss, v: report.sample(t, rss, v, runner.frames_done if runner else 0)) if report else None
    # thread_pools: the policy's torch/OpenCV pool sizes for the run (GPU: the cores go to FFmpeg and the stages)
    with MemorySampler(vram_mb=vram, on_sample=on_sample) as mem, thread_pools(plan.policy):
        with timer("load_models"):
            eng = _build_engine(cfg, plan, engine)
        matter = make_frame_matter(cfg, plan, eng, timer)
        runner = ChunkRunner(cfg, plan, matter, work, timer, quiet)
        timer.start()
        runner.run(first)
        timer.stop()
        verification, spherical = _finalize(cfg, plan, work, timer)
        extra = matter.close()
    stats = run_stats(cfg, plan, runner, matter, eng, timer, verification, mem, time.perf_counter() - t_start, first,
                      spherical, extra)
    stats_path = out / f"{plan.stem}.stats.json"
    atomic_write_json(stats_path, stats)
    if report is not None:
        for entry in runner.chunk_log:
            report.add_chunk(entry)
        report.write(out, plan.stem, stats["stages"], stats["frames_out"], timing=stats["concurrency"])
    raise_if_unverified(cfg, plan, verification, stats_path)
    if not cfg.performance.preserve_intermediates:
        work.remove()
    return RunResult(stats, stats_path, list(plan.output.paths.values()))


def raise_if_unverified(cfg: Config, plan: RunPlan, verification: dict, stats_path: Path) -> None:
    """VerificationError (exit 5) when an output's frame count or duration does not match the input."""
    bad = [k for k, v in verification.items() if not (v["frames_ok"] and v["duration_ok"])]
    if bad and (cfg.debugging.frame_count_validation or cfg.audio.verify_sync):
        v = verification[bad[0]]
        raise VerificationError(
            f"output {bad[0]} has {v['frames']} frames / {v['duration_s']:.3f}s but the input has "
            f"{plan.info.frame_count} frames / {plan.info.duration_s:.3f}s; see {stats_path.name}"
        )


def _finalize(cfg: Config, plan: RunPlan, work: WorkDir, timer: StageTimer,
              segments: Callable[[Any], list[Path]] | None = None) -> tuple[dict, dict | None]:
    """Join each output's segments (stream copy), copy audio, write VR180 metadata, verify."""
    from ..io.finalize import join_segments, output_spherical, verify_output

    info = plan.info
    copy_audio = bool(cfg.audio.preserve_audio and info.audio_streams)
    verification, meta = {}, None
    with timer("finalize"):
        for eye, output in plan.output.paths.items():
            parts = segments(eye) if segments else [work.segment_path(c.index, plan.output.codec.suffix, eye)
                                                    for c in plan.chunks]
            meta = output_spherical(info, cfg.output.write_vr180_metadata, maintain_sbs=eye is None)
            if plan.output.format == "passthrough" and cfg.output.write_vr180_metadata != "never":
                from ..matte.fisheye import passthrough_spherical

                meta = passthrough_spherical(cfg.output.fisheye_fov)  # st3d + a fisheye mesh (mshp)
            join_segments(parts, output, plan.input, copy_audio, info.time_base, spherical=meta)
            if meta is not None and output.is_dir():  # PNG sequence: no container, so a sidecar says it
                atomic_write_json(output / "vr180.json", {**meta, "premultiplied": cfg.refine.premultiplied})
            verification[eye or "sbs"] = verify_output(output, info.frame_count, info.duration_s)
    return verification, meta


def stats_json(result: RunResult) -> str:
    return json.dumps(result.stats, indent=2)
