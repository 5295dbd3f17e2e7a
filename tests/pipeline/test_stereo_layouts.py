"""End to end with real disparity: eye order, disparity sign and the sbs / sbs_rl / tb wiring, on encoded output.

A synthetic VR180 clip (tests/stereo/stereo_synth.py: two real DAVIS people rendered into two equirect eyes) whose
right eye is the left with each person shifted by a known disparity (16 px and 8 px at 256 px, background 2 px)
is written in each stereo layout, matted by the whole pipeline (embedded engine, master_slave stereo, ProRes 4444)
and the alpha is read back from the encoded file and split by hand (not by the product's layout table). For each
layout: each eye's matte lies on that eye's people (IoU with its own ground truth, and clearly better than with the
other eye's, so swapped eyes fail); the right eye's matte shifted by each person's true disparity agrees with the
left eye's (>= 0.95 in that person's region), so a wrong disparity sign or eye order fails.
"""
from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stereo"))

from stereo_synth import Person, make_clip  # noqa: E402
from synth import write_video  # noqa: E402
from vr180matte.pipeline import run  # noqa: E402

SIZE, FRAMES = 256, 1
DISPARITY = (16.0, 8.0)  # px, x_left - x_right, per person


@pytest.fixture(scope="module")
def clip():
    persons = [
        Person("davis2016_dance-twirl", yaw=lambda t: -34 + 0.8 * t, pitch=lambda t: -5.0, height_deg=60,
               disparity=lambda t: DISPARITY[0]),
        Person("davis2016_parkour", yaw=lambda t: 32 - 0.5 * t, pitch=lambda t: 4.0, height_deg=45,
               disparity=lambda t: DISPARITY[1], frame_offset=20),
    ]
    return make_clip(persons, frames=FRAMES, size=SIZE, bg_disparity=2.0)


def pack(layout: str, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return {"sbs": lambda: np.concatenate([left, right], 1), "sbs_rl": lambda: np.concatenate([right, left], 1),
            "tb": lambda: np.concatenate([left, right], 0)}[layout]()


def unpack(layout: str, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = frame.shape[:2]
    if layout == "tb":
        return frame[: h // 2], frame[h // 2:]
    a, b = frame[:, : w // 2], frame[:, w // 2:]
    return (a, b) if layout == "sbs" else (b, a)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def shift_x(mask: np.ndarray, d: int) -> np.ndarray:
    """``mask`` moved right by ``d`` px (left when negative; zeros enter)."""
    out = np.zeros_like(mask)
    if d >= 0:
        out[:, d:] = mask[:, : mask.shape[1] - d]
    else:
        out[:, :d] = mask[:, -d:]
    return out


@pytest.mark.parametrize("layout", ["sbs", "sbs_rl", "tb"])
def test_each_eye_matte_in_place_and_agreeing_at_the_true_disparity(layout, clip, tmp_path):
    src = write_video(tmp_path / f"{layout}.mp4", lambda t: pack(layout, clip.left[t], clip.right[t]), n=FRAMES,
                      fps=24, options={"crf": "10"})
    r = run(src, out_dir=tmp_path / "o", quiet=True, overrides=[
        "hardware.device=cpu", "matting.engine=embedded", f"input.layout={layout}", "processing.scale_factor=1.0",
        "stereo.consistency_mode=master_slave", "output.format=alpha", "performance.profile_enabled=false"])
    with av.open(str(r.outputs[0])) as c:
        alphas = [f.to_ndarray(format="rgba")[..., 3] for f in c.decode(video=0)]
    assert len(alphas) == FRAMES
    assert alphas[0].shape == pack(layout, clip.left[0], clip.right[0]).shape[:2], "output keeps the input layout"
    for t, a in enumerate(alphas):
        left, right = (x > 127 for x in unpack(layout, a))
        gt_l, gt_r = clip.gt_left[t].sum(0) > 0.5, clip.gt_right[t].sum(0) > 0.5
        own_l, own_r = iou(left, gt_l), iou(right, gt_r)
        assert own_l >= 0.7 and own_r >= 0.7, (layout, t, own_l, own_r)
        # not swapped: each eye fits its own people clearly better than the other eye's (16 / 8 px apart)
        assert own_l > iou(left, gt_r) + 0.1 and own_r > iou(right, gt_l) + 0.1, (layout, t)
        for k, d in enumerate(DISPARITY):
            region = np.zeros_like(left)
            ys, xs = np.nonzero(clip.gt_left[t, k] > 0.5)
            region[max(0, ys.min() - 8): ys.max() + 9, max(0, xs.min() - 8): xs.max() + 9] = True
            # x_left = x_right + d: the right matte moved right by d lands on the left matte
            agree = iou(shift_x(right, int(d)) & region, left & region)
            wrong_sign = iou(shift_x(right, -int(d)) & region, left & region)
            assert agree >= 0.95, (layout, t, k, agree)
            assert wrong_sign < agree - 0.2, (layout, t, k, agree, wrong_sign)  # the sign of the disparity matters
