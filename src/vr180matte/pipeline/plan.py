"""The run plan: everything decided before a frame is decoded, frozen.

Probe the input, choose the layout, the processing geometry, the output codec and paths, the device, the engine
and the chunk plan. Every input and config check happens here, so a run that is refused has written nothing and
loaded no model.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..errors import InputError
from ..io.codecs import Codec, resolve_codec
from ..io.layouts import Layout, get_layout
from ..io.probe import VideoInfo, probe, resolve_layout
from ..runtime.chunks import Chunk, plan_chunks
from ..runtime.scale import processing_scale

if TYPE_CHECKING:  # torch and the modules that need it load in make_plan, after the input checks (see there)
    import torch

    from ..runtime.policy import DevicePolicy

log = logging.getLogger(__name__)

# Keys that do not change the produced frames: changing them must not invalidate a resumable run.
RESUME_NEUTRAL = (
    "input.video_path",
    "input.prompts",  # its path: the file's content digest is in the plan digest instead
    "output.path",
    "processing.read_ahead",
    "processing.stage_queue",
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
    "cluster.address",  # where chunks run never changes them (chunk-parallel output is the same on any worker)
    "cluster.gpus_per_task",
    "cluster.cpus_per_task",
    "cluster.max_retries",
)
VIDEO_SUFFIXES = (".mov", ".mp4", ".m4v", ".mkv")


@dataclass(frozen=True)
class Geometry:
    """Eye and processing sizes. ``squeezed``: a web copy's narrow eyes are processed de-squeezed to square."""

    layout: Layout
    eye_w: int
    eye_h: int
    proc_w: int
    proc_h: int
    squeezed: bool
    scale: float

    @property
    def proc_size(self) -> tuple[int, int]:
        return self.proc_h, self.proc_w

    def at_scale(self, scale: float) -> "Geometry":
        """The same eyes processed at another scale (the out-of-memory retry)."""
        stretch = self.eye_h / self.eye_w if self.squeezed else 1.0
        pw, ph = _even(self.eye_w * stretch * scale), _even(self.eye_h * scale)
        return dataclasses.replace(self, proc_w=pw, proc_h=ph, scale=float(scale))


def _even(v: float) -> int:
    return max(2, int(round(v / 2)) * 2)


def resolved_config(cfg: Config, plan: "RunPlan") -> Config:
    """``cfg`` with ``processing.scale_factor`` as the number the plan chose, for the engines built after the plan
    (the detector's source scale). The plan's digest keeps the configured value ("auto" stays "auto")."""
    if cfg.processing.scale_factor != "auto":
        return cfg
    return cfg.replace(processing__scale_factor=plan.geometry.scale)


def make_geometry(cfg: Config, info: VideoInfo, layout: Layout, scale: Any) -> Geometry:
    ew, eh = layout.eye_size(info.width, info.height)
    squeezed = cfg.input.squeezed
    if squeezed == "auto":
        # VR180 eyes cover 180x180 degrees, so they are square; an eye clearly narrower than tall is a web copy
        # squeezed to fit a 16:9 frame, and is de-squeezed back to square for detection and segmentation.
        squeezed = layout.axis == 1 and ew / eh < 0.95
    scale = processing_scale(scale, eh if squeezed else min(ew, eh))  # a squeezed eye is processed de-squeezed
    return Geometry(layout, ew, eh, 0, 0, bool(squeezed), 0.0).at_scale(scale)


@dataclass(frozen=True)
class OutputSpec:
    """What is written: format, codec row, and the final path of each output (``None`` = the SBS file)."""

    format: str  # alpha | greenscreen | passthrough
    codec: Codec
    paths: dict  # eye (None | "left" | "right") -> final Path
    width: int
    height: int
    maintain_sbs: bool

    @property
    def eyes(self) -> list[str | None]:
        return list(self.paths)


@dataclass(frozen=True)
class RunPlan:
    input: Path
    out_dir: Path
    stem: str
    info: VideoInfo
    layout_source: str
    geometry: Geometry
    output: OutputSpec
    chunks: tuple[Chunk, ...]
    chunk_size: int
    device: torch.device
    policy: DevicePolicy  # every device-dependent choice, made once (runtime/policy.py)
    engine_name: str
    engine_reason: str
    digest: str  # config digest over the keys that change frames (resume identity)
    prompts: Any = None  # the validated input.prompts file (track/prompts.py), or None

    @property
    def equirect(self) -> bool:
        """Whether the eyes are equirectangular: the metadata says so or, without metadata, the (de-squeezed) eye
        is square as a VR180 eye is. Decides ``detection.equirect_crops: auto``."""
        if self.info.projection:
            return self.info.projection == "equirectangular"
        g = self.geometry
        return abs(g.proc_w / g.proc_h - 1.0) < 0.05


def _choose_layout(cfg: Config, info: VideoInfo) -> tuple[Layout, str]:
    """(layout, where it came from); refuses mono and metadata/geometry that contradict stereo."""
    if cfg.input.layout == "mono":
        raise InputError("input.layout=mono: vr180matte needs a stereo (side-by-side or top-bottom) video")
    name = resolve_layout(info, cfg.input.layout)
    if cfg.input.layout != "auto":
        return get_layout(name), "configured"
    return get_layout(name), "stereo metadata" if info.layout else "default (no stereo metadata)"


def _output_spec(cfg: Config, info: VideoInfo, geo: Geometry, stem: str, input_path: Path, out_dir: Path,
                 out_file: Path | None) -> OutputSpec:
    fmt = cfg.output.format
    try:
        codec = resolve_codec(fmt, cfg.output.codec)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if fmt == "passthrough":
        return _passthrough_spec(cfg, geo, codec, stem, input_path, out_dir, out_file)
    eyes = [None] if cfg.output.maintain_sbs else ["left", "right"]
    if out_file is not None:  # -o named the output file itself
        paths = {e: out_file if e is None else out_file.with_name(f"{out_file.stem}_{e}{out_file.suffix}")
                 for e in eyes}
    else:
        name = (lambda e: f"{stem}{'_' + e if e else ''}.{fmt}{codec.suffix or '_png'}")
        paths = {e: out_dir / name(e) for e in eyes}
    for path in paths.values():
        if path.resolve() == input_path.resolve():
            raise InputError(f"output path {path} is the input file: the input is never overwritten; choose another -o")
        if out_file is not None and codec.suffix and path.suffix.lower() != codec.suffix:
            raise InputError(f"output {path.name}: {codec.name} is written as {codec.suffix}; name the file *{codec.suffix}")
    w = info.width if cfg.output.maintain_sbs else geo.eye_w
    h = info.height if cfg.output.maintain_sbs else geo.eye_h
    return OutputSpec(fmt, codec, paths, w, h, bool(cfg.output.maintain_sbs))


def _passthrough_spec(cfg: Config, geo: Geometry, codec: Codec, stem: str, input_path: Path, out_dir: Path,
                      out_file: Path | None) -> OutputSpec:
    """One alpha-packed fisheye SBS file named with the players' tag (``<stem>_FISHEYE190_alpha.mp4``)."""
    from ..matte.fisheye import player_tag

    if not cfg.output.maintain_sbs:
        raise InputError("output.format=passthrough is one side-by-side file (the players read both eyes from it); "
                         "set output.maintain_sbs: true")
    tag = player_tag(int(cfg.output.fisheye_fov))
    path = out_file if out_file is not None else out_dir / f"{stem}{tag}{codec.suffix}"
    if path.resolve() == input_path.resolve():
        raise InputError(f"output path {path} is the input file: the input is never overwritten; choose another -o")
    if codec.suffix and path.suffix.lower() != codec.suffix:
        raise InputError(f"output {path.name}: {codec.name} is written as {codec.suffix}; name the file *{codec.suffix}")
    if tag.lower() not in path.stem.lower():
        log.warning("%s lacks the %s tag DeoVR/HereSphere recognise passthrough files by", path.name, tag)
    size = geo.eye_h - geo.eye_h % 2  # each eye a square fisheye circle, even for 4:2:0
    return OutputSpec("passthrough", codec, {None: path}, 2 * size, size, True)


def make_plan(input_path: Path, cfg: Config, out_dir: Path, out_file: Path | None = None,
              info: VideoInfo | None = None) -> RunPlan:
    """Probe and decide; raises InputError/ConfigError/ResourceError before anything is written."""
    info = info if info is not None else probe(input_path)
    if info.frame_count <= 0:
        raise InputError(f"{input_path.name}: the video stream has no frames")
    layout, source = _choose_layout(cfg, info)
    geo = make_geometry(cfg, info, layout, cfg.processing.scale_factor)
    stem = input_path.stem
    output = _output_spec(cfg, info, geo, stem, input_path, out_dir, out_file)
    # torch (~3-4 s to import) only now: a missing, unreadable or wrongly shaped input is refused in well under a
    # second, before it is imported
    from ..engines import choose_engine
    from ..runtime.device import auto_chunk_size, resolve_device
    from ..runtime.policy import choose_policy
    from ..track.prompts import load_prompts

    device = resolve_device(cfg.hardware.device)
    policy = choose_policy(device, force=cfg.hardware.policy)
    log.info("%s", policy.reason)
    engine_name, engine_reason = choose_engine(cfg)
    chunk_size = cfg.processing.chunk_size
    if chunk_size == "auto":
        chunk_size = auto_chunk_size(
            geo.eye_w, geo.eye_h, geo.scale, device, cfg.hardware.max_vram_gb, cfg.processing.max_memory_gb
        )
    chunks = plan_chunks(info.frame_count, int(chunk_size), cfg.processing.overlap_frames)
    prompts = load_prompts(cfg.input.prompts, stem, info.frame_count, geo.eye_w, geo.eye_h)
    digest = cfg.digest(exclude=RESUME_NEUTRAL)
    if prompts is not None:  # the file's content, not its name, is part of what made the frames
        digest = hashlib.sha256(f"{digest}:{prompts.digest}".encode()).hexdigest()[:16]
    return RunPlan(
        input=input_path, out_dir=out_dir, stem=stem, info=info, layout_source=source, geometry=geo, output=output,
        chunks=tuple(chunks), chunk_size=int(chunk_size), device=device, policy=policy, engine_name=engine_name,
        engine_reason=engine_reason, digest=digest, prompts=prompts,
    )
