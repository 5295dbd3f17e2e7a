"""Edge colour decontamination: hair-like strands shot over red, recomposited over blue."""
import numpy as np
import pytest
import torch

from vr180matte.matte.composite import compose
from vr180matte.matte.decontaminate import decontaminate, enabled

RED = np.array([220.0, 20.0, 20.0])
BLUE = np.array([20.0, 40.0, 230.0])


def _hair_scene(h: int = 160, w: int = 320, seed: int = 0):
    """A warm-brown head (opaque) with ~40 thin antialiased strands flying off it; known F and alpha."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    alpha = np.zeros((h, w))
    head = ((xx - 90) / 70) ** 2 + ((yy - h / 2) / 60) ** 2 <= 1.0
    alpha[head] = 1.0
    for _ in range(40):
        y0 = rng.uniform(h * 0.2, h * 0.8)
        slope = rng.uniform(-0.6, 0.6)
        width = rng.uniform(0.4, 1.4)  # sub-pixel to ~1.5 px: partial coverage everywhere along the strand
        x_end = rng.uniform(200, w - 10)
        d = np.abs(yy - (y0 + slope * (xx - 140))) - width / 2
        strand = np.clip(0.5 - d, 0, 1) * (xx > 120) * (xx < x_end)
        alpha = np.maximum(alpha, strand * rng.uniform(0.5, 1.0))
    # foreground colour: brown with some variation (the estimate must not just guess a constant)
    fg = np.stack([120 + 30 * np.sin(xx / 23.0), 80 + 20 * np.cos(yy / 17.0), 50 + 10 * np.sin((xx + yy) / 31.0)], -1)
    image = fg * alpha[..., None] + RED * (1 - alpha[..., None])
    return fg, alpha, np.clip(np.round(image), 0, 255).astype(np.uint8)


def _edge_error(colour: np.ndarray, fg: np.ndarray, alpha: np.ndarray) -> float:
    """Mean colour error of a recomposite over blue vs the true recomposite, in the edge band (0 < a < 1)."""
    truth = fg * alpha[..., None] + BLUE * (1 - alpha[..., None])
    comp = colour.astype(np.float64) * alpha[..., None] + BLUE * (1 - alpha[..., None])
    band = (alpha > 0.02) & (alpha < 0.98)
    return float(np.abs(comp - truth)[band].mean())


def test_decontamination_halves_the_fringe_over_a_new_background():
    fg, alpha, image = _hair_scene()
    rgb = torch.from_numpy(image)
    a = torch.from_numpy(alpha).float()
    before = _edge_error(image, fg, alpha)
    clean, report = decontaminate(rgb, a, inplace=False, tile=96, margin=24)
    after = _edge_error(clean.numpy(), fg, alpha)
    assert report["band_pixels"] > 500 and report["tiles"] >= 2
    assert after * 2 <= before, (before, after)
    # pixels outside the band are untouched (opaque head bit-exact, background untouched)
    solid = (alpha <= 0.5 / 255) | (alpha >= 1 - 0.5 / 255)
    assert np.array_equal(clean.numpy()[solid], image[solid])
    # the source frame was not modified (inplace=False)
    assert torch.equal(rgb, torch.from_numpy(image))


def test_greenscreen_composite_has_no_red_fringe_with_decontamination():
    fg, alpha, image = _hair_scene(seed=1)
    a = torch.from_numpy(alpha).float()
    plain = compose(torch.from_numpy(image), a, mode="greenscreen", background=BLUE.astype(int).tolist()).numpy()
    clean, _ = decontaminate(torch.from_numpy(image), a, inplace=False)
    fixed = compose(clean, a, mode="greenscreen", background=BLUE.astype(int).tolist()).numpy()
    band = (alpha > 0.02) & (alpha < 0.98)
    # red excess (R - B) in the band: the old background shows up as red in the plain composite
    red_plain = float((plain[..., 0].astype(float) - fg[..., 0] * alpha - BLUE[0] * (1 - alpha))[band].mean())
    red_fixed = float((fixed[..., 0].astype(float) - fg[..., 0] * alpha - BLUE[0] * (1 - alpha))[band].mean())
    assert red_plain > 10 and abs(red_fixed) * 2 < red_plain


def test_sixteen_bit_frames_stay_sixteen_bit():
    fg, alpha, image = _hair_scene(seed=2)
    rgb16 = torch.from_numpy(image.astype(np.uint16) * 257)
    clean, report = decontaminate(rgb16, torch.from_numpy(alpha).float(), inplace=False)
    assert clean.dtype == torch.uint16 and report["band_pixels"] > 0
    assert _edge_error(clean.numpy() / 257.0, fg, alpha) * 2 <= _edge_error(image, fg, alpha)


def test_enabled_resolution():
    assert enabled("auto", "greenscreen") and enabled("auto", "passthrough") and not enabled("auto", "alpha")
    assert enabled("on", "alpha") and not enabled("off", "passthrough") and enabled(True, "alpha")
    with pytest.raises(ValueError, match="refine.decontaminate"):
        enabled("maybe", "alpha")


def test_result_does_not_depend_on_the_thread_count():
    fg, alpha, image = _hair_scene(seed=3)
    a = torch.from_numpy(alpha).float()
    one, r1 = decontaminate(torch.from_numpy(image), a, inplace=False, tile=64, threads=1)
    two, r2 = decontaminate(torch.from_numpy(image), a, inplace=False, tile=64, threads=3)
    assert r1 == r2 and r1["tiles"] > 8 and torch.equal(one, two)
