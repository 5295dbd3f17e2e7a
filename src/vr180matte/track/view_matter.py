"""One eye's multi-person matting loop: detector + tracker + streaming segmenter.

Why this exists: a segmenter (SAM2, MobileSAM, the embedded models) only follows what it was prompted with, and a
detector only sees boxes. ``ViewMatter`` decides, frame by frame, which detection is which person, when to start a
track, when a track has drifted and must be re-prompted, and when it is over. It is engine-agnostic: it drives any
:class:`~vr180matte.engines.base.Detector` and :class:`~vr180matte.engines.base.Segmenter`.

Memory: only the current state of each live track is kept (its box, counters and the latest mask tensor, which the
duplicate check needs); never a list of past masks, so memory does not grow with video length.

Layout: ``ViewMatter`` only composes one eye's step; each stage is its own class, all sharing one
:class:`~vr180matte.track.view_state.ViewState`: prompting (track/prompting.py), detection -> track association
(track/association.py), duplicate checks (track/duplicates.py), the prompts file's excluded regions
(track/exclusions.py), the track update (track/track_update.py) and when to detect (track/detect_schedule.py).

Id policy (documented in docs/tracking.md): ids come from an :class:`IdAllocator` and are never reused. A person whose
mask vanishes keeps the id while the track is alive (``missed <= max_missed``): a detection that overlaps the track's
last box re-prompts it. Once the track has ended, a re-appearing person gets a new id (no appearance re-id).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..engines.base import Detection, Detector, FrameMatte, Segmenter
from ..forward import Forward
from ..runtime.download import FrameDownload
from .association import Associator
from .detect_schedule import DetectSchedule
from .duplicates import Duplicates
from .exclusions import Exclusions
from .ids import IdAllocator
from .prompting import Prompter
from .track_update import TrackUpdater
from .tracker import Track, Tracker
from .view_state import ViewSettings, ViewState

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

    @classmethod
    def from_matte(cls, matte: FrameMatte, next_id: int) -> "ViewHandoff":
        """The hand-off at ``matte``: its non-empty masks as CPU float16, boxes and scores, and ``next_id``."""
        out = cls(next_id=next_id)
        for tid, tm in matte.tracks.items():
            if tm.box is None:
                continue  # an empty mask cannot prompt anything
            out.masks[tid] = tm.prob.detach().to("cpu", torch.float16)
            out.boxes[tid] = np.asarray(tm.box, dtype=np.float32).copy()
            out.scores[tid] = float(tm.score)
        return out


class ViewMatter:
    """Detector + tracker + segmenter for one view ("left" / "right").

    Per :meth:`step`: (1) detect (own detector every ``detect_interval`` frames and on the first step after a reset,
    or detections supplied by the caller), (2) apply seeds and pending re-prompts, (3) match detections to live
    tracks (Hungarian on mask-box IoU), re-prompt drifted tracks, start tracks for new people, (4) segment and update
    the tracks, ending the ones that are gone, (5) return the :class:`FrameMatte`.

    The thresholds (``dup_iou`` ... ``dup_inside``) are documented on
    :class:`~vr180matte.track.view_state.ViewSettings`.
    """

    # Attributes kept on the shared state, read and set through the view as before (the stereo stage sets prompts).
    view = Forward("state.view")
    segmenter = Forward("state.segmenter")
    detector = Forward("state.detector")
    ids = Forward("state.ids")
    tracker = Forward("state.tracker")
    stats = Forward("state.stats")
    prompts = Forward("state.prompts")
    trace = Forward("state.trace")
    _probs = Forward("state.probs")
    _pending = Forward("state.pending")
    detect_interval = Forward("state.settings.detect_interval")
    max_persons = Forward("state.settings.max_persons")
    dup_iou = Forward("state.settings.dup_iou")
    dup_coverage = Forward("state.settings.dup_coverage")
    confirm_end_runs = Forward("state.settings.confirm_end_runs")
    mask_threshold = Forward("state.settings.mask_threshold")
    occlusion_iou = Forward("state.settings.occlusion_iou")
    dup_inside = Forward("state.settings.dup_inside")

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
        settings = ViewSettings(detect_interval, max_persons, dup_iou, dup_coverage, confirm_end_runs,
                                mask_threshold, occlusion_iou, dup_inside)
        ids = ids if ids is not None else IdAllocator()
        tracker = Tracker(iou_threshold, max_missed, min_mask_area, drift_iou)
        self.state = ViewState(view, segmenter, detector, ids, tracker, settings)
        self.prompter = Prompter(self.state)
        self.exclusions = Exclusions(self.state)
        self.duplicates = Duplicates(self.state)
        self.associator = Associator(self.state, self.prompter, self.duplicates)
        self.updater = TrackUpdater(self.state)
        self.schedule = DetectSchedule(self.state, self.exclusions)

    # ------------------------------------------------------------------ public API
    @property
    def live_ids(self) -> list[int]:
        """Ids of the live tracks (including ones whose mask is momentarily empty), ascending."""
        return sorted(self.state.tracks)

    @property
    def tracks(self) -> dict[int, Track]:
        """Read-only view of the live tracks' state (for stereo checks and debugging)."""
        return dict(self.state.tracks)

    def reset(self, handoff: ViewHandoff | None = None) -> None:
        """Start of a chunk: drop all state; recreate the hand-off's tracks (prompted with their masks on the next step).

        The next :meth:`step` runs the detector whatever its frame number, so people who entered during the
        overlap are found at once.
        """
        self.segmenter.reset()
        self.state.clear()
        self.schedule.restart()
        if handoff is not None:
            self.state.resume(handoff)

    def reprompt(self, track_id: int, *, box: np.ndarray | None = None, mask: torch.Tensor | None = None,
                 origin: str = "reprompt", box_is_mask: bool = False) -> None:
        """Re-prompt ``track_id`` with a box and/or mask on the next :meth:`step` (stereo correction).

        An id that is not live is created with exactly that id (the other eye still sees the person), with
        ``origin`` ("prompt" for a box from the manual override file: such a track is not ended early because the
        detector does not see it, since that is why the user added it). ``box_is_mask``: ``box`` is ``mask``'s own
        box (engines/base.py ``Segmenter.add_prompt``), so nobody reads the mask again to route or check it.
        """
        self.prompter.request(track_id, box=box, mask=mask, origin=origin, box_is_mask=box_is_mask)

    def end_track(self, track_id: int) -> None:
        """End ``track_id`` now and free its segmenter state (no-op if it is not live)."""
        self.state.end_track(track_id)

    def handoff(self, matte: FrameMatte) -> ViewHandoff:
        """The hand-off from ``matte`` (a frame the pipeline picks): non-empty masks as CPU float16, ids, next_id."""
        return ViewHandoff.from_matte(matte, self.ids.next_id)

    def step(
        self,
        frame_idx: int,
        image: torch.Tensor,
        *,
        detections: list[Detection] | None = None,
        seeds: dict[int, tuple[np.ndarray | None, torch.Tensor | None]] | None = None,
        run_detector: bool | None = None,
        before_update: Callable[[dict[int, torch.Tensor], FrameDownload], None] | None = None,
    ) -> FrameMatte:
        """Process one frame of this view and return every live track's mask.

        ``detections``: use these instead of running the detector (joint stereo mode). ``seeds``: forced prompts
        ``{id: (box, mask)}`` that create or re-prompt exactly those ids (master-slave stereo); while ``seeds`` is not
        None (an empty dict counts) this view starts no track of its own, it only re-anchors drifting ones.
        ``run_detector``: force (True) or skip (False) the own detector this frame; None = by ``detect_interval``.
        ``before_update``: called with this frame's masks and the step's download (runtime/download.py) before the
        track update, so a caller's numbers of these masks come down with the view's own (stereo row bands).
        """
        self.schedule.begin(frame_idx)
        device = image.device
        dets, detected = self.schedule.detect(frame_idx, image, detections, run_detector)

        # 2) seeds and pending re-prompts: exact ids, applied before matching so they are not re-anchored twice.
        prompted = self.prompter.apply(frame_idx, device, seeds)

        # 3) association.
        if detected:
            self.associator.associate(frame_idx, dets, prompted, device, allow_births=seeds is None)

        # 4) segmentation and track update (excluded regions of the prompts file are nobody's).
        masks = self.segmenter.segment(frame_idx, image)
        masks = self.exclusions.masks(frame_idx, image, masks)
        self.duplicates.post_counts(frame_idx, masks)  # read with the tracker's statistics, one download
        if before_update is not None:
            before_update(masks, self.state.download)
        self.updater.update(frame_idx, masks)
        self.duplicates.merge_new(frame_idx)

        # 5) result.
        return self.state.matte(frame_idx, dets)

