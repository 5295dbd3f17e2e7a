"""The pure-torch NMS that stands in for torchvision's compiled op: greedy NMS's contract (indices kept, best
score first, a box suppressed by any kept box that overlaps it above the threshold), one download a call."""
import numpy as np
import torch

from vr180matte.compat.torchvision_ops import nms_numpy, nms_reference
from vr180matte.runtime.host_reads import HostReadCounter


def _greedy(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """Textbook greedy NMS, one pair at a time (the definition the fast versions must match)."""
    def iou(a, b):
        ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = ix * iy
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union
    keep: list[int] = []
    for i in sorted(range(len(boxes)), key=lambda k: -scores[k]):
        if all(iou(boxes[i], boxes[k]) <= thr for k in keep):
            keep.append(i)
    return keep


def _boxes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(10, 80, (n, 2))
    scores = rng.permutation(np.linspace(0.05, 0.95, n))  # distinct: the order is defined
    return np.concatenate([xy, xy + wh], 1).astype(np.float32), scores.astype(np.float32)


def test_nms_matches_textbook_greedy_on_random_boxes():
    for seed in range(5):
        boxes, scores = _boxes(60, seed)
        want = _greedy(boxes, scores, 0.45)
        assert 1 < len(want) < 60  # overlaps happen: suppression really ran
        assert nms_numpy(boxes, scores, 0.45).tolist() == want
        got = nms_reference(torch.from_numpy(boxes), torch.from_numpy(scores), 0.45)
        assert got.dtype == torch.int64 and got.tolist() == want


def test_nms_reference_reads_once_and_handles_empty():
    boxes, scores = _boxes(40, 7)
    tb, ts = torch.from_numpy(boxes), torch.from_numpy(scores)
    with HostReadCounter() as c:
        keep = nms_reference(tb, ts, 0.5)
    assert c.total("reads") == 1  # one download of boxes and scores, not one read per box
    assert len(keep) > 0
    assert nms_reference(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0
    assert nms_numpy(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).size == 0
