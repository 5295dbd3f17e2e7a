"""The frame matter: one decoded stereo frame in, the output images out.

Two halves, so the chunk runner can overlap them in separate threads (each half keeps its own sequential state):

* :meth:`FrameMatter.segment` — split the eyes, scale to processing size, detect/track/segment both eyes (the
  stereo stage), blend the overlap with the previous chunk. Stateful per chunk (tracks, segmenter memory).
  The work is :class:`~vr180matte.pipeline.frame_segment.FrameSegmenter`'s (pipeline/frame_segment.py).
* :meth:`FrameMatter.finish` — refine to full-resolution alpha, temporal smoothing, quality sampling, composite.
  Stateful per chunk (the temporal smoother). The work is
  :class:`~vr180matte.pipeline.frame_finish.FrameFinisher`'s (pipeline/frame_finish.py).

:class:`FrameMatter` stays the one object the runners hold: it builds the two halves, hands them the run's
quality monitor (both halves add to it), keeps them on the same geometry and assembles the run's report.
:class:`OpaqueMatter` is the passthrough engine's matter: the frame with alpha 1, nothing segmented.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..config import Config
from ..forward import Forward
from ..runtime.chunks import Chunk
from ..runtime.profile import StageTimer
from ..stereo.handoff import ChunkHandoff
from .frame_finish import FrameFinisher, eye_stack, make_packer  # noqa: F401 - eye_stack re-exported
from .frame_segment import (  # noqa: F401 - re-exported: the runners and tests import them from here
    OVERLAP_STORE_SIDE,
    FrameSegmenter,
    Segmented,
    proxy8,
    resize_prob,
    small_prob,
    to_processing,
)
from .plan import Geometry, RunPlan

log = logging.getLogger(__name__)


class FrameMatter:
    """Mattes people: stereo stage -> refine -> temporal -> composite. Built once per run, reset per chunk."""

    opaque = False

    # What the halves own, still readable (and settable) on the matter, where the runners and tests look.
    stereo = Forward("segmenter.stereo")
    person_trace = Forward("segmenter.person_trace")
    visualizer = Forward("segmenter.visualizer")
    confidence_dir = Forward("segmenter.confidence_dir")
    corrections = Forward("segmenter.corrections")  # stereo corrections in this chunk (the chunk log)
    last_result = Forward("segmenter.last_result")  # per-person masks of the last frame (chunk-parallel id matching)
    whole_frame = Forward("finisher.whole_frame")
    refiner = Forward("finisher.refiner")
    smoothers = Forward("finisher.smoothers")
    pair_smoother = Forward("finisher.pair_smoother")
    parallel_eyes = Forward("finisher.parallel_eyes")
    packer = Forward("finisher.packer")
    decontaminate = Forward("finisher.decontaminate")
    decontaminated = Forward("finisher.decontaminated")

    def __init__(self, cfg: Config, plan: RunPlan, engine, timer: StageTimer) -> None:
        from ..quality.monitor import QualityMonitor

        self.cfg, self.plan, self.engine, self.timer = cfg, plan, engine, timer
        self.device = plan.device
        self.quality = QualityMonitor(every=int(cfg.performance.quality_every))
        self.segmenter = FrameSegmenter(cfg, plan, engine, timer, self.quality)
        self.finisher = FrameFinisher(cfg, plan, timer, self.quality, prompts=self.segmenter.prompts)
        self.geo = plan.geometry

    @property
    def geo(self) -> Geometry:
        return self._geo

    @geo.setter
    def geo(self, geo: Geometry) -> None:
        # Both halves work at the run's (possibly lowered, after an out-of-memory retry) processing geometry.
        self._geo = self.segmenter.geo = self.finisher.geo = geo

    @property
    def prompts(self):
        """input.prompts (track/prompts.py): the segment half prompts with it, the finish half clears excludes."""
        return self.segmenter.prompts

    @prompts.setter
    def prompts(self, prompts) -> None:
        self.segmenter.prompts = self.finisher.prompts = prompts

    @property
    def views(self) -> dict:
        return self.segmenter.views

    # ---- per chunk ------------------------------------------------------------------------------------------
    def set_geometry(self, geo: Geometry) -> None:
        self.geo = geo

    def reset(self, chunk: Chunk, handoff: ChunkHandoff | None) -> None:
        """Chunk start: tracks from the hand-off (masks resized to this run's processing size), fresh smoothers."""
        self.segmenter.reset(chunk, handoff)
        self.finisher.reset()

    def handoff(self) -> ChunkHandoff | None:
        """The hand-off captured at the chunk's hand-off frame (overlap masks filled in by the chunk runner)."""
        return self.segmenter.handoff()

    # ---- the two halves -------------------------------------------------------------------------------------
    def segment(self, idx: int, rgb: np.ndarray) -> Segmented:
        return self.segmenter.segment(idx, rgb)

    def finish(self, seg: Segmented) -> dict:
        """Full-resolution alpha and the output images: ``{eye or None: (H, W, C) numpy}``."""
        return self.finisher.finish(seg)

    # ---- end of run -----------------------------------------------------------------------------------------
    def close(self) -> list[str]:
        """Close debug outputs; returns their names (relative to the output folder)."""
        return self.segmenter.close()

    def report(self) -> dict:
        """The chunk's/run's report: both halves' counters and the engine's KPIs, assembled here where all three
        meet (and the KPI warning keeps this module's logger)."""
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
        self._opaque: tuple | None = None  # ((H, W), dtype) -> the read-only all-opaque alpha plane of that frame

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
            # the decoded frame and an opaque alpha plane apart (io/picture.py), as the matting path hands
            # straight alpha over: no RGBA copy of the frame; the plane is made once and only read
            from ..io.picture import RgbAlpha

            key = (rgb.shape[:2], rgb.dtype)
            if self._opaque is None or self._opaque[0] != key:
                plane = np.full(rgb.shape[:2], np.iinfo(rgb.dtype).max, dtype=rgb.dtype)
                plane.flags.writeable = False
                self._opaque = (key, plane)
            alpha = self._opaque[1]
            if self.plan.output.maintain_sbs:
                return {None: RgbAlpha(rgb, alpha)}
            return {eye: RgbAlpha(view, a) for eye, view, a in
                    zip(("left", "right"), self.geo.layout.split(rgb), self.geo.layout.split(alpha))}
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
