"""One eye's multi-person matting loop: detector + tracker + streaming segmenter.

Why this exists: a segmenter (SAM2, MobileSAM, the embedded models) only follows what it was prompted with, and a
detector only sees boxes. ``ViewMatter`` decides, frame by frame, which detection is which person, when to start a
track, when a track has drifted and must be re-prompted, and when it is over. It is engine-agnostic: it drives any
:class:`~vr180matte.engines.base.Detector` and :class:`~vr180matte.engines.base.Segmenter`.

Memory: only the current state of each live track is kept (its box, counters and the latest mask tensor, which the
duplicate check needs); never a list of past masks, so memory does not grow with video length.

Id policy (documented in docs/tracking.md): ids come from an :class:`IdAllocator` and are never reused. A person whose
mask vanishes keeps the id while the track is alive (``missed <= max_missed``): a detection that overlaps the track's
last box re-prompts it. Once the track has ended, a re-appearing person gets a new id (no appearance re-id).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from ..engines.base import Detection, Detector, FrameMatte, Segmenter, TrackMask
from .ids import IdAllocator
from .tracker import Track, Tracker, box_iou, mask_box, mask_stats

log = logging.getLogger(__name__)

__all__ = ["ViewHandoff", "ViewMatter"]


@dataclass
class ViewHandoff:
    """What a chunk passes to the next for one view: every live track's last mask, on the CPU.

    Picklable as is; :meth:`state_dict` gives plain tensors/ints for ``torch.save`` (loadable with
    ``torch.load(..., weights_only=True)``), :meth:`from_state_dict` rebuilds it.
    """

    masks: dict[int, torch.Tensor] = field(default_factory=dict)  # id -> (H, W) float16 probability, CPU
    boxes: dict[int, np.ndarray] = field(default_factory=dict)  # id -> float32 xyxy
    scores: dict[int, float] = field(default_factory=dict)
    next_id: int = 1

    def state_dict(self) -> dict:
        return {
            "masks": {int(k): v.to("cpu", torch.float16) for k, v in self.masks.items()},
            "boxes": {int(k): torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in self.boxes.items()},
            "scores": {int(k): float(v) for k, v in self.scores.items()},
            "next_id": int(self.next_id),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "ViewHandoff":
        return cls(
            masks={int(k): v for k, v in state["masks"].items()},
            boxes={int(k): np.asarray(v, dtype=np.float32) for k, v in state["boxes"].items()},
            scores={int(k): float(v) for k, v in state["scores"].items()},
            next_id=int(state["next_id"]),
        )


class ViewMatter:
    """Detector + tracker + segmenter for one view ("left" / "right").

    Per :meth:`step`: (1) detect (own detector every ``detect_interval`` frames and on the first step after a reset,
    or detections supplied by the caller), (2) apply seeds and pending re-prompts, (3) match detections to live
    tracks (Hungarian on mask-box IoU), re-prompt drifted tracks, start tracks for new people, (4) segment and update
    the tracks, ending the ones that are gone, (5) return the :class:`FrameMatte`.

    ``dup_iou`` / ``dup_coverage``: an unmatched detection whose box has IoU above ``dup_iou`` with a live track's box,
    or whose box is covered more than ``dup_coverage`` by one live track's mask, is the same person detected twice
    and starts no track. ``confirm_end_runs``: a track with an empty mask ends early once this many detector runs in
    a row did not see it (0 = only ``max_missed`` ends tracks). ``mask_threshold``: probability above which a pixel
    belongs to a mask. ``occlusion_iou``: a drifted track is not re-prompted while its detection box overlaps another
    live track's box by more than this IoU, because a box prompt on an occluded person tends to grab the occluder
    (the drift is then the occlusion, not an error). ``dup_inside``: a track started this frame whose mask lies more
    than this fraction inside another track's mask is the same person (a partial duplicate detection) and is ended.
    """

    def __init__(
        self,
        view: str,
        segmenter: Segmenter,
        detector: Detector | None,
        *,
        detect_interval: int = 10,
        iou_threshold: float = 0.3,
        max_missed: int = 30,
        max_persons: int = 16,
        ids: IdAllocator | None = None,
        min_mask_area: float = 1e-4,
        drift_iou: float = 0.5,
        dup_iou: float = 0.5,
        dup_coverage: float = 0.5,
        confirm_end_runs: int = 2,
        mask_threshold: float = 0.5,
        occlusion_iou: float = 0.2,
        dup_inside: float = 0.8,
    ) -> None:
        if detect_interval < 1:
            raise ValueError(f"detect_interval must be >= 1 frame, got {detect_interval}")
        if max_persons < 1:
            raise ValueError(f"max_persons must be >= 1, got {max_persons}")
        self.view = view
        self.segmenter = segmenter
        self.detector = detector
        self.detect_interval = int(detect_interval)
        self.max_persons = int(max_persons)
        self.ids = ids if ids is not None else IdAllocator()
        self.tracker = Tracker(iou_threshold, max_missed, min_mask_area, drift_iou)
        self.dup_iou = float(dup_iou)
        self.dup_coverage = float(dup_coverage)
        self.confirm_end_runs = int(confirm_end_runs)
        self.mask_threshold = float(mask_threshold)
        self.occlusion_iou = float(occlusion_iou)
        self.dup_inside = float(dup_inside)
        self.stats: dict[str, int] = {
            "tracks_started": 0,
            "tracks_ended": 0,
            "tracks_resumed": 0,
            "reprompts": 0,
            "detections_run": 0,
            "detections_supplied": 0,
            "duplicates_skipped": 0,
            "max_persons_skipped": 0,
            "duplicates_merged": 0,
            "stillborn": 0,
            "reprompts_skipped_occluded": 0,
        }
        self._tracks: dict[int, Track] = {}
        self._probs: dict[int, torch.Tensor] = {}  # latest mask per live track (current state only)
        self._pending: dict[int, tuple[np.ndarray | None, torch.Tensor | None]] = {}
        self._pending_origin: dict[int, str] = {}
        self._force_detect = True
        self._last_frame: int | None = None
        # Optional collaborators, set by the stereo stage: the manual override file (track/prompts.py; its excluded
        # regions are applied to this view's detections and masks) and the person trace (quality/debug.py).
        self.prompts = None
        self.trace = None

    def _trace(self, kind: str, frame_idx: int, tid: int | None = None, **info) -> None:
        if self.trace is not None:
            self.trace.event(self.view, kind, frame_idx, tid, **info)

    # ------------------------------------------------------------------ public API
    @property
    def live_ids(self) -> list[int]:
        """Ids of the live tracks (including ones whose mask is momentarily empty), ascending."""
        return sorted(self._tracks)

    @property
    def tracks(self) -> dict[int, Track]:
        """Read-only view of the live tracks' state (for stereo checks and debugging)."""
        return dict(self._tracks)

    def reset(self, handoff: ViewHandoff | None = None) -> None:
        """Start of a chunk: drop all state; recreate the hand-off's tracks (prompted with their masks on the next step).

        The next :meth:`step` runs the detector whatever its frame number, so people who entered during the
        overlap are found at once.
        """
        self.segmenter.reset()
        self._tracks.clear()
        self._probs.clear()
        self._pending.clear()
        self._force_detect = True
        self._last_frame = None
        if handoff is None:
            return
        self.ids.observe(int(handoff.next_id) - 1)
        for tid, mask in handoff.masks.items():
            tid = int(tid)
            box = handoff.boxes.get(tid)
            box = None if box is None else np.asarray(box, dtype=np.float32)
            self.ids.observe(tid)
            self._tracks[tid] = Track(
                id=tid, box=box, score=float(handoff.scores.get(tid, 1.0)), last_box=box, origin="handoff"
            )
            self._pending[tid] = (box, mask)
            self.stats["tracks_resumed"] += 1
        log.debug("%s: reset with %d handed-off tracks, next id %d", self.view, len(handoff.masks), self.ids.next_id)

    def reprompt(self, track_id: int, *, box: np.ndarray | None = None, mask: torch.Tensor | None = None,
                 origin: str = "reprompt") -> None:
        """Re-prompt ``track_id`` with a box and/or mask on the next :meth:`step` (stereo correction).

        An id that is not live is created with exactly that id (the other eye still sees the person), with
        ``origin`` ("prompt" for a box from the manual override file: such a track is not ended early because the
        detector does not see it, since that is why the user added it).
        """
        if box is None and mask is None:
            raise ValueError(f"reprompt of track {track_id} needs a box or a mask")
        self._pending[int(track_id)] = (None if box is None else np.asarray(box, dtype=np.float32), mask)
        self._pending_origin[int(track_id)] = origin

    def end_track(self, track_id: int) -> None:
        """End ``track_id`` now and free its segmenter state (no-op if it is not live)."""
        track_id = int(track_id)
        self._pending.pop(track_id, None)
        if self._tracks.pop(track_id, None) is None:
            return
        self._probs.pop(track_id, None)
        self.segmenter.remove_track(track_id)
        self.stats["tracks_ended"] += 1

    def handoff(self, matte: FrameMatte) -> ViewHandoff:
        """The hand-off from ``matte`` (a frame the pipeline picks): non-empty masks as CPU float16, ids, next_id."""
        out = ViewHandoff(next_id=self.ids.next_id)
        for tid, tm in matte.tracks.items():
            if tm.box is None:
                continue  # an empty mask cannot prompt anything
            out.masks[tid] = tm.prob.detach().to("cpu", torch.float16)
            out.boxes[tid] = np.asarray(tm.box, dtype=np.float32).copy()
            out.scores[tid] = float(tm.score)
        return out

    def step(
        self,
        frame_idx: int,
        image: torch.Tensor,
        *,
        detections: list[Detection] | None = None,
        seeds: dict[int, tuple[np.ndarray | None, torch.Tensor | None]] | None = None,
        run_detector: bool | None = None,
    ) -> FrameMatte:
        """Process one frame of this view and return every live track's mask.

        ``detections``: use these instead of running the detector (joint stereo mode). ``seeds``: forced prompts
        ``{id: (box, mask)}`` that create or re-prompt exactly those ids (master-slave stereo); while ``seeds`` is not
        None (an empty dict counts) this view starts no track of its own, it only re-anchors drifting ones.
        ``run_detector``: force (True) or skip (False) the own detector this frame; None = by ``detect_interval``.
        """
        if self._last_frame is not None and frame_idx <= self._last_frame:
            raise ValueError(
                f"{self.view}: frames must come in increasing order (got {frame_idx} after {self._last_frame}); "
                "call reset() to start a new chunk"
            )
        self._last_frame = frame_idx
        device = image.device
        dets, detected = self._detect(frame_idx, image, detections, run_detector)

        # 2) seeds and pending re-prompts: exact ids, applied before matching so they are not re-anchored twice.
        prompted: set[int] = set()
        for tid, (box, mask) in self._pending.items():
            self._prompt(tid, box, mask, device, frame_idx, seeded=False,
                         origin=self._pending_origin.get(tid, "reprompt"))
            prompted.add(tid)
        self._pending.clear()
        self._pending_origin.clear()
        if seeds:
            for tid, (box, mask) in seeds.items():
                if box is None and mask is None:
                    raise ValueError(f"{self.view}: seed for track {tid} has neither box nor mask")
                self._prompt(int(tid), box, mask, device, frame_idx, seeded=True, origin="seed")
                prompted.add(int(tid))

        # 3) association.
        if detected:
            self._associate(frame_idx, dets, prompted, device, allow_births=seeds is None)

        # 4) segmentation and track update (excluded regions of the prompts file are nobody's).
        masks = self.segmenter.segment(frame_idx, image)
        masks = self._exclude(frame_idx, image, masks)
        self._update(frame_idx, masks)
        self._merge_new_duplicates(frame_idx)

        # 5) result.
        out = FrameMatte(frame_idx=frame_idx, detections=list(dets))
        for tid in sorted(self._tracks):
            prob = self._probs.get(tid)
            if prob is None:
                continue
            t = self._tracks[tid]
            out.tracks[tid] = TrackMask(track_id=tid, prob=prob, box=t.box, score=t.score)
        return out

    # ------------------------------------------------------------------ internals
    def _detect(
        self, frame_idx: int, image: torch.Tensor, detections: list[Detection] | None, run_detector: bool | None
    ) -> tuple[list[Detection], bool]:
        """(detections, whether detection happened this frame)."""
        forced = self._force_detect
        self._force_detect = False
        if detections is not None:
            self.stats["detections_supplied"] += 1
            return self._exclude_detections(frame_idx, image, list(detections)), True
        want = run_detector if run_detector is not None else (forced or frame_idx % self.detect_interval == 0)
        if not want or self.detector is None:
            return [], False
        dets = list(self.detector.detect(image))
        self.stats["detections_run"] += 1
        return self._exclude_detections(frame_idx, image, dets), True

    def _exclude_detections(self, frame_idx: int, image: torch.Tensor, dets: list[Detection]) -> list[Detection]:
        """Detections lying mostly (over half their box) in an excluded region of the prompts file are dropped."""
        if self.prompts is None or not dets:
            return dets
        keep = []
        for d in dets:
            if self.prompts.excluded_fraction(frame_idx, self.view, np.asarray(d.box, np.float32), image.shape) > 0.5:
                self.prompts.stats["detections_excluded"] += 1
                self._trace("dropped", frame_idx, None, reason="excluded_region", box=d.box, score=float(d.score))
                continue
            keep.append(d)
        return keep

    def _exclude(self, frame_idx: int, image: torch.Tensor, masks: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Masks with this frame's excluded regions zeroed (new tensors: segmenters may share their state)."""
        if self.prompts is None or not masks:
            return masks
        keep = self.prompts.keep_mask(frame_idx, self.view, image.shape, image.device)
        if keep is None:
            return masks
        return {tid: p * keep.to(p.dtype) for tid, p in masks.items()}

    def _prompt(
        self,
        tid: int,
        box: np.ndarray | None,
        mask: torch.Tensor | None,
        device: torch.device,
        frame_idx: int,
        *,
        seeded: bool,
        score: float | None = None,
        origin: str = "detection",
    ) -> None:
        """Prompt the segmenter for ``tid`` on this frame, creating the track if it is new."""
        box = None if box is None else np.asarray(box, dtype=np.float32).reshape(4)
        if mask is not None:
            mask = mask.to(device=device, dtype=torch.float32)
        self.segmenter.add_prompt(tid, box=box, mask=mask)
        t = self._tracks.get(tid)
        if t is None:
            self.ids.observe(tid)
            t = Track(
                id=tid, box=None, score=1.0 if score is None else float(score), start_frame=frame_idx, origin=origin
            )
            self._tracks[tid] = t
            self.stats["tracks_started"] += 1
            self._trace("start", frame_idx, tid, origin=origin, box=box, score=score)
            log.debug("%s: frame %d: track %d started (%s)", self.view, frame_idx, tid, "seed" if seeded else "prompt")
        if t.start_frame < 0:
            t.start_frame = frame_idx
        if box is None and mask is not None:
            box_from_mask = mask_box(mask, self.mask_threshold)  # rare (seeds, hand-off): one small transfer
            if box_from_mask is not None:
                t.last_box = box_from_mask
        if box is not None:
            t.last_box = box  # the prompt is the best estimate until the mask says otherwise
        t.seeded = t.seeded or seeded
        self._probs.pop(tid, None)  # the old mask is not trusted any more

    def _associate(
        self, frame_idx: int, dets: list[Detection], prompted: set[int], device: torch.device, allow_births: bool
    ) -> None:
        live = list(self._tracks.values())
        matched, unmatched_t, unmatched_d = self.tracker.match(live, dets)
        anchor: dict[int, np.ndarray] = {}  # track id -> box to use for the duplicate check this frame
        for ti, di in matched:
            t, d = live[ti], dets[di]
            t.last_matched = frame_idx
            t.unmatched_runs = 0
            t.det_score = float(d.score)
            t.score = float(d.score)
            anchor[t.id] = np.asarray(d.box, dtype=np.float32)
            t.extra["det_box"] = anchor[t.id]  # the detector's view of this person (benchmarks, debugging)
            if t.id in prompted:
                continue
            self._trace("matched", frame_idx, t.id, score=float(d.score), box=d.box)
            if self.tracker.is_drifted(t, d):
                if self._occluded(t.id, d.box):
                    self.stats["reprompts_skipped_occluded"] += 1
                    continue
                log.debug("%s: frame %d: track %d re-prompted from its detection", self.view, frame_idx, t.id)
                self._prompt(t.id, d.box, d.mask, device, frame_idx, seeded=False)
                prompted.add(t.id)
                self.stats["reprompts"] += 1
        for ti in unmatched_t:
            live[ti].unmatched_now = True  # counted in _update if this frame's mask is empty too
        if not allow_births or not unmatched_d:
            return

        cands = sorted(unmatched_d, key=lambda j: -float(dets[j].score))
        occupied = [anchor.get(t.id, t.ref_box()) for t in self._tracks.values()]
        occupied = [b for b in occupied if b is not None]
        coverage = self._coverage([dets[j].box for j in cands], exclude=prompted)
        for k, j in enumerate(cands):
            d = dets[j]
            box = np.asarray(d.box, dtype=np.float32).reshape(4)
            if occupied and float(box_iou(box, np.stack(occupied)).max()) > self.dup_iou:
                self.stats["duplicates_skipped"] += 1
                self._trace("dropped", frame_idx, None, reason="duplicate_box", box=box, score=float(d.score))
                continue
            if coverage is not None and float(coverage[k].max()) > self.dup_coverage:
                self.stats["duplicates_skipped"] += 1
                self._trace("dropped", frame_idx, None, reason="inside_tracked_mask", box=box, score=float(d.score))
                continue
            if len(self._tracks) >= self.max_persons:
                self.stats["max_persons_skipped"] += 1
                self._trace("dropped", frame_idx, None, reason="max_persons", box=box, score=float(d.score))
                continue
            tid = self.ids.new()
            self._prompt(tid, box, d.mask, device, frame_idx, seeded=False, score=float(d.score))
            self._tracks[tid].det_score = float(d.score)
            self._tracks[tid].last_matched = frame_idx
            self._tracks[tid].extra["det_box"] = box
            occupied.append(box)

    def _occluded(self, tid: int, box: np.ndarray) -> bool:
        """True when ``box`` overlaps another live track's box by more than ``occlusion_iou``."""
        others = [t.ref_box() for i, t in self._tracks.items() if i != tid and t.ref_box() is not None]
        return bool(others) and float(box_iou(box, np.stack(others)).max()) > self.occlusion_iou

    def _coverage(self, boxes: list[np.ndarray], exclude: set[int]) -> np.ndarray | None:
        """(n_boxes, n_tracks): fraction of each box covered by each trusted live mask (one host transfer)."""
        probs = [p for tid, p in self._probs.items() if tid not in exclude and tid in self._tracks]
        if not probs or not boxes:
            return None
        vals = []
        for box in boxes:
            for p in probs:
                h, w = p.shape[-2:]
                x0, y0 = int(np.clip(np.floor(box[0]), 0, w)), int(np.clip(np.floor(box[1]), 0, h))
                x1, y1 = int(np.clip(np.ceil(box[2]), 0, w)), int(np.clip(np.ceil(box[3]), 0, h))
                area = max((x1 - x0) * (y1 - y0), 1)
                vals.append((p[y0:y1, x0:x1] > self.mask_threshold).sum().float() / area)
        return torch.stack(vals).cpu().numpy().reshape(len(boxes), len(probs))

    def _merge_new_duplicates(self, frame_idx: int) -> None:
        """End tracks started this frame whose first mask lies mostly inside another track's mask.

        Box checks cannot tell a partial duplicate (an upper-body box of someone already tracked, or two boxes on
        the same person in the first frame) from a second person; the first masks can. Only new tracks are tested,
        so established tracks are never merged away; ids forced by the caller (seeds, re-prompts) are kept.
        """
        born = [
            tid
            for tid, t in self._tracks.items()
            if t.start_frame == frame_idx and t.origin == "detection" and t.box is not None
        ]
        if not born:
            return
        others = [tid for tid, t in self._tracks.items() if t.box is not None and tid in self._probs]
        pairs = [(a, b) for a in born for b in others if a != b and a in self._probs]
        if not pairs:
            return
        thr = self.mask_threshold
        vals = []
        for a, b in pairs:
            ma, mb = self._probs[a] > thr, self._probs[b] > thr
            vals.append(torch.stack([(ma & mb).sum(), ma.sum()]).float())
        frac = torch.stack(vals).cpu().numpy()
        ended: set[int] = set()
        for (a, b), (inter, area) in zip(pairs, frac):
            if a in ended or b in ended or area <= 0:
                continue
            inside = inter / area
            b_new = self._tracks[b].start_frame == frame_idx
            # Two new tracks fully inside each other: keep the lower id (the better-scored detection).
            if inside > self.dup_inside and (not b_new or b < a or self._inside(b, a) <= self.dup_inside):
                log.debug("%s: frame %d: new track %d duplicates track %d, ended", self.view, frame_idx, a, b)
                ended.add(a)
        for a in sorted(ended):
            self._trace("end", frame_idx, a, reason="duplicate_of_track")
            self.end_track(a)
            self.stats["duplicates_merged"] += 1

    def _inside(self, a: int, b: int) -> float:
        """Fraction of track ``a``'s mask inside track ``b``'s mask."""
        ma, mb = self._probs[a] > self.mask_threshold, self._probs[b] > self.mask_threshold
        area = float(ma.sum())
        return float((ma & mb).sum()) / area if area > 0 else 0.0

    def _update(self, frame_idx: int, masks: dict[int, torch.Tensor]) -> None:
        ids = [tid for tid in self._tracks if tid in masks]
        stats = dict(zip(ids, mask_stats([masks[tid] for tid in ids], self.mask_threshold)))
        # Tracks whose mask this frame is the segmenter's box prior, not a model mask (engines/embedded_segmenter:
        # a person too small for the model): kept alive, but only while the detector keeps seeing them.
        prior_ids = getattr(self.segmenter, "prior_ids", ())
        ended: list[tuple[int, str]] = []
        for tid, t in self._tracks.items():
            t.age += 1
            st = stats.get(tid)
            if st is None or self.tracker.is_empty(st[1]):
                t.box = None
                t.missed += 1
                if t.unmatched_now:
                    t.unmatched_runs += 1
                if st is None:
                    self._probs.pop(tid, None)
                else:
                    self._probs[tid] = masks[tid]
            else:
                box, _, conf = st
                t.box = box
                t.last_box = box
                t.missed = 0
                if tid in prior_ids and t.unmatched_now:
                    t.unmatched_runs += 1  # a prior the detector no longer confirms
                elif tid not in prior_ids:
                    t.unmatched_runs = 0
                t.hits += 1
                t.last_seen = frame_idx
                t.score = t.det_score if t.det_score is not None else conf
                self._probs[tid] = masks[tid]
            if self.trace is not None:
                self._trace("frame", frame_idx, tid, area=0.0 if st is None else st[1] * masks[tid].numel(),
                            box=t.box, prior=tid in prior_ids)
            t.unmatched_now = False
            confirm = 0 if t.origin == "prompt" else self.confirm_end_runs
            if t.box is None and t.hits == 0 and t.origin == "detection" and t.start_frame == frame_idx:
                # The segmenter found nothing where the detector saw a person: a false detection. Ending it now
                # keeps a zombie track from costing segmenter time and from appearing in one eye only.
                self.stats["stillborn"] += 1
                ended.append((tid, "stillborn"))
            elif self.tracker.should_end(t, confirm):
                ended.append((tid, "lost" if t.missed > self.tracker.max_missed else "gone"))
            elif tid in prior_ids and confirm > 0 and t.unmatched_runs >= confirm:
                ended.append((tid, "prior_unconfirmed"))
        for tid, why in ended:
            log.debug("%s: frame %d: track %d ended (%s, mask empty %d frames)", self.view, frame_idx, tid, why,
                      self._tracks[tid].missed)
            self._trace("end", frame_idx, tid, reason=why)
            self.end_track(tid)
