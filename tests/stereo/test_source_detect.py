"""Detection on the source-resolution eyes (stereo/source_detect.py) with the real bundled detector, and identical
eyes giving identical mattes through the real embedded engine: DAVIS people pasted into a real background."""
import cv2
import numpy as np
import pytest
import torch

from stereo_synth import pasted
from vr180matte.config import load_config
from vr180matte.stereo.consistency import StereoStage

LONE = [("davis2016_dance-twirl", 30, 26.0, 189.0, 243.0, 3.0)]  # one distant person ~25 px wide in a 540 px eye


def _stage(*sets):
    pytest.importorskip("mediapipe")
    from vr180matte.engines.embedded import EmbeddedEngine

    torch.set_num_threads(2)
    cfg = load_config(None, ["hardware.device=cpu", "detection.equirect_crops=false", *sets])
    stage = StereoStage.for_engine(cfg, EmbeddedEngine(cfg, torch.device("cpu")), equirect=False)
    stage.reset()
    return stage


def _half(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA))


def test_a_distant_person_is_found_on_the_source_eye_not_on_the_processing_eye():
    left, right, gl, _ = pasted(540, LONE)
    ys, xs = np.nonzero(gl[0])
    truth = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32) / 2  # processing px
    found = {}
    for with_source in (False, True):
        stage = _stage()
        li, ri = _half(left), _half(right)
        res = stage.step(0, li, ri, source=(torch.from_numpy(left), torch.from_numpy(right)) if with_source else None)
        boxes = [d.box for d in res.left.detections]
        found[with_source] = any(min(b[2], truth[2]) - max(b[0], truth[0]) > 0 and
                                 min(b[3], truth[3]) - max(b[1], truth[1]) > 0 for b in boxes)
        assert (stage.report()["source_detections"] > 0) == with_source
    assert found == {False: False, True: True}


def test_source_eyes_of_another_aspect_are_not_used():
    from vr180matte.stereo.source_detect import SourceEyes

    p = torch.zeros((100, 100, 3), dtype=torch.uint8)
    s = SourceEyes()
    s.set((p, p), (torch.zeros((200, 120, 3), dtype=torch.uint8),) * 2)  # a squeezed eye
    assert s.source_of(p) is None
    s.set((p,), (torch.zeros((200, 200, 3), dtype=torch.uint8),))
    assert s.source_of(p) is not None and s.source_of(p.clone()) is None


def test_identical_eyes_give_identical_mattes():
    """The same image in both eyes: every person's left and right probability are equal, value for value (the
    disparity of an exact match is exactly 0, so nothing is shifted by a sub-pixel parabola)."""
    people = [("davis2016_dance-twirl", 5 * k, w, x, y, 2.0 + k) for k, (w, x, y) in
              enumerate([(30.0, 60.0, 80.0), (45.0, 250.0, 70.0), (60.0, 150.0, 250.0), (140.0, 330.0, 200.0)])]
    stage = _stage()
    for t in range(3):
        left, right, _, _ = pasted(512, [(s, i + t, w, x + t, y, d) for s, i, w, x, y, d in people], identical=True)
        li = _half(left)
        res = stage.step(t, li, li.clone(), source=(torch.from_numpy(left), torch.from_numpy(right)))
        assert sorted(res.left.tracks) == sorted(res.right.tracks) and len(res.left.tracks) >= 3
        for tid, tm in res.left.tracks.items():
            assert res.disparity[tid] == 0.0
            assert torch.equal(tm.prob, res.right.tracks[tid].prob), (t, tid)
