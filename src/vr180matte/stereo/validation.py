"""Validation of the two eyes: does each person's right mask, mapped back by disparity, match the left one?

Every frame, for every person, the right mask is mapped back by the (smoothed) disparity and compared with the
left mask (IoU = "agreement"). Below ``stereo.validation_threshold`` the person is corrected (stereo/correction.py);
a person that passes gets both eyes' aligned probabilities averaged (``fuse_edges``) so the two eyes carry the
same edge. The per-person state kept across frames (the smoothed disparity and the agreed mask area the
correction judges the weaker eye by) lives here, bounded: it is dropped when the person's left track ends.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..boxes import mask_stats_on_device
from ..config import Config
from ..engines.base import FrameMatte, TrackMask
from .correction import StereoCorrector
from .disparity import measure_disparities_with, shift_mask
from .measure import PersonDisparities
from .result import MASK_T, StereoResult, band_box, iou_on_device

if TYPE_CHECKING:  # the stage builds this part; only type hints go the other way
    from .consistency import StereoStage

__all__ = ["StereoValidator"]


class _Rows:
    """The rows ``[r0, r1)`` of an (H, W) eye outside which a person's masks are exactly zero. ``eye[rows.band]``
    cuts them; :meth:`full` zero-pads such a cut back to the eye (``band_box`` places a cut's box in the eye)."""

    def __init__(self, r0: int, r1: int, height: int) -> None:
        self.r0, self.r1, self.height = r0, r1, height
        self.band = slice(r0, r1)

    def full(self, band: torch.Tensor) -> torch.Tensor:
        if self.r0 == 0 and self.r1 == self.height:
            return band
        out = band.new_zeros((self.height, *band.shape[1:]))
        out[self.band] = band
        return out


def _score(own: TrackMask | None, other: TrackMask | None) -> float:
    return float(own.score if own is not None and own.box is not None else (other.score if other else 0.0))


@dataclass
class _Person:
    """One person of the frame as validation sees it: both eyes' eye-sized probabilities (zeros for an eye
    without the person), the mapping disparity, and whether a passing person gets its edges fused."""

    tid: int
    lt: TrackMask | None
    rt: TrackMask | None
    dm: float
    pl: torch.Tensor
    pr: torch.Tensor
    fuse: bool


@dataclass
class _Compared:
    """What :func:`_compare` measured for a person, on the host: agreement before (and after fusing), the
    fused rows of both eyes (device tensors, used when the person passes), their boxes in the eye, and the
    agreed mask area (of the fused masks for a fused person, else of the masks as they came)."""

    before: float
    after: float
    fused: tuple[torch.Tensor, torch.Tensor] | None
    boxes: tuple[np.ndarray | None, np.ndarray | None]
    area: float
    raw: tuple[float, float]  # mask areas of both eyes as they came (what a correction judges the eyes by)


def _band_spans(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor | None:
    """(P, 2) on the device: the last and first row where either eye's mask of each person is non-zero (no read:
    the values come down with the disparity measurement's first download)."""
    spans = []
    for pl, pr in pairs:
        nz = (pl != 0).any(dim=-1) | (pr != 0).any(dim=-1)
        idx = torch.arange(nz.shape[0], device=nz.device)
        spans.append(torch.stack([torch.where(nz, idx, -1).max(), torch.where(nz, idx, nz.shape[0]).min()]))
    return torch.stack(spans) if spans else None


def _row_bands(values: list[float], heights: list[int]) -> list[_Rows]:
    """:class:`_Rows` of each person from :func:`_band_spans`' values."""
    return [_Rows(int(lo), int(hi) + 1, h) if hi >= 0 else _Rows(0, 0, h)
            for h, hi, lo in zip(heights, values[0::2], values[1::2])]


def _compare(people: list[_Person], bands: list[_Rows]) -> list[_Compared]:
    """Every person's agreement, speculative edge fusion, boxes and areas on its row band, in one download for the
    whole frame instead of about nine reads per person. The fusion is computed for every fusing person before the
    host knows who passes: a person that fails (rare) wastes that work and is corrected from its original masks."""
    if not people:
        return []
    rows_out, fused = [], []
    for p, rows in zip(people, bands):
        pl, pr = p.pl[rows.band], p.pr[rows.band]
        if not pl.shape[0]:  # no pixel in either eye: nothing to fuse, agreement 1 as for two empty masks
            fused.append(None)
            rows_out.append(torch.cat([torch.ones(2, device=pl.device), torch.zeros(14, device=pl.device)]))
            continue
        pr_back = shift_mask(pr, -p.dm)  # the right eye mapped onto the left
        v = [iou_on_device(pl, pr_back)]
        if p.fuse:
            fl = 0.5 * (pl + pr_back)
            fr = shift_mask(fl, p.dm)
            fused.append((fl, fr))
            v += [iou_on_device(fl, shift_mask(fr, -p.dm)), mask_stats_on_device(fl, MASK_T),
                  mask_stats_on_device(fr, MASK_T)]
        else:
            fused.append(None)
            v += [torch.zeros(13, device=pl.device)]
        v += [(pl > MASK_T).sum().float(), (pr > MASK_T).sum().float()]  # the masks as they came (correction)
        rows_out.append(torch.cat([t.reshape(-1).float() for t in v]))
    got = []
    for rows, f, v in zip(bands, fused, torch.stack(rows_out).cpu().tolist()):
        boxes = (band_box(v[2:8], rows.r0), band_box(v[8:14], rows.r0)) if f is not None else (None, None)
        area = 0.5 * (v[6] + v[12]) if f is not None else 0.5 * (v[14] + v[15])
        got.append(_Compared(before=v[0], after=v[1], fused=f, boxes=boxes, area=area, raw=(v[14], v[15])))
    return got


class StereoValidator:
    """Measures, compares and (via :class:`StereoCorrector`) corrects both eyes of each person of a frame.

    Reads the stage's views, this frame's ``max_disp`` and ``use_mapping``. The disparities are measured and
    smoothed by :class:`PersonDisparities` (stereo/measure.py, given ``measure``).
    """

    def __init__(self, cfg: Config, stage: StereoStage, fuse_edges: bool = True,
                 measure: Callable[..., tuple[list, list]] = measure_disparities_with) -> None:
        st = cfg.stereo
        self.stage = stage
        self.corrector = StereoCorrector(str(st.correction_method), stage)
        self.threshold = float(st.validation_threshold)
        # Coupled modes: persons that pass validation get the average of both eyes' aligned probabilities, so the
        # two eyes carry the same edge (independent segmenter noise otherwise shimmers between the eyes).
        self.fuse_edges = bool(fuse_edges)
        self.n_fused = 0
        self.disparities = PersonDisparities(stage, float(st.disparity_smoothing), measure)
        self._ref_area: dict[int, float] = {}  # person -> agreed mask area on the last validated frame
        # This frame only: row bands posted by the right view (post_bands).
        self._bands: dict[int, tuple[float, float]] | None = None

    def load(self, state: dict | None) -> None:
        """Restore :meth:`state` (None: a fresh start)."""
        self.disparities.smoother.load((state or {}).get("disparity"))
        self._ref_area = {int(k): float(v) for k, v in (state or {}).get("ref_area", {}).items()}

    def state(self) -> dict:
        """Picklable hand-off: ``{"disparity": {id: (value, velocity)}, "ref_area": {id: area}}``."""
        return {"disparity": self.disparities.smoother.state(), "ref_area": dict(self._ref_area)}

    def post_bands(self, lm: FrameMatte, right_masks: dict[int, torch.Tensor], download) -> None:
        """Before the right eye's track update (master-slave): every person's row band (rows where the left mask
        or the right mask is non-zero), posted to the right view's download so it comes down with that view's
        statistics; :meth:`validate` then reads no band of its own. A person whose right mask turns out empty is
        compared against zeros there, so its band here (the mask's rows too) is wider than needed, never narrower:
        the banded steps are exact on any band that covers the non-zero rows."""
        tids = sorted(set(lm.tracks) | set(right_masks))
        pairs = []
        for tid in tids:
            lt, pr = lm.tracks.get(tid), right_masks.get(tid)
            pl = lt.prob if lt is not None and lt.box is not None else None
            if pl is None and pr is None:
                continue
            pairs.append((tid, pl if pl is not None else torch.zeros_like(pr), pr if pr is not None else torch.zeros_like(pl)))
        self._bands = None
        if not pairs:
            self._bands = {}
            return
        spans = _band_spans([(a, b) for _, a, b in pairs])

        def then(v: list[float]) -> None:
            self._bands = {tid: (v[2 * i], v[2 * i + 1]) for i, (tid, _, _) in enumerate(pairs)}

        download.post(spans, then)

    def validate(self, frame_idx, left_img, right_img, lm: FrameMatte, rm: FrameMatte,
                 skip_measure: set[int]) -> StereoResult:
        """Compare, fuse or correct every person of the frame. Host reads: the disparity measurement's two (the
        first also brings every person's row band), one for all persons' agreement, fused boxes and areas
        (:func:`_compare`); on a frame with corrections (persons whose eyes disagree), one more for all of them."""
        agreement: dict[int, float] = {}
        before: dict[int, float] = {}
        disparity: dict[int, float] = {}
        corrections: list[dict] = []
        left_live = set(self.stage.left.live_ids)
        for tid in list(rm.tracks):
            if tid not in left_live:
                del rm.tracks[tid]
        ids = sorted(set(lm.tracks) | set(rm.tracks))
        seen = []  # (tid, lt, rt, l_ok, r_ok, pl, pr) of every person either eye has
        for tid in ids:
            lt, rt = lm.tracks.get(tid), rm.tracks.get(tid)
            l_ok = lt is not None and lt.box is not None
            r_ok = rt is not None and rt.box is not None
            if not l_ok and not r_ok:
                continue  # momentarily lost in both eyes: nothing to compare
            pl = lt.prob if l_ok else torch.zeros_like(rt.prob)
            pr = rt.prob if r_ok else torch.zeros_like(lt.prob)
            seen.append((tid, lt, rt, l_ok, r_ok, pl, pr))
        # Disparity is horizontal, so every step below is row by row: it runs on the rows where either mask is
        # non-zero (a person's height, not the eye's) and the results are zero-padded back, bit for bit what the
        # whole eye gives. Those row bands come down with the disparity measurement's first download.
        posted, self._bands = self._bands, None
        if posted is not None and all(c[0] in posted for c in seen):  # master-slave: with the right view's download
            measured, _ = self.disparities.measure_all(ids, left_img, right_img, lm, rm, skip_measure)
            span_values = [v for c in seen for v in posted[c[0]]]
        else:
            spans = _band_spans([(c[5], c[6]) for c in seen])
            measured, span_values = self.disparities.measure_all(ids, left_img, right_img, lm, rm, skip_measure, spans)
        bands = _row_bands(span_values, [int(c[5].shape[0]) for c in seen])
        people: list[_Person] = []
        for tid, lt, rt, l_ok, r_ok, pl, pr in seen:
            if tid in skip_measure:
                d = self.disparities.smoother.get(tid)
            elif l_ok:
                d = self.disparities.smoother.update(tid, *measured[tid])
            else:
                d_r, conf = measured[tid]
                d = self.disparities.smoother.update(tid, -d_r, conf)
            d = 0.0 if d is None else float(d)
            disparity[tid] = d
            fuse = self.fuse_edges and l_ok and r_ok
            people.append(_Person(tid, lt, rt, d if self.stage.use_mapping else 0.0, pl, pr, fuse))
        compared = _compare(people, bands)
        # Persons whose eyes disagree (rare) are corrected; the numbers of all of them come down in one download.
        fixes = {}
        for p, rows, got in zip(people, bands, compared):
            if got.before < self.threshold:
                pl, pr = p.pl[rows.band], p.pr[rows.band]
                fixes[p.tid] = self.corrector.apply(p.tid, p.lt, p.rt, pl, pr, p.dm, self._ref_area, got.raw)
        fixed = dict(zip(fixes, torch.stack([f[4] for f in fixes.values()]).cpu().tolist())) if fixes else {}
        for p, rows, got in zip(people, bands, compared):
            tid, lt, rt = p.tid, p.lt, p.rt
            a = got.before
            before[tid] = a
            if tid in fixes:
                pl, pr, weak, eye, _ = fixes[tid]
                a, boxes, areas, rec = self.corrector.finish(frame_idx, tid, lt, rt, pl, pr, weak, eye, a, rows,
                                                             fixed[tid])
                corrections.append(rec)
                lm.tracks[tid] = TrackMask(track_id=tid, prob=rows.full(pl), box=boxes[0], score=_score(lt, rt))
                rm.tracks[tid] = TrackMask(track_id=tid, prob=rows.full(pr), box=boxes[1], score=_score(rt, lt))
                area = 0.5 * (areas[0] + areas[1])
            elif p.fuse and got.fused is not None:  # (an empty row band has nothing to fuse)
                lm.tracks[tid] = TrackMask(track_id=tid, prob=rows.full(got.fused[0]), box=got.boxes[0],
                                           score=_score(lt, None))
                rm.tracks[tid] = TrackMask(track_id=tid, prob=rows.full(got.fused[1]), box=got.boxes[1],
                                           score=_score(rt, None))
                a = got.after
                self.n_fused += 1
                area = got.area
            else:
                area = got.area
            agreement[tid] = a
            self._ref_area[tid] = area
        for tid in list(self._ref_area):
            if tid not in left_live:
                self.forget(tid)
        return self.stage.result(lm, rm, agreement, disparity, corrections, before)

    def forget(self, tid: int) -> None:
        self.disparities.smoother.drop(tid)
        self._ref_area.pop(tid, None)
