"""The stereo stage: the same people, with the same ids and matching edges, in both eyes.

A VR viewer fuses the two eyes; a person whose matte differs between them (a missing hand in one eye, a
different id, a mask edge a few pixels off) shows as shimmer or a ghost edge. This stage drives the two per-eye
:class:`~vr180matte.track.view_matter.ViewMatter` loops and couples them:

* ``independent``: each eye detects and segments on its own (the baseline; validated and reported, never
  corrected, so the benchmark shows what coupling buys).
* ``master_slave``: the left eye detects and segments; each new left track seeds the right eye at once with the
  left mask shifted by the person's measured disparity, under the same id. The right eye never starts tracks of
  its own; its tracks follow the segmenter and are re-seeded only by a correction or when lost.
* ``joint``: the detector runs once on the whole SBS frame; boxes are split to the eyes (a box cut by the eye
  border is clipped to each eye that holds at least 30% of it), left/right boxes are paired (same vertical extent,
  horizontal offset within the disparity range), the left eye starts tracks from its boxes and each new track
  seeds the right eye under the same id with its paired right box.

Every frame, for every person, the right mask is mapped back by the (smoothed) disparity and compared with the
left mask (IoU = "agreement"). Below ``stereo.validation_threshold`` the stage corrects per
``stereo.correction_method``: ``transfer`` (the weaker eye's mask is replaced by the stronger's, shifted),
``reprocess`` (the same, and the weaker eye's segmenter is re-prompted with it so the following frames recover
too), ``ensemble`` (both eyes get the strength-weighted average of the two aligned masks). The weaker eye is the
one whose mask area changed more against the person's agreed area on the previous frame, times the segmenter
score (an eye that suddenly lost a limb is the broken one). Persons that pass validation in the coupled modes get
both eyes' aligned probabilities averaged (``fuse_edges``, on by default) so the two eyes carry the same edge:
independent segmenter noise at the edges is exactly the shimmer a viewer sees.

Memory is bounded: per person only the smoothed disparity and last agreed area are kept; report statistics are
running sums; the correction log is capped.

The stage is the owner that composes one part per responsibility, each in its own module: the modes
(stereo/modes.py), detection for both eyes and its schedule (stereo/detection.py), validation
(stereo/validation.py) and correction (stereo/correction.py), the manual override file (stereo/overrides.py) and
the run report (stereo/tally.py). The names other modules import from here are re-exported below.
"""
from __future__ import annotations

from typing import Any

import torch

from ..config import Config
from ..forward import Forward
from ..engines.base import Detector
from .correction import METHODS  # config.py names consistency:METHODS
from .detection import StereoDetection
from .disparity import measure_disparities_with
from .equirect import EquirectDetector
from .follow import PriorFollower
from .handoff import ChunkHandoff
from .modes import make_mode
from .overrides import StereoOverrides
from .pairing import pair_boxes, split_sbs_detections
from .result import StereoResult, mask_iou
from .tally import StereoTally
from .validation import StereoValidator

__all__ = ["StereoResult", "StereoStage", "split_sbs_detections", "pair_boxes", "mask_iou", "METHODS"]


def _prefetch(left: Any, right: Any, frame_idx: int, left_img: torch.Tensor, right_img: torch.Tensor,
              detect_now: bool) -> None:
    """processing.parallel_eyes: both eyes' image encoder in one batch before the views step (the views still
    step one after the other, as the right eye may be seeded from the left's mask of this frame)."""
    ls, rs = getattr(left, "segmenter", None), getattr(right, "segmenter", None)
    hook = getattr(ls, "prefetch_batch", None)
    if hook is None or type(ls) is not type(rs):
        return
    if not (left.live_ids or right.live_ids or detect_now):
        return  # nobody to segment: no encoder run, as without batching
    hook([ls, rs], frame_idx, [left_img, right_img])


class StereoStage:
    """Couples the left and right :class:`ViewMatter` of one video; see the module docstring.

    ``detector``: when given, the stage runs detection itself (every ``detection.detect_interval`` frames and on
    the first frame after :meth:`reset`), wrapped in :class:`EquirectDetector` when ``detection.equirect_crops`` is
    on, and hands the boxes to the views; the views' own detectors are then never used. When None, the views run
    their own detectors (``joint`` mode then needs one and raises).
    """

    def __init__(self, cfg: Config, left: Any, right: Any, detector: Detector | None,
                 equirect_detector: EquirectDetector | None = None, fuse_edges: bool = True) -> None:
        self.mode = str(cfg.stereo.consistency_mode)
        self.strategy = make_mode(self.mode)
        # Built before the detector check so a bad stereo.correction_method is reported first (StereoCorrector).
        # measure_disparities_with is passed from here: this module's name is the one tests swap to count the batched
        # calls (tests/stereo/test_disparity.py).
        self.validator = StereoValidator(cfg, self, fuse_edges, measure=measure_disparities_with)
        if self.strategy.needs_detector and detector is None:
            raise ValueError(f"stereo.consistency_mode={self.mode} needs an engine with a person detector; "
                             "use stereo.consistency_mode=master_slave with this engine")
        self.max_disp_frac = float(cfg.stereo.max_disparity_frac)
        self.use_mapping = bool(cfg.matting.use_disparity_mapping)
        # processing.parallel_eyes (auto is resolved by for_engine from the engine's device; off here)
        self.parallel_eyes = cfg.processing.parallel_eyes is True
        self.left, self.right = left, right
        self.detection = StereoDetection(cfg, self, detector, equirect_detector)
        self.tally = StereoTally()
        self.overrides = StereoOverrides(cfg, self)
        # detection.follow_small: box-prior tracks re-found by the detector between detection frames (follow.py)
        self.follower = PriorFollower(detector) if cfg.detection.follow_small and PriorFollower.usable(detector) \
            else None
        self.prompts = None  # the input.prompts file (track/prompts.py), set by attach()
        self.trace = None  # debugging.person_trace (quality/debug.py PersonTrace), set by attach()

    def attach(self, prompts=None, trace=None) -> None:
        """Give the stage (and both views) the manual override file and/or the person trace."""
        self.prompts, self.trace = prompts, trace
        for view in (self.left, self.right):
            view.prompts, view.trace = prompts, trace

    @classmethod
    def for_engine(cls, cfg: Config, engine: Any, ids: Any = None, equirect: bool = True) -> "StereoStage":
        """The stage with its two views built from ``engine`` (one segmenter per eye, one shared id allocator).

        The stage owns the views and the one detection schedule: the engine's detector runs here (every
        ``detection.detect_interval`` frames and on each chunk's first frame) and the boxes go to the views.
        """
        from ..track.ids import IdAllocator
        from ..track.view_matter import ViewMatter

        ids = ids if ids is not None else IdAllocator()
        m, d = cfg.matting, cfg.detection
        kw = dict(
            detect_interval=d.detect_interval, iou_threshold=m.track_iou_threshold, max_missed=m.track_max_missed,
            max_persons=d.max_persons, ids=ids, drift_iou=m.track_drift_iou, min_mask_area=m.track_min_mask_area,
            confirm_end_runs=m.track_confirm_end_runs,
        )
        views = [ViewMatter(eye, engine.make_segmenter(eye), None, **kw) for eye in ("left", "right")]
        detector = engine.make_detector()
        crops = cfg.detection.equirect_crops
        use_crops = detector is not None and (equirect if crops == "auto" else bool(crops))
        stage = cls(cfg, views[0], views[1], detector, fuse_edges=cfg.stereo.fuse_edges,
                    equirect_detector=EquirectDetector(detector) if use_crops else None)
        if not use_crops:
            stage.equirect = None
        stage.ids = ids
        if cfg.processing.parallel_eyes == "auto":  # a batch of two pays off on a GPU, not on the CPU
            stage.parallel_eyes = torch.device(getattr(engine, "device", "cpu")).type == "cuda"
        return stage

    @property
    def views(self) -> dict[str, Any]:
        return {"left": self.left, "right": self.right}

    # What modes.py, follow.py, the pipeline and tests reach through the stage; each belongs to one part.
    detector = Forward("detection.detector")
    equirect = Forward("detection.equirect")
    source = Forward("detection.source")
    vouching = Forward("detection.vouching")
    is_detection_frame = Forward("detection.is_detection_frame")
    detect_eye = Forward("detection.detect_eye")
    detect_eyes = Forward("detection.detect_eyes")
    detect_lead = Forward("detection.detect_lead")
    detect_joint = Forward("detection.detect_joint")
    view_kwargs = Forward("detection.view_kwargs")
    smoother = Forward("validator.disparities.smoother")
    disparity = Forward("validator.disparities.disparity")
    seed_disparities = Forward("validator.disparities.seed_disparities")
    validate = Forward("validator.validate")
    forget = Forward("validator.forget")
    result = Forward("tally.result")

    # ------------------------------------------------------------------ public API
    def reset(self, left_handoff=None, right_handoff=None, state: dict | None = None) -> None:
        """Chunk start: reset both views (with their hand-offs) and restore the smoothed disparities.

        ``left_handoff`` may be a whole :class:`ChunkHandoff` (what the pipeline passes), or None for a fresh start.
        """
        if isinstance(left_handoff, ChunkHandoff):
            h = left_handoff
            left_handoff, right_handoff = h.left, h.right
            state = {"disparity": h.disparity, "ref_area": h.ref_area}
            ids = getattr(self, "ids", None)
            if ids is not None:
                ids.observe(int(h.next_id) - 1)
        self.left.reset(left_handoff)
        self.right.reset(right_handoff)
        self.validator.load(state)
        self.detection.reset()

    def state(self) -> dict:
        """Picklable hand-off: ``{"disparity": {id: (value, velocity)}, "ref_area": {id: area}}``."""
        return self.validator.state()

    def handoff(self, res: StereoResult) -> ChunkHandoff:
        """The :class:`ChunkHandoff` for the next chunk, taken at the frame whose result is ``res``."""
        lh = self.left.handoff(res.left)
        return ChunkHandoff(next_id=int(lh.next_id), left=lh, right=self.right.handoff(res.right),
                            **self.validator.state())

    def step(self, frame_idx: int, left_img: torch.Tensor, right_img: torch.Tensor, *, account: bool = True,
             source: tuple[torch.Tensor, torch.Tensor] | None = None) -> StereoResult:
        """Process one stereo frame: both views, coupled per mode, validated and corrected.

        ``account=False`` leaves the frame out of :meth:`report` (the pipeline passes it for the overlap frames a
        chunk processes only to hand them to the next chunk, which processes and reports them again).
        ``source``: the (left, right) eyes at source resolution (8-bit), for the detector (stereo/source_detect.py).
        """
        self.source.set((left_img, right_img), source)
        eye_w = int(left_img.shape[1])
        self.max_disp = max(1, int(round(self.max_disp_frac * eye_w)))
        detect_now = self.detection.next_frame(frame_idx)
        if self.prompts is not None:
            self.overrides.add(frame_idx, left_img, right_img)
        if self.follower is not None and not detect_now:
            self.follower.follow(self, frame_idx, left_img, right_img)
        if self.parallel_eyes:
            _prefetch(self.left, self.right, frame_idx, left_img, right_img, detect_now)
        res = self.strategy.step(self, frame_idx, left_img, right_img, detect_now)
        if self.prompts is not None and self.prompts.has_excludes(frame_idx):
            # after correction: a mask moved over from the other eye is excluded too
            self.overrides.exclude(frame_idx, res)
        res.detected = detect_now
        if account:
            self.tally.account(res, self.trace)
        return res

    def report(self) -> dict:
        """The stats.json ``stereo`` block (since construction, over all chunks)."""
        return self.tally.report(self)
