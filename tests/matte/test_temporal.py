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
