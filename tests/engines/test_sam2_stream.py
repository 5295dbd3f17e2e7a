"""Streaming SAM2.1 segmenter on a random-init hiera-tiny (real sam2 model code) at a tiny image size on CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vr180matte.engines.base import Segmenter
from vr180matte.engines.sam2_stream import StreamingSam2Segmenter

torch.set_num_threads(2)
H, W = 48, 64


@pytest.fixture(scope="module")
def model():
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(0)
    return build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu", hydra_overrides_extra=["++model.image_size=64"]
    )


def _frames(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (H, W, 3), dtype=torch.uint8, generator=g) for _ in range(n)]


def _seg(model, **kw):
    kw.setdefault("fp16", False)
    return StreamingSam2Segmenter(model, "cpu", **kw)


def test_matches_stock_video_predictor(model, tmp_path):
    """Same model, same frames, same box prompts: our streaming state gives the stock predictor's masks."""
    from PIL import Image

    n = 5
    frames = _frames(n, seed=1)
    boxes = {1: np.array([4, 6, 30, 40], np.float32), 2: np.array([28, 10, 60, 44], np.float32)}
    seg = _seg(model, memory_window=7, max_conditioning_frames=4, expected_frames=n)
    ours = []
    for tid, b in boxes.items():
        seg.add_prompt(tid, box=b)
    for i, f in enumerate(frames):
        ours.append(seg.segment(i, f))

    # Stock predictor on the very same preprocessed tensors (init_state needs a folder: a stand-in JPEG).
    Image.fromarray(frames[0].numpy()).save(tmp_path / "00000.jpg")
    with torch.inference_mode():
        state = model.init_state(str(tmp_path))
        state["images"] = torch.cat([seg.preprocess(f) for f in frames], 0)
        state["num_frames"], state["video_height"], state["video_width"] = n, H, W
        state["cached_features"] = {}
        for tid, b in boxes.items():
            model.add_new_points_or_box(state, 0, tid, box=b)
        stock = {i: (ids, masks) for i, ids, masks in model.propagate_in_video(state)}
    assert sorted(stock) == list(range(n))
    for i in range(n):
        ids, masks = stock[i]
        for j, tid in enumerate(ids):
            ref = torch.sigmoid(masks[j, 0])
            assert ours[i][tid].shape == (H, W)
            assert torch.allclose(ours[i][tid], ref, atol=2e-3), (i, tid, (ours[i][tid] - ref).abs().max())


def test_protocol_lazy_no_work_without_tracks(model, monkeypatch):
    seg = _seg(model)
    assert isinstance(seg, Segmenter)
    calls = []
    real = model.forward_image
    monkeypatch.setattr(model, "forward_image", lambda x: calls.append(tuple(x.shape)) or real(x))
    f = _frames(3)
    assert seg.segment(0, f[0]) == {} and seg.segment(1, f[1]) == {}
    assert calls == []  # no person, no encoder run, no state
    seg.add_prompt(3, box=np.array([1, 1, 20, 20]))
    out = seg.segment(2, f[2])
    assert list(out) == [3] and calls == [(1, 3, 64, 64)]  # one frame at a time, resized to image_size


def test_many_tracks_one_encoder_run_midstream_add_remove(model, monkeypatch):
    seg = _seg(model, memory_window=3, max_conditioning_frames=2)
    calls = []
    real = model.forward_image
    monkeypatch.setattr(model, "forward_image", lambda x: calls.append(1) or real(x))
    for k in range(4):
        seg.add_prompt(10 + k, box=np.array([2 + 8 * k, 4, 20 + 8 * k, 40]))
    frames = _frames(8, seed=2)
    for i, f in enumerate(frames):
        if i == 5:
            seg.add_prompt(99, box=np.array([30, 5, 60, 45]))
        if i == 6:
            seg.remove_track(11)
        out = seg.segment(100 + i, f)  # absolute frame numbers need not start at 0
        expect = {10, 11, 12, 13} | ({99} if i >= 5 else set())
        expect -= {11} if i >= 6 else set()
        assert set(out) == expect
        for p in out.values():
            assert p.dtype == torch.float32 and p.shape == (H, W) and 0 <= float(p.min()) and float(p.max()) <= 1
    assert len(calls) == len(frames)  # the image encoder ran once per frame for all tracks
    sizes = seg.memory_sizes()
    assert 11 not in sizes and set(sizes) == {10, 12, 13, 99}
    assert sizes[10] == {"cond": 1, "mem": 3, "ptr": 7}
    assert sizes[99] == {"cond": 1, "mem": 2, "ptr": 2}  # started at frame 105 as a new object


@pytest.mark.parametrize("n", [12, pytest.param(40, marks=pytest.mark.slow)])
def test_memory_bounded_over_many_frames(model, n):
    """Re-prompted every 3 frames: conditioning frames capped (first kept), memory window bounded, bytes flat."""
    seg = _seg(model, memory_window=2, max_conditioning_frames=2, offload_to_cpu=True)
    frames = _frames(4, seed=3)
    nbytes = []
    for i in range(n):
        if i % 3 == 0:
            seg.add_prompt(1, box=np.array([5, 5, 40 - i % 7, 44]))
        seg.segment(i, frames[i % 4])
        s = seg.memory_sizes()[1]
        assert s["cond"] <= 2 and s["mem"] <= 2 and s["ptr"] <= 15
        assert s["cond"] + s["mem"] <= 2 + 2
        nbytes.append(seg.state_bytes())
        tr = seg._tracks[1]
        feats = [e["maskmem_features"] for e in list(tr.cond.values()) + list(tr.mem.values())]
        one = feats[0].numel() * feats[0].element_size()
        assert sum(f.numel() * f.element_size() for f in feats) <= (2 + 2) * one  # memory features bounded
    assert 0 in seg._tracks[1].cond  # the initial prompt is never evicted
    if n >= 40:  # once the 16-frame pointer window is full too, the bytes held are flat
        assert max(nbytes[20:]) == max(nbytes[10:20])
    else:  # after the windows are full only small object pointers (<= 15) are still added
        assert nbytes[-1] - nbytes[6] <= 15 * seg._tracks[1].ptr[next(iter(seg._tracks[1].ptr))]["obj_ptr"].numel() * 4
    assert seg._tracks[1].mem and seg._tracks[1].mem[next(iter(seg._tracks[1].mem))]["maskmem_features"].device.type == "cpu"


def test_mask_prompt_is_taken_as_the_mask(model):
    seg = _seg(model)
    mask = torch.zeros(H, W)
    mask[8:40, 12:36] = 1.0
    seg.add_prompt(5, mask=mask, box=np.array([0, 0, 5, 5]))
    out = seg.segment(0, _frames(1)[0])[5]
    assert float(out[12:36, 16:32].min()) > 0.9 and float(out[:, 48:].max()) < 0.1
    # an empty mask falls back to the box
    seg.reset()
    seg.add_prompt(6, mask=torch.zeros(H, W), box=np.array([4, 4, 30, 30]))
    assert set(seg.segment(1, _frames(1)[0])) == {6}


def test_a_mask_prompt_with_its_own_box_is_not_read_and_gives_the_same_mask(model):
    """box_is_mask (the caller measured the box on the mask): no emptiness read, the same conditioning mask."""
    from vr180matte.runtime.host_reads import HostReadCounter

    mask = torch.zeros(H, W)
    mask[8:40, 12:36] = 0.9
    outs, reads = [], []
    for own in (False, True):
        seg = _seg(model)
        seg.add_prompt(5, mask=mask, box=np.array([12, 8, 35, 39], np.float32), box_is_mask=own)
        with HostReadCounter() as c:
            outs.append(seg.segment(0, _frames(1)[0])[5])
        reads.append(c.total("reads"))
    assert torch.equal(outs[0], outs[1]) and reads[1] == reads[0] - 1


def test_a_known_nonempty_mask_too_thin_for_the_model_size_keeps_its_strongest_pixels(model):
    seg = _seg(model)
    big = torch.zeros(640, 640)
    big[300, 200:203] = 1.0  # a 3-pixel person: under 0.5 everywhere once resized to 64 px
    assert float(seg._mask_input(big).sum()) == 0.0
    kept = seg._mask_input(big, nonempty=True)[0, 0]
    assert 1 <= float(kept.sum()) <= 4 and abs(int(kept.nonzero()[0, 0]) - 30) <= 1
    plain = torch.zeros(640, 640)
    plain[100:400, 150:300] = 1.0  # any other mask: the plain threshold, bit for bit
    assert torch.equal(seg._mask_input(plain, nonempty=True), seg._mask_input(plain))


def test_exception_leaves_state_untouched_and_reset_works(model, monkeypatch):
    seg = _seg(model)
    f = _frames(3, seed=4)
    seg.add_prompt(1, box=np.array([4, 4, 30, 30]))
    seg.segment(0, f[0])
    before = seg.memory_sizes()
    seg.add_prompt(2, box=np.array([30, 4, 60, 30]))

    def boom(x):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(model, "forward_image", boom)
    with pytest.raises(torch.OutOfMemoryError):
        seg.segment(1, f[1])
    assert seg.memory_sizes() == before and seg.track_ids == [1, 2]  # nothing half-written, prompt kept
    monkeypatch.undo()
    assert set(seg.segment(1, f[1])) == {1, 2}  # the same frame can be retried
    seg.reset()
    assert seg.memory_sizes() == {} and seg.track_ids == [] and seg.state_bytes() == 0
    assert seg.segment(0, f[2]) == {}  # a reset segmenter starts over (frame numbers too)


def test_rejects_out_of_order_frames_and_bad_prompts(model):
    seg = _seg(model)
    seg.add_prompt(1, box=np.array([1, 1, 9, 9]))
    seg.segment(3, _frames(1)[0])
    with pytest.raises(ValueError, match="increasing order"):
        seg.segment(3, _frames(1)[0])
    with pytest.raises(ValueError, match="box or a mask"):
        seg.add_prompt(2)


def test_both_eyes_one_encoder_batch_equal_per_eye(model, monkeypatch):
    """Two views sharing one model: one image-encoder forward of batch 2 and one track step over both eyes'
    objects per frame; masks equal running each view on its own (float tolerance of batched kernels); a view
    without tracks costs nothing."""
    from vr180matte.engines.sam2_stream import segment_batch

    left_f, right_f = _frames(4, seed=5), _frames(4, seed=6)
    boxes = {"l": np.array([4, 6, 30, 40], np.float32), "r": np.array([20, 8, 58, 44], np.float32)}
    solo = {e: _seg(model, memory_window=3) for e in "lr"}
    pair = {e: _seg(model, memory_window=3) for e in "lr"}
    for e in "lr":
        solo[e].add_prompt(1, box=boxes[e])
        pair[e].add_prompt(1, box=boxes[e])
    batches, steps = [], []
    real, real_step = model.forward_image, model.track_step
    for i in range(4):
        ref = {"l": solo["l"].segment(i, left_f[i]), "r": solo["r"].segment(i, right_f[i])}
        monkeypatch.setattr(model, "forward_image", lambda x: batches.append(x.shape[0]) or real(x))
        monkeypatch.setattr(model, "track_step",
                            lambda **kw: steps.append(kw["current_vision_feats"][-1].shape[1]) or real_step(**kw))
        got = segment_batch([pair["l"], pair["r"]], i, [left_f[i], right_f[i]])
        monkeypatch.setattr(model, "forward_image", real)
        monkeypatch.setattr(model, "track_step", real_step)
        for k, e in enumerate("lr"):
            assert set(got[k]) == {1}
            assert float((got[k][1] - ref[e][1]).abs().max()) < 1e-3, (i, e)
    assert batches == [2, 2, 2, 2]
    assert steps == [2, 2, 2, 2]  # one memory-attention/decoder step per frame, both eyes' objects in it
    assert float((got[0][1] - got[1][1]).abs().max()) > 0.01  # two different views really
    idle = _seg(model)
    got = segment_batch([pair["l"], idle], 4, [left_f[0], right_f[0]])
    assert got[1] == {} and set(got[0]) == {1}
    with pytest.raises(ValueError, match="increasing order"):
        segment_batch([pair["l"], pair["r"]], 4, [left_f[0], right_f[0]])


def test_prefetch_encodes_both_eyes_once_and_segment_uses_it(model, monkeypatch):
    """parallel_eyes in the stereo stage: both eyes' frames go through the image encoder as one batch of 2 ahead
    of the (sequential) per-eye steps; the masks equal those of encoding each eye on its own."""
    from vr180matte.engines.sam2_stream import prefetch_batch

    left_f, right_f = _frames(3, seed=5), _frames(3, seed=6)
    box = np.array([6, 8, 40, 40], np.float32)

    def run(prefetch: bool):
        segs = [_seg(model), _seg(model)]
        for s in segs:
            s.add_prompt(1, box=box)
        calls = []
        real = model.forward_image
        monkeypatch.setattr(model, "forward_image", lambda x: (calls.append(x.shape[0]), real(x))[1])
        out = []
        for i in range(3):
            if prefetch:
                StreamingSam2Segmenter.prefetch_batch(segs, i, [left_f[i], right_f[i]])
            out.append([segs[0].segment(i, left_f[i])[1], segs[1].segment(i, right_f[i])[1]])
        monkeypatch.setattr(model, "forward_image", real)
        return out, calls

    base, calls_base = run(False)
    pre, calls_pre = run(True)
    assert calls_base == [1] * 6 and calls_pre == [2] * 3, (calls_base, calls_pre)
    for a, b in zip(base, pre):
        for x, y in zip(a, b):
            assert torch.allclose(x, y, atol=1e-4)
    assert prefetch_batch is StreamingSam2Segmenter.prefetch_batch
