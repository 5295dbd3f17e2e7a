"""The frame matter: one decoded stereo frame in, the output images out.

Two halves, so the chunk runner can overlap them in separate threads (each half keeps its own sequential state):

* :meth:`FrameMatter.segment` — split the eyes, scale to processing size, detect/track/segment both eyes (the
  stereo stage), blend the overlap with the previous chunk. Stateful per chunk (tracks, segmenter memory).
* :meth:`FrameMatter.finish` — refine to full-resolution alpha, temporal smoothing, quality sampling, composite.
  Stateful per chunk (the temporal smoother).

:class:`OpaqueMatter` is the passthrough engine's matter: the frame with alpha 1, nothing segmented.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config
from ..runtime.chunks import Chunk
from ..runtime.profile import StageTimer
from ..stereo.handoff import ChunkHandoff
from .plan import Geometry, RunPlan

log = logging.getLogger(__name__)

OVERLAP_STORE_SIDE = 512  # long side of the low-res masks a chunk keeps for blending into the next


@dataclass
class Segmented:
    """One frame after :meth:`FrameMatter.segment`: what :meth:`FrameMatter.finish` needs."""

    index: int
    rgb: np.ndarray  # the decoded frame (H, W, 3), uint8 or uint16
    write: bool  # False for the trailing overlap frames a chunk hands to the next instead of writing
    eyes: dict = field(default_factory=dict)  # eye -> full-resolution (H, W, 3) tensor on the device
    probs: dict = field(default_factory=dict)  # eye -> processing-resolution person probability
    detected: bool = False
    guides: dict = field(default_factory=dict)  # eye -> 8-bit proxy of a >8-bit eye (refine/temporal/quality)
    frame: torch.Tensor | None = None  # the whole decoded frame on the device (the eyes are views of it)
    proc: dict = field(default_factory=dict)  # eye -> processing-size 8-bit eye (temporal and quality decide on it)


def resize_prob(prob: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(prob.shape) == tuple(size):
        return prob
    return F.interpolate(prob[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]


def small_prob(prob: torch.Tensor) -> torch.Tensor:
    """Quantised low-res copy of a probability map, on the CPU, for blending into the next chunk."""
    h, w = prob.shape
    f = min(1.0, OVERLAP_STORE_SIDE / max(h, w))
    size = (max(1, round(h * f)), max(1, round(w * f)))
    return (resize_prob(prob, size) * 255).round().clamp(0, 255).to(torch.uint8).cpu()


def proxy8(eye: torch.Tensor) -> torch.Tensor:
    """An 8-bit copy of a 16-bit eye (round(v / 257)) for the stages that look at the picture, not output it."""
    if eye.dtype == torch.uint8:
        return eye
    return torch.div(eye.to(torch.int32) + 128, 257, rounding_mode="floor").to(torch.uint8)


def eye_stack(layout, frame: torch.Tensor) -> torch.Tensor:
    """(2, H, W, C) view of a contiguous stereo frame, eyes in storage order (first = left for sbs/tb): both eyes
    of the SBS frame as one batch with no copy (a side-by-side frame is (H, 2, W, C) in memory)."""
    if layout.axis == 1:
        return frame.unflatten(1, (2, frame.shape[1] // 2)).movedim(1, 0)
    return frame.unflatten(0, (2, frame.shape[0] // 2))


def make_packer(cfg: Config, plan: RunPlan):
    """The passthrough packer for ``output.format: passthrough`` (None otherwise)."""
    if plan.output.format != "passthrough":
        return None
    from ..matte.fisheye import PassthroughPacker

    src_fov = plan.info.fov_deg if plan.info.projection == "equirectangular" and plan.info.fov_deg else 180.0
    return PassthroughPacker(plan.output.height, int(cfg.output.fisheye_fov), src_fov_deg=float(src_fov),
                             device=plan.device)


def to_processing(eye: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """(H, W, 3) eye -> (proc_h, proc_w, 3) uint8 on the same device (area-style antialiased resize)."""
    if eye.dtype != torch.uint8:  # >8-bit sources: detection and segmentation use an 8-bit proxy
        eye = (eye.float() * (255.0 / 65535.0)).round_().to(torch.uint8)
    if eye.shape[0] == geo.proc_h and eye.shape[1] == geo.proc_w:
        return eye.contiguous()
    if eye.device.type == "cpu":
        # On the CPU OpenCV's area resampling is ~4x faster than torch's antialiased bilinear, same purpose.
        import cv2

        small = cv2.resize(np.ascontiguousarray(eye.numpy()), (geo.proc_w, geo.proc_h), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(small)
    x = eye.permute(2, 0, 1).unsqueeze(0).float()
    y = F.interpolate(x, size=(geo.proc_h, geo.proc_w), mode="bilinear", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0).contiguous()


class FrameMatter:
    """Mattes people: stereo stage -> refine -> temporal -> composite. Built once per run, reset per chunk."""

    opaque = False

    def __init__(self, cfg: Config, plan: RunPlan, engine, timer: StageTimer) -> None:
        from ..matte.refine import Refiner
        from ..matte.temporal import TemporalSmoother
        from ..quality.monitor import QualityMonitor
        from ..stereo.consistency import StereoStage

        self.cfg, self.plan, self.engine, self.timer = cfg, plan, engine, timer
        self.device = plan.device
        self.geo = plan.geometry
        self.stereo = StereoStage.for_engine(cfg, engine, equirect=plan.equirect)
        self.prompts = getattr(plan, "prompts", None)  # input.prompts (track/prompts.py)
        self.person_trace = None
        if cfg.debugging.person_trace:
            from ..quality.debug import PersonTrace

            self.person_trace = PersonTrace()
        self.stereo.attach(prompts=self.prompts, trace=self.person_trace)
        r = cfg.refine
        # The device policy picks the shape of the work: whole-eye batched ops with no host reads (GPU) or tiles
        # and blocks that skip untouched regions (CPU). Same alpha either way (tests/pipeline/test_frame_path.py).
        self.whole_frame = plan.policy.whole_frame
        self.refiner = Refiner(
            method=r.method if r.enabled else "bilinear", radius_px=r.radius_px, eps=r.eps, erode_px=r.erode_px,
            feather_px=r.feather_px, device=self.device, tile=plan.policy.refine_tile, whole_frame=self.whole_frame,
        )
        smoother = dict(strength=r.temporal_strength, enabled=r.temporal_smoothing, whole_frame=self.whole_frame)
        self.smoothers = {eye: TemporalSmoother(**smoother) for eye in ("left", "right")}
        # processing.parallel_eyes: both eyes as one batch through refine and temporal smoothing (one smoother
        # holds both eyes' state). auto = the policy's whole_frame (GPU), where a batch of two keeps the GPU
        # busier; on the CPU the work is the same either way and the stacked copies only cost memory. The
        # whole-frame path always batches: it takes both eyes as one strided view of the frame, no copy.
        pe = cfg.processing.parallel_eyes
        self.parallel_eyes = self.whole_frame or (bool(pe) if pe != "auto" else False)
        self.pair_smoother = TemporalSmoother(**smoother)
        self.quality = QualityMonitor(every=int(cfg.performance.quality_every))
        self.visualizer = None
        if cfg.debugging.save_detection_visualization:
            from ..quality.debug import DetectionVisualizer

            self.visualizer = DetectionVisualizer(
                plan.out_dir / f"{plan.stem}.detections.mp4", self.geo.proc_w * 2, self.geo.proc_h, plan.info.fps,
                scale=1.0,  # it is fed the processing-resolution eyes, so boxes need no rescaling
            )
        from ..matte.decontaminate import enabled as decontaminate_enabled

        self.packer = make_packer(cfg, plan)
        self.decontaminate = decontaminate_enabled(cfg.refine.decontaminate, plan.output.format)
        self.decontaminated = {"tiles": 0, "band_pixels": 0}
        self.confidence_dir: Path | None = None
        if cfg.debugging.save_confidence_maps:
            self.confidence_dir = plan.out_dir / f"{plan.stem}.confidence"
        self._chunk: Chunk | None = None
        self._prev_overlap: dict | None = None
        self._handoff: ChunkHandoff | None = None

    @property
    def views(self) -> dict:
        return self.stereo.views

    # ---- per chunk ------------------------------------------------------------------------------------------
    def set_geometry(self, geo: Geometry) -> None:
        self.geo = geo

    def reset(self, chunk: Chunk, handoff: ChunkHandoff | None) -> None:
        """Chunk start: tracks from the hand-off (masks resized to this run's processing size), fresh smoothers."""
        self._chunk = chunk
        if handoff is not None:
            handoff = handoff.resized(self.geo.proc_size)
        self._prev_overlap = handoff.overlap if handoff is not None else None
        self.corrections = 0  # stereo corrections in this chunk (the chunk log)
        self.stereo.reset(handoff)
        for s in (*self.smoothers.values(), self.pair_smoother):
            s.reset()
        self._handoff = None

    def handoff(self) -> ChunkHandoff | None:
        """The hand-off captured at the chunk's hand-off frame (overlap masks filled in by the chunk runner)."""
        return self._handoff

    # ---- the two halves -------------------------------------------------------------------------------------
    def segment(self, idx: int, rgb: np.ndarray) -> Segmented:
        chunk, size, tm = self._chunk, self.geo.proc_size, self.timer
        with tm("upload"):
            frame = torch.from_numpy(rgb).to(self.device, non_blocking=True)
            eyes = dict(zip(("left", "right"), self.geo.layout.split(frame)))
        with tm("scale"):
            guides = {eye: proxy8(img) for eye, img in eyes.items()} if frame.dtype != torch.uint8 else {}
            proc = {eye: to_processing(guides.get(eye, img), self.geo) for eye, img in eyes.items()}
        with tm("segment"):
            res = self.stereo.step(idx, proc["left"], proc["right"], account=idx < chunk.write_end,
                                   source=(guides.get("left", eyes["left"]), guides.get("right", eyes["right"])))
        self.last_result = res  # per-person masks of this frame (chunk-parallel mode keeps them for id matching)
        self.corrections += len(res.corrections)
        probs = {"left": res.left.combined(size, self.device).float(),
                 "right": res.right.combined(size, self.device).float()}
        weight = chunk.blend_weight(idx)
        if weight is not None and self._prev_overlap is not None:
            k = idx - chunk.process_start
            for eye in probs:
                prev = resize_prob(self._prev_overlap[eye][k].to(self.device).float() / 255.0, size)
                probs[eye] = (1 - weight) * prev + weight * probs[eye]
        if chunk.handoff_frame == idx:
            self._handoff = self.stereo.handoff(res)
        if self.visualizer is not None:
            with tm("debug"):
                sbs = torch.cat([proc["left"], proc["right"]], dim=1).cpu().numpy()
                self.visualizer.write(sbs, res.left, res.right)
        write = idx < chunk.write_end
        if write and res.agreement:
            self.quality.add_stereo(idx, float(np.mean(list(res.agreement.values()))))
        if write and self.confidence_dir is not None and res.detected:
            from ..quality.debug import save_confidence_map

            self.confidence_dir.mkdir(exist_ok=True)
            for eye, prob in probs.items():
                save_confidence_map(self.confidence_dir / f"{idx:06d}_{eye}.png", prob)
        return Segmented(idx, rgb, write, eyes, probs, res.detected, guides, frame, proc)

    def _alphas(self, seg: Segmented) -> dict:
        """Full-resolution alpha per eye: refine (full-res guide), temporal smoothing and quality sampling (both
        decide on the processing-size eye and touch full resolution only where alpha changes). With parallel_eyes
        both eyes go through as one batch."""
        eyes = ("left", "right")
        guides = {eye: seg.guides.get(eye, seg.eyes[eye]) for eye in eyes}
        small = {eye: seg.proc.get(eye, guides[eye]) for eye in eyes}
        if self.parallel_eyes:
            order, full = self._batch(seg)
            with self.timer("refine"):
                a = self.refiner.refine_batch(torch.stack([seg.probs[e] for e in order]), full)
            with self.timer("temporal"):
                a = self.pair_smoother.step_batch(a, torch.stack([small[e] for e in order]))
            alphas = dict(zip(order, a.unbind(0)))
        else:
            alphas = {}
            for eye in eyes:
                with self.timer("refine"):
                    alpha = self.refiner(seg.probs[eye], guides[eye])
                with self.timer("temporal"):
                    alphas[eye] = self.smoothers[eye].step(alpha, small[eye])
        if self.prompts is not None and self.prompts.has_excludes(seg.index):
            for eye in eyes:  # an excluded region has no alpha at all (refine and smoothing may have spread some)
                keep = self.prompts.keep_mask(seg.index, eye, alphas[eye].shape, alphas[eye].device)
                if keep is not None:
                    alphas[eye] = alphas[eye] * keep.to(alphas[eye].dtype)
        if self.cfg.performance.profile_enabled and self.quality.wants(seg.index):
            for eye in eyes:
                with self.timer("quality"):
                    self.quality.update(eye, seg.index, alphas[eye], small[eye])
        return alphas

    def _batch(self, seg: Segmented) -> tuple[tuple[str, str], torch.Tensor]:
        """The eyes in the frame's storage order and their full-resolution (B=2, H, W, 3) guides: a strided view
        of the decoded frame (no copy) for 8-bit sources, stacked 8-bit proxies for >8-bit ones."""
        order = ("left", "right") if self.geo.layout.left_first else ("right", "left")
        if seg.guides:
            return order, torch.stack([seg.guides[e] for e in order])
        return order, eye_stack(self.geo.layout, seg.frame)

    def finish(self, seg: Segmented) -> dict:
        """Full-resolution alpha and the output images: ``{eye or None: (H, W, C) numpy}``."""
        from ..matte.composite import channels, compose

        alphas = self._alphas(seg)
        out = self.plan.output
        if self.decontaminate:
            from ..matte.decontaminate import decontaminate

            with self.timer("decontaminate"):
                for eye in ("left", "right"):  # in place: the decoded frame is not needed after this
                    _, rep = decontaminate(seg.eyes[eye], alphas[eye])
                    for k, v in rep.items():
                        self.decontaminated[k] += v
        if self.packer is not None:
            with self.timer("composite"):
                packed = self.packer(seg.eyes["left"], seg.eyes["right"], alphas["left"], alphas["right"])
                return {None: packed.cpu().numpy()}
        c = self.cfg
        kw = dict(mode=c.output.format, background=tuple(c.output.background_color), premultiplied=c.refine.premultiplied)
        with self.timer("composite"):
            if out.maintain_sbs and self.whole_frame:
                # Both eyes in one compose over strided (2, H, W, C) views of the decoded and the output frame:
                # no per-eye call, no joined alpha; the finished frame comes down once.
                frame = torch.empty((*seg.frame.shape[:2], channels(c.output.format)),
                                    dtype=seg.frame.dtype, device=seg.frame.device)
                order = ("left", "right") if self.geo.layout.left_first else ("right", "left")
                compose(eye_stack(self.geo.layout, seg.frame), torch.stack([alphas[e] for e in order]),
                        out=eye_stack(self.geo.layout, frame), **kw)
                return {None: frame.cpu().numpy()}
            if out.maintain_sbs:
                # Each eye is composed straight into its view of the output frame: no joined full-frame alpha,
                # no composited eye copied again to join them.
                frame = torch.empty((*seg.frame.shape[:2], channels(c.output.format)),
                                    dtype=seg.frame.dtype, device=seg.frame.device)
                for eye, view in zip(("left", "right"), self.geo.layout.split(frame)):
                    compose(seg.eyes[eye], alphas[eye], out=view, **kw)
                return {None: frame.cpu().numpy()}
            return {eye: compose(seg.eyes[eye], alphas[eye], **kw).contiguous().cpu().numpy()
                    for eye in ("left", "right")}

    # ---- end of run -----------------------------------------------------------------------------------------
    def close(self) -> list[str]:
        """Close debug outputs; returns their names (relative to the output folder)."""
        names = []
        if self.person_trace is not None:
            name = f"{self.plan.stem}.persons.tsv"
            self.person_trace.write_table(self.plan.out_dir / name)
            names.append(name)
        if self.visualizer is None:
            return names
        self.visualizer.close()
        return [f"{self.plan.stem}.detections.mp4", *names]

    def report(self) -> dict:
        stats = {
            "stereo": self.stereo.report(),
            "quality": self.quality.summary(),
            "tracks": {eye: dict(v.stats) for eye, v in self.views.items()},
            "decontaminate": {"enabled": self.decontaminate, **self.decontaminated},
        }
        if self.prompts is not None:
            stats["prompts"] = {"file": self.prompts.path, "entries": len(self.prompts.entries), **self.prompts.stats}
        if self.person_trace is not None:
            stats["person_trace"] = self.person_trace.summary()
        kpi = getattr(self.engine, "kpi_summary", None)
        if callable(kpi):
            stats["kpi"] = kpi()
            if self.device.type == "cuda" and stats["kpi"].get("masks_left_gpu"):
                log.warning("masks left the GPU on %d predicts", stats["kpi"]["masks_left_gpu"])
        return stats


class OpaqueMatter:
    """The passthrough engine: every frame written as decoded, alpha 1 (checks the I/O path end to end)."""

    opaque = True

    def __init__(self, cfg: Config, plan: RunPlan, engine, timer: StageTimer) -> None:
        self.cfg, self.plan, self.engine, self.timer = cfg, plan, engine, timer
        self.geo = plan.geometry
        self._chunk: Chunk | None = None
        self.packer = make_packer(cfg, plan)

    def set_geometry(self, geo: Geometry) -> None:
        self.geo = geo

    def reset(self, chunk: Chunk, handoff: ChunkHandoff | None) -> None:
        self._chunk = chunk

    def handoff(self) -> ChunkHandoff | None:
        return ChunkHandoff()

    def segment(self, idx: int, rgb: np.ndarray) -> Segmented:
        return Segmented(idx, rgb, idx < self._chunk.write_end)

    def finish(self, seg: Segmented) -> dict:
        rgb = seg.rgb
        if self.packer is not None:
            left, right = self.geo.layout.split(torch.from_numpy(rgb))
            one = torch.ones(left.shape[:2])
            return {None: self.packer(left, right, one, one).cpu().numpy()}
        if self.plan.output.codec.alpha:
            rgba = np.empty((*rgb.shape[:2], 4), dtype=rgb.dtype)
            rgba[..., :3] = rgb
            rgba[..., 3] = np.iinfo(rgb.dtype).max
            rgb = rgba
        if self.plan.output.maintain_sbs:
            return {None: rgb}
        left, right = self.geo.layout.split(rgb)
        return {"left": np.ascontiguousarray(left), "right": np.ascontiguousarray(right)}

    def close(self) -> list[str]:
        return []

    def report(self) -> dict:
        return {}


def make_frame_matter(cfg: Config, plan: RunPlan, engine, timer: StageTimer):
    """The matter for ``engine``: an engine that declares ``opaque = True`` (passthrough) gets alpha 1."""
    cls = OpaqueMatter if getattr(engine, "opaque", False) else FrameMatter
    return cls(cfg, plan, engine, timer)
