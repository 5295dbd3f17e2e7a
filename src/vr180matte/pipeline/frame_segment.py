"""The segment half of the frame matter: a decoded stereo frame in, each eye's person probability out.

Split the eyes, scale them to the processing size, detect/track/segment both eyes (the stereo stage), blend the
overlap with the previous chunk. Stateful per chunk (tracks, segmenter memory, the chunk's hand-off), and apart
from the finish half (pipeline/frame_finish.py) so the chunk runner can run the two in separate threads: all
the state this half keeps is here, none of it is touched by the other half.

:class:`Segmented` is what this half hands to the finish half; the small-tensor helpers are also used by the
chunk runners (the overlap store, the chunk-parallel seams).
"""
from __future__ import annotations

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


def to_processing(eye: torch.Tensor, geo: Geometry, host_resize: bool = True) -> torch.Tensor:
    """(H, W, 3) eye -> (proc_h, proc_w, 3) uint8 on the same device (area-style antialiased resize); by OpenCV
    when ``host_resize`` (the device policy's choice) and the eye is on the host, else by torch."""
    if eye.dtype != torch.uint8:  # >8-bit sources: detection and segmentation use an 8-bit proxy
        eye = (eye.float() * (255.0 / 65535.0)).round_().to(torch.uint8)
    if eye.shape[0] == geo.proc_h and eye.shape[1] == geo.proc_w:
        return eye.contiguous()
    if host_resize and eye.device.type == "cpu":
        # On the CPU OpenCV's area resampling is ~4x faster than torch's antialiased bilinear, same purpose.
        import cv2

        small = cv2.resize(np.ascontiguousarray(eye.numpy()), (geo.proc_w, geo.proc_h), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(small)
    x = eye.permute(2, 0, 1).unsqueeze(0).float()
    y = F.interpolate(x, size=(geo.proc_h, geo.proc_w), mode="bilinear", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0).contiguous()


class FrameSegmenter:
    """The stereo stage of one run and its per-chunk state; its debug outputs (person trace, detection video,
    confidence maps). ``quality`` is the run's monitor, shared with the finish half (this half adds the stereo
    agreement)."""

    def __init__(self, cfg: Config, plan: RunPlan, engine, timer: StageTimer, quality) -> None:
        from ..stereo.consistency import StereoStage

        self.plan, self.timer, self.quality = plan, timer, quality
        self.device = plan.device
        self.host_resize = plan.policy.host_resize
        self.geo = plan.geometry
        self.stereo = StereoStage.for_engine(cfg, engine, equirect=plan.equirect)
        self.prompts = getattr(plan, "prompts", None)  # input.prompts (track/prompts.py)
        self.person_trace = None
        if cfg.debugging.person_trace:
            from ..quality.debug import PersonTrace

            self.person_trace = PersonTrace()
        self.stereo.attach(prompts=self.prompts, trace=self.person_trace)
        self.visualizer = None
        if cfg.debugging.save_detection_visualization:
            from ..quality.debug import DetectionVisualizer

            self.visualizer = DetectionVisualizer(
                plan.out_dir / f"{plan.stem}.detections.mp4", self.geo.proc_w * 2, self.geo.proc_h, plan.info.fps,
                scale=1.0,  # it is fed the processing-resolution eyes, so boxes need no rescaling
            )
        self.confidence_dir: Path | None = None
        if cfg.debugging.save_confidence_maps:
            self.confidence_dir = plan.out_dir / f"{plan.stem}.confidence"
        self._chunk: Chunk | None = None
        self._prev_overlap: dict | None = None
        self._handoff: ChunkHandoff | None = None

    @property
    def views(self) -> dict:
        return self.stereo.views

    def reset(self, chunk: Chunk, handoff: ChunkHandoff | None) -> None:
        """Chunk start: tracks from the hand-off (masks resized to this run's processing size)."""
        self._chunk = chunk
        if handoff is not None:
            handoff = handoff.resized(self.geo.proc_size)
        self._prev_overlap = handoff.overlap if handoff is not None else None
        self.corrections = 0  # stereo corrections in this chunk (the chunk log)
        self.stereo.reset(handoff)
        self._handoff = None

    def handoff(self) -> ChunkHandoff | None:
        """The hand-off captured at the chunk's hand-off frame (overlap masks filled in by the chunk runner)."""
        return self._handoff

    def segment(self, idx: int, rgb: np.ndarray) -> Segmented:
        chunk, size, tm = self._chunk, self.geo.proc_size, self.timer
        with tm("upload"):
            frame = torch.from_numpy(rgb).to(self.device, non_blocking=True)
            eyes = dict(zip(("left", "right"), self.geo.layout.split(frame)))
        with tm("scale"):
            guides = {eye: proxy8(img) for eye, img in eyes.items()} if frame.dtype != torch.uint8 else {}
            proc = {eye: to_processing(guides.get(eye, img), self.geo, self.host_resize) for eye, img in eyes.items()}
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
