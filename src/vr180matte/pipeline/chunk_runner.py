"""The chunk runner: reader -> frame matter -> writers for each chunk, with hand-off, resume and OOM retry.

Per chunk: load the previous chunk's hand-off, reset the frame matter, then stream the chunk's frames through
three overlapping stages (``segment`` | ``finish`` | ``encode``, see :mod:`.overlap`; decode runs in the reader's
own thread). The chunk's segments are written under temporary names and renamed when complete; the hand-off and,
last, the done marker make the chunk a checkpoint (see :mod:`vr180matte.runtime.chunks`).
"""
from __future__ import annotations

import logging
import os
import shutil
import time

from tqdm import tqdm

from ..config import Config
from ..errors import InputError, ResourceError
from ..runtime.chunks import Chunk, WorkDir, chunk_log_entry
from ..runtime.device import free_device_memory, is_oom
from ..runtime.profile import StageTimer
from ..runtime.streams import StageStreams
from ..stereo.handoff import ChunkHandoff
from .frame_matter import Segmented, small_prob
from .overlap import run_stages
from .plan import RunPlan
from .segment_writers import encoder_info, open_segment_writers

log = logging.getLogger(__name__)

MIN_SCALE = 0.125


def geometry_after_oom(exc: BaseException, device, geo, chunk_index: int):
    """The geometry to retry a chunk with after ``exc``: 0.75x the scale when ``exc`` is out of memory (device
    memory freed first); ``exc`` itself is re-raised otherwise, a :class:`ResourceError` below ``MIN_SCALE``."""
    if not is_oom(exc):
        raise exc
    free_device_memory(device)
    new_scale = geo.scale * 0.75
    if new_scale < MIN_SCALE:
        raise ResourceError(
            f"out of memory in chunk {chunk_index} even at scale {geo.scale:.3f}: lower "
            "processing.scale_factor or use a smaller matting.sam2_model / detection.model"
        ) from None
    log.warning("out of memory in chunk %d at scale %.3f: retrying the chunk at scale %.3f",
                chunk_index, geo.scale, new_scale)
    return geo.at_scale(new_scale)


class ChunkRunner:
    """Runs the plan's chunks from ``first`` on; state: the current geometry (lowered on OOM) and the chunk log."""

    def __init__(self, cfg: Config, plan: RunPlan, matter, work: WorkDir, timer: StageTimer, quiet: bool) -> None:
        self.cfg, self.plan, self.matter, self.work, self.timer, self.quiet = cfg, plan, matter, work, timer, quiet
        self.geo = plan.geometry
        self.chunk_log: list[dict] = []
        self.oom_retries = 0
        self.frames_done = 0  # frames encoded so far in this run (for the memory-over-time report)
        #: the decoder and encoder that actually ran (the last chunk's; every chunk makes the same choice) and
        #: the parallel encoder contexts' busy seconds, for stats.json's ``io`` block
        self.decoder: dict | None = None
        self.encoder: dict | None = None
        self.encoder_workers_s = 0.0

    # ---- the whole run --------------------------------------------------------------------------------------
    def run(self, first: int) -> None:
        todo = self.plan.chunks[first:]
        total = sum(c.write_end - c.write_start for c in todo)
        with tqdm(total=total, disable=self.quiet, unit="frame", desc=self.plan.stem, dynamic_ncols=True) as bar:
            for chunk in todo:
                before = dict(self.timer.seconds)
                entry = self._run_with_fallback(chunk, bar)
                self.chunk_log.append(entry)
                log.info("chunk %d: frames %d-%d in %.1fs", chunk.index, chunk.write_start, chunk.write_end - 1,
                         entry["seconds"])
                if self.cfg.debugging.log_intermediate_workflow:
                    spent = {k: round(v - before.get(k, 0.0), 2) for k, v in self.timer.seconds.items()}
                    live = {e: v.live_ids for e, v in getattr(self.matter, "views", {}).items()}
                    log.info("chunk %d stages (s): %s; live tracks: %s", chunk.index, spent, live or "n/a")

    def _run_with_fallback(self, chunk: Chunk, bar: tqdm) -> dict:
        while True:
            try:
                return self.run_chunk(chunk, bar)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
                self.geo = geometry_after_oom(exc, self.plan.device, self.geo, chunk.index)
                self.matter.set_geometry(self.geo)
                self.oom_retries += 1
                bar.reset(total=bar.total)

    def io_report(self) -> dict:
        """stats.json's ``io`` block: the decoder and encoder that ran, each with its reason and busy seconds
        (decode: the reader thread; encode: the encode stage, or the parallel contexts' summed work)."""
        secs = self.timer.seconds
        dec = dict(self.decoder or {"name": None, "reason": "no frame decoded"})
        dec["busy_s"] = round(secs.get("decode", 0.0), 3)
        enc = dict(self.encoder or {"name": None, "reason": "no segment written"})
        enc["busy_s"] = round(self.encoder_workers_s or secs.get("encode", 0.0), 3)
        enc["stage_busy_s"] = round(secs.get("encode", 0.0), 3)  # the encode thread: hand-off, waits and muxing
        return {"decoder": dec, "encoder": enc}

    # ---- one chunk ------------------------------------------------------------------------------------------
    def _load_handoff(self, chunk: Chunk) -> ChunkHandoff | None:
        if chunk.index == 0:
            return None
        path = self.work.handoff_path(chunk.index - 1)
        if not path.exists():
            raise InputError(f"work folder {self.work.root} lost {path.name}: delete the folder and run again")
        return ChunkHandoff.load(path, self.work.root)

    def run_chunk(self, chunk: Chunk, bar: tqdm) -> dict:
        from ..io.reader import FrameReader

        t0 = time.perf_counter()
        cfg, tm, matter = self.cfg, self.timer, self.matter
        matter.reset(chunk, self._load_handoff(chunk))
        overlap_out: dict[str, list] = {"left": [], "right": []}
        writers = open_segment_writers(cfg, self.plan, self.work, {
            eye: self.work.segment_path(chunk.index, self.plan.output.codec.suffix, eye)
            for eye in self.plan.output.eyes}, policy=self.plan.policy)
        self.encoder = encoder_info(writers)
        written = 0
        keep_ts = cfg.processing.vfr_policy == "keep_timestamps"
        timing: dict[int, tuple] = {}  # frame index -> (pts, duration) until it is encoded

        def segment(df) -> Segmented | None:
            seg = matter.segment(df.index, df.rgb)
            if not seg.write:  # a trailing overlap frame: kept small for the next chunk, not written
                for eye, prob in seg.probs.items():
                    overlap_out[eye].append(small_prob(prob))
                return None
            timing[df.index] = (df.pts, df.duration) if keep_ts else (None, None)
            return seg

        def finish(seg: Segmented) -> tuple[int, dict]:
            return seg.index, matter.finish(seg)

        def encode(item: tuple[int, dict]) -> None:
            nonlocal written
            idx, images = item
            pts, dur = timing.pop(idx)
            with tm("encode"):
                for eye, img in images.items():
                    writers[eye][0].write(img, pts, idx, duration=dur)
            written += 1
            self.frames_done += 1
            bar.update(1)

        try:
            reader = FrameReader(self.plan.input, self.plan.info, start=chunk.process_start, end=chunk.process_end,
                                 read_ahead=cfg.processing.read_ahead, timer=tm,
                                 high_bit_depth=True,  # >8-bit sources as 16-bit RGB: 10-bit colour end to end
                                 # NVDEC where io/hwaccel.py's rule says it pays; FFmpeg's threads (and with them its
                                 # frame pools) bounded by the policy
                                 decode_device=str(self.plan.device), cores=self.plan.policy.cores,
                                 threads=self.plan.policy.codec_threads)
            with reader:
                run_stages(reader, [("segment", segment), ("finish", finish), ("encode", encode)], timer=tm,
                           depth=int(cfg.processing.stage_queue), threaded=bool(cfg.processing.memory_pipeline),
                           streams=StageStreams(self.plan.device, self.plan.policy.stage_streams))
            self.decoder = reader.decoder
        except BaseException:
            for writer, partial, _final in writers.values():
                try:
                    writer.close()
                except Exception:  # noqa: BLE001 - the original error matters, not the cleanup's
                    pass
                shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)
            raise
        for writer, partial, final in writers.values():
            writer.close()
            self.encoder_workers_s += writer.busy_s
            os.replace(partial, final)
        expected = chunk.write_end - chunk.write_start
        if written != expected:
            raise InputError(f"{self.plan.input.name}: decoded {written} of {expected} frames in chunk {chunk.index}; "
                             "the file is truncated or corrupt")
        if chunk.handoff_frame is not None:
            handoff = matter.handoff()
            handoff.overlap = overlap_out
            handoff.save(self.work.handoff_path(chunk.index))
        entry = chunk_log_entry(chunk, time.perf_counter() - t0, frames=written, scale=self.geo.scale,
                                corrections=getattr(matter, "corrections", 0))
        self.work.mark_done(chunk.index, entry)
        return entry
