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
