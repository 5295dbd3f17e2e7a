"""Id matching across independently processed chunks (chunk-parallel mode)."""
import torch

from vr180matte.track.reconcile import chain_ids, match_ids, small_track_mask


def _box(y0, x0, h=20, w=10, size=(64, 96)) -> torch.Tensor:
    m = torch.zeros(size, dtype=torch.bool)
    m[y0 : y0 + h, x0 : x0 + w] = True
    return m


def test_ids_follow_the_masks_not_the_numbers_and_new_people_get_new_ids():
    # Chunk 0: person A (id 1) on the left, B (id 2) on the right. Chunk 1 numbered them the other way round and
    # also saw C, who appears only after the overlap. Chunk 2 sees A only, as its local id 1.
    a, b = _box(10, 5), _box(10, 70)
    tail0 = [{"left": {1: a, 2: b}, "right": {1: a, 2: b}}] * 3
    head1 = [{"left": {2: a, 1: b}, "right": {2: a, 1: b}}] * 3
    tail1 = [{"left": {2: a, 3: _box(40, 40)}, "right": {2: a}}] * 3
    head2 = [{"left": {1: a}, "right": {1: a}}] * 3
    assert match_ids(tail0, head1) == {2: 1, 1: 2}
    maps = chain_ids([[1, 2], [1, 2, 3], [1]], [None, (tail0, head1), (tail1, head2)])
    assert maps == [{1: 1, 2: 2}, {2: 1, 1: 2, 3: 3}, {1: 1}]


def test_a_weak_overlap_is_not_a_match():
    tail = [{"left": {1: _box(10, 5)}}]
    head = [{"left": {1: _box(10, 12)}}]  # 3 of 10 columns shared: IoU 3/17 < 0.3
    assert match_ids(tail, head) == {}
    assert chain_ids([[1], [1]], [None, (tail, head)]) == [{1: 1}, {1: 2}]


def test_small_track_masks_are_small_and_boolean():
    prob = torch.zeros(480, 854)
    prob[100:300, 200:260] = 0.9
    m = small_track_mask(prob)
    assert m.dtype == torch.bool and max(m.shape) == 128 and 0 < int(m.sum()) < m.numel()
