"""Engine protocols shared by every matting engine (embedded, det-sam2, mobilesam, passthrough).

The data flow per eye ("view") and frame is::

    image (processing res)  ->  Detector.detect  ->  Tracker (track/)  ->  Segmenter.segment  ->  per-track probabilities

Conventions every implementation follows:

* ``image`` is a ``torch.uint8`` tensor of shape ``(H, W, 3)``, RGB, at processing resolution, on the
  engine's device. CPU engines may call ``image.numpy()`` (zero-copy on CPU).
* Boxes are ``numpy.float32`` arrays ``[x0, y0, x1, y1]`` in pixels of that image.
* Masks are ``torch.float32`` probabilities in ``[0, 1]``, shape ``(H, W)``, on the engine's device.
  They stay on the device: nothing on the hot path copies them to the host.
* A segmenter instance serves exactly one view and holds that view's streaming state; its memory must
  not grow with the number of frames it has seen.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch


from ..errors import EngineError  # noqa: E402,F401 - defined with its exit code in vr180matte.errors


@dataclass
class Detection:
    """One person found by a detector in one view."""

    box: np.ndarray  # float32 [x0, y0, x1, y1] in processing-resolution pixels
    score: float  # detector confidence in [0, 1]
    mask: torch.Tensor | None = None  # optional (H, W) float probability, when the detector also segments


@runtime_checkable
class Detector(Protocol):
    name: str

    def detect(self, image: torch.Tensor) -> list[Detection]:
        """All persons in ``image`` with score >= the configured threshold, best first."""
        ...


def detect_at(detector: Detector, image: torch.Tensor, threshold: float | None = None) -> list[Detection]:
    """``detector.detect(image)``, or down to ``threshold`` when one is given (detectors that declare
    ``supports_threshold`` take ``threshold=``; the stereo stage asks them for candidates under their own)."""
    if threshold is None:
        return list(detector.detect(image))
    return list(detector.detect(image, threshold=threshold))


@runtime_checkable
class Segmenter(Protocol):
    """Streaming, box/mask-prompted multi-object segmenter for one view."""

    name: str

    def add_prompt(self, track_id: int, box: np.ndarray | None = None, mask: torch.Tensor | None = None, *,
                   box_is_mask: bool = False) -> None:
        """Start or re-prompt ``track_id`` on the next frame given to :meth:`segment`.

        ``box`` and/or ``mask`` (processing resolution). A re-prompt replaces the track's prompt; memory-based
        segmenters (SAM2) treat the prompted frame as a conditioning frame. ``box_is_mask``: ``box`` is ``mask``'s
        own box (its pixels > 0.5, as the caller already downloaded it), so the mask is known not to be empty and
        a segmenter that needs its box or its emptiness reads neither (issue 19: no read of a known value).
        """
        ...

    def remove_track(self, track_id: int) -> None:
        """Forget ``track_id`` and free its state."""
        ...

    def segment(self, frame_idx: int, image: torch.Tensor) -> dict[int, torch.Tensor]:
        """Masks for every live track on this frame: ``{track_id: (H, W) float32 probability}``.

        ``frame_idx`` is the absolute frame number in the video; calls come in increasing order, one per frame.
        """
        ...

    def reset(self) -> None:
        """Drop every track and all streaming state (start of a chunk)."""
        ...


@dataclass
class TrackMask:
    """One tracked person's result on one frame of one view."""

    track_id: int
    prob: torch.Tensor  # (H, W) float32 in [0, 1], processing resolution, engine device
    box: np.ndarray | None  # float32 xyxy from the mask (None if the mask is empty)
    score: float  # confidence: detector score of the last matched detection, else segmenter's


@dataclass
class FrameMatte:
    """Everything the engine produced for one view on one frame."""

    frame_idx: int
    tracks: dict[int, TrackMask] = field(default_factory=dict)
    detections: list[Detection] = field(default_factory=list)  # raw detections of this frame (empty if none ran)

    def combined(self, shape: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
        """Union of all persons: (H, W) float32 probability (max over tracks)."""
        if not self.tracks:
            return torch.zeros(shape, dtype=torch.float32, device=device)
        probs = [t.prob for t in self.tracks.values()]
        out = probs[0]
        for p in probs[1:]:
            out = torch.maximum(out, p)
        return out


class Engine(Protocol):
    """A factory for the per-view parts of one engine; built once per run by ``engines.build_engine``."""

    name: str
    device: torch.device

    def make_detector(self) -> Detector | None:
        """The engine's person detector (None when the segmenter needs no prompts, e.g. passthrough)."""
        ...

    def make_segmenter(self, view: str) -> Segmenter:
        """A fresh segmenter for ``view`` ("left" / "right")."""
        ...
