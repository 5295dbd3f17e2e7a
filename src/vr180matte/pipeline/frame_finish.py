"""The finish half of the frame matter: a segmented frame in, the output images out.

Refine to full-resolution alpha, temporal smoothing, quality sampling, colour decontamination, composite (or the
passthrough packing). Stateful per chunk (the temporal smoothers), and apart from the segment half
(pipeline/frame_segment.py) so the chunk runner can run the two in separate threads. The chunk-parallel seams
run this half alone, on blended probabilities instead of a model's.
"""
from __future__ import annotations

import numpy as np
import torch

from ..config import Config
from ..runtime.profile import StageTimer
from .frame_segment import Segmented
from .plan import RunPlan


def eye_stack(layout, frame: torch.Tensor) -> torch.Tensor:
    """(2, H, W, C) view of a contiguous stereo frame, eyes in storage order (first = left for sbs/tb): both eyes
    of the SBS frame as one batch with no copy (a side-by-side frame is (H, 2, W, C) in memory)."""
    if layout.axis == 1:
        return frame.unflatten(1, (2, frame.shape[1] // 2)).movedim(1, 0)
    return frame.unflatten(0, (2, frame.shape[0] // 2))


def storage_order(layout) -> tuple[str, str]:
    """The eyes in the order :func:`eye_stack` gives them (storage order: first = left for sbs/tb)."""
    return ("left", "right") if layout.left_first else ("right", "left")


def make_packer(cfg: Config, plan: RunPlan):
    """The passthrough packer for ``output.format: passthrough`` (None otherwise)."""
    if plan.output.format != "passthrough":
        return None
    from ..matte.fisheye import PassthroughPacker

    src_fov = plan.info.fov_deg if plan.info.projection == "equirectangular" and plan.info.fov_deg else 180.0
    return PassthroughPacker(plan.output.height, int(cfg.output.fisheye_fov), src_fov_deg=float(src_fov),
                             device=plan.device)


class FrameFinisher:
    """Refiner, temporal smoothers, decontamination and compositing of one run. ``quality`` is the run's monitor
    (shared with the segment half); ``prompts``: input.prompts, whose excluded regions get no alpha."""

    def __init__(self, cfg: Config, plan: RunPlan, timer: StageTimer, quality, prompts=None) -> None:
        from ..matte.decontaminate import enabled as decontaminate_enabled
        from ..matte.refine import Refiner
        from ..matte.temporal import TemporalSmoother

        self.cfg, self.plan, self.timer, self.quality, self.prompts = cfg, plan, timer, quality, prompts
        self.device = plan.device
        self.geo = plan.geometry
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
        self.packer = make_packer(cfg, plan)
        self.decontaminate = decontaminate_enabled(cfg.refine.decontaminate, plan.output.format)
        self.decontaminated = {"tiles": 0, "band_pixels": 0}
        # Straight alpha with the source's colour: the output is the decoded frame plus an alpha plane, handed to
        # the writer apart (io/picture.py), so no RGBA frame is built here (premultiplied or decontaminated colour
        # is new colour, and takes the compose path)
        self.straight = (plan.output.format == "alpha" and not cfg.refine.premultiplied and not self.decontaminate
                         and self.packer is None)

    def reset(self) -> None:
        """Chunk start: fresh smoothers."""
        for s in (*self.smoothers.values(), self.pair_smoother):
            s.reset()

    def alphas(self, seg: Segmented) -> dict:
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
        order = storage_order(self.geo.layout)
        if seg.guides:
            return order, torch.stack([seg.guides[e] for e in order])
        return order, eye_stack(self.geo.layout, seg.frame)

    def finish(self, seg: Segmented) -> dict:
        """Full-resolution alpha and the output images: ``{eye or None: (H, W, C) numpy}``, or for straight alpha
        ``{eye or None: RgbAlpha}`` (the decoded colour and the alpha plane apart, io/picture.py)."""
        from ..matte.composite import channels, compose

        alphas = self.alphas(seg)
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
        if self.straight:
            with self.timer("composite"):
                return straight_outputs(self.geo.layout, seg.rgb, alphas, whole_frame=self.whole_frame,
                                        maintain_sbs=self.plan.output.maintain_sbs)
        c = self.cfg
        kw = dict(mode=c.output.format, background=tuple(c.output.background_color), premultiplied=c.refine.premultiplied)
        with self.timer("composite"):
            if out.maintain_sbs and self.whole_frame:
                # Both eyes in one compose over strided (2, H, W, C) views of the decoded and the output frame:
                # no per-eye call, no joined alpha; the finished frame comes down once.
                frame = torch.empty((*seg.frame.shape[:2], channels(c.output.format)),
                                    dtype=seg.frame.dtype, device=seg.frame.device)
                order = storage_order(self.geo.layout)
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


def straight_outputs(layout, rgb: np.ndarray, alphas: dict, *, whole_frame: bool, maintain_sbs: bool) -> dict:
    """Straight-alpha outputs ``{eye or None: RgbAlpha}``: the decoded frame ``rgb`` (or its eye views) with the
    alpha levels beside it, the alpha plane being the frame's one download. The pixels :func:`compose` gives."""
    from ..io.picture import RgbAlpha
    from ..matte.composite import straight_alpha

    dtype = torch.uint8 if rgb.dtype == np.uint8 else torch.uint16
    if not maintain_sbs:
        return {eye: RgbAlpha(view, straight_alpha(alphas[eye], dtype).cpu().numpy())
                for eye, view in zip(("left", "right"), layout.split(rgb))}
    plane = torch.empty(rgb.shape[:2], dtype=dtype, device=alphas["left"].device)
    if whole_frame:  # both eyes in one op over the (2, H, W) view of the plane
        order = storage_order(layout)
        straight_alpha(torch.stack([alphas[e] for e in order]), dtype, out=eye_stack(layout, plane))
    else:
        for eye, view in zip(("left", "right"), layout.split(plane)):
            straight_alpha(alphas[eye], dtype, out=view)
    return {None: RgbAlpha(rgb, plane.cpu().numpy())}
