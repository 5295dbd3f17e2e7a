"""QualityMonitor: flicker and stair-stepping show up in the summary; sampling and stereo."""
import numpy as np
import torch

from vr180matte.quality.monitor import QualityMonitor


def _disk(n, cx, r):
    yy, xx = torch.meshgrid(torch.arange(n).float(), torch.arange(n).float(), indexing="ij")
    return (r + 0.5 - torch.hypot(yy - n / 2, xx - cx)).clamp(0, 1)


def _frame(n):
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 255, (n, n, 3)).astype(np.uint8))


def test_flicker_lowers_temporal_stability(device):
    n = 256
    g = _frame(n).to(device)
    stable, flicker = QualityMonitor(max_side=128), QualityMonitor(max_side=128)
    for t in range(6):
        for view in ("left", "right"):
            stable.update(view, t, _disk(n, 128, 60).to(device), g)
            flicker.update(view, t, _disk(n, 128, 60 + 6 * (t % 2)).to(device), g)
    s, f = stable.summary(), flicker.summary()
    assert s["frames"] == 6 and s["temporal_stability"] == 1.0
    assert f["temporal_stability"] < 0.7
    assert s["edge_consistency"] > 0.9 and s["stereo_alignment"] is None
    assert set(s["per_view"]) == {"left", "right"}


def test_stairs_lower_edge_consistency_and_every():
    n = 256
    g = _frame(n)
    smooth = _disk(n, 128, 80)
    stairs = torch.nn.functional.interpolate((smooth[None, None][..., ::8, ::8] > 0.5).float(), scale_factor=8)[0, 0]
    m1, m2 = QualityMonitor(every=3, max_side=256), QualityMonitor(every=3, max_side=256)
    for t in range(7):
        m1.update("left", t, smooth, g)
        m2.update("left", t, stairs, g)
    assert m1.summary()["frames"] == 3  # frames 0, 3, 6
    assert m1.summary()["temporal_stability"] == 1.0  # pairs (2,3) and (5,6)
    assert m2.summary()["edge_consistency"] < m1.summary()["edge_consistency"] - 0.2
    m1.add_stereo(0, 0.9)
    m1.add_stereo(3, 0.7)
    assert m1.summary()["stereo_alignment"] == 0.8


def test_samples_every_kth_frame_at_processing_resolution_and_says_so():
    """Fed the full-resolution alpha and the processing-size eye, it analyses only sampled frames, at the
    processing size, and gives the same scores as when fed both at that size."""
    n, proc = 512, 128
    g_full = _frame(n)
    g_proc = torch.nn.functional.interpolate(g_full.permute(2, 0, 1)[None].float(), size=(proc, proc), mode="area")[0]
    g_proc = g_proc.permute(1, 2, 0).round().to(torch.uint8)
    m, ref = QualityMonitor(every=4), QualityMonitor(every=4)
    calls = 0
    for t in range(9):
        a = _disk(n, 256, 120 + 8 * (t % 2))
        if m.wants(t):
            calls += 1
            m.update("left", t, a, g_proc)
            a_small = torch.nn.functional.interpolate(a[None, None], size=(proc, proc), mode="area")[0, 0]
            ref.update("left", t, a_small, g_proc)
    s = m.summary()
    assert calls == 5  # frames 0, 3, 4, 7, 8: each sample and the frame before it
    assert s["frames"] == 3 and s["sampling"] == {
        "every": 4, "max_side": 512, "analysis_size": [proc, proc], "eye_frames_analysed": 5}
    assert s["edge_consistency"] == ref.summary()["edge_consistency"]
    assert s["temporal_stability"] == ref.summary()["temporal_stability"] < 0.9
