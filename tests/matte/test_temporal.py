"""TemporalSmoother: less flicker on a still scene, no lag on motion, off-switch, reset."""
import numpy as np
import torch

from vr180matte.matte.temporal import TemporalSmoother


def _disk(n, cx, r):
    yy, xx = torch.meshgrid(torch.arange(n).float(), torch.arange(n).float(), indexing="ij")
    return (r + 0.5 - torch.hypot(yy - n / 2, xx - cx)).clamp(0, 1)


def _frame(n, cx):
    rng = np.random.default_rng(1)
    bg = torch.from_numpy(rng.integers(0, 255, (n, n, 3)).astype(np.uint8))
    a = _disk(n, cx, 20)[..., None]
    return (a * torch.tensor([230.0, 200, 160]) + (1 - a) * bg.float()).to(torch.uint8)


def test_reduces_flicker_on_still_scene(device):
    n = 96
    guide = _frame(n, 48).to(device)
    sm = TemporalSmoother(strength=1.0)
    raw, out = [], []
    for t in range(8):
        a = _disk(n, 48, 20 + (1.0 if t % 2 else 0.0)).to(device)  # 1 px boundary flicker, image still
        raw.append(a)
        out.append(sm.step(a, guide))
    flick_raw = np.mean([float((raw[t] - raw[t - 1]).abs().sum()) for t in range(2, 8)])
    flick_out = np.mean([float((out[t] - out[t - 1]).abs().sum()) for t in range(2, 8)])
    assert flick_out < 0.5 * flick_raw, (flick_raw, flick_out)


def test_no_lag_on_motion(device):
    n = 96
    sm = TemporalSmoother(strength=1.0)
    for t in range(5):
        cx = 30 + 6 * t  # the person and the image move 6 px a frame
        a = _disk(n, cx, 20).to(device)
        out = sm.step(a, _frame(n, cx).to(device))
    # where the edge moves the output is the current alpha; tiny residue only where the image barely changed
    assert float((out - a).abs().max()) < 0.1
    assert float((out - a).abs().sum()) < 0.01 * float((a - _disk(n, cx - 6, 20).to(device)).abs().sum())


def test_follows_a_correction_at_once(device):
    n = 64
    g = _frame(n, 32).to(device)
    sm = TemporalSmoother(strength=1.0)
    sm.step(torch.zeros(n, n, device=device), g)
    a = _disk(n, 32, 20).to(device)  # a person appears on a still image (detector found them)
    out = sm.step(a, g)
    assert float((out - a).abs().max()) < 0.1 and float((out - a).abs().sum()) < 0.01 * float(a.sum())


def test_disabled_and_reset():
    n = 32
    g = _frame(n, 16)
    sm = TemporalSmoother(enabled=False)
    a = _disk(n, 16, 8)
    assert sm.step(a, g) is a
    sm = TemporalSmoother(strength=1.0)
    sm.step(torch.zeros(n, n), g)
    sm.reset()
    assert torch.equal(sm.step(a, g), a)  # first frame after reset passes through


def _flicker_seq(n, device, frames=5):
    """A still image whose alpha edge flickers by 1 px, plus one frame where a second person appears."""
    out = []
    for t in range(frames):
        a = _disk(n, n / 2, 20 + (1.0 if t % 2 else 0.0))
        if t == 3:
            a = torch.maximum(a, _disk(n, n / 2 - 30, 8))
        out.append(a.to(device))
    return out


def test_both_eyes_in_one_batch_equal_per_eye(device):
    n = 96
    left, right = _flicker_seq(n, device), [a.flip(1) for a in _flicker_seq(n, device)]
    gl, gr = _frame(n, 48).to(device), _frame(n, 40).to(device)
    per = {"l": TemporalSmoother(strength=1.0), "r": TemporalSmoother(strength=1.0)}
    both = TemporalSmoother(strength=1.0)
    for a_l, a_r in zip(left, right):
        ol, orr = per["l"].step(a_l, gl), per["r"].step(a_r, gr)
        ob = both.step_batch(torch.stack([a_l, a_r]), torch.stack([gl, gr]))
        assert float((ob[0] - ol).abs().max()) < 1e-6 and float((ob[1] - orr).abs().max()) < 1e-6
    assert float((ol - left[-1]).abs().max()) > 0.05  # the smoothing did act on the flicker


def test_unchanged_blocks_are_not_touched_and_result_matches_dense(device):
    """Blending only the blocks where alpha changed equals blending everywhere (the dense formula)."""

    from vr180matte.matte import temporal as T

    n = 1024  # analysis cell 4 px; 192-px blocks -> 36 blocks
    yy, xx = torch.meshgrid(torch.arange(n).float(), torch.arange(n).float(), indexing="ij")
    g = torch.from_numpy(np.random.default_rng(2).integers(0, 255, (n, n, 3)).astype(np.uint8)).to(device)
    a0 = (60.5 - torch.hypot(yy - 150, xx - 150)).clamp(0, 1).to(device)
    a1 = (61.5 - torch.hypot(yy - 150, xx - 150)).clamp(0, 1).to(device)
    sm = TemporalSmoother(strength=1.0)
    sm.step(a0, g)
    out = sm.step(a1, g)
    assert 0 < sm.last_stats["blocks_blended"] <= 4 and sm.last_stats["blocks"] == 36
    # the dense formula (what the smoother computed everywhere before it skipped unchanged blocks)
    w = T._MAX_WEIGHT * torch.ones(1, 1, n, n, device=device)  # still image: weight is the full strength
    dense = a1 + w[0, 0] * (a0 - a1)
    dense[dense < 1 / 512] = 0
    dense[dense > 1 - 1 / 512] = 1
    assert float((out - dense).abs().max()) < 1e-5
    assert torch.equal(out[600:], a1[600:])


def test_processing_resolution_guide_decides_like_the_full_frame(device):
    """The motion decision needs only a small copy of the frame: a quarter-size guide gives the same result."""
    import torch.nn.functional as F

    n = 256
    full = [_frame(n, 128).to(device) for _ in range(3)]
    small = [F.interpolate(f.permute(2, 0, 1)[None].float(), scale_factor=0.25, mode="area")[0]
             .permute(1, 2, 0).round().to(torch.uint8) for f in full]
    alphas = [_disk(n, 128, 40 + (t % 2)).to(device) for t in range(3)]
    s_full, s_small = TemporalSmoother(strength=1.0), TemporalSmoother(strength=1.0)
    for a, gf, gs in zip(alphas, full, small):
        of, os_ = s_full.step(a, gf), s_small.step(a, gs)
    assert float((of - os_).abs().max()) < 0.02
    assert float((of - alphas[-1]).abs().max()) > 0.1  # smoothing acted


def _real_sequence(source: str, start: int, n: int, side: int = 384):
    """Consecutive real frames (parkour: its ground truth, blurred and jittered by a pixel so edges flicker;
    bedroom: a still crop with the same jitter) resized to ``side``, with a refined-looking alpha per frame."""
    import cv2

    from synth import davis_frames, media

    if source == "parkour":
        frames, masks = davis_frames("davis2016_parkour")
        frames, masks = frames[start : start + n], masks[start : start + n]
    else:
        root = media("sam2_bedroom_two_children", "JPEGImages")
        frames, masks = [root / f"{start:05d}.jpg"] * n, [None] * n
    out = []
    for t, (f, m) in enumerate(zip(frames, masks)):
        rgb = cv2.resize(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB), (side, side), interpolation=cv2.INTER_AREA)
        if m is not None:
            gt = cv2.resize(cv2.imread(str(m), cv2.IMREAD_GRAYSCALE), (side, side)).astype(np.float32) / 255
        else:
            gt = np.zeros((side, side), np.float32)
            cv2.ellipse(gt, (side // 2, side // 2), (side // 5, side // 3), 0, 0, 360, 1.0, -1)
        gt = cv2.GaussianBlur(np.roll(gt, t % 2, axis=1), (5, 5), 1.2)
        a = torch.from_numpy(gt)
        a[a < 1 / 512] = 0
        a[a > 1 - 1 / 512] = 1
        out.append((a, torch.from_numpy(rgb)))
    return out


import pytest  # noqa: E402


@pytest.mark.parametrize("source,start", [("parkour", 10), ("parkour", 60), ("bedroom", 0)])
def test_whole_frame_pass_equals_block_path_on_real_frames(device, source, start):
    """The GPU policy's one pass (no block loop, no host read) gives the block path's alpha, both eyes batched.
    Tolerance 1e-5 (measured ~1e-7: the same weights, sampled by F.interpolate instead of per-block gathers)."""
    seq = _real_sequence(source, start, 5)
    blocks, whole = TemporalSmoother(strength=1.0), TemporalSmoother(strength=1.0, whole_frame=True)
    acted = 0.0
    for t, (a, g) in enumerate(seq):
        a2 = torch.stack([a, a.flip(1)]).to(device)  # two different "eyes"
        g2 = torch.stack([g, g.flip(1)]).to(device)
        ob, ow = blocks.step_batch(a2, g2), whole.step_batch(a2, g2)
        assert float((ob - ow).abs().max()) < 1e-5, t
        acted = max(acted, float((ow - a2).abs().max()))
    assert acted > 0.02  # the smoothing really blended something (measured 0.047 on parkour 60, in motion)
    assert whole.last_stats["whole_frame"] and blocks.last_stats["blocks_blended"] > 0


def test_whole_frame_pass_reads_nothing_back_and_ops_do_not_depend_on_the_alpha():
    from vr180matte.runtime.host_reads import HostReadCounter

    seq = _real_sequence("parkour", 20, 3)
    counts = []
    for alpha_of in (lambda a: a, lambda a: torch.zeros_like(a)):  # a person vs nobody
        sm = TemporalSmoother(strength=1.0, whole_frame=True)
        batches = [(torch.stack([alpha_of(a)] * 2), torch.stack([g] * 2)) for a, g in seq]
        with HostReadCounter() as c:
            for a2, g2 in batches:
                sm.step_batch(a2, g2)
        counts.append((c.total("reads"), c.total("ops")))
    assert counts[0][0] == counts[1][0] == 0
    assert counts[0][1] == counts[1][1] > 0
    blocks = TemporalSmoother(strength=1.0)
    with HostReadCounter() as c:
        for a, g in seq:
            blocks.step_batch(torch.stack([a] * 2), torch.stack([g] * 2))
    assert c.total("reads") > 0  # the block path reads the change map back (why the GPU policy avoids it)
