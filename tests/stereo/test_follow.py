"""stereo/follow.py: box-prior tracks re-found by the real bundled detector between detection frames."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stereo_synth import pasted
from vr180matte.boxes import box_iou
from vr180matte.engines.embedded_segmenter import EmbeddedSegmenter
from vr180matte.engines.yolo import YoloDetector
from vr180matte.engines.yolo_batch import PAD, window_batch
from vr180matte.runtime.models import bundled_detector_path
from vr180matte.stereo.follow import PriorFollower
from vr180matte.track.view_matter import ViewMatter

WIDTH = 24.0  # px: a distant person, boxed by the detector but left to the box prior by the segmenter


@pytest.fixture(scope="module")
def det() -> YoloDetector:
    return YoloDetector(bundled_detector_path(), "yolov8s", confidence_threshold=0.4, person_classes=(0, 1),
                        source="bundled")


def _frame(t: int, dx: float = 7.0):
    """Frame ``t`` of a dancer walking right ``dx`` px a frame: (image, true mask, true box)."""
    img, _, gt, _ = pasted(256, [("davis2016_dance-twirl", 30 + t, WIDTH, 80.0 + dx * t, 110.0, 2.0)])
    ys, xs = np.nonzero(gt[0])
    return img, gt[0], np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


class _NobodyGraphs:
    """The pose graphs finding nobody, as they do for most people this small (engines/embedded_prior.py)."""

    def landmarks(self, rgb, roi):
        return None

    def detect(self, rgb, offset=(0, 0)):
        return []

    def close(self):
        pass


def _view() -> ViewMatter:
    seg = EmbeddedSegmenter(view="left")
    seg._graphs = _NobodyGraphs()
    return ViewMatter("left", seg, None)


def test_window_batch_is_the_window_resampled_with_grey_outside():
    img = torch.randint(0, 256, (64, 96, 3), dtype=torch.uint8)
    windows = np.float32([[10, 20, 42, 52], [80, -8, 112, 24]])  # inside; reaching past the right and top edges
    x = window_batch(img, windows, 32, torch.device("cpu"))
    assert x.shape == (2, 3, 32, 32)
    # An integer window at its own size samples every pixel centre exactly.
    ref = img[20:52, 10:42].permute(2, 0, 1).float() / 255
    assert torch.allclose(x[0], ref, atol=1e-5)
    assert torch.allclose(x[1, :, 8:, :16], img[0:24, 80:96].permute(2, 0, 1).float() / 255, atol=1e-5)
    assert torch.allclose(x[1, :, :8], torch.full((3, 8, 32), PAD), atol=1e-6)  # above the image
    assert torch.allclose(x[1, :, :, 16:], torch.full((3, 32, 16), PAD), atol=1e-6)  # right of it


def test_detect_windows_finds_the_person_in_image_pixels(det):
    img, _, gt = _frame(0)
    c, r = 0.5 * (gt[:2] + gt[2:]), float(max(gt[2:] - gt[:2]))  # a window twice the person's longest side
    windows = np.float32([[c[0] - r, c[1] - r, c[0] + r, c[1] + r], [0, 0, 60, 60]])  # the person; nobody
    rows = det.detect_windows(torch.from_numpy(img), windows, 128, 0.15)
    assert len(rows) == 2 and rows[0].shape[1] == 5
    assert len(rows[0]) and box_iou(gt, rows[0][:1, :4])[0, 0] > 0.5, rows[0]
    assert rows[0][0, 4] >= 0.15
    assert not len(rows[1]) or rows[1][:, 4].max() < 0.4, rows[1]  # no confident person on the empty corner


@pytest.mark.parametrize("follow", [False, True])
def test_a_prior_track_follows_its_person_between_detections(det, follow):
    """The track is started from a box on frame 0 and never detected again; the person walks 7 px a frame. Without
    the follower its prior stays in the first box and the matte loses the person; with it the matte stays on them,
    and the trace counts the moves."""
    view = _view()
    follower = PriorFollower(det)
    img, _, box = _frame(0)
    view.step(0, torch.from_numpy(img), seeds={1: (box, None)})
    covered = []
    for t in range(1, 7):
        img, gt, _ = _frame(t)
        if follow:
            follower.step(t, [(view, torch.from_numpy(img), None)])
        out = view.step(t, torch.from_numpy(img), run_detector=False)
        m = out.tracks[1].prob.numpy() > 0.5
        covered.append((m & gt).sum() / gt.sum())
    assert view.segmenter.prior_ids == {1}
    if follow:
        assert min(covered) >= 0.5, covered
        assert follower.stats["moved"] >= 3 and follower.stats["windows"] == 6
    else:
        assert covered[-1] < 0.2, covered


def test_identical_eyes_are_followed_to_identical_boxes(det):
    img, _, box = _frame(0)
    views = [_view(), _view()]
    for v in views:
        v.step(0, torch.from_numpy(img), seeds={1: (box, None)})
    img, _, _ = _frame(3)
    PriorFollower(det).step(3, [(v, torch.from_numpy(img), None) for v in views])
    outs = [v.step(3, torch.from_numpy(img), run_detector=False) for v in views]
    assert torch.equal(outs[0].tracks[1].prob, outs[1].tracks[1].prob)
    assert outs[0].tracks[1].prob.sum() > 0


def test_a_source_eye_is_searched_and_boxes_come_back_in_processing_pixels(det):
    """With a source eye twice the size, the windows are cut there and the new box is in the processing eye's px."""
    import cv2

    img, gt, box = _frame(0)
    src = cv2.resize(img, (512, 512), interpolation=cv2.INTER_CUBIC)
    view = _view()
    view.step(0, torch.from_numpy(img), seeds={1: (box * np.float32([1, 1, 1, 1]) + np.float32([4, 6, -4, -6]),
                                                    None)})  # a shrunk box
    follower = PriorFollower(det)
    follower.step(1, [(view, torch.from_numpy(img), torch.from_numpy(src))])
    assert follower.stats["moved"] == 1
    new = view._pending[1][0]
    assert box_iou(new, gt[None] if gt.ndim == 1 else box)[0, 0] > 0.5, (new, box)


def _stereo_frame(t: int, disparity: float, identical: bool, dx: float = 3.0):
    left, right, gl, gr = pasted(256, [("davis2016_dance-twirl", 30 + t, 28.0, 80.0 + dx * t, 110.0, disparity)],
                                 identical=identical)
    return torch.from_numpy(left), torch.from_numpy(right), gl[0], gr[0]


@pytest.mark.parametrize("identical", [False, True])
def test_coupled_stereo_searches_the_left_eye_and_carries_the_box_by_disparity(identical):
    """master_slave with the real embedded engine and its bundled detector (detection on frame 0 only): the left
    prior is followed, the right eye's prior of the same person gets the left box moved by the disparity (no search
    of its own), so identical eyes keep identical mattes and both eyes stay on the walking person."""
    from vr180matte.boxes import shift_box
    from vr180matte.config import load_config
    from vr180matte.engines.embedded import EmbeddedEngine
    from vr180matte.stereo.consistency import StereoStage

    cfg = load_config(None, ["stereo.consistency_mode=master_slave", "detection.detect_interval=100",
                             "detection.equirect_crops=false", "hardware.device=cpu"])
    stage = StereoStage.for_engine(cfg, EmbeddedEngine(cfg, torch.device("cpu")), equirect=False)
    for view in (stage.left, stage.right):
        view.segmenter._graphs = _NobodyGraphs()
    stage.reset()
    d = 0.0 if identical else 4.0
    for t in range(6):
        li, ri, gl, gr = _stereo_frame(t, d, identical)
        if t > 1:  # the disparity the follower carries the left box by on this frame (validation updates it after)
            d_used = stage.smoother.get(tid)
        res = stage.step(t, li, ri)
        assert len(res.left.tracks) == 1 and sorted(res.left.tracks) == sorted(res.right.tracks)
        tid = next(iter(res.left.tracks))
        pl, pr = res.left.tracks[tid].prob.numpy() > 0.5, res.right.tracks[tid].prob.numpy() > 0.5
        assert (pl & gl).sum() >= 0.5 * gl.sum() and (pr & gr).sum() >= 0.5 * gr.sum(), t
        if identical:
            assert np.array_equal(pl, pr), t
    rep = stage.report()["follow"]
    assert rep["moved"] >= 2 and rep["carried"] >= 2 and rep["windows"] == 5, rep  # left eye only: 1 window a frame
    assert stage.left.segmenter.prior_ids == stage.right.segmenter.prior_ids == {tid}
    # The right prior box is the left one shifted by the person's smoothed disparity.
    rb = stage.right.segmenter.prior_boxes[tid]
    lb = stage.left.segmenter.prior_boxes[tid]
    assert np.allclose(rb, shift_box(lb, d_used, 256), atol=1e-4), (lb, rb, d_used)
    assert abs(d_used - d) < 0.5
