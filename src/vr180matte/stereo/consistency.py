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
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..config import Config
from ..engines.base import Detection, Detector, FrameMatte, TrackMask, detect_at
from .disparity import DisparityJob, DisparitySmoother, measure_disparities, measure_disparity, shift_mask
from .equirect import EquirectDetector
from .handoff import ChunkHandoff
from .modes import make_mode
from .follow import PriorFollower
from .source_detect import SourceEyes
from .vouch import Vouching
from ..boxes import iou, mask_box, overlap_small, shift_box

log = logging.getLogger(__name__)

__all__ = ["StereoResult", "StereoStage", "split_sbs_detections", "pair_boxes", "mask_iou"]

METHODS = ("transfer", "reprocess", "ensemble")
_MASK_T = 0.5
_MAX_LOGGED = 1000  # corrections kept verbatim in the report (the count is always exact)
_BORDER_KEEP = 0.3  # a part of an SBS box cut by the eye border is kept if it holds this fraction of the box


@dataclass
class StereoResult:
    left: FrameMatte
    right: FrameMatte
    agreement: dict[int, float]  # per person: IoU of left mask vs right mask mapped back by disparity
    disparity: dict[int, float]  # per person, pixels at processing res (left x minus right x), smoothed
    corrections: list[dict] = field(default_factory=list)
    detected: bool = False  # the detector ran on this frame


def mask_iou(a: torch.Tensor, b: torch.Tensor, thresh: float = _MASK_T) -> float:
    """IoU of two probability masks thresholded at ``thresh`` (1.0 when both are empty)."""
    ma, mb = a > thresh, b > thresh
    union = (ma | mb).sum()
    if int(union) == 0:
        return 1.0
    return float((ma & mb).sum().float() / union.float())


class _Rows:
    """The rows ``[r0, r1)`` of an (H, W) eye outside which a person's masks are exactly zero. ``eye[rows.band]``
    cuts them; :meth:`full` zero-pads such a cut back to the eye, :meth:`box` is its mask box in the eye."""

    def __init__(self, r0: int, r1: int, height: int) -> None:
        self.r0, self.r1, self.height = r0, r1, height
        self.band = slice(r0, r1)

    @classmethod
    def of(cls, *masks: torch.Tensor) -> "_Rows":
        nz = None
        for m in masks:
            r = (m != 0).any(dim=-1)
            nz = r if nz is None else nz | r
        idx = torch.nonzero(nz)
        if idx.numel() == 0:
            return cls(0, 0, int(nz.shape[0]))
        return cls(int(idx[0]), int(idx[-1]) + 1, int(nz.shape[0]))

    def full(self, band: torch.Tensor) -> torch.Tensor:
        if self.r0 == 0 and self.r1 == self.height:
            return band
        out = band.new_zeros((self.height, *band.shape[1:]))
        out[self.band] = band
        return out

    def box(self, band: torch.Tensor) -> np.ndarray | None:
        b = mask_box(band) if band.shape[0] else None
        if b is not None:
            b[[1, 3]] += self.r0
        return b


def split_sbs_detections(dets: list[Detection], eye_w: int) -> tuple[list[Detection], list[Detection]]:
    """Split detections on a left|right SBS frame (width ``2 * eye_w``) into per-eye detections.

    A box cut by the eye border is clipped to each eye holding at least 30% of its width (the two sides of the
    border show different directions, so each substantial part is its own partial person); a smaller sliver is
    dropped, i.e. the box is assigned to the eye holding most of it. Masks, when present, are split the same way.
    """
    left: list[Detection] = []
    right: list[Detection] = []
    for d in dets:
        x0, y0, x1, y1 = (float(v) for v in d.box)
        w = max(x1 - x0, 1e-6)
        frac_left = min(max((eye_w - x0) / w, 0.0), 1.0)
        for side, frac in (("l", frac_left), ("r", 1.0 - frac_left)):
            if frac <= 0.0 or (frac < 1.0 and frac < _BORDER_KEEP):
                continue
            if side == "l":
                box = np.array([x0, y0, min(x1, eye_w), y1], dtype=np.float32)
                mask = None if d.mask is None else d.mask[..., :eye_w]
                left.append(Detection(box=box, score=float(d.score), mask=mask))
            else:
                box = np.array([max(x0, eye_w) - eye_w, y0, x1 - eye_w, y1], dtype=np.float32)
                mask = None if d.mask is None else d.mask[..., eye_w:]
                right.append(Detection(box=box, score=float(d.score), mask=mask))
    return left, right


def pair_boxes(left: list[np.ndarray], right: list[np.ndarray], max_disp: float, min_disp: float = 0.0,
               min_vertical_iou: float = 0.5) -> list[tuple[int, int]]:
    """Pair left-eye and right-eye boxes of the same person.

    A pair needs the same vertical extent (1-D IoU of the y ranges >= ``min_vertical_iou``; equirect stereo has
    ~0 vertical disparity) and a horizontal centre offset (left minus right) within ``[min_disp, max_disp]``
    widened by a quarter of the box width (boxes of partial detections wobble). Among valid pairs the Hungarian
    assignment prefers equal vertical extent, similar width and a small offset.
    """
    if not left or not right:
        return []
    n, m = len(left), len(right)
    cost = np.full((n, m), 1e6)
    for i, a in enumerate(left):
        for j, b in enumerate(right):
            inter = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            union = max(a[3], b[3]) - min(a[1], b[1])
            viou = inter / max(union, 1e-6)
            wa, wb = a[2] - a[0], b[2] - b[0]
            tol = 0.25 * max(wa, wb)
            dx = 0.5 * (a[0] + a[2]) - 0.5 * (b[0] + b[2])
            if viou < min_vertical_iou or not (min_disp - tol <= dx <= max_disp + tol):
                continue
            wratio = min(wa, wb) / max(wa, wb, 1e-6)
            cost[i, j] = (1 - viou) + 0.5 * (1 - wratio) + 0.2 * abs(dx) / max(max_disp, 1.0)
    rows, cols = linear_sum_assignment(cost)
    return [(int(i), int(j)) for i, j in zip(rows, cols) if cost[i, j] < 1e5]


class _Running:
    """Count, sum, min, max of a stream of numbers (bounded memory)."""

    def __init__(self) -> None:
        self.n, self.sum, self.min, self.max = 0, 0.0, math.inf, -math.inf

    def add(self, v: float) -> None:
        self.n += 1
        self.sum += v
        self.min = min(self.min, v)
        self.max = max(self.max, v)

    @property
    def mean(self) -> float | None:
        return self.sum / self.n if self.n else None


class StereoStage:
    """Couples the left and right :class:`ViewMatter` of one video; see the module docstring.

    ``detector``: when given, the stage runs detection itself (every ``detection.detect_interval`` frames and on
    the first frame after :meth:`reset`), wrapped in :class:`EquirectDetector` when ``detection.equirect_crops`` is
    on, and hands the boxes to the views; the views' own detectors are then never used. When None, the views run
    their own detectors (``joint`` mode then needs one and raises).
    """

    def __init__(self, cfg: Config, left: Any, right: Any, detector: Detector | None,
                 equirect_detector: EquirectDetector | None = None, fuse_edges: bool = True) -> None:
        st = cfg.stereo
        self.mode = str(st.consistency_mode)
        self.method = str(st.correction_method)
        self.strategy = make_mode(self.mode)
        if self.method not in METHODS:
            raise ValueError(f"stereo.correction_method={self.method!r}: choose one of {', '.join(METHODS)}")
        if self.strategy.needs_detector and detector is None:
            raise ValueError(f"stereo.consistency_mode={self.mode} needs an engine with a person detector; "
                             "use stereo.consistency_mode=master_slave with this engine")
        self.threshold = float(st.validation_threshold)
        self.max_disp_frac = float(st.max_disparity_frac)
        self.use_mapping = bool(cfg.matting.use_disparity_mapping)
        # Coupled modes: persons that pass validation get the average of both eyes' aligned probabilities, so the
        # two eyes carry the same edge (independent segmenter noise otherwise shimmers between the eyes).
        self.fuse_edges = bool(fuse_edges)
        self._n_fused = 0
        self.detect_interval = int(cfg.detection.detect_interval)
        # processing.parallel_eyes (auto is resolved by for_engine from the engine's device; off here)
        self.parallel_eyes = cfg.processing.parallel_eyes is True
        self.left, self.right = left, right
        self.detector = detector
        self.equirect: EquirectDetector | None = None
        # auto: off here; for_engine turns it on for equirect input (a flat clip's edges are not stretched, and
        # crops there only add false detections and detector time)
        if detector is not None and (cfg.detection.equirect_crops is True or equirect_detector is not None):
            self.equirect = equirect_detector or EquirectDetector(detector)
        self.smoother = DisparitySmoother(float(st.disparity_smoothing))
        self._ref_area: dict[int, float] = {}  # person -> agreed mask area on the last validated frame
        self._first = True
        # Report accumulators (running, bounded).
        self._frames = 0
        self._agree = _Running()
        self._agree_before = _Running()
        self._pl = _Running()
        self._pr = _Running()
        self._mismatch = 0
        self._n_corr = 0
        self._n_reprompt = 0
        self._corr_log: list[dict] = []
        self._disp_sum: dict[int, list[float]] = {}
        self.vouch_ratio = float(st.vouch_ratio)
        self.track_iou = float(cfg.matting.track_iou_threshold)  # a candidate this close to a track is that person
        self._refused: list = []  # master_slave: unsure left boxes the right eye did not vouch for (detect_lead)
        self._vouching: Vouching | None = None  # built on first use: the detector's threshold is final by then
        self.source = SourceEyes()  # this frame's source-resolution eyes: the detector runs on them (source_detect.py)
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
        self.smoother.load((state or {}).get("disparity"))
        self._ref_area = {int(k): float(v) for k, v in (state or {}).get("ref_area", {}).items()}
        self._first = True
        self._refused = []  # per chunk, so a resumed run decides exactly as an uninterrupted one

    def state(self) -> dict:
        """Picklable hand-off: ``{"disparity": {id: (value, velocity)}, "ref_area": {id: area}}``."""
        return {"disparity": self.smoother.state(), "ref_area": dict(self._ref_area)}

    def handoff(self, res: "StereoResult") -> ChunkHandoff:
        """The :class:`ChunkHandoff` for the next chunk, taken at the frame whose result is ``res``."""
        lh = self.left.handoff(res.left)
        return ChunkHandoff(
            next_id=int(lh.next_id), left=lh, right=self.right.handoff(res.right),
            disparity=self.smoother.state(), ref_area=dict(self._ref_area),
        )

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
        detect_now = self.is_detection_frame(frame_idx)
        self._first = False
        if self.prompts is not None:
            self._add_prompted(frame_idx, left_img, right_img)
        if self.follower is not None and not detect_now:
            self.follower.follow(self, frame_idx, left_img, right_img)
        self._prefetch(frame_idx, left_img, right_img, detect_now)
        res = self.strategy.step(self, frame_idx, left_img, right_img, detect_now)
        if self.prompts is not None and self.prompts.has_excludes(frame_idx):
            self._exclude(frame_idx, res)  # after correction: a mask moved over from the other eye is excluded too
        res.detected = detect_now
        if account:
            self._account(res)
        return res

    def _add_prompted(self, frame_idx: int, left_img: torch.Tensor, right_img: torch.Tensor) -> None:
        """The prompts file's ``add`` boxes of this frame: each starts a person (or re-anchors the one tracked in
        that box). A box for one eye is carried to the other by the person's disparity, measured on the box; in the
        coupled modes the left eye leads and the right follows under the same id, as for a detected person."""
        eye_w = int(left_img.shape[1])
        for eye, box in self.prompts.adds(frame_idx, left_img.shape):
            self.prompts.stats["added"] += 1
            boxes = {"left": box, "right": box}
            if eye != "both":
                other = "left" if eye == "right" else "right"
                rect = torch.zeros(left_img.shape[:2], dtype=torch.float32, device=left_img.device)
                x0, y0, x1, y1 = (int(round(float(v))) for v in box)
                rect[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)] = 1.0
                src, dst = (left_img, right_img) if eye == "left" else (right_img, left_img)
                if eye == "left":
                    d, _ = measure_disparity(src, dst, rect, max_disp=self.max_disp)
                else:  # the right eye's box: x_left - x_right = -(what the reversed search finds)
                    d_r, _ = measure_disparity(src, dst, rect, max_disp=self.max_disp // 4 + 1, min_disp=-self.max_disp)
                    d = -d_r
                boxes[other] = shift_box(box, d if eye == "left" else -d, eye_w)
            coupled = self.mode != "independent"
            tid = None
            for view_eye in (("left",) if coupled else ("left", "right")):
                view = self.views[view_eye]
                tid = self._prompt_target(view, boxes[view_eye]) if not coupled or tid is None else tid
                view.reprompt(tid, box=boxes[view_eye], origin="prompt")
                log.info("prompts: frame %d: %s eye box %s -> track %d", frame_idx, view_eye,
                         np.round(boxes[view_eye]).tolist(), tid)
            if coupled and tid in self.right.live_ids:
                self.right.reprompt(tid, box=boxes["right"], origin="prompt")

    def _exclude(self, frame_idx: int, res: "StereoResult") -> None:
        for eye, fm in (("left", res.left), ("right", res.right)):
            for tid, tm in list(fm.tracks.items()):
                keep = self.prompts.keep_mask(frame_idx, eye, tm.prob.shape, tm.prob.device)
                if keep is not None:
                    prob = tm.prob * keep.to(tm.prob.dtype)
                    fm.tracks[tid] = TrackMask(track_id=tid, prob=prob, box=mask_box(prob), score=tm.score)

    def _prompt_target(self, view, box: np.ndarray) -> int:
        """The live track of ``view`` whose box overlaps ``box`` (a user adjusting a person's box), else a new id."""
        best, best_iou = None, self.track_iou
        for tid, t in view.tracks.items():
            ref = t.ref_box()
            if ref is not None and iou(ref, box) >= best_iou:
                best, best_iou = tid, iou(ref, box)
        return best if best is not None else view.ids.new()

    def _prefetch(self, frame_idx: int, left_img: torch.Tensor, right_img: torch.Tensor, detect_now: bool) -> None:
        """processing.parallel_eyes: both eyes' image encoder in one batch before the views step (the views still
        step one after the other, as the right eye may be seeded from the left's mask of this frame)."""
        if not self.parallel_eyes:
            return
        ls, rs = getattr(self.left, "segmenter", None), getattr(self.right, "segmenter", None)
        hook = getattr(ls, "prefetch_batch", None)
        if hook is None or type(ls) is not type(rs):
            return
        if not (self.left.live_ids or self.right.live_ids or detect_now):
            return  # nobody to segment: no encoder run, as without batching
        hook([ls, rs], frame_idx, [left_img, right_img])

    def is_detection_frame(self, frame_idx: int) -> bool:
        """The one detection schedule: the first frame after a reset, then every ``detect_interval`` frames."""
        return self.detector is not None and (self._first or frame_idx % self.detect_interval == 0)

    def report(self) -> dict:
        """The stats.json ``stereo`` block (since construction, over all chunks)."""
        def r(v: float | None) -> float | None:
            return None if v is None or not math.isfinite(v) else round(float(v), 4)

        out = {
            "mode": self.mode,
            "correction_method": self.method,
            "validation_threshold": self.threshold,
            "use_disparity_mapping": self.use_mapping,
            "frames": self._frames,
            "agreement_mean": r(self._agree.mean),
            "agreement_min": r(self._agree.min) if self._agree.n else None,
            "agreement_before_correction_mean": r(self._agree_before.mean),
            "corrections": self._n_corr,
            "reprompts": self._n_reprompt,
            "fuse_edges": self.fuse_edges,
            "fused": self._n_fused,
            "persons_left": {"max": int(self._pl.max) if self._pl.n else 0, "mean": r(self._pl.mean) or 0.0},
            "persons_right": {"max": int(self._pr.max) if self._pr.n else 0, "mean": r(self._pr.mean) or 0.0},
            "id_mismatches": self._mismatch,
            "disparity_px": {str(k): round(s / max(n, 1), 3) for k, (s, n) in sorted(self._disp_sum.items())},
            "correction_log": list(self._corr_log),
            "correction_log_truncated": self._n_corr > len(self._corr_log),
            "source_detections": self.source.used,
            "follow": dict(self.follower.stats) if self.follower is not None else None,
        }
        if self.equirect is not None:
            out["equirect"] = dict(self.equirect.stats)
        if self._vouching is not None:
            out["vouching"] = {"threshold": round(self._vouching.threshold, 4),
                               "floor": round(self._vouching.floor, 4), **self._vouching.stats.as_dict()}
        return out

    # ------------------------------------------------------------------ detection
    @property
    def vouching(self) -> Vouching | None:
        """Stereo vouching (stereo/vouch.py), or None when off (``vouch_ratio`` 1) or the detector has no
        ``threshold=`` argument."""
        if self._vouching is None and self.detector is not None and self.vouch_ratio < 1.0 and \
                getattr(self.detector, "supports_threshold", False):
            thr = float(self.detector.confidence_threshold)
            self._vouching = Vouching(thr, self.vouch_ratio * thr)
        return self._vouching

    def detect_eye(self, img: torch.Tensor, threshold: float | None = None) -> list[Detection]:
        """Detections of one eye at the detector's threshold, or down to ``threshold`` (vouching candidates)."""
        det = self.equirect if self.equirect is not None else self.detector
        found = self.source.detect(det, img, threshold, inner=self.detector)
        return found if found is not None else detect_at(det, img, threshold)

    def _detect_band(self, img: torch.Tensor, around: list[Detection], threshold: float) -> list[Detection]:
        """Detections in the full-width band of rows holding ``around`` (grown by a quarter of the tallest box):
        equirect stereo has no vertical disparity, so a partner lies in those rows. A band as wide as the eye is
        seen at the eye's own detection density (whole-eye pass and tiles alike), so its scores are close to a
        full-eye run's (the context differs), at the cost of the band's tiles only."""
        H = int(img.shape[0])
        margin = 0.25 * max(float(d.box[3] - d.box[1]) for d in around)
        y0 = int(max(0.0, min(float(d.box[1]) for d in around) - margin))
        y1 = int(min(float(H), max(float(d.box[3]) for d in around) + margin + 1))
        y0, y1 = min(y0, max(0, y1 - 32)), max(y1, min(H, y0 + 32))  # at least 32 rows
        self._vouching.stats.band_rows += y1 - y0
        self._vouching.stats.eye_rows += H
        out = []
        found = self.source.detect(self.detector, img, threshold, rows=slice(y0, y1))
        for d in found if found is not None else detect_at(self.detector, img[y0:y1], threshold):
            box = np.asarray(d.box, np.float32).copy()
            box[[1, 3]] += y0
            out.append(Detection(box=box, score=float(d.score), mask=d.mask))
        return out

    def detect_eyes(self, left_img: torch.Tensor, right_img: torch.Tensor
                    ) -> tuple[list[Detection], list[Detection]]:
        """Both eyes detected on their own; a candidate one eye is unsure of survives when the other is sure."""
        v = self.vouching
        if v is None:
            return self.detect_eye(left_img), self.detect_eye(right_img)
        ld, rd = self.detect_eye(left_img, v.floor), self.detect_eye(right_img, v.floor)
        return v.apply(ld, rd, self.max_disp, -self.max_disp / 4)

    def detect_lead(self, left_img: torch.Tensor, right_img: torch.Tensor) -> list[Detection]:
        """The leading (left) eye's detections. The right eye is detected only when the left has a candidate under
        the threshold that is nobody it already tracks (one that would start a track if vouched for): a person
        already tracked needs no vouching, so in a steady scene a detection frame costs one detector run."""
        v = self.vouching
        if v is None:
            return self.detect_eye(left_img)
        ld = self.detect_eye(left_img, v.floor)
        tracked = [t.box for t in self.left.tracks.values() if t.box is not None]
        unsure = [d for d in ld if d.score < v.threshold
                  and not any(iou(d.box, b) >= self.track_iou or overlap_small(d.box, b) >= 0.7 for b in tracked)]
        # A candidate the right eye already refused at the previous detection frame (a poster, a mannequin: the
        # same box again) is not checked again, so a persistent false positive costs one extra run, not one a frame.
        refused_before = [any(iou(d.box, b) >= 0.5 for b in self._refused) for d in unsure]
        new = [d for d, r in zip(unsure, refused_before) if not r]
        self._refused = [d.box for d, r in zip(unsure, refused_before) if r]
        if not new:
            return [d for d in ld if d.score >= v.threshold]  # as without vouching
        v.stats.right_eye_runs += 1
        kept = v.apply(ld, self._detect_band(right_img, new, v.floor), self.max_disp, -self.max_disp / 4)[0]
        kept_ids = {id(d) for d in kept}
        self._refused += [d.box for d in unsure if id(d) not in kept_ids]
        return kept

    def detect_joint(self, left_img: torch.Tensor, right_img: torch.Tensor
                      ) -> tuple[list[Detection], list[Detection], dict[int, int]]:
        """Detect once on the SBS frame, split, add equirect crops per eye, pair. Returns (left, right, pairs)."""
        eye_w = int(left_img.shape[1])
        sbs = torch.cat([left_img, right_img], dim=1)
        v = self.vouching
        floor = v.floor if v is not None else None
        ld, rd = split_sbs_detections(detect_at(self.detector, sbs, floor), eye_w)
        if self.equirect is not None:
            self.equirect.stats["calls"] += 1
            ld = self.equirect.merge(ld, self.equirect.detect_crops(left_img, floor))
            rd = self.equirect.merge(rd, self.equirect.detect_crops(right_img, floor))
        if v is not None:
            ld, rd = v.apply(ld, rd, self.max_disp, -self.max_disp / 4)
        pairs = dict(pair_boxes([d.box for d in ld], [d.box for d in rd], self.max_disp, -self.max_disp / 4))
        # A person found only in the right eye still gets a left detection (its box moved by the typical offset),
        # so the left eye starts the track and both eyes share its id.
        offsets = [0.5 * (ld[i].box[0] + ld[i].box[2] - rd[j].box[0] - rd[j].box[2]) for i, j in pairs.items()]
        off = float(np.median(offsets)) if offsets else 0.0
        paired_r = set(pairs.values())
        for j, d in enumerate(rd):
            if j in paired_r:
                continue
            box = shift_box(d.box, -off, eye_w)
            ld.append(Detection(box=box, score=float(d.score)))
            pairs[len(ld) - 1] = j
        return ld, rd, pairs

    def view_kwargs(self, detect_now: bool, dets: list[Detection] | None) -> dict:
        if self.detector is None:
            return {}  # the view follows its own detector and interval
        if detect_now:
            return {"detections": dets if dets is not None else [], "run_detector": False}
        return {"run_detector": False}

    # ------------------------------------------------------------------ validation and correction
    def disparity(self, tid: int, left_img, right_img, left_prob, prior: float | None) -> float:
        """Measure this frame's disparity of ``tid`` and return the smoothed value."""
        p = self.smoother.predict(tid)
        d, conf = measure_disparity(left_img, right_img, left_prob, max_disp=self.max_disp,
                                    prior=p if p is not None else prior)
        return self.smoother.update(tid, d, conf)

    def _measure_all(self, ids, left_img, right_img, lm: FrameMatte, rm: FrameMatte, skip: set[int]) -> dict:
        """This frame's disparity measurement ``{tid: (d, confidence)}`` of every person :meth:`validate` measures,
        in one batched call (stereo/disparity.py ``measure_disparities``: three downloads a frame, not about ten
        per person). A person seen by the left eye is searched left to right; one only the right eye has, right to
        left (its ``d`` is negated by the caller). The prior is the smoother's prediction, as one by one."""
        jobs, tids = [], []
        for tid in ids:
            lt, rt = lm.tracks.get(tid), rm.tracks.get(tid)
            if tid in skip:
                continue
            p = self.smoother.predict(tid)
            if lt is not None and lt.box is not None:
                jobs.append(DisparityJob(left_img, right_img, lt.prob, self.max_disp, prior=p))
            elif rt is not None and rt.box is not None:
                jobs.append(DisparityJob(right_img, left_img, rt.prob, self.max_disp // 4 + 1, min_disp=-self.max_disp,
                                         prior=None if p is None else -p))
            else:
                continue
            tids.append(tid)
        return dict(zip(tids, measure_disparities(jobs)))

    def validate(self, frame_idx, left_img, right_img, lm: FrameMatte, rm: FrameMatte,
                  skip_measure: set[int]) -> StereoResult:
        agreement: dict[int, float] = {}
        before: dict[int, float] = {}
        disparity: dict[int, float] = {}
        corrections: list[dict] = []
        left_live = set(self.left.live_ids)
        for tid in list(rm.tracks):
            if tid not in left_live:
                del rm.tracks[tid]
        ids = sorted(set(lm.tracks) | set(rm.tracks))
        measured = self._measure_all(ids, left_img, right_img, lm, rm, skip_measure)
        for tid in ids:
            lt, rt = lm.tracks.get(tid), rm.tracks.get(tid)
            l_ok = lt is not None and lt.box is not None
            r_ok = rt is not None and rt.box is not None
            if not l_ok and not r_ok:
                continue  # momentarily lost in both eyes: nothing to compare
            if tid in skip_measure:
                d = self.smoother.get(tid)
            elif l_ok:
                d = self.smoother.update(tid, *measured[tid])
            else:
                d_r, conf = measured[tid]
                d = self.smoother.update(tid, -d_r, conf)
            d = 0.0 if d is None else float(d)
            disparity[tid] = d
            dm = d if self.use_mapping else 0.0
            pl = lt.prob if l_ok else torch.zeros_like(rt.prob)
            pr = rt.prob if r_ok else torch.zeros_like(lt.prob)
            # Disparity is horizontal, so every step below is row by row: it runs on the rows where either mask
            # is non-zero (a person's height, not the eye's) and the results are zero-padded back, bit for bit
            # what the whole eye gives.
            rows = _Rows.of(pl, pr)
            pl, pr = pl[rows.band], pr[rows.band]
            a = mask_iou(pl, shift_mask(pr, -dm))
            before[tid] = a
            if a < self.threshold:
                pl, pr, a2, rec = self._correct(frame_idx, tid, lt, rt, pl, pr, dm, a, rows)
                corrections.append(rec)
                lm.tracks[tid] = self._track_mask(tid, pl, lt, rt, rows)
                rm.tracks[tid] = self._track_mask(tid, pr, rt, lt, rows)
                a = a2
            elif self.fuse_edges and l_ok and r_ok:
                fused = 0.5 * (pl + shift_mask(pr, -dm))
                pl, pr = fused, shift_mask(fused, dm)
                lm.tracks[tid] = self._track_mask(tid, pl, lt, None, rows)
                rm.tracks[tid] = self._track_mask(tid, pr, rt, None, rows)
                a = mask_iou(pl, shift_mask(pr, -dm))
                self._n_fused += 1
            agreement[tid] = a
            self._ref_area[tid] = 0.5 * float((pl > _MASK_T).sum() + (pr > _MASK_T).sum())
        for tid in list(self._ref_area):
            if tid not in left_live:
                self.forget(tid)
        return self.result(lm, rm, agreement, disparity, corrections, before)

    def _strength(self, tid: int, tm: TrackMask | None, prob: torch.Tensor) -> float:
        if tm is None or tm.box is None:
            return 0.0
        area = float((prob > _MASK_T).sum())
        ref = self._ref_area.get(tid)
        consistency = 1.0 if not ref else min(area, ref) / max(area, ref, 1e-6)
        return consistency * (0.5 + 0.5 * float(tm.score))

    def _correct(self, frame_idx, tid, lt, rt, pl, pr, dm, before, rows: "_Rows"):
        """Apply the configured correction to the person's rows ``pl``/``pr`` (``rows`` of the eye); returns
        (left rows, right rows, agreement after, log record)."""
        sl, sr = self._strength(tid, lt, pl), self._strength(tid, rt, pr)
        # Ties go to the left eye (the master in master_slave; the detected eye in joint).
        weak = "right" if sl >= sr else "left"
        if self.method == "ensemble":
            wl, wr = (sl, sr) if sl + sr > 0 else (1.0, 1.0)
            fused = (wl * pl + wr * shift_mask(pr, -dm)) / (wl + wr)
            pl, pr = fused, shift_mask(fused, dm)
            eye = "both"
        else:
            if weak == "right":
                pr = shift_mask(pl, dm)
            else:
                pl = shift_mask(pr, -dm)
            eye = weak
        weak_tm = rt if weak == "right" else lt
        lost = weak_tm is None or weak_tm.box is None
        if self.method == "reprocess" or (lost and self.method != "ensemble"):
            # Re-prompt the weaker eye's segmenter so the following frames recover (a lost track must be).
            view, prob = (self.right, pr) if weak == "right" else (self.left, pl)
            box = rows.box(prob)
            if box is not None:
                view.reprompt(tid, box=box, mask=rows.full(prob))
                self._n_reprompt += 1
        after = mask_iou(pl, shift_mask(pr, -dm))
        rec = {"frame": int(frame_idx), "track": int(tid), "eye": eye, "method": self.method,
               "before": round(float(before), 4), "after": round(float(after), 4)}
        log.debug("stereo correction %s", rec)
        return pl, pr, after, rec

    @staticmethod
    def _track_mask(tid: int, prob: torch.Tensor, own: TrackMask | None, other: TrackMask | None,
                    rows: "_Rows") -> TrackMask:
        """The eye-sized track mask of the person's rows ``prob``."""
        score = own.score if own is not None and own.box is not None else (other.score if other else 0.0)
        return TrackMask(track_id=tid, prob=rows.full(prob), box=rows.box(prob), score=float(score))

    def forget(self, tid: int) -> None:
        self.smoother.drop(tid)
        self._ref_area.pop(tid, None)

    # ------------------------------------------------------------------ accounting
    def result(self, lm, rm, agreement, disparity, corrections, before) -> StereoResult:
        for v in before.values():
            self._agree_before.add(v)
        return StereoResult(lm, rm, agreement, disparity, corrections)

    def _account(self, res: StereoResult) -> None:
        self._frames += 1
        for v in res.agreement.values():
            self._agree.add(float(v))
        self._pl.add(len(res.left.tracks))
        self._pr.add(len(res.right.tracks))
        # Compare the persons visible on this frame: a track whose mask is momentarily empty in both eyes is
        # not a person on screen, and one visible in one eye only is a real mismatch.
        visible_l = {i for i, t in res.left.tracks.items() if t.box is not None}
        visible_r = {i for i, t in res.right.tracks.items() if t.box is not None}
        if visible_l != visible_r:
            self._mismatch += 1
        self._n_corr += len(res.corrections)
        if self.trace is not None:
            for tid, a in res.agreement.items():
                self.trace.event("stereo", "agreement", res.left.frame_idx, tid, value=float(a))
            for c in res.corrections:
                self.trace.event("stereo", "correction", c["frame"], c["track"])
        room = _MAX_LOGGED - len(self._corr_log)
        if room > 0:
            self._corr_log.extend(res.corrections[:room])
        for tid, d in res.disparity.items():
            s = self._disp_sum.setdefault(int(tid), [0.0, 0])
            s[0] += float(d)
            s[1] += 1

