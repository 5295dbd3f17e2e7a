"""Disparity measurement, mask shifting and temporal smoothing against exact ground truth."""
import numpy as np
import pytest
import torch

from vr180matte.stereo.disparity import DisparitySmoother, measure_disparity, shift_mask


def test_measure_disparity_within_1px_per_person_on_davis_stereo_clip(clip):
    """Two real DAVIS people at different, changing disparities over a background at 2 px."""
    errors = []
    for t in range(clip.frames):
        li, ri = clip.tensors(t)
        for k in range(clip.gt_left.shape[1]):
            d, conf = measure_disparity(li, ri, torch.from_numpy(clip.gt_left[t, k]), max_disp=26)
            errors.append(abs(d - clip.disparity[t, k]))
            assert conf > 0.5
    assert max(errors) < 1.0, errors
    assert np.mean(errors) < 0.3


def test_measure_disparity_subpixel_on_texture_and_ignores_background():
    rng = np.random.default_rng(3)
    import cv2

    tex = cv2.GaussianBlur(rng.random((96, 200)).astype(np.float32), (0, 0), 1.5)
    bg = cv2.GaussianBlur(rng.random((96, 200)).astype(np.float32), (0, 0), 1.5)
    true_d, bg_d = 7.4, 1.0
    mask = np.zeros((96, 160), np.float32)
    mask[20:80, 60:100] = 1
    M = lambda dx: np.float32([[1, 0, dx], [0, 1, 0]])  # noqa: E731 - out(x) = src(x + dx)
    warp = lambda im, dx: cv2.warpAffine(im, M(dx), (160, 96), flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP)  # noqa
    left = warp(bg, 20) * (1 - mask) + warp(tex, 20) * mask
    rmask = warp(mask, 20 + true_d - 20)
    right = warp(bg, 20 + bg_d) * (1 - rmask) + warp(tex, 20 + true_d) * rmask
    d, conf = measure_disparity(torch.from_numpy(left), torch.from_numpy(right), torch.from_numpy(mask), max_disp=16)
    assert abs(d - true_d) < 0.25 and conf > 0.9
    # A plain box correlation would be pulled towards the background; the masked one is not.
    wide = np.zeros_like(mask)
    wide[0:96, 30:130] = 1
    d_box, _ = measure_disparity(torch.from_numpy(left), torch.from_numpy(right), torch.from_numpy(wide), max_disp=16)
    assert abs(d_box - true_d) > abs(d - true_d)


def test_measure_disparity_empty_mask_returns_prior_with_zero_confidence():
    img = torch.zeros(32, 32, 3, dtype=torch.uint8)
    assert measure_disparity(img, img, torch.zeros(32, 32), max_disp=4, prior=3.0) == (3.0, 0.0)


def test_shift_mask_direction_subpixel_and_round_trip():
    m = torch.zeros(4, 20)
    m[:, 10] = 1.0
    r = shift_mask(m, 3.0)  # right eye = left content moved by -3
    assert r[0].argmax().item() == 7 and r.sum().item() == 4.0
    half = shift_mask(m, 2.5)
    assert half[0, 7].item() == pytest.approx(0.5) and half[0, 8].item() == pytest.approx(0.5)
    back = shift_mask(shift_mask(m, -4.0), 4.0)
    assert torch.equal(back, m)
    assert shift_mask(m, 30.0).sum().item() == 0.0  # shifted out entirely


def test_smoother_follows_a_ramp_without_lag_and_rejects_outliers():
    rng = np.random.default_rng(0)
    s = DisparitySmoother(0.8)
    truth = [9.0 + 0.35 * t for t in range(30)]
    out = []
    for t, d in enumerate(truth):
        z = d + rng.normal(0, 0.2)
        if t == 15:
            z = d + 12.0  # one bad correlation (occlusion)
        out.append(s.update(1, z, 0.9))
    err = np.abs(np.array(out) - np.array(truth))
    assert err[15] < 0.6  # the outlier was rejected
    assert err[5:].max() < 0.4  # no EMA lag on a 0.35 px/frame ramp
    # A real jump (3 consecutive agreeing measurements) restarts the filter.
    for _ in range(3):
        v = s.update(1, 40.0, 0.9)
    assert v == pytest.approx(40.0)


def test_smoother_state_round_trip_and_low_confidence():
    s = DisparitySmoother(0.8)
    for t in range(6):
        s.update(4, 5.0 + t, 1.0)
    assert s.update(4, 99.0, 0.05) == pytest.approx(11.0, abs=0.05)  # ignored: no texture, prediction kept
    s2 = DisparitySmoother(0.8)
    s2.load(s.state())
    assert s2.predict(4) == pytest.approx(s.predict(4))
    s2.load({7: 3.5})
    assert s2.get(7) == 3.5


def test_measure_disparity_reads_only_the_persons_rows():
    """Only the rows of the person (widened to whole coarse blocks) are converted and correlated: what lies in
    the other rows of either eye cannot change the measurement."""
    g = torch.Generator().manual_seed(3)
    H, W, d = 300, 260, 9
    left = torch.randint(0, 256, (H, W, 3), generator=g, dtype=torch.uint8)
    right = torch.roll(left, -d, dims=1)
    mask = torch.zeros(H, W)
    mask[120:180, 60:170] = 1.0  # 60 x 110: matched coarse-to-fine at scale 2
    ref = measure_disparity(left, right, mask, max_disp=30)
    assert ref[0] == pytest.approx(d, abs=0.25) and ref[1] > 0.9
    l2, r2 = left.clone(), right.clone()
    for img in (l2, r2):
        img[:118] = torch.randint(0, 256, (118, W, 3), generator=g, dtype=torch.uint8)
        img[182:] = 0
    assert measure_disparity(l2, r2, mask, max_disp=30) == ref


class _CountReads(torch.overrides.TorchFunctionMode):
    """Host reads of tensor values (each a device synchronisation on a GPU), counted by method name."""

    READS = {"item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__"}

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.READS:
            self.n += 1
        return func(*args, **(kwargs or {}))


def _jobs(clip):
    """Persons of every frame in both directions, with and without a prior, a small person (no coarse step),
    an empty mask and a person cut at the eye edge: every branch of the search."""
    from vr180matte.stereo.disparity import DisparityJob

    jobs = []
    for t in range(0, clip.frames, 3):
        li, ri = clip.tensors(t)
        for k in range(clip.gt_left.shape[1]):
            m = torch.from_numpy(clip.gt_left[t, k])
            jobs.append(DisparityJob(li, ri, m, 26))
            jobs.append(DisparityJob(li, ri, m, 26, prior=float(clip.disparity[t, k]) + 1.5))
            jobs.append(DisparityJob(ri, li, shift_mask(m, float(clip.disparity[t, k])), 26 // 4 + 1, min_disp=-26,
                                     prior=-3.0))
        small = torch.zeros_like(m)
        small[40:52, 60:70] = 1.0
        edge = torch.zeros_like(m)
        edge[30:200, 0:40] = 1.0
        right_edge = torch.zeros_like(m)
        right_edge[20:220, -30:] = 1.0  # big enough for a coarse step, its window clamped by the range
        jobs += [DisparityJob(li, ri, small, 26), DisparityJob(li, ri, torch.zeros_like(m), 26, prior=2.0),
                 DisparityJob(li, ri, edge, 26), DisparityJob(li, ri, right_edge, 8, min_disp=-2, prior=1.0)]
    return jobs


def _thin(clip):
    """A person one pixel wide and 200 tall: a coarse step (scale 3) with no cell more than half covered."""
    from vr180matte.stereo.disparity import DisparityJob

    li, ri = clip.tensors(0)
    m = torch.zeros(li.shape[:2])
    m[10:210, 100] = 1.0
    return DisparityJob(li, ri, m, 26, prior=0.5)


def test_measure_disparities_bit_identical_to_one_by_one_with_two_downloads(clip):
    """All persons of a frame measured together give exactly what measuring each alone gives, with two host
    reads in all (pixel counts and boxes; every peak, its window placed by the coarse peak on the device) instead
    of about ten per person; one when the caller gives the boxes."""
    from vr180matte.stereo.disparity import measure_disparities, measure_disparities_with

    jobs = _jobs(clip)
    one = []
    with _CountReads() as per_person:
        for j in jobs:
            one.append(measure_disparity(j.src, j.dst, j.mask, max_disp=j.max_disp, min_disp=j.min_disp, prior=j.prior))
    with _CountReads() as batched:
        many = measure_disparities(jobs)
    assert many == one  # bit-identical, every branch (prior, crossed range, scale 1, empty, edge)
    assert (2.0, 0.0) in many  # the empty mask: its prior, zero confidence
    assert batched.n == 2, batched.n
    assert per_person.n >= 5 * len(jobs)
    assert measure_disparities([]) == []
    # a caller's numbers of the frame ride along with the first download: still two reads, same results
    with _CountReads() as carried:
        with_extra, values = measure_disparities_with(jobs, torch.tensor([[17, 3], [-1, 40]]))
    assert with_extra == one and values == [17.0, 3.0, -1.0, 40.0] and carried.n == 2
    # jobs that carry their masks' boxes (a view's track boxes): one download in all, extra included, same results
    import dataclasses

    from vr180matte.boxes import mask_boxes

    boxed = [(dataclasses.replace(j, box=b), r) for j, b, r in zip(jobs, mask_boxes([j.mask for j in jobs]), one)
             if b is not None]  # (an empty mask has no box: a caller measures only people it sees)
    with _CountReads() as known:
        with_boxes, values = measure_disparities_with([j for j, _ in boxed], torch.tensor([7, 8]))
    assert with_boxes == [r for _, r in boxed] and values == [7.0, 8.0] and known.n == 1, known.n
    tiny = torch.zeros_like(jobs[0].mask)
    tiny[5, 5:15] = 1.0
    tiny[40, 5:15] = 1.0  # a box of 360 px with 20 mask pixels: too few, known only after the download
    lone = dataclasses.replace(jobs[1], mask=tiny, box=mask_boxes([tiny])[0])
    assert measure_disparities_with([lone]) == ([(lone.prior, 0.0)], []) and lone.prior is not None
    thin = _thin(clip)
    with _CountReads() as sliver:
        got = measure_disparities(jobs[:3] + [thin])
    assert sliver.n == 2 and got == one[:3] + [measure_disparity(thin.src, thin.dst, thin.mask, max_disp=26,
                                                                   prior=0.5)]
    with _CountReads() as alone:
        assert measure_disparities_with([], torch.tensor([5])) == ([], [5.0])
    assert alone.n == 1


@pytest.mark.parametrize("mode", ["master_slave", "joint"])
def test_stereo_validation_measures_all_persons_in_one_batched_call(clip, mode, monkeypatch):
    """StereoStage.validate measures every person of a frame with one measure_disparities_with call; disparities and
    agreements equal measuring person by person (the previous path)."""
    import test_consistency as tc
    from vr180matte.stereo import consistency, measure

    calls, seeding = [], []
    real = consistency.measure_disparities_with
    monkeypatch.setattr(consistency, "measure_disparities_with",
                        lambda jobs, extra=None: calls.append(len(jobs)) or real(jobs, extra))
    real_seed = measure.PersonDisparities.seed_disparities

    def seed(self, left_img, right_img, seeds, lm=None):  # new left tracks seeding the right eye: one call too
        seeding.extend([len(seeds)] if seeds else [])
        return real_seed(self, left_img, right_img, seeds, lm)

    monkeypatch.setattr(measure.PersonDisparities, "seed_disparities", seed)
    batched = tc.run(tc.build(clip, mode), clip)
    seeded = list(seeding)  # the batched run's
    one_by_one = lambda jobs, extra=None: (  # noqa: E731
        [measure_disparity(j.src, j.dst, j.mask, max_disp=j.max_disp, min_disp=j.min_disp, prior=j.prior)
         for j in jobs], [] if extra is None else extra.float().flatten().tolist())
    monkeypatch.setattr(consistency, "measure_disparities_with", one_by_one)
    ref = tc.run(tc.build(clip, mode), clip)
    # one measurement a frame: a frame that seeds new right tracks measures its other people with the seeds (the
    # validation then measures nobody and reads its row bands with the right view's statistics)
    assert seeded and set(seeded) == {2} and len(calls) == clip.frames and max(calls) == 2, (calls, seeded)
    for a, b in zip(batched, ref):
        assert a.disparity == b.disparity and a.agreement == b.agreement


def test_an_exact_match_has_an_integer_disparity():
    """Identical eyes (or a layer shifted by whole pixels): the peak is an exact match and the disparity is that
    integer, not moved by a parabola through asymmetric neighbours (identical eyes must give identical mattes)."""
    rng = np.random.default_rng(3)
    img = torch.from_numpy((rng.random((64, 96, 3)) * 255).astype(np.uint8))
    mask = torch.zeros((64, 96))
    mask[20:44, 30:50] = 1.0
    d, conf = measure_disparity(img, img, mask, max_disp=12)
    assert d == 0.0 and conf > 0.99
    shifted = torch.roll(img, -3, dims=1)
    d, _ = measure_disparity(img, shifted, mask, max_disp=12)
    assert d == 3.0


@pytest.mark.parametrize("d", [7, -3, 19])
def test_a_sliver_one_pixel_wide_is_found_by_its_coarse_cells(d):
    """A mask too thin for the coarse grid (no cell half covered) is searched on the cells it touches: the right
    shift, found on the device, one by one and batched alike."""
    import cv2

    from vr180matte.stereo.disparity import DisparityJob, measure_disparities

    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur((rng.random((256, 400, 3)) * 255).astype(np.uint8), (5, 5), 1.5)
    left = torch.from_numpy(base[:, 40:360].copy())
    right = torch.from_numpy(base[:, 40 + d:360 + d].copy())  # right x = left x - d
    mask = torch.zeros(256, 320)
    mask[20:230, 150] = 1.0  # 210 px tall: coarse scale 3
    one = measure_disparity(left, right, mask, max_disp=26)
    assert one[0] == float(d) and one[1] > 0.9
    assert measure_disparities([DisparityJob(left, right, mask, 26)]) == [one]
