"""Pure association logic: IoU, mask boxes, Hungarian matching, life-cycle rules, id allocation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vr180matte.engines.base import Detection
from vr180matte.track.ids import IdAllocator
from vr180matte.track.tracker import Track, Tracker, box_iou, mask_box, mask_stats


def _det(box, score=0.9) -> Detection:
    return Detection(box=np.array(box, dtype=np.float32), score=score)


def _trk(tid, box) -> Track:
    return Track(id=tid, box=None if box is None else np.array(box, dtype=np.float32), score=1.0)


def test_box_iou_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], dtype=np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=np.float32)
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0], rtol=1e-6)
    np.testing.assert_allclose(iou[1], [0.0, 0.0, 0.0])  # degenerate box: 0, not NaN
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)


def test_mask_box_exact_and_empty(device):
    prob = torch.zeros(20, 30, device=device)
    prob[3:8, 10:25] = 0.9
    prob[0, 0] = 0.4  # below the threshold
    np.testing.assert_array_equal(mask_box(prob), np.array([10, 3, 25, 8], dtype=np.float32))
    assert mask_box(torch.zeros(5, 5, device=device)) is None
    assert mask_box(prob, thresh=0.95) is None
    stats = mask_stats([prob, torch.zeros(20, 30, device=device)])
    box, area, conf = stats[0]
    assert area == pytest.approx(75 / 600)
    assert conf == pytest.approx(0.9, abs=1e-6)
    assert stats[1] == (None, 0.0, 0.0)


def test_mask_box_half_precision():
    prob = torch.zeros(16, 16, dtype=torch.float16)
    prob[4:6, 2:9] = 1.0
    np.testing.assert_array_equal(mask_box(prob), [2, 4, 9, 6])


def test_match_simple_and_threshold():
    tr = Tracker(iou_threshold=0.3)
    tracks = [_trk(1, [0, 0, 10, 10]), _trk(2, [50, 50, 60, 60])]
    dets = [_det([51, 50, 61, 60]), _det([100, 100, 110, 110]), _det([1, 0, 11, 10])]
    matched, ut, ud = tr.match(tracks, dets)
    assert sorted(matched) == [(0, 2), (1, 0)]
    assert ut == [] and ud == [1]
    # a pair below the threshold is never matched, even if it is the only option
    matched, ut, ud = tr.match([_trk(1, [0, 0, 10, 10])], [_det([8, 0, 18, 10])])  # IoU 2/18
    assert matched == [] and ut == [0] and ud == [0]


def test_match_empty_inputs():
    tr = Tracker()
    assert tr.match([], [_det([0, 0, 1, 1])]) == ([], [], [0])
    assert tr.match([_trk(1, [0, 0, 1, 1])], []) == ([], [0], [])


def test_match_is_globally_optimal_not_greedy():
    """Greedy (best IoU first) would pair T0-D0 and leave T1, D1 unmatched; Hungarian pairs both."""
    t0 = [0, 0, 10, 10]
    tracks = [_trk(1, t0), _trk(2, [-6, 0, 4, 10])]
    d0 = [2, 0, 12, 10]  # IoU(t0)=0.667, IoU(t1)=2/18
    d1 = [-3, 0, 7, 10]  # IoU(t0)=7/13=0.538, IoU(t1)=7/13
    dets = [_det(d0), _det(d1)]
    iou = box_iou(np.array([t.box for t in tracks]), np.array([d.box for d in dets]))
    assert iou[0, 0] > iou[0, 1] > 0.3 and iou[1, 0] < 0.3 < iou[1, 1]
    matched, ut, ud = Tracker(iou_threshold=0.3).match(tracks, dets)
    assert sorted(matched) == [(0, 0), (1, 1)]
    # T0 taking its best detection would leave T1 nothing
    tracks = [_trk(1, [0, 0, 10, 10]), _trk(2, [3, 0, 13, 10])]
    dets = [_det([2, 0, 12, 10]), _det([-4, 0, 6, 10])]
    iou = box_iou(np.array([t.box for t in tracks]), np.array([d.box for d in dets]))
    assert iou[0, 0] > iou[0, 1] >= 0.3 and iou[1, 0] >= 0.3 and iou[1, 1] < 0.3  # row-order greedy: T0 takes D0, T1 is lost
    matched, ut, ud = Tracker(iou_threshold=0.3).match(tracks, dets)
    assert sorted(matched) == [(0, 1), (1, 0)] and ut == [] and ud == []


def test_match_uses_last_box_while_missed():
    t = _trk(4, None)
    t.last_box = np.array([10, 10, 20, 20], dtype=np.float32)
    matched, _, _ = Tracker().match([t, _trk(5, None)], [_det([11, 10, 21, 20])])
    assert matched == [(0, 0)]


def test_drift_and_end_rules():
    tr = Tracker(max_missed=3, drift_iou=0.5)
    t = _trk(1, [0, 0, 10, 10])
    assert not tr.is_drifted(t, _det([1, 0, 11, 10]))
    assert tr.is_drifted(t, _det([6, 0, 16, 10]))
    t.box = None
    assert tr.is_drifted(t, _det([0, 0, 10, 10]))  # empty mask but detected: re-acquire
    t.missed = 3
    assert not tr.should_end(t)
    t.missed = 4
    assert tr.should_end(t)
    t.missed, t.unmatched_runs = 1, 2
    assert tr.should_end(t, confirm_end_runs=2) and not tr.should_end(t, confirm_end_runs=0)
    assert tr.is_empty(0.0) and Tracker(min_mask_area=0.01).is_empty(0.005)
    with pytest.raises(ValueError):
        Tracker(iou_threshold=1.5)


def test_id_allocator():
    ids = IdAllocator()
    assert [ids.new(), ids.new()] == [1, 2]
    ids.observe(9)
    assert ids.new() == 10
    ids.observe(3)  # an older id does not move the counter back
    assert ids.next_id == 11
    assert IdAllocator(next_id=42).new() == 42
    with pytest.raises(ValueError):
        IdAllocator(0)

