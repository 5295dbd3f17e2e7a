"""The streaming VR180 matting pipeline: one public function, :func:`run`.

probe -> chunk plan -> per chunk: decode window -> split eyes -> scale -> detect/track/segment (stereo stage)
-> blend overlap -> refine to full resolution -> temporal smoothing -> composite -> encode segment
-> finally: join segments by stream copy, copy audio, VR180 metadata, verify, atomic rename, stats.json.

Memory is bounded by design: frames flow one at a time from a bounded read-ahead queue; the engine keeps
only its memory window; a chunk keeps at most ``overlap_frames`` low-resolution masks for the next chunk.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .config import Config, load_config
from .engines import build_engine, choose_engine
from .io.errors import InputError, OutputError
from .io.probe import VideoInfo, probe, resolve_layout
from .runtime.chunks import Chunk, WorkDir, atomic_write_json, chunk_log_entry, fingerprint, plan_chunks
from .runtime.device import ResourceError, auto_chunk_size, free_device_memory, is_oom, peak_vram_mb, resolve_device
from .runtime.profile import MemorySampler, StageTimer

log = logging.getLogger(__name__)

# Keys that do not change the produced frames: changing them must not invalidate a resumable run.
_RESUME_NEUTRAL = (
    "input.video_path",
    "output.path",
    "processing.read_ahead",
    "processing.memory_pipeline",
    "processing.streaming_output",
    "processing.max_memory_gb",
    "hardware.max_vram_gb",
    "audio.verify_sync",
    "performance.profile_enabled",
    "performance.preserve_intermediates",
    "debugging.log_intermediate_workflow",
    "debugging.save_detection_visualization",
    "debugging.save_confidence_maps",
    "debugging.frame_count_validation",
)
_OVERLAP_STORE_SIDE = 512  # long side of the low-res masks a chunk keeps for blending into the next
_MIN_SCALE = 0.125
_VIDEO_SUFFIXES = (".mov", ".mp4", ".m4v", ".mkv")


class VerificationError(RuntimeError):
    """The written output does not match the input (frame count or duration)."""


@dataclass
class RunResult:
    stats: dict
    stats_path: Path
    outputs: list[Path] = field(default_factory=list)


@dataclass
class _Geometry:
    layout: str  # sbs | sbs_rl | tb
    eye_w: int
    eye_h: int
    proc_w: int
    proc_h: int
    squeezed: bool


def _choose_layout(cfg: Config, info: VideoInfo) -> tuple[str, str]:
    """(layout, where it came from); refuses mono and metadata/geometry that contradict side-by-side."""
    if cfg.input.layout == "mono":
        raise InputError("input.layout=mono: vr180matte needs a stereo (side-by-side or top-bottom) video")
    layout = resolve_layout(info, cfg.input.layout)
    if cfg.input.layout != "auto":
        return layout, "configured"
    return layout, "stereo metadata" if info.layout else "default (no stereo metadata)"


def _geometry(cfg: Config, info: VideoInfo, layout: str, scale: float) -> _Geometry:
    # resolve_layout already refused odd sizes for the layout
    if layout in ("sbs", "sbs_rl"):
        ew, eh = info.width // 2, info.height
    else:
        ew, eh = info.width, info.height // 2
    squeezed = cfg.input.squeezed
    if squeezed == "auto":
        # VR180 eyes cover 180x180 degrees, so they are square; an eye clearly narrower than tall is a web copy
        # squeezed to fit a 16:9 frame, and is de-squeezed back to square for detection and segmentation.
        squeezed = layout != "tb" and ew / eh < 0.95
    stretch = eh / ew if squeezed else 1.0
    pw = ew * stretch * scale
    ph = eh * scale
    return _Geometry(layout, ew, eh, max(2, int(round(pw / 2)) * 2), max(2, int(round(ph / 2)) * 2), bool(squeezed))


def _split(frame: torch.Tensor, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = frame.shape[:2]
    if layout == "sbs":
        return frame[:, : w // 2], frame[:, w // 2 :]
    if layout == "sbs_rl":
        return frame[:, w // 2 :], frame[:, : w // 2]
    return frame[: h // 2], frame[h // 2 :]


def _join(left: torch.Tensor, right: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "sbs":
        return torch.cat([left, right], dim=1)
    if layout == "sbs_rl":
        return torch.cat([right, left], dim=1)
    return torch.cat([left, right], dim=0)


def _to_processing(eye: torch.Tensor, geo: _Geometry) -> torch.Tensor:
    """(H, W, 3) uint8 eye -> (proc_h, proc_w, 3) uint8 on the same device (area-style antialiased resize)."""
    if eye.shape[0] == geo.proc_h and eye.shape[1] == geo.proc_w:
        return eye.contiguous()
    if eye.device.type == "cpu":
        # On the CPU OpenCV's area resampling is ~4x faster than torch's antialiased bilinear, same purpose.
        import cv2

        small = cv2.resize(eye.numpy(), (geo.proc_w, geo.proc_h), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(small)
    x = eye.permute(2, 0, 1).unsqueeze(0).float()
    y = F.interpolate(x, size=(geo.proc_h, geo.proc_w), mode="bilinear", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0).contiguous()


def _resize_prob(prob: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(prob.shape) == tuple(size):
        return prob
    return F.interpolate(prob[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]


def _small(prob: torch.Tensor) -> torch.Tensor:
    """Quantised low-res copy of a probability map, on the CPU, for blending into the next chunk."""
    h, w = prob.shape
    f = min(1.0, _OVERLAP_STORE_SIDE / max(h, w))
    size = (max(1, round(h * f)), max(1, round(w * f)))
    return (_resize_prob(prob, size) * 255).round().clamp(0, 255).to(torch.uint8).cpu()


def _output_spec(cfg: Config) -> tuple[str, str]:
    """(codec, suffix)."""
    codec = cfg.output.codec
    fmt = cfg.output.format
    if codec == "auto":
        codec = "prores4444" if fmt == "alpha" else "h264"
    if fmt == "alpha" and codec not in ("prores4444", "png"):
        raise InputError(f"output.codec={codec} cannot carry alpha: use prores4444 or png for output.format=alpha")
    if fmt == "greenscreen" and codec not in ("h264", "hevc"):
        raise InputError(f"output.codec={codec} is for alpha output: use h264 or hevc for output.format=greenscreen")
    return codec, {"prores4444": ".mov", "png": "", "h264": ".mp4", "hevc": ".mp4"}[codec]


class _Job:
    """State of one run; kept out of :func:`run` so each stage reads as a method."""

    def __init__(self, input_path: Path, cfg: Config, out_dir: Path, quiet: bool, out_file: Path | None = None):
        self.input = input_path
        self.out_file = out_file
        self.cfg = cfg
        self.out_dir = out_dir
        self.quiet = quiet
        self.timer = StageTimer()  # cheap, and stats.json always reports per-stage seconds
        self.chunk_log: list[dict] = []
        self.stereo_reports: list[dict] = []
        self.frames_done = 0  # frames encoded so far in this run (for the memory-over-time report)

    # ---- set-up -------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        cfg = self.cfg
        with self.timer("probe"):
            self.info = probe(self.input)
        if self.info.frame_count <= 0:
            raise InputError(f"{self.input.name}: the video stream has no frames")
        self.layout, self.layout_source = _choose_layout(cfg, self.info)
        self.scale = float(cfg.processing.scale_factor)
        self.geo = _geometry(cfg, self.info, self.layout, self.scale)
        self.codec, suffix = _output_spec(cfg)
        self.stem = self.input.stem
        tag = "alpha" if cfg.output.format == "alpha" else "greenscreen"
        eyes = [None] if cfg.output.maintain_sbs else ["left", "right"]
        self.eyes_out = eyes
        if self.out_file is not None:  # -o named the output file itself
            base = self.out_file
            self.outputs = {e: base if e is None else base.with_name(f"{base.stem}_{e}{base.suffix}") for e in eyes}
        else:
            name = (lambda e: f"{self.stem}{'_' + e if e else ''}.{tag}{suffix or '_png'}")
            self.outputs = {e: self.out_dir / name(e) for e in eyes}
        for path in self.outputs.values():
            if path.resolve() == self.input.resolve():
                raise InputError(f"output path {path} is the input file: the input is never overwritten; choose another -o")
            if self.out_file is not None and suffix and path.suffix.lower() != suffix:
                raise InputError(f"output {path.name}: {self.codec} is written as {suffix}; name the file *{suffix}")
        self.device = resolve_device(cfg.hardware.device)
        self.engine_name, self.engine_reason = choose_engine(cfg)
        chunk_size = cfg.processing.chunk_size
        if chunk_size == "auto":
            chunk_size = auto_chunk_size(
                self.geo.eye_w, self.geo.eye_h, self.scale, self.device,
                cfg.hardware.max_vram_gb, cfg.processing.max_memory_gb,
            )
        self.chunk_size = int(chunk_size)
        self.chunks = plan_chunks(self.info.frame_count, self.chunk_size, cfg.processing.overlap_frames)
        self.work = WorkDir(self.out_dir, self.stem)
        digest = cfg.digest(exclude=_RESUME_NEUTRAL)
        self.first_chunk = self.work.prepare(fingerprint(self.input), digest, self.chunks)

    def build_models(self) -> None:
        cfg = self.cfg
        with self.timer("load_models"):
            self.engine = build_engine(cfg, self.device)
        self.passthrough = self.engine.name == "passthrough"
        if self.passthrough:
            return
        from .matte.refine import Refiner
        from .matte.temporal import TemporalSmoother
        from .quality.monitor import QualityMonitor
        from .stereo.consistency import StereoStage
        from .track.tracker import IdAllocator
        from .track.view_matter import ViewMatter

        detector = self.engine.make_detector()
        self.ids = IdAllocator()
        view_kw = dict(
            detect_interval=cfg.detection.detect_interval,
            iou_threshold=cfg.matting.track_iou_threshold,
            max_missed=cfg.matting.track_max_missed,
            max_persons=cfg.detection.max_persons,
            ids=self.ids,
            drift_iou=cfg.matting.track_drift_iou,
            min_mask_area=cfg.matting.track_min_mask_area,
            confirm_end_runs=cfg.matting.track_confirm_end_runs,
        )
        # The stereo stage owns detection (per eye, or once on the joint SBS frame) and hands boxes to the views.
        self.views = {
            eye: ViewMatter(eye, self.engine.make_segmenter(eye), None, **view_kw) for eye in ("left", "right")
        }
        self.stereo = StereoStage(
            cfg, self.views["left"], self.views["right"], detector, fuse_edges=cfg.stereo.fuse_edges
        )
        method = cfg.refine.method if cfg.refine.enabled else "bilinear"
        self.refiner = Refiner(
            method=method, radius_px=cfg.refine.radius_px, eps=cfg.refine.eps, erode_px=cfg.refine.erode_px,
            feather_px=cfg.refine.feather_px, device=self.device,
        )
        self.smoothers = {
            eye: TemporalSmoother(strength=cfg.refine.temporal_strength, enabled=cfg.refine.temporal_smoothing)
            for eye in ("left", "right")
        }
        self.quality = QualityMonitor()
        self.visualizer = None
        if cfg.debugging.save_detection_visualization:
            from .quality.debug import DetectionVisualizer

            self.visualizer = DetectionVisualizer(
                self.out_dir / f"{self.stem}.detections.mp4", self.geo.proc_w * 2, self.geo.proc_h, self.info.fps,
                scale=1.0,  # it is fed the processing-resolution eyes, so boxes need no rescaling
            )

    # ---- one chunk ----------------------------------------------------------------------------------------
    def _open_writers(self, chunk: Chunk) -> dict:
        from .io.writer import SegmentWriter

        suffix = ".mov" if self.codec == "prores4444" else ".mp4" if self.codec in ("h264", "hevc") else ""
        w = self.info.width if self.cfg.output.maintain_sbs else self.geo.eye_w
        h = self.info.height if self.cfg.output.maintain_sbs else self.geo.eye_h
        writers = {}
        for eye in self.eyes_out:
            final = self.work.segment_path(chunk.index, suffix, eye)
            partial = self.work.partial(final)
            writers[eye] = (
                SegmentWriter(
                    partial, self.codec, w, h, self.info.time_base, self.info.fps, crf=self.cfg.output.crf,
                    color=self.info.color,
                ),
                partial,
                final,
            )
        return writers

    def _load_handoff(self, chunk: Chunk) -> dict | None:
        if chunk.index == 0:
            return None
        path = self.work.handoff_path(chunk.index - 1)
        if not path.exists():
            raise RuntimeError(f"work folder {self.work.root} lost {path.name}: delete the folder and run again")
        return torch.load(path, map_location="cpu", weights_only=False)

    def _reset_for_chunk(self, chunk: Chunk, handoff: dict | None) -> None:
        if self.passthrough:
            return
        size = (self.geo.proc_h, self.geo.proc_w)
        views = {}
        for eye in ("left", "right"):
            h = handoff[eye] if handoff else None
            if h is not None:  # masks may come from a chunk run at another scale (OOM fallback)
                h.masks = {i: _resize_prob(m.float(), size).to(torch.float16) for i, m in h.masks.items()}
            views[eye] = h
        if handoff:
            self.ids.next_id = max(self.ids.next_id, handoff["next_id"])
        self.stereo.reset(views["left"], views["right"], handoff["stereo"] if handoff else None)
        for s in self.smoothers.values():
            s.reset()

    def process_chunk(self, chunk: Chunk, bar: tqdm) -> dict:
        from .io.reader import FrameReader

        t0 = time.perf_counter()
        cfg = self.cfg
        handoff = self._load_handoff(chunk)
        self._reset_for_chunk(chunk, handoff)
        prev_overlap = handoff.get("overlap") if handoff else None
        next_overlap: dict[str, list[torch.Tensor]] = {"left": [], "right": []}
        next_handoff = None
        writers = self._open_writers(chunk)
        frames_written = 0
        corrections = 0
        try:
            reader = FrameReader(
                self.input, self.info, start=chunk.process_start, end=chunk.process_end,
                read_ahead=cfg.processing.read_ahead,
            )
            with reader:
                it = iter(reader)
                while True:
                    with self.timer("decode"):
                        df = next(it, None)
                    if df is None:
                        break
                    idx = df.index
                    if self.passthrough:
                        alphas = eyes = None
                        if idx >= chunk.write_end:
                            continue
                    else:
                        with self.timer("upload"):
                            frame = torch.from_numpy(df.rgb).to(self.device, non_blocking=True)
                            eyes = dict(zip(("left", "right"), _split(frame, self.layout)))
                        alphas, stereo_res, probs = self._matte_frame(chunk, idx, eyes, prev_overlap)
                        corrections += len(stereo_res.corrections)
                        if chunk.handoff_frame == idx:
                            next_handoff = {
                                "left": self.views["left"].handoff(stereo_res.left),
                                "right": self.views["right"].handoff(stereo_res.right),
                                "stereo": self.stereo.state(),
                            }
                        if idx >= chunk.write_end:
                            for eye in ("left", "right"):
                                next_overlap[eye].append(_small(probs[eye]))
                            continue
                    with self.timer("composite"):
                        images = self._compose_opaque(df.rgb) if self.passthrough else self._compose(eyes, alphas)
                    with self.timer("encode"):
                        keep = cfg.processing.vfr_policy == "keep_timestamps"
                        pts, dur = (df.pts, df.duration) if keep else (None, None)
                        for eye, img in images.items():
                            writers[eye][0].write(img, pts, idx, duration=dur)
                    frames_written += 1
                    self.frames_done += 1
                    bar.update(1)
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
            os.replace(partial, final)
        expected = chunk.write_end - chunk.write_start
        if frames_written != expected:
            raise InputError(
                f"{self.input.name}: decoded {frames_written} of {expected} frames in chunk {chunk.index}; "
                "the file is truncated or corrupt"
            )
        if chunk.handoff_frame is not None:
            payload = {"next_id": self.ids.next_id if not self.passthrough else 1, "scale": self.scale}
            if not self.passthrough:
                payload.update(next_handoff)
                payload["overlap"] = {eye: next_overlap[eye] for eye in ("left", "right")}
            tmp = self.work.handoff_path(chunk.index).with_suffix(".tmp")
            torch.save(payload, tmp)
            os.replace(tmp, self.work.handoff_path(chunk.index))
        seconds = time.perf_counter() - t0
        entry = chunk_log_entry(chunk, seconds, frames=frames_written, scale=self.scale, corrections=corrections)
        self.work.mark_done(chunk.index, entry)
        return entry

    def _matte_frame(self, chunk: Chunk, idx: int, eyes: dict, prev_overlap: dict | None):
        size = (self.geo.proc_h, self.geo.proc_w)
        with self.timer("scale"):
            proc = {eye: _to_processing(img, self.geo) for eye, img in eyes.items()}
        with self.timer("segment"):
            res = self.stereo.step(idx, proc["left"], proc["right"], account=idx < chunk.write_end)
        probs = {
            "left": res.left.combined(size, self.device).float(),
            "right": res.right.combined(size, self.device).float(),
        }
        weight = chunk.blend_weight(idx)
        if weight is not None and prev_overlap is not None:
            k = idx - chunk.process_start
            for eye in probs:
                prev = _resize_prob(prev_overlap[eye][k].to(self.device).float() / 255.0, size)
                probs[eye] = (1 - weight) * prev + weight * probs[eye]
        if self.visualizer is not None:
            with self.timer("debug"):
                sbs = torch.cat([proc["left"], proc["right"]], dim=1).cpu().numpy()
                self.visualizer.write(sbs, res.left, res.right)
        if idx >= chunk.write_end:
            return None, res, probs
        alphas = {}
        for eye, prob in probs.items():
            with self.timer("refine"):
                alpha = self.refiner(prob, eyes[eye])
            with self.timer("temporal"):
                alpha = self.smoothers[eye].step(alpha, eyes[eye])
            alphas[eye] = alpha
            if self.cfg.performance.profile_enabled:
                with self.timer("quality"):
                    self.quality.update(eye, idx, alpha, eyes[eye])
        if res.agreement:
            self.quality.add_stereo(idx, float(np.mean(list(res.agreement.values()))))
        if self.cfg.debugging.save_confidence_maps and idx % self.cfg.detection.detect_interval == 0:
            from .quality.debug import save_confidence_map

            folder = self.out_dir / f"{self.stem}.confidence"
            folder.mkdir(exist_ok=True)
            for eye, prob in probs.items():
                save_confidence_map(folder / f"{idx:06d}_{eye}.png", prob)
        return alphas, res, probs

    def _compose(self, eyes: dict, alphas: dict) -> dict[str | None, np.ndarray]:
        from .matte.composite import compose

        cfg = self.cfg
        out = {
            eye: compose(
                eyes[eye], alphas[eye], mode=cfg.output.format, background=tuple(cfg.output.background_color),
                premultiplied=cfg.refine.premultiplied,
            )
            for eye in eyes
        }
        if cfg.output.maintain_sbs:
            return {None: _join(out["left"], out["right"], self.layout).cpu().numpy()}
        return {eye: out[eye].contiguous().cpu().numpy() for eye in ("left", "right")}

    def _compose_opaque(self, rgb: np.ndarray) -> dict[str | None, np.ndarray]:
        """Passthrough: the decoded frame with alpha = 1, in numpy on the host (no device round trip)."""
        if self.cfg.output.format == "alpha":
            rgba = np.empty((*rgb.shape[:2], 4), dtype=np.uint8)
            rgba[..., :3] = rgb
            rgba[..., 3] = 255
            rgb = rgba
        if self.cfg.output.maintain_sbs:
            return {None: rgb}
        left, right = _split(torch.from_numpy(rgb), self.layout)
        return {"left": np.ascontiguousarray(left.numpy()), "right": np.ascontiguousarray(right.numpy())}

    # ---- the whole job ------------------------------------------------------------------------------------
    def process_all(self) -> None:
        todo = self.chunks[self.first_chunk :]
        total = sum(c.write_end - c.write_start for c in todo)
        with tqdm(total=total, disable=self.quiet, unit="frame", desc=self.stem, dynamic_ncols=True) as bar:
            for chunk in todo:
                before = dict(self.timer.seconds)
                entry = self._process_with_fallback(chunk, bar)
                self.chunk_log.append(entry)
                log.info(
                    "chunk %d: frames %d-%d in %.1fs", chunk.index, chunk.write_start, chunk.write_end - 1,
                    entry["seconds"],
                )
                if self.cfg.debugging.log_intermediate_workflow:
                    spent = {k: round(v - before.get(k, 0.0), 2) for k, v in self.timer.seconds.items()}
                    live = {e: v.live_ids for e, v in getattr(self, "views", {}).items()}
                    log.info("chunk %d stages (s): %s; live tracks: %s", chunk.index, spent, live or "n/a")

    def _process_with_fallback(self, chunk: Chunk, bar: tqdm) -> dict:
        while True:
            try:
                return self.process_chunk(chunk, bar)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
                if not is_oom(exc):
                    raise
                free_device_memory(self.device)
                new_scale = self.scale * 0.75
                if new_scale < _MIN_SCALE:
                    raise ResourceError(
                        f"out of memory in chunk {chunk.index} even at scale {self.scale:.3f}: lower "
                        "processing.scale_factor or use a smaller matting.sam2_model / detection.model"
                    ) from None
                log.warning(
                    "out of memory in chunk %d at scale %.3f: retrying the chunk at scale %.3f",
                    chunk.index, self.scale, new_scale,
                )
                self.scale = new_scale
                self.geo = _geometry(self.cfg, self.info, self.layout, new_scale)
                self.oom_retries = getattr(self, "oom_retries", 0) + 1
                bar.reset(total=bar.total)

    def finalize(self) -> dict:
        from .io.finalize import join_segments, verify_output

        cfg = self.cfg
        copy_audio = bool(cfg.audio.preserve_audio and self.info.audio_streams)
        suffix = ".mov" if self.codec == "prores4444" else ".mp4" if self.codec in ("h264", "hevc") else ""
        verification = {}
        with self.timer("finalize"):
            for eye, output in self.outputs.items():
                segments = [self.work.segment_path(c.index, suffix, eye) for c in self.chunks]
                meta = self._vr180_metadata(eye)
                join_segments(segments, output, self.input, copy_audio, self.info.time_base, spherical=meta)
                if meta is not None and output.is_dir():  # PNG sequence: no container, so a sidecar says it
                    atomic_write_json(output / "vr180.json", {**meta, "premultiplied": cfg.refine.premultiplied})
                self.spherical = meta
                verification[eye or "sbs"] = verify_output(output, self.info.frame_count, self.info.duration_s)
        return verification

    def _vr180_metadata(self, eye: str | None) -> dict | None:
        from .io.finalize import output_spherical

        return output_spherical(self.info, self.cfg.output.write_vr180_metadata, maintain_sbs=eye is None)


def _default_out_dir(cfg: Config) -> Path:
    return Path(cfg.output.path or "out")


def run(
    input_path: str | Path | None = None,
    config: Config | str | Path | None = None,
    out_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    quiet: bool = False,
) -> RunResult:
    """Matte every person in a VR180 side-by-side video.

    Args mirror the CLI: ``vr180matte run INPUT -c CONFIG -o OUT_DIR --set k=v ... --quiet``.
    Raises InputError / OutputError / ConfigError / EngineError / ResourceError with one-line messages.
    """
    cfg = config if isinstance(config, Config) else load_config(config, overrides)
    if isinstance(config, Config) and overrides:
        cfg = load_config(None, overrides, base=config._flat)
    src = Path(input_path or cfg.input.video_path or "")
    if not str(src) or str(src) == ".":
        raise InputError("no input video: give a path (vr180matte run INPUT) or set input.video_path")
    if not src.exists():
        raise InputError(f"input not found: {src}")
    if src.is_dir():
        raise InputError(f"input is a folder, not a video file: {src}")
    out = Path(out_dir) if out_dir is not None else _default_out_dir(cfg)
    out_file = None
    if out.suffix.lower() in _VIDEO_SUFFIXES:  # `-o clip.mov` names the output file, not a folder
        out_file, out = out, out.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_file = out / f".vr180matte-write-test-{os.getpid()}"
        probe_file.write_bytes(b"")
        probe_file.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write to output folder {out}: {exc.strerror or exc}; choose another with -o") from None

    job = _Job(src, cfg, out, quiet, out_file)
    t_start = time.perf_counter()
    job.prepare()  # every input/config check happens here, before any model loads or file is written
    report = None
    if cfg.performance.profile_enabled:
        from .quality.report import ProcessingReport

        report = ProcessingReport()
    device_probe = None
    if job.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(job.device)
        device_probe = lambda: peak_vram_mb(job.device)  # noqa: E731
    on_sample = (lambda t, rss, vram: report.sample(t, rss, vram, job.frames_done)) if report else None
    with MemorySampler(vram_mb=device_probe, on_sample=on_sample) as mem:
        job.build_models()
        job.process_all()
        verification = job.finalize()
    stats = _stats(job, verification, mem, time.perf_counter() - t_start)
    stats_path = out / f"{job.stem}.stats.json"
    atomic_write_json(stats_path, stats)
    if report is not None:
        for entry in job.chunk_log:
            report.add_chunk(entry)
        report.write(out, job.stem, stats["stages"], stats["frames_out"])
    bad = [k for k, v in verification.items() if not (v["frames_ok"] and v["duration_ok"])]
    if bad and (cfg.debugging.frame_count_validation or cfg.audio.verify_sync):
        v = verification[bad[0]]
        raise VerificationError(
            f"output {bad[0]} has {v['frames']} frames / {v['duration_s']:.3f}s but the input has "
            f"{job.info.frame_count} frames / {job.info.duration_s:.3f}s; see {stats_path.name}"
        )
    if not cfg.performance.preserve_intermediates:
        job.work.remove()
    return RunResult(stats, stats_path, list(job.outputs.values()))


def _stats(job: _Job, verification: dict, mem: MemorySampler, seconds: float) -> dict:
    info = job.info
    first = next(iter(verification.values()))
    out_audio = first.get("audio_streams", 0)
    stats = {
        "input": str(job.input),
        "engine": job.engine.name,
        "engine_reason": job.engine_reason,
        "device": str(job.device),
        "frames_in": info.frame_count,
        "frames_out": first["frames"],
        "fps": f"{info.fps.numerator}/{info.fps.denominator}",
        "duration_in_s": round(info.duration_s, 6),
        "duration_out_s": round(first["duration_s"], 6),
        "audio": {
            "streams_in": len(info.audio_streams),
            "streams_out": out_audio,
            "copied": bool(job.cfg.audio.preserve_audio and info.audio_streams and out_audio == len(info.audio_streams)),
        },
        "outputs": [os.path.relpath(p, job.out_dir) for p in job.outputs.values()],
        "stages": job.timer.as_dict(),
        "seconds": round(seconds, 3),
        "fps_processed": round(sum(c["frames"] for c in job.chunk_log) / seconds, 3) if seconds else None,
        "peak_rss_mb": round(mem.peak_rss_mb, 1),
        "peak_vram_mb": None if mem.peak_vram_mb is None else round(mem.peak_vram_mb, 1),
        "chunks": job.chunk_log,
        "resumed_chunks": job.first_chunk,
        "oom_retries": getattr(job, "oom_retries", 0),
        "layout": {"layout": job.layout, "source": job.layout_source, "squeezed": job.geo.squeezed},
        "processing_size": [job.geo.proc_w, job.geo.proc_h],
        "scale_factor": job.scale,
        "vr180_metadata": getattr(job, "spherical", None),
        "alpha": "premultiplied" if job.cfg.refine.premultiplied else "straight",
        "verification": verification,
    }
    if not job.passthrough:
        stats["stereo"] = job.stereo.report()
        stats["quality"] = job.quality.summary()
        stats["tracks"] = {eye: dict(v.stats) for eye, v in job.views.items()}
        kpi = getattr(job.engine, "kpi_summary", None)
        if callable(kpi):
            stats["kpi"] = kpi()
            if job.device.type == "cuda" and stats["kpi"].get("masks_left_gpu"):
                log.warning("masks left the GPU on %d predicts", stats["kpi"]["masks_left_gpu"])
    if not job.passthrough and job.visualizer is not None:
        job.visualizer.close()
        stats["outputs"].append(f"{job.stem}.detections.mp4")
    return stats


def stats_json(result: RunResult) -> str:
    return json.dumps(result.stats, indent=2)


__all__ = ["run", "RunResult", "VerificationError"]
