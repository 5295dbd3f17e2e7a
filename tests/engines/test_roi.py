"""engines/roi.py: small people in their own crops, pasted back; windows re-anchor; overlaps resolved.

The routing is checked with an oracle inner segmenter (it returns its prompt box as the mask, in whatever image
it is given, and records the image sizes it saw); the real engines (SAM2, MobileSAM with random weights) are
then checked for batching and shapes, since random weights give no meaningful masks.
"""
import numpy as np
import pytest
import torch

from vr180matte.config import load_config
from vr180matte.engines.roi import RoiSegmenter
from vr180matte.runtime.host_reads import HostReadCounter


class Oracle:
    """A one-box-per-track segmenter: the mask is the box it was last given (or moved by ``shift``)."""

    name = "oracle"

    def __init__(self, log):
        self.log = log
        self.boxes = {}
        self.shift = (0.0, 0.0)

    def add_prompt(self, tid, box=None, mask=None, box_is_mask=False):
        self.boxes[tid] = np.asarray(box, np.float32).copy()

    def remove_track(self, tid):
        self.boxes.pop(tid, None)

    def reset(self):
        self.boxes.clear()

    def segment(self, frame_idx, image):
        h, w = image.shape[:2]
        self.log.append((h, w))
        out = {}
        for tid, b in self.boxes.items():
            b = b + np.array([*self.shift, *self.shift], np.float32)
            m = torch.zeros(h, w)
            x0, y0, x1, y1 = (int(round(v)) for v in b)
            m[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = 1.0
            out[tid] = m
        return out


def make(**kw):
    log, inners = [], []

    def inner():
        o = Oracle(log)
        inners.append(o)
        return o

    def batch(segs, f, imgs):
        log.append(("batch", len(segs)))
        return [s.segment(f, i) for s, i in zip(segs, imgs)]

    return RoiSegmenter(inner, batch, **kw), log, inners


def test_a_small_person_gets_its_own_crop_and_its_mask_lands_where_it_was():
    roi, log, _ = make(max_frac=0.25, context=0.5)
    img = torch.zeros(400, 400, 3, dtype=torch.uint8)
    roi.add_prompt(1, box=np.array([100, 100, 120, 140], np.float32))  # 40 px tall: window 80 px <= 100
    roi.add_prompt(2, box=np.array([200, 50, 330, 350], np.float32))   # 300 px tall: the full frame
    out = roi.segment(0, img)
    assert set(roi.lanes) == {1} and roi._full_ids == {2}
    assert ("batch", 2) in log and (80, 80) in log and (400, 400) in log  # one batch: full frame + the crop
    ys, xs = torch.nonzero(out[1] > 0.5, as_tuple=True)
    assert (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) == (100, 100, 120, 140)
    assert out[2].shape == (400, 400) and float(out[2][200, 250]) == 1.0


def test_off_when_max_frac_is_zero():
    roi, log, _ = make(max_frac=0.0)
    roi.add_prompt(1, box=np.array([100, 100, 110, 120], np.float32))
    roi.segment(0, torch.zeros(400, 400, 3, dtype=torch.uint8))
    assert not roi.lanes and roi._full_ids == {1} and (400, 400) in log


def test_a_person_walking_to_the_window_edge_re_anchors_and_keeps_its_id():
    roi, log, inners = make(max_frac=0.25, context=0.5)
    img = torch.zeros(400, 400, 3, dtype=torch.uint8)
    roi.add_prompt(1, box=np.array([100, 100, 120, 140], np.float32))
    roi.segment(0, img)
    first = roi.lanes[1]
    first.seg.shift = (25.0, 0.0)  # the person moved right to the window's edge (window 70..150)
    out = roi.segment(1, img)
    assert roi.stats["reanchors"] == 1 and 1 in roi._pending
    roi.segment(2, img)  # the next frame runs in a new window centred on the moved mask
    lane = roi.lanes[1]
    assert lane is not first and lane.window[0] > first.window[0] and roi.stats["lanes_started"] == 1
    ys, xs = torch.nonzero(out[1] > 0.5, as_tuple=True)
    assert int(xs.min()) == 125


def test_a_person_who_grows_moves_to_the_full_frame():
    roi, _, _ = make(max_frac=0.25, context=0.5)
    img = torch.zeros(400, 400, 3, dtype=torch.uint8)
    roi.add_prompt(1, box=np.array([100, 100, 120, 140], np.float32))
    roi.segment(0, img)
    roi.add_prompt(1, box=np.array([100, 50, 200, 350], np.float32))  # a detector re-prompt: now close by
    roi.segment(1, img)
    assert not roi.lanes and roi._full_ids == {1} and roi.stats["to_full"] == 1


def test_two_lanes_claiming_a_pixel_leave_it_to_the_more_confident_person():
    roi, _, _ = make(max_frac=0.5, context=0.5)
    img = torch.zeros(400, 400, 3, dtype=torch.uint8)
    roi.add_prompt(1, box=np.array([50, 50, 80, 110], np.float32))
    roi.add_prompt(2, box=np.array([70, 50, 100, 110], np.float32))
    out = roi.segment(0, img)
    both = (out[1] > 0.5) & (out[2] > 0.5)
    assert set(roi.lanes) == {1, 2} and not bool(both.any()) and roi.stats["contested_pixels"] > 0
    with HostReadCounter() as c:  # a steady frame: lanes' boxes and the contested count in one read
        roi.segment(1, img)
    assert c.total("reads") == 1, c.read_sites
    assert float(out[1][80, 60]) == 1.0 and float(out[2][80, 90]) == 1.0


def test_read_free_lanes_post_their_numbers_and_give_what_the_reading_path_gives():
    """The GPU policy's read-free ROI step (hand-out every frame, lane boxes and overlap count posted to the view's
    download): no read in segment, one at the flush, and the same masks, re-anchors and counts as one read here."""
    from vr180matte.runtime.download import FrameDownload

    def play(read_free):
        roi, _, inners = make(max_frac=0.5, context=0.5, read_free=read_free)
        download = FrameDownload()
        roi.share_download(download)
        img = torch.zeros(400, 400, 3, dtype=torch.uint8)
        roi.add_prompt(1, box=np.array([50, 50, 80, 110], np.float32))
        roi.add_prompt(2, box=np.array([70, 50, 100, 110], np.float32))
        outs, reads = [], []
        for f in range(4):
            if f == 2:
                roi.lanes[1].seg.shift = (40.0, 0.0)  # person 1 walks to its window's edge: re-anchored
            with HostReadCounter() as c:
                out = roi.segment(f, img)
            reads.append(c.total("reads"))
            download.flush()  # what the view's track update does
            outs.append({t: m.clone() for t, m in out.items()})
        return outs, reads, dict(roi.stats)

    free, free_reads, free_stats = play(True)
    read, read_reads, read_stats = play(False)
    assert free_stats == read_stats and free_stats["reanchors"] >= 1 and free_stats["contested_pixels"] > 0
    # frame 3 routes the re-anchored lane's mask prompt: its box is the lane's measured box, so no read for it
    assert free_reads == [0, 0, 0, 0] and read_reads == [1, 1, 1, 1]
    for a, b in zip(free, read):
        assert a.keys() == b.keys() and all(torch.equal(a[t], b[t]) for t in a)


def test_lanes_are_capped_and_the_smallest_people_get_them():
    roi, _, _ = make(max_frac=0.5, context=0.5, max_lanes=2)
    img = torch.zeros(400, 400, 3, dtype=torch.uint8)
    for tid, h in ((1, 60), (2, 20), (3, 40)):
        roi.add_prompt(tid, box=np.array([100 * tid, 100, 100 * tid + 10, 100 + h], np.float32))
    roi.segment(0, img)
    assert set(roi.lanes) == {2, 3} and roi._full_ids == {1}


@pytest.fixture
def sam2_engine():
    from vr180matte.engines.det_sam2 import DetSam2Engine

    cfg = load_config(None, ["hardware.device=cpu", "matting.engine=det-sam2", "matting.memory_window=2",
                             "matting.max_conditioning_frames=1"])
    torch.manual_seed(0)
    return DetSam2Engine(cfg, torch.device("cpu"), random_init=True,
                         sam2_overrides=["++model.image_size=256"])


def test_sam2_lanes_and_both_eyes_share_one_encoder_batch(sam2_engine):
    """Real SAM2 (random weights): two small people per eye are two lanes; with the stereo stage's prefetch
    both eyes' crops go through the image encoder as one batch of four."""
    eng = sam2_engine
    seen = []
    real = eng.sam2.forward_image
    eng.sam2.forward_image = lambda x: (seen.append(int(x.shape[0])), real(x))[1]
    segs = [eng.make_segmenter(v) for v in ("left", "right")]
    imgs = [torch.randint(0, 255, (1024, 1024, 3), dtype=torch.uint8) for _ in range(2)]
    for s in segs:
        s.add_prompt(1, box=np.array([40, 40, 60, 90], np.float32))
        s.add_prompt(2, box=np.array([200, 60, 225, 120], np.float32))
    outs = [s.segment(0, i) for s, i in zip(segs, imgs)]
    assert seen == [2, 2] and all(set(o) == {1, 2} and o[1].shape == (1024, 1024) for o in outs)
    assert all(len(s.lanes) == 2 and not s._full_ids for s in segs)
    # Outside its window a lane's mask is exactly zero.
    x0, y0, x1, y1 = segs[0].lanes[1].window
    m = outs[0][1].clone()
    m[y0:y1, x0:x1] = 0
    assert float(m.abs().max()) == 0.0
    seen.clear()
    # Random weights give ~0.5 everywhere, so each lane re-anchors to a window twice as large (still a lane
    # in a 1024 px eye); prefetch routes those and encodes all four crops at once.
    type(segs[0]).prefetch_batch(segs, 1, imgs)
    assert all(len(s.lanes) == 2 for s in segs)
    outs = [s.segment(1, i) for s, i in zip(segs, imgs)]
    assert seen == [4] and all(set(o) == {1, 2} for o in outs)


def test_mobilesam_lanes_run_and_paste_back():
    from vr180matte.engines.mobilesam import MobileSamEngine

    cfg = load_config(None, ["hardware.device=cpu", "matting.engine=mobilesam"])
    torch.manual_seed(0)
    eng = MobileSamEngine(cfg, torch.device("cpu"), random_init=True)
    seg = eng.make_segmenter("left")
    assert isinstance(seg, RoiSegmenter)
    img = torch.randint(0, 255, (512, 512, 3), dtype=torch.uint8)
    seg.add_prompt(3, box=np.array([30, 30, 50, 80], np.float32))
    out = seg.segment(0, img)
    assert set(out) == {3} and out[3].shape == (512, 512) and set(seg.lanes) == {3}
    x0, y0, x1, y1 = seg.lanes[3].window
    assert (x1 - x0, y1 - y0) == (100, 100)
    assert eng.kpi_summary()["predicts"] == 1
