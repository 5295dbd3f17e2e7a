"""The stereo stage's run report: the stats.json ``stereo`` block, kept as it runs.

A run is hours of frames over many chunks, so nothing here grows with the frames: agreement and person counts are
running sums, per-person disparity a sum and a count, and the correction log is capped (its count stays exact).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .result import StereoResult

if TYPE_CHECKING:  # the stage builds this part; only type hints go the other way
    from .consistency import StereoStage

__all__ = ["StereoTally"]

_MAX_LOGGED = 1000  # corrections kept verbatim in the report (the count is always exact)


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


class StereoTally:
    """Report accumulators of a :class:`StereoStage` (running, bounded), since construction, over all chunks."""

    def __init__(self) -> None:
        self._frames = 0
        self._agree = _Running()
        self._agree_before = _Running()
        self._pl = _Running()
        self._pr = _Running()
        self._mismatch = 0
        self._n_corr = 0
        self._corr_log: list[dict] = []
        self._disp_sum: dict[int, list[float]] = {}

    def result(self, lm, rm, agreement, disparity, corrections, before) -> StereoResult:
        for v in before.values():
            self._agree_before.add(v)
        return StereoResult(lm, rm, agreement, disparity, corrections)

    def account(self, res: StereoResult, trace=None) -> None:
        """One reported frame (``trace``: the person trace, or None)."""
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
        if trace is not None:
            for tid, a in res.agreement.items():
                trace.event("stereo", "agreement", res.left.frame_idx, tid, value=float(a))
            for c in res.corrections:
                trace.event("stereo", "correction", c["frame"], c["track"])
        room = _MAX_LOGGED - len(self._corr_log)
        if room > 0:
            self._corr_log.extend(res.corrections[:room])
        for tid, d in res.disparity.items():
            s = self._disp_sum.setdefault(int(tid), [0.0, 0])
            s[0] += float(d)
            s[1] += 1

    def report(self, stage: StereoStage) -> dict:
        """The stats.json ``stereo`` block: these sums with the settings and counters of ``stage``'s parts."""
        def r(v: float | None) -> float | None:
            return None if v is None or not math.isfinite(v) else round(float(v), 4)

        val, det = stage.validator, stage.detection
        out = {
            "mode": stage.mode,
            "correction_method": val.corrector.method,
            "validation_threshold": val.threshold,
            "use_disparity_mapping": stage.use_mapping,
            "frames": self._frames,
            "agreement_mean": r(self._agree.mean),
            "agreement_min": r(self._agree.min) if self._agree.n else None,
            "agreement_before_correction_mean": r(self._agree_before.mean),
            "corrections": self._n_corr,
            "reprompts": val.corrector.n_reprompt,
            "fuse_edges": val.fuse_edges,
            "fused": val.n_fused,
            "persons_left": {"max": int(self._pl.max) if self._pl.n else 0, "mean": r(self._pl.mean) or 0.0},
            "persons_right": {"max": int(self._pr.max) if self._pr.n else 0, "mean": r(self._pr.mean) or 0.0},
            "id_mismatches": self._mismatch,
            "disparity_px": {str(k): round(s / max(n, 1), 3) for k, (s, n) in sorted(self._disp_sum.items())},
            "correction_log": list(self._corr_log),
            "correction_log_truncated": self._n_corr > len(self._corr_log),
            "source_detections": det.source.used,
            "follow": dict(stage.follower.stats) if stage.follower is not None else None,
        }
        if det.equirect is not None:
            out["equirect"] = dict(det.equirect.stats)
        vouching = det.vouching_report()
        if vouching is not None:
            out["vouching"] = vouching
        return out
