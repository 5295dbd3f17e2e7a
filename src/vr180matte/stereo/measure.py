"""Per-person disparity of a stereo frame: the validation's measurements and their smoothing across frames.

The disparity of every person (stereo/disparity.py) is measured in one batched call a frame, whichever part of
the stage asks first: a frame that seeds the right eye from the left (master-slave) measures the seeds and every
other left-eye person together, and the validation then takes those instead of measuring again. The smoothed
values (:class:`DisparitySmoother`) are the state kept across frames; they are dropped with the person.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..engines.base import FrameMatte, TrackMask
from .disparity import DisparityJob, DisparitySmoother, measure_disparities_with, measure_disparity
from .result import MASK_T

if TYPE_CHECKING:  # the stage builds this part; only type hints go the other way
    from .consistency import StereoStage

__all__ = ["PersonDisparities"]


class PersonDisparities:
    """Measures and smooths each person's disparity (left x - right x) for :class:`StereoValidator`.

    Reads the stage's ``max_disp``. ``measure``: the batched measurement (stereo/disparity.py
    ``measure_disparities_with``: ``(jobs, extra=None) -> (results, extra's values)``).
    """

    def __init__(self, stage: StereoStage, smoothing: float,
                 measure: Callable[..., tuple[list, list]] = measure_disparities_with) -> None:
        self.stage = stage
        self.measure = measure
        self.smoother = DisparitySmoother(float(smoothing))
        # This frame only: the validation's measurements made with the seeds (seed_disparities).
        self.premeasured: dict[int, tuple[float, float]] = {}

    def disparity(self, tid: int, left_img, right_img, left_prob, prior: float | None) -> float:
        """Measure this frame's disparity of ``tid`` and return the smoothed value."""
        p = self.smoother.predict(tid)
        d, conf = measure_disparity(left_img, right_img, left_prob, max_disp=self.stage.max_disp,
                                    prior=p if p is not None else prior)
        return self.smoother.update(tid, d, conf)

    def seed_disparities(self, left_img, right_img, seeds: list[tuple[int, torch.Tensor, float | None]],
                         lm: FrameMatte | None = None) -> list[float]:
        """:meth:`disparity` of every ``(tid, left_prob, prior)`` (new left tracks the right eye is seeded from),
        measured in one batched call (one download for all of them, not about ten reads each).

        With ``lm`` (the left eye's matte of the frame), this frame's validation measurement of every other person
        the left eye has is made in the same call and kept for the frame's validation (:meth:`measure_all`; its
        jobs need only the left masks and the right image, both known now): a frame that seeds measures once, not
        twice. The seeds' boxes are taken from ``lm`` too, so nothing is read to place their searches."""
        self.premeasured = {}
        if not seeds:
            return []
        jobs = []
        for tid, prob, prior in seeds:
            p = self.smoother.predict(tid)
            tm = None if lm is None else lm.tracks.get(tid)
            box = self.own_box(tm if tm is not None and tm.prob is prob else None, self.stage.left)
            jobs.append(DisparityJob(left_img, right_img, prob, self.stage.max_disp,
                                     prior=p if p is not None else prior, box=box))
        seeded = {tid for tid, _, _ in seeds}
        more = [] if lm is None else [tid for tid in sorted(lm.tracks)
                                      if tid not in seeded and lm.tracks[tid].box is not None]
        for tid in more:
            jobs.append(self.left_job(tid, left_img, right_img, lm.tracks[tid]))
        got = self.measure(jobs)[0]
        self.premeasured = dict(zip(more, got[len(seeds):]))
        return [self.smoother.update(tid, d, conf) for (tid, _, _), (d, conf) in zip(seeds, got)]

    def left_job(self, tid: int, left_img, right_img, lt: TrackMask) -> DisparityJob:
        """The validation's measurement of a person the left eye has: left to right, the smoother's prior."""
        return DisparityJob(left_img, right_img, lt.prob, self.stage.max_disp, prior=self.smoother.predict(tid),
                            box=self.own_box(lt, self.stage.left))

    @staticmethod
    def own_box(tm: TrackMask | None, view) -> np.ndarray | None:
        """``tm``'s box when it is its mask's own at the disparity's threshold (``view`` measured its tracks'
        boxes on pixels > 0.5, in the frame's one download): the measurement then reads no box of its own
        (stereo/disparity.py ``DisparityJob.box``). None otherwise: the measurement reads it."""
        if tm is None or getattr(view, "mask_threshold", None) != MASK_T:
            return None
        return tm.box

    def measure_all(self, ids, left_img, right_img, lm: FrameMatte, rm: FrameMatte, skip: set[int],
                     extra: torch.Tensor | None = None) -> tuple[dict, list[float]]:
        """This frame's disparity measurement ``{tid: (d, confidence)}`` of every person the validation measures,
        in one batched call (stereo/disparity.py ``measure_disparities_with``: one download a frame when every
        person's box is known, not about ten per person; ``extra``'s values come down with it and are returned).
        A person seen by the left eye is searched left to right; one only the right eye has, right to left (its
        ``d`` is negated by the caller). The prior is the smoother's prediction, as one by one."""
        jobs, tids = [], []
        max_disp = self.stage.max_disp
        for tid in ids:
            lt, rt = lm.tracks.get(tid), rm.tracks.get(tid)
            if tid in skip:
                continue
            if lt is not None and lt.box is not None:
                if tid in self.premeasured:
                    continue  # measured with the frame's seeds (seed_disparities)
                jobs.append(self.left_job(tid, left_img, right_img, lt))
            elif rt is not None and rt.box is not None:
                p = self.smoother.predict(tid)
                jobs.append(DisparityJob(right_img, left_img, rt.prob, max_disp // 4 + 1, min_disp=-max_disp,
                                         prior=None if p is None else -p, box=self.own_box(rt, self.stage.right)))
            else:
                continue
            tids.append(tid)
        got, extra_values = self.measure(jobs, extra) if jobs or extra is not None else ([], [])
        measured, self.premeasured = {**self.premeasured, **dict(zip(tids, got))}, {}  # used: this frame's only
        return measured, extra_values
