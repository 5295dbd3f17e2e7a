"""When one view detects: frame order within a chunk and the detector's cadence.

Why its own module: a view detects on its own every ``detect_interval`` frames and on the first step after a reset
(so people who entered during a chunk overlap are found at once), unless the caller supplies detections (joint
stereo mode) or forces the choice. The cadence counts frame numbers, which is why frames must come in increasing
order until the next reset. Whatever is detected passes the prompts file's excluded regions (track/exclusions.py).
"""
from __future__ import annotations

import torch

from ..engines.base import Detection
from .exclusions import Exclusions
from .view_state import ViewState

__all__ = ["DetectSchedule"]


class DetectSchedule:
    """Checks one view's frame order and gives each frame its detections (own, supplied, or none)."""

    def __init__(self, state: ViewState, exclusions: Exclusions) -> None:
        self.state = state
        self.exclusions = exclusions
        self.force_detect = True
        self.last_frame: int | None = None

    def restart(self) -> None:
        """Chunk start: any frame number may come next, and it runs the detector."""
        self.force_detect = True
        self.last_frame = None

    def begin(self, frame_idx: int) -> None:
        """Accept ``frame_idx`` as this view's next frame (it must follow the last one)."""
        if self.last_frame is not None and frame_idx <= self.last_frame:
            raise ValueError(
                f"{self.state.view}: frames must come in increasing order (got {frame_idx} after {self.last_frame}); "
                "call reset() to start a new chunk"
            )
        self.last_frame = frame_idx

    def detect(
        self, frame_idx: int, image: torch.Tensor, detections: list[Detection] | None, run_detector: bool | None
    ) -> tuple[list[Detection], bool]:
        """(detections, whether detection happened this frame)."""
        s = self.state
        forced = self.force_detect
        self.force_detect = False
        if detections is not None:
            s.stats["detections_supplied"] += 1
            return self.exclusions.detections(frame_idx, image, list(detections)), True
        want = run_detector if run_detector is not None else (forced or frame_idx % s.settings.detect_interval == 0)
        if not want or s.detector is None:
            return [], False
        dets = list(s.detector.detect(image))
        s.stats["detections_run"] += 1
        return self.exclusions.detections(frame_idx, image, dets), True
