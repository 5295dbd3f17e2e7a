"""boxes.py: mask boxes of several masks in one download equal the one-by-one boxes (tensor and numpy paths)."""
import numpy as np
import torch

from vr180matte.boxes import mask_box, mask_boxes, mask_boxes_and
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


def test_mask_boxes_and_extra_values_come_down_in_one_read():
    m = torch.zeros(20, 30)
    m[5:9, 10:20] = 0.9
    extra = torch.tensor([7.0, 0.5])
    with HostReadCounter() as c:
        boxes, values = mask_boxes_and([m, torch.zeros(4, 4)], extra)
    assert c.total("reads") == 1
    assert boxes[0].tolist() == [10, 5, 20, 9] and boxes[1] is None and values.tolist() == [7.0, 0.5]
    boxes, values = mask_boxes_and([], torch.tensor([3.0]))
    assert boxes == [] and values.tolist() == [3.0]
