"""The embedded engine on real footage with the real bundled mediapipe models (nothing downloaded)."""
from __future__ import annotations

import logging
import time

import av
import cv2
import numpy as np
import pytest
import torch

from synth import davis_frames, media
from vr180matte.config import default_config
from vr180matte.engines.base import Detector, Segmenter
from vr180matte.engines.embedded import EMBEDDED_MAX_THRESHOLD, EmbeddedDetector, EmbeddedEngine, EmbeddedSegmenter
from vr180matte.boxes import iou as box_iou, mask_box
from vr180matte.engines.yolo import YoloDetector
from vr180matte.runtime.models import bundled_detector_path

log = logging.getLogger(__name__)


def _rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


@pytest.fixture(scope="module")
def detector() -> EmbeddedDetector:
    d = EmbeddedDetector()
    yield d
    d.close()


@pytest.fixture(scope="module")
def segmenter() -> EmbeddedSegmenter:
    s = EmbeddedSegmenter()
    yield s
    s.close()


def run_davis(detector, segmenter, sequence: str, count: int | None, interval: int = 10) -> dict:
    """The simple loop the issue specifies: detect on frame 0 and every ``interval`` frames, prompt track 0 with
    the detection that best matches the ground truth, segment every frame; IoU of the union of tracks (>0.5) and
    of the best single track."""
    frames, masks = davis_frames(sequence, count)
    segmenter.reset()
    union, best = [], []
    t_seg = t_det = 0.0
    n_det = 0
    for i, (fp, mp) in enumerate(zip(frames, masks)):
        img = torch.from_numpy(_rgb(fp))
        gt = cv2.imread(str(mp), cv2.IMREAD_GRAYSCALE) > 127
        if i % interval == 0:
            t = time.perf_counter()
            dets = detector.detect(img)
            t_det += time.perf_counter() - t
            n_det += 1
            if dets:
                gbox = mask_box(gt.astype(np.float32))
                segmenter.add_prompt(0, box=max(dets, key=lambda d: box_iou(d.box, gbox)).box)
        t = time.perf_counter()
        out = segmenter.segment(i, img)
        t_seg += time.perf_counter() - t
        on = [m.numpy() > 0.5 for m in out.values()]
        union.append(_iou(np.logical_or.reduce(on) if on else np.zeros_like(gt), gt))
        best.append(max((_iou(m, gt) for m in on), default=0.0))
    segmenter.reset()
    res = {
        "union_miou": float(np.mean(union)),
        "best_track_miou": float(np.mean(best)),
        "det_ms": 1e3 * t_det / max(n_det, 1),
        "seg_ms": 1e3 * t_seg / len(frames),
        "frames": len(frames),
    }
    log.info("%s: %s", sequence, res)
    return res


def test_parkour_full_iou(detector, segmenter):
    res = run_davis(detector, segmenter, "davis2016_parkour", None)
    print(res)
    assert res["frames"] == 100
    assert res["union_miou"] >= 0.85, res


@pytest.mark.slow
def test_dance_twirl_best_track_iou(detector, segmenter):
    res = run_davis(detector, segmenter, "davis2016_dance-twirl", None)
    print(res)
    assert res["best_track_miou"] >= 0.8, res


def _two_people() -> np.ndarray:
    """Parkour runner (left half) next to a talking head (right half): 960x480."""
    frames, _ = davis_frames("davis2016_parkour", 1)
    runner = _rgb(frames[0])[:, 300:780]
    with av.open(str(media("talking_heads_audio_videoretalking", "face_2.mp4"))) as c:
        head = next(c.decode(video=0)).to_ndarray(format="rgb24")
    head = cv2.resize(head, (480, 480), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(np.concatenate([runner, head], axis=1))


def test_two_people_two_detections_two_masks(detector, segmenter):
    img = torch.from_numpy(_two_people())
    dets = detector.detect(img)
    assert len(dets) == 2, [(d.score, d.box) for d in dets]
    centres = sorted(float(d.box[0] + d.box[2]) / 2 for d in dets)
    assert centres[0] < 480 < centres[1]
    for d in dets:
        assert d.mask is not None and d.mask.shape == (480, 960) and d.mask.dtype == torch.float32
        assert d.score >= 0.5
    segmenter.reset()
    for k, d in enumerate(dets):
        segmenter.add_prompt(k, box=d.box)
    for i in range(3):
        out = segmenter.segment(i, img)
    assert sorted(out) == [0, 1]
    m0, m1 = (out[k].numpy() > 0.5 for k in (0, 1))
    assert m0.sum() > 2000 and m1.sum() > 2000
    assert (m0 & m1).sum() < 0.02 * min(m0.sum(), m1.sum())
    # each mask lies on its own person's side
    for k, m in ((0, m0), (1, m1)):
        side = float(dets[k].box[0] + dets[k].box[2]) / 2 < 480
        frac_left = m[:, :480].sum() / m.sum()
        assert (frac_left > 0.9) if side else (frac_left < 0.1)
    # the talking head is a close-up (hips far below the frame): its prompt box must map to the detector's large
    # body ROI, else the landmark model settles on a too-small body and the mask takes in the map behind the
    # left shoulder and loses the right shoulder
    head = out[0] if float(dets[0].box[0]) > 480 else out[1]
    assert float(head[440:470, 900:940].mean()) > 0.8
    assert float(head[320:360, 540:580].mean()) < 0.2
    segmenter.reset()


def test_empty_frame(detector, segmenter):
    img = torch.full((240, 320, 3), 90, dtype=torch.uint8)
    assert detector.detect(img) == []
    segmenter.reset()
    segmenter.add_prompt(3, box=np.array([100, 50, 180, 200], dtype=np.float32))
    out = segmenter.segment(0, img)
    assert list(out) == [3]
    assert out[3].shape == (240, 320) and out[3].dtype == torch.float32
    assert float(out[3].max()) < 0.5  # nobody there: the track is lost, not invented
    segmenter.reset()


def test_remove_track_and_reset_free_state(segmenter):
    frames, _ = davis_frames("davis2016_parkour", 1)
    img = torch.from_numpy(_rgb(frames[0]))
    segmenter.reset()
    segmenter.add_prompt(1, box=np.array([507, 53, 599, 220], dtype=np.float32))
    segmenter.add_prompt(2, box=np.array([10, 10, 60, 100], dtype=np.float32))
    out = segmenter.segment(0, img)
    assert sorted(out) == [1, 2]
    assert float((out[1] > 0.5).sum()) > 3000
    segmenter.remove_track(2)
    assert segmenter.track_ids == [1]
    assert sorted(segmenter.segment(1, img)) == [1]
    segmenter.reset()
    assert segmenter.track_ids == []
    assert segmenter.segment(2, img) == {}


def test_prompt_needs_box_or_mask(segmenter):
    from vr180matte.engines.base import EngineError

    with pytest.raises(EngineError):
        segmenter.add_prompt(5, mask=torch.zeros(10, 10))


def test_engine_factory(device):
    cfg = default_config()
    eng = EmbeddedEngine(cfg, device)
    assert eng.name == "embedded" and eng.device == device
    det = eng.make_detector()
    seg = eng.make_segmenter("right")
    assert isinstance(det, Detector) and isinstance(seg, Segmenter)
    # The engine detects with the bundled YOLOv8s (both of its classes are people), not BlazePose.
    assert isinstance(det, YoloDetector) and det.person_classes == (0, 1) and det.source == "bundled"
    assert det.weights == bundled_detector_path()
    assert det.confidence_threshold == min(cfg.detection.confidence_threshold, EMBEDDED_MAX_THRESHOLD)
    assert eng.detector_stats()["source"] == "bundled"
    frames, masks = davis_frames("davis2016_parkour", 1)
    img = torch.from_numpy(_rgb(frames[0])).to(device)
    dets = det.detect(img)
    gt = mask_box((cv2.imread(str(masks[0]), cv2.IMREAD_GRAYSCALE) > 127).astype(np.float32))
    assert len(dets) == 1 and box_iou(dets[0].box, gt) > 0.7, [(d.box, d.score) for d in dets]
    seg.add_prompt(0, box=dets[0].box)
    out = seg.segment(0, img)
    assert out[0].device.type == device.type and out[0].shape == (480, 854)
    seg.close()


def _tiny_scene(width: float):
    """A DAVIS dancer ``width`` px wide pasted into a real background with nobody in it (a 256 px image)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stereo"))
    from stereo_synth import pasted

    left, _, gl, _ = pasted(256, [("davis2016_dance-twirl", 40, width, 120.0, 110.0, 2.0)])
    ys, xs = np.nonzero(gl[0])
    return left, gl[0], np.array([xs.min() - 1, ys.min() - 1, xs.max() + 2, ys.max() + 2], np.float32)


def test_a_person_too_small_for_the_pose_model_gets_the_box_prior():
    """A 6 px wide person (8 px and up the pose model still segments, given a tight box): the pose model finds
    nobody in the box, so without the prior the track's mask is empty (stillborn); with it the mask covers most of
    the person, nothing outside the box, and the track is listed as a prior."""
    img, gt, box = _tiny_scene(6.0)
    masks = {}
    for prior in (0.0, 64.0):
        seg = EmbeddedSegmenter(prior_max_px=prior)
        seg.add_prompt(1, box=box)
        p = seg.segment(0, torch.from_numpy(img))[1].numpy()
        masks[prior] = (p > 0.5, set(seg.prior_ids))
        p2 = seg.segment(1, torch.from_numpy(img))[1].numpy()  # kept alive on the next frame, in the same box
        assert ((p2 > 0.5).sum() > 0.5 * (p > 0.5).sum() > 0) == (prior > 0)
        seg.close()
    assert masks[0.0][0].sum() == 0 and masks[0.0][1] == set()
    on, ids = masks[64.0]
    assert ids == {1}
    assert (on & gt).sum() / gt.sum() >= 0.5  # most of the person matted
    assert _iou(on, gt) > 0.25
    x0, y0, x1, y1 = box.astype(int)
    assert on[:y0].sum() == on[y1:].sum() == on[:, :x0].sum() == on[:, x1:].sum() == 0  # nothing outside the box


def test_box_prior_follows_the_person_not_the_box():
    """GrabCut separates the person from the box's surroundings: the prior overlaps the person better than the
    ellipse it starts from."""
    from vr180matte.engines.embedded_prior import _ellipse, box_prior

    img, gt, box = _tiny_scene(40.0)
    prior = box_prior(img, box) > 0.5
    x0, y0, x1, y1 = box.astype(int)
    ell = np.zeros_like(gt)
    ell[y0:y1, x0:x1] = _ellipse(y1 - y0, x1 - x0, (0, 0, x1 - x0, y1 - y0))
    assert _iou(prior, gt) > _iou(ell, gt)


def test_box_prior_is_the_same_on_the_same_pixels():
    """Identical eyes must give identical mattes: GrabCut's k-means start comes from OpenCV's RNG, so the prior
    fixes its seed (without it, two calls on the same box gave different masks)."""
    from vr180matte.engines.embedded_prior import box_prior

    img, _, box = _tiny_scene(24.0)
    first = box_prior(img, box)
    assert first.sum() > 0
    for _ in range(3):
        assert np.array_equal(box_prior(img, box), first)
