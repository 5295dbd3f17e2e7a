"""boxes.py: mask boxes of several masks in one download equal the one-by-one boxes (tensor and numpy paths)."""
import numpy as np
import torch

from vr180matte.boxes import mask_box, mask_boxes
from vr180matte.runtime.host_reads import HostReadCounter


def test_mask_boxes_equal_one_by_one_and_read_once():
    rng = np.random.default_rng(0)
    masks = []
    for h, w in ((40, 60), (33, 17), (64, 64)):
        m = np.zeros((h, w), np.float32)
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        m[y0:y0 + h // 3, x0:x0 + w // 3] = rng.uniform(0.3, 1.0, (h // 3, w // 3))
        masks.append(m)
    masks.append(np.zeros((10, 10), np.float32))  # empty: no box
    with HostReadCounter() as c:
        got = mask_boxes([torch.from_numpy(m) for m in masks])
    assert c.total("reads") == 1
    assert got[-1] is None and mask_box(masks[-1]) is None
    for m, b in zip(masks[:-1], got[:-1]):
        ref = mask_box(m)  # the numpy path: nonzero rows and columns
        assert b.dtype == np.float32 and b.tolist() == ref.tolist()
        assert mask_box(torch.from_numpy(m)).tolist() == ref.tolist()
    assert mask_boxes([]) == []
