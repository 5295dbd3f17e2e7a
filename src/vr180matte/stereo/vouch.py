"""Stereo vouching: a person one eye is sure of lends its confidence to the same person in the other eye.

Both eyes see the same people from 6.5 cm apart, yet a detector scores them independently: a person half in
shadow, cut by the frame or seen at a slant may score just under the threshold in one eye and above it in the
other. Single-view pipelines lose that person in one eye (and a ``master_slave`` run loses it in both, since the
left eye leads). Here the detector returns candidates down to ``stereo.vouch_ratio`` x its threshold; a candidate
under the threshold is kept only when it pairs (same rows, a plausible disparity: :func:`pair_boxes`) with a
candidate at or above the threshold in the other eye. Nobody neither eye is sure of is ever added, so the false
positive rate of the threshold stays what it was; a lone unsure box in one eye is dropped as before.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..engines.base import Detection


@dataclass
class VouchStats:
    """Running counts for stats.json (``stereo.vouching``)."""

    vouched: int = 0  # unsure candidates kept because the other eye was sure of the same person
    dropped: int = 0  # unsure candidates without a sure partner (dropped, as a single view would)
    calls: int = 0
    right_eye_runs: int = 0  # master_slave: extra right-eye detector runs to check unsure left candidates
    band_rows: int = 0  # ... on bands of these many rows in all
    eye_rows: int = 0  # ... of eyes this many rows high in all (band_rows / eye_rows: the share of a full run)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Vouching:
    """Keeps sure detections and the unsure ones the other eye vouches for (see the module docstring)."""

    threshold: float
    floor: float
    stats: VouchStats = field(default_factory=VouchStats)

    def apply(self, left: list[Detection], right: list[Detection], max_disp: float, min_disp: float
              ) -> tuple[list[Detection], list[Detection]]:
        """(left, right) with every candidate under the threshold that lacks a sure partner removed."""
        from .consistency import pair_boxes

        self.stats.calls += 1
        keep_l = [d.score >= self.threshold for d in left]
        keep_r = [d.score >= self.threshold for d in right]
        for i, j in pair_boxes([d.box for d in left], [d.box for d in right], max_disp, min_disp):
            if keep_l[i] and not keep_r[j]:
                keep_r[j] = True
                self.stats.vouched += 1
            elif keep_r[j] and not keep_l[i]:
                keep_l[i] = True
                self.stats.vouched += 1
        self.stats.dropped += keep_l.count(False) + keep_r.count(False)
        return ([d for d, k in zip(left, keep_l) if k], [d for d, k in zip(right, keep_r) if k])


__all__ = ["Vouching", "VouchStats"]
