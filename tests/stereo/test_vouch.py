"""Stereo vouching: an unsure candidate survives only with a sure partner in the other eye."""
import numpy as np

from vr180matte.engines.base import Detection
from vr180matte.stereo.vouch import Vouching


def det(x0, y0, x1, y1, score):
    return Detection(box=np.array([x0, y0, x1, y1], np.float32), score=score)


def test_a_sure_eye_vouches_for_the_unsure_one_and_nobody_else_is_added():
    v = Vouching(threshold=0.5, floor=0.4)
    left = [det(100, 50, 140, 150, 0.45),   # unsure; the right eye is sure of it (disparity 8 px)
            det(300, 60, 330, 140, 0.42),   # unsure; its right partner is unsure too: nobody is sure
            det(500, 40, 540, 160, 0.9)]    # sure, alone
    right = [det(92, 50, 132, 150, 0.8),
             det(292, 60, 322, 140, 0.44),
             det(700, 50, 740, 150, 0.47)]  # unsure, no partner at all
    kl, kr = v.apply(left, right, max_disp=40, min_disp=-10)
    assert [d.score for d in kl] == [0.45, 0.9]
    assert [d.score for d in kr] == [0.8]
    assert v.stats.vouched == 1 and v.stats.dropped == 3


def test_a_partner_on_other_rows_or_too_far_vouches_for_nothing():
    v = Vouching(threshold=0.5, floor=0.4)
    left = [det(100, 50, 140, 150, 0.45), det(300, 50, 340, 150, 0.45)]
    right = [det(100, 200, 140, 300, 0.9),  # same columns, other rows: another person
             det(200, 50, 240, 150, 0.9)]   # 100 px of disparity, beyond max_disp
    kl, kr = v.apply(left, right, max_disp=40, min_disp=-10)
    assert kl == [] and len(kr) == 2
