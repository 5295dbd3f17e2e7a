"""StereoStage with the real embedded engine (mediapipe BlazePose detector + pose segmentation, bundled models)."""
import numpy as np
import pytest
import torch

from vr180matte.config import load_config
from vr180matte.stereo.consistency import StereoStage, mask_iou
from vr180matte.stereo.disparity import shift_mask
from vr180matte.track.ids import IdAllocator
from vr180matte.track.view_matter import ViewMatter


@pytest.mark.parametrize("mode", ["master_slave", "joint"])
def test_embedded_engine_both_eyes_same_people_and_consistent(clip, mode):
    pytest.importorskip("mediapipe")
    from vr180matte.engines.embedded import EmbeddedEngine

    torch.set_num_threads(1)
    cfg = load_config(None, [f"stereo.consistency_mode={mode}", "detection.detect_interval=5",
                             "detection.equirect_crops=false", "hardware.device=cpu"])
    eng = EmbeddedEngine(cfg, torch.device("cpu"))
    # This clip's billboard people were placed around the former cap 0.5 (one just under it in the left eye):
    # the stereo coupling is tested here, the threshold itself by benchmarks/small_people.py --sweep.
    eng.confidence_threshold = 0.5
    ids = IdAllocator()
    left = ViewMatter("left", eng.make_segmenter("left"), None, ids=ids, detect_interval=5)
    right = ViewMatter("right", eng.make_segmenter("right"), None, ids=ids, detect_interval=5)
    stage = StereoStage(cfg, left, right, eng.make_detector())
    stage.reset()
    for t in range(8):
        li, ri = clip.tensors(t)
        res = stage.step(t, li, ri)
        assert sorted(res.left.tracks) == sorted(res.right.tracks) and len(res.left.tracks) == 2
        for tid, tm in res.left.tracks.items():
            k = int(np.argmax([float((torch.from_numpy(clip.gt_left[t, p]) * tm.prob).sum()) for p in range(2)]))
            assert abs(res.disparity[tid] - clip.disparity[t, k]) < 1.0
            # Consistent with the TRUE disparity, and each eye close to its ground truth.
            true_agree = mask_iou(tm.prob, shift_mask(res.right.tracks[tid].prob, -float(clip.disparity[t, k])))
            assert true_agree > 0.9
            assert mask_iou(tm.prob, torch.from_numpy(clip.gt_left[t, k])) > 0.8
            assert mask_iou(res.right.tracks[tid].prob, torch.from_numpy(clip.gt_right[t, k])) > 0.8
        assert min(res.agreement.values()) >= 0.8
    rep = stage.report()
    assert rep["id_mismatches"] == 0 and rep["persons_left"]["max"] == rep["persons_right"]["max"] == 2


def test_master_slave_keeps_the_person_the_left_eye_is_unsure_of_only_through_vouching(clip):
    """One billboard person scores just under the threshold in the left eye and above it in the right: the
    right eye vouches for it. With vouching off (ratio 1) the left eye, which leads, loses that person."""
    pytest.importorskip("mediapipe")
    from vr180matte.engines.embedded import EmbeddedEngine

    torch.set_num_threads(1)
    persons = {}
    for ratio in (1.0, 0.8):
        cfg = load_config(None, ["stereo.consistency_mode=master_slave", "detection.detect_interval=5",
                                 "detection.equirect_crops=false", "hardware.device=cpu",
                                 f"stereo.vouch_ratio={ratio}"])
        eng = EmbeddedEngine(cfg, torch.device("cpu"))
        eng.confidence_threshold = 0.5  # the billboard person scores just under 0.5 in the left eye (see above)
        stage = StereoStage.for_engine(cfg, eng, equirect=False)
        stage.reset()
        li, ri = clip.tensors(0)
        res = stage.step(0, li, ri)
        persons[ratio] = (len(res.left.tracks), stage.report().get("vouching"))
    assert persons[1.0][0] == 1 and persons[1.0][1] is None
    n, vouching = persons[0.8]
    assert n == 2 and vouching["vouched"] >= 1 and vouching["right_eye_runs"] == 1
