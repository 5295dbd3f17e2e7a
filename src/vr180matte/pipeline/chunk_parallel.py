"""Chunk-parallel mode (``processing.chunk_parallel``): one video's chunks run independently, on any worker.

Why: the sequential chunk runner hands each chunk's tracks to the next, so one long video can use one GPU only.
Here every chunk starts from nothing, so N GPUs (Ray workers, ``pipeline/chunk_executor.py``) take N chunks at once:

* chunk ``k`` processes ``[b_k - o, b_{k+1})`` with a freshly built engine: it detects afresh on its first frame and
  warms up (tracks, segmenter memory) on its ``o`` leading overlap frames, which it does **not** write; it writes
  ``[b_k, b_{k+1} - o)`` as ``seg_k`` and keeps, small (uint8, at most 512 px a side), the person probability of its
  leading overlap frames (``head_k.pt``) and of its trailing ones (``tail_k.pt``), plus each person's small mask
  there for id matching;
* seam ``k`` (``k >= 1``) writes the overlap frames ``[b_k - o, b_k)`` as ``seam_k``: chunk ``k-1``'s tail blended
  into chunk ``k``'s head with the same linear ramp as the sequential mode, then refined and composited; it needs
  no model, only the two small files, so it runs once both chunks are done;
* the driver joins ``seg_0, seam_1, seg_1, ...`` by stream copy (every frame encoded exactly once), and chains the
  track ids from chunk to chunk by mask IoU over each overlap (:mod:`vr180matte.track.reconcile`).

Deterministic: a chunk's frames depend only on the input and the config (fresh engine, no state from other
chunks), so the output is the same whichever worker ran which chunk, with 1 or N workers, or locally in one
process (tested frame for frame). Each chunk and seam leaves a done marker written last, so a dead worker's task
is simply run again (nothing of it was final) and a re-run skips every finished piece (resume).

Ray tasks run with exactly ``cluster.cpus_per_task`` torch threads, so every worker computes alike.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch

from ..config import Config
from ..errors import InputError
from ..runtime.chunks import WorkDir, atomic_write_json, chunk_log_entry
from ..runtime.profile import StageTimer
from .frame_finish import FrameFinisher
from .frame_matter import OpaqueMatter, Segmented, make_frame_matter, proxy8, resize_prob, small_prob
from .chunk_runner import geometry_after_oom
from .plan import RunPlan, make_plan, resolved_config
from .segment_writers import open_segment_writers
from .report_merge import merge_reports

log = logging.getLogger(__name__)

_SEGMENTED_FIELDS = {f.name for f in dataclasses.fields(Segmented)}


# ---- files of the work folder ---------------------------------------------------------------------------------
def seam_path(work: WorkDir, k: int, suffix: str, eye: str | None) -> Path:
    return work.root / f"seam_{k:05d}{'_' + eye if eye else ''}{suffix}"


def seam_marker(work: WorkDir, k: int) -> Path:
    return work.root / f"seam_{k:05d}.done.json"


def _overlap_file(work: WorkDir, kind: str, k: int) -> Path:
    return work.root / f"{kind}_{k:05d}.pt"


def segments(plan: RunPlan, work: WorkDir, eye: str | None) -> list[Path]:
    """Every segment of one output in frame order: ``seg_0, seam_1, seg_1, seam_2, ...``."""
    suffix = plan.output.codec.suffix
    out = []
    for c in plan.chunks:
        if c.overlap_in:
            out.append(seam_path(work, c.index, suffix, eye))
        out.append(work.segment_path(c.index, suffix, eye))
    return out


def _save(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)


def _load(path: Path) -> dict:
    if not path.exists():
        raise InputError(f"work folder lost {path.name}: delete {path.parent} and run again")
    return torch.load(path, map_location="cpu", weights_only=True)  # plain data only: a planted file cannot run code


# ---- one job's context on a worker ----------------------------------------------------------------------------
@dataclass
class _Job:
    cfg: Config
    plan: RunPlan
    work: WorkDir
    timer: StageTimer


def _job(input_path: str, flat: dict, out_dir: str, out_file: str | None) -> _Job:
    cfg = Config(flat)
    plan = make_plan(Path(input_path), cfg, Path(out_dir), Path(out_file) if out_file else None)
    return _Job(cfg, plan, WorkDir(Path(out_dir), plan.stem), StageTimer())


def _close_writers(writers: dict, ok: bool) -> None:
    for writer, partial, final in writers.values():
        if ok:
            writer.close()
            os.replace(partial, final)
            continue
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - the original error matters, not the cleanup's
            pass
        shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)


def _stream(job: _Job, start: int, end: int, handle: Callable, writers: dict) -> int:
    """Decode ``[start, end)``; ``handle(df)`` returns the output images of a frame to encode, or None."""
    from ..io.reader import FrameReader

    keep_ts = job.cfg.processing.vfr_policy == "keep_timestamps"
    written = 0
    ok = False
    try:
        with FrameReader(job.plan.input, job.plan.info, start=start, end=end, read_ahead=job.cfg.processing.read_ahead,
                         timer=job.timer, high_bit_depth=True) as reader:  # >8-bit sources as 16-bit, as sequential
            for df in reader:
                images = handle(df)
                if images is None:
                    continue
                pts, dur = (df.pts, df.duration) if keep_ts else (None, None)
                with job.timer("encode"):
                    for eye, img in images.items():
                        writers[eye][0].write(img, pts, df.index, duration=dur)
                written += 1
        ok = True
    finally:
        _close_writers(writers, ok)
    return written


def _where(t0: float) -> dict:
    """Which process ran a piece, and when (epoch seconds): the chunk log shows how pieces overlapped."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "nice": os.getpriority(os.PRIO_PROCESS, 0),
            "began": round(time.time() - (time.perf_counter() - t0), 3), "ended": round(time.time(), 3)}


def _track_masks(matter) -> dict:
    """Each person's small mask in both eyes on the frame just segmented (for id matching)."""
    from ..track.reconcile import small_track_mask

    res = getattr(matter, "last_result", None)
    if res is None:
        return {}
    return {eye: {int(tid): small_track_mask(t.prob) for tid, t in getattr(res, eye).tracks.items()}
            for eye in ("left", "right")}


def run_chunk(input_path: str, flat: dict, out_dir: str, out_file: str | None, k: int, engine=None) -> dict:
    """Chunk ``k`` from scratch (fresh engine): writes ``seg_k``, ``head_k``/``tail_k`` and its done marker.

    Idempotent: a chunk whose marker exists is not run again (a retried task after the worker died late).
    """
    job = _job(input_path, flat, out_dir, out_file)
    work, plan, cfg = job.work, job.plan, job.cfg
    if work.done_marker(k).exists():
        return work.read_done(k)
    t0 = time.perf_counter()
    with job.timer("load_models"):
        if engine is None:
            from ..engines import build_engine

            engine = build_engine(resolved_config(cfg, plan), plan.device)
    matter = make_frame_matter(cfg, plan, engine, job.timer)
    geo, retries = plan.geometry, 0
    while True:  # out of memory: the chunk again at a lower processing scale, as in sequential mode
        try:
            entry = _run_chunk_once(job, k, matter)
            break
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
            geo = geometry_after_oom(exc, plan.device, geo, k)
            matter = make_frame_matter(cfg, plan, engine, job.timer)  # fresh views/smoothers for the retry
            matter.set_geometry(geo)
            retries += 1
    entry["oom_retries"] = retries
    entry["scale"] = round(geo.scale, 4)
    entry["worker"] = _where(t0)
    entry["seconds"] = round(time.perf_counter() - t0, 3)
    work.mark_done(k, entry)
    return entry


def _run_chunk_once(job: _Job, k: int, matter) -> dict:
    """One attempt at chunk ``k``: its segment, head/tail files and log entry (the caller marks it done)."""
    work, plan = job.work, job.plan
    t0 = time.perf_counter()
    chunk = plan.chunks[k]
    matter.reset(chunk, None)  # no hand-off: this chunk depends on no other
    head_end = chunk.process_start + chunk.overlap_in
    keep: dict[str, dict] = {"head": {"left": [], "right": [], "tracks": []},
                             "tail": {"left": [], "right": [], "tracks": []}}
    ids: set[int] = set()

    def handle(df):
        seg = matter.segment(df.index, df.rgb)
        tracks = _track_masks(matter)
        for eye_tracks in tracks.values():
            ids.update(eye_tracks)
        part = "head" if df.index < head_end else None if seg.write else "tail"
        if part is not None:  # overlap frame: kept small for its seam, not written here
            for eye, prob in seg.probs.items():
                keep[part][eye].append(small_prob(prob))
            keep[part]["tracks"].append(tracks)
            return None
        return matter.finish(seg)

    writers = open_segment_writers(job.cfg, plan, work, {e: work.segment_path(k, plan.output.codec.suffix, e)
                                                         for e in plan.output.eyes})
    written = _stream(job, chunk.process_start, chunk.process_end, handle, writers)
    expected = chunk.write_end - head_end
    if written != expected:
        raise InputError(f"{plan.input.name}: decoded {written} of {expected} frames in chunk {k}; "
                         "the file is truncated or corrupt")
    for part, first in (("head", chunk.overlap_in > 0), ("tail", not chunk.last)):
        if first:
            data = keep[part]
            _save(_overlap_file(work, part, k), {
                "left": [t for t in data["left"]], "right": [t for t in data["right"]], "tracks": data["tracks"],
            })
    entry = chunk_log_entry(chunk, time.perf_counter() - t0, frames=written, scale=matter.geo.scale,
                            ids=sorted(ids), stages=job.timer.as_dict())
    entry["start"] = head_end  # what seg_k holds; the seam before it holds [process_start, head_end)
    entry["report"] = matter.report()  # stereo/quality/tracks of this chunk's frames, merged by the driver
    return entry


def run_seam(input_path: str, flat: dict, out_dir: str, out_file: str | None, k: int, *_deps: Any) -> dict:
    """The overlap frames before chunk ``k``: chunk ``k-1``'s tail blended into chunk ``k``'s head, written once.

    ``_deps`` are ignored: a scheduler passes the two chunks' results there so the seam waits for them.
    """
    job = _job(input_path, flat, out_dir, out_file)
    work, plan, cfg = job.work, job.plan, job.cfg
    marker = seam_marker(work, k)
    if marker.exists():
        return json.loads(marker.read_text())
    t0 = time.perf_counter()
    chunk = plan.chunks[k]
    start, end = chunk.process_start, chunk.process_start + chunk.overlap_in
    opaque = plan.engine_name == "passthrough"
    if opaque:
        finisher = OpaqueMatter(cfg, plan, None, job.timer)
    else:
        # The very same finish() the chunks use (fresh temporal smoothers, as at a chunk start): only the finish
        # half, so no stereo stage or debug outputs are built for a seam that segments nothing.
        from ..quality.monitor import QualityMonitor

        finisher = FrameFinisher(cfg, plan, job.timer, QualityMonitor(every=int(cfg.performance.quality_every)),
                                 prompts=getattr(plan, "prompts", None))
        tail, head = _load(_overlap_file(work, "tail", k - 1)), _load(_overlap_file(work, "head", k))
    size, device = plan.geometry.proc_size, plan.device

    def handle(df):
        if opaque:
            return finisher.finish(Segmented(df.index, df.rgb, True))
        i = df.index - start
        w = chunk.blend_weight(df.index)  # this chunk's weight, rising over the overlap as in sequential mode
        frame = torch.from_numpy(df.rgb).to(device)
        eyes = dict(zip(("left", "right"), plan.geometry.layout.split(frame)))
        probs = {}
        for eye in ("left", "right"):
            a = resize_prob(tail[eye][i].to(device).float() / 255.0, size)
            b = resize_prob(head[eye][i].to(device).float() / 255.0, size)
            probs[eye] = (1 - w) * a + w * b
        # What FrameMatter.segment hands to finish(), with the blended probabilities instead of a model's.
        extra = {"guides": {e: proxy8(img) for e, img in eyes.items()} if frame.dtype != torch.uint8 else {},
                 "frame": frame}
        extra = {k: v for k, v in extra.items() if k in _SEGMENTED_FIELDS}
        return finisher.finish(Segmented(index=df.index, rgb=df.rgb, write=True, eyes=eyes, probs=probs, **extra))

    suffix = plan.output.codec.suffix
    writers = open_segment_writers(cfg, plan, work, {e: seam_path(work, k, suffix, e) for e in plan.output.eyes})
    written = _stream(job, start, end, handle, writers)
    if written != end - start:
        raise InputError(f"{plan.input.name}: decoded {written} of {end - start} frames of the overlap before chunk "
                         f"{k}; the file is truncated or corrupt")
    entry = {"seam": k, "start": start, "end": end, "seconds": round(time.perf_counter() - t0, 3), "frames": written,
             "stages": job.timer.as_dict(), "worker": _where(t0)}
    atomic_write_json(marker, entry)
    return entry


def reconcile(plan: RunPlan, work: WorkDir, entries: list[dict], min_iou: float) -> list[dict[int, int]]:
    """Global track ids for every chunk (local id -> global id), chained over the overlaps by mask IoU."""
    from ..track.reconcile import chain_ids

    overlaps: list = [None]
    for c in plan.chunks[1:]:
        tail = _load(_overlap_file(work, "tail", c.index - 1))["tracks"]
        head = _load(_overlap_file(work, "head", c.index))["tracks"]
        overlaps.append((tail, head))
    return chain_ids([e.get("ids", []) for e in entries], overlaps, min_iou)


# ---- the driver -----------------------------------------------------------------------------------------------
class LocalExecutor:
    """Runs the pieces one after another in this process (the reference the cluster run is compared with)."""

    name = "local"

    def run(self, job_args: tuple, chunks: list[int], seams: list[int], on_done: Callable[[dict], None]) -> None:
        for k in chunks:
            on_done(run_chunk(*job_args, k))
        for k in seams:
            on_done(run_seam(*job_args, k))


def run_chunk_parallel(src: Path, cfg: Config, out: Path, out_file: Path | None, quiet: bool, executor=None, *,
                       plan: RunPlan | None = None, work: WorkDir | None = None, timer: StageTimer | None = None,
                       t_start: float | None = None):
    """``run`` in chunk-parallel mode: plan, submit the missing chunks and seams, reconcile ids, join, stats.

    ``run`` calls it with its plan (sizes checked), work folder (locked) and timer; alone it makes its own."""
    from tqdm import tqdm

    from ..runtime.chunks import fingerprint
    from ..runtime.profile import MemorySampler
    from .run import RunResult, _check_writable, _finalize, raise_if_unverified
    from .stats import run_stats

    t_start = time.perf_counter() if t_start is None else t_start
    timer = StageTimer() if timer is None else timer
    if plan is None:
        with timer("probe"):
            plan = make_plan(src, cfg, out, out_file)
        _check_writable(out)
    locked = work is not None  # the caller holds the work folder's lock
    work = WorkDir(out, plan.stem) if work is None else work
    with _nullcontext() if locked else work.lock():
        first = work.prepare(fingerprint(src), plan.digest, list(plan.chunks))
        chunks = [c.index for c in plan.chunks if not work.done_marker(c.index).exists()]
        seams = [c.index for c in plan.chunks if c.overlap_in and not seam_marker(work, c.index).exists()]
        if executor is None:
            from .chunk_executor import executor_for

            executor = executor_for(cfg)
        total = len(chunks) + len(seams)
        log.info("chunk-parallel: %d chunks and %d seams to run (%s)", len(chunks), len(seams), executor.name)
        with MemorySampler() as mem, tqdm(total=total, disable=quiet, unit="piece", desc=plan.stem,
                                          dynamic_ncols=True) as bar:
            args = (str(src.resolve()), dict(cfg._flat), str(out.resolve()), str(out_file.resolve()) if out_file else None)
            executor.run(args, chunks, seams, lambda entry: bar.update(1))
            entries = [work.read_done(c.index) for c in plan.chunks]
            seam_entries = [json.loads(seam_marker(work, c.index).read_text())
                            for c in plan.chunks if c.overlap_in]
            id_maps = reconcile(plan, work, entries, cfg.matting.track_iou_threshold) if plan.engine_name != \
                "passthrough" else [{} for _ in entries]
            verification, spherical = _finalize(cfg, plan, work, timer, segments=lambda eye: segments(plan, work, eye))
        for e in entries + seam_entries:  # the workers' stage seconds, summed (CPU/GPU-seconds, not wall)
            for name, s in e.get("stages", {}).items():
                timer.seconds[name] = timer.seconds.get(name, 0.0) + float(s)
        chunk_log = [{k: v for k, v in e.items() if k not in ("stages", "report")} for e in entries]
        runner = SimpleNamespace(geo=plan.geometry, chunk_log=chunk_log,
                                 oom_retries=sum(int(e.get("oom_retries", 0)) for e in entries))
        report = merge_reports([e.get("report") or {} for e in entries], id_maps)
        report["chunk_parallel"] = {
            "executor": executor.name,
            "seams": [{k: v for k, v in e.items() if k != "stages"} for e in seam_entries],
            "id_maps": [{str(a): b for a, b in m.items()} for m in id_maps],
            "tracks_total": max((max(m.values()) for m in id_maps if m), default=0),
        }
        matter = SimpleNamespace(report=lambda: report)
        engine = SimpleNamespace(name=plan.engine_name)
        stats = run_stats(cfg, plan, runner, matter, engine, timer, verification, mem,
                          time.perf_counter() - t_start, first, spherical, [])
        stats_path = out / f"{plan.stem}.stats.json"
        atomic_write_json(stats_path, stats)
        raise_if_unverified(cfg, plan, verification, stats_path)
        if not cfg.performance.preserve_intermediates:
            work.remove()
    return RunResult(stats, stats_path, list(plan.output.paths.values()))


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


__all__ = ["run_chunk", "run_seam", "run_chunk_parallel", "segments", "LocalExecutor", "reconcile"]
