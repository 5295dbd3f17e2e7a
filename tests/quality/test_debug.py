"""Detection video (real H.264 through PyAV) and confidence maps."""
import av
import cv2
import numpy as np
import torch

from vr180matte.engines.base import Detection, FrameMatte, TrackMask
from vr180matte.quality.debug import DetectionVisualizer, save_confidence_map


def _fm(i, x0):
    prob = torch.zeros(60, 80)
    prob[20:50, x0 : x0 + 20] = 1.0
    box = np.array([x0, 20, x0 + 20, 50], np.float32)
    return FrameMatte(i, {3: TrackMask(3, prob, box, 0.91)}, [Detection(box, 0.91)])


def test_detection_video(out_dir):
    path = out_dir / "clip.detections.mp4"
    vis = DetectionVisualizer(path, 640, 240, 24, max_side=320)  # eyes 320x240 at scale 0.25 -> 80x60 masks
    for i in range(5):
        sbs = np.full((240, 640, 3), 40, np.uint8)
        vis.write(sbs, _fm(i, 10 + i), _fm(i, 30))
    vis.close()
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (120, 320, 3)
    # the track colour (#3 -> (0, 130, 200)) is drawn inside the right eye's box (x 30..50 of 80 -> 60..100 px)
    box_px = frames[0][15:60, 160 + 60 : 160 + 100].reshape(-1, 3).astype(int)
    assert (np.abs(box_px - [0, 130, 200]).sum(1) < 60).any()
    assert np.abs(frames[0][100, 150].astype(int) - 40).max() < 10  # background untouched


def test_confidence_map(out_dir):
    p = torch.linspace(0, 1, 1024).repeat(600, 1)
    save_confidence_map(out_dir / "c.png", p)
    img = cv2.imread(str(out_dir / "c.png"))
    assert img.shape == (300, 512, 3)
    assert tuple(img[0, 0]) != tuple(img[0, -1])  # 0 and 1 map to different colours
