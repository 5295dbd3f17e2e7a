"""compose(): straight vs premultiplied RGBA and greenscreen values."""
import pytest
import torch

from vr180matte.matte.composite import compose, straight_alpha


def _inputs(device):
    rgb = torch.tensor([[[200, 100, 50], [10, 20, 30]], [[255, 255, 255], [0, 0, 0]]], dtype=torch.uint8, device=device)
    alpha = torch.tensor([[0.5, 1.0], [0.0, 0.25]], device=device)
    return rgb, alpha


def test_straight_alpha(device):
    rgb, alpha = _inputs(device)
    out = compose(rgb, alpha, mode="alpha").cpu()
    assert out.shape == (2, 2, 4) and out.dtype == torch.uint8
    assert out[..., :3].tolist() == rgb.cpu().tolist()  # colour untouched
    assert out[..., 3].tolist() == [[128, 255], [0, 64]]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.uint16])
def test_straight_alpha_alone_is_the_alpha_channel_compose_writes(device, dtype):
    """The straight-alpha output's alpha plane (the colour is the source's, io/picture.py): the fourth channel of
    compose's RGBA, returned or written into a view of a wider plane; out-of-range alpha is clamped alike."""
    g = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (2, 5, 6, 3), generator=g).to(dtype).mul(257 if dtype == torch.uint16 else 1)
    alpha = torch.rand((2, 5, 6), generator=g) * 1.2 - 0.1
    rgb, alpha = rgb.to(device), alpha.to(device)
    want = compose(rgb, alpha, mode="alpha")[..., 3]
    got = straight_alpha(alpha, dtype)
    assert got.dtype == dtype and torch.equal(got, want)
    plane = torch.zeros((2, 5, 12), dtype=dtype, device=device)  # two eyes side by side; the right half is written
    assert straight_alpha(alpha, dtype, out=plane[..., 6:]).data_ptr() == plane[..., 6:].data_ptr()
    assert torch.equal(plane[..., 6:], want) and not plane[..., :6].any()
    with pytest.raises(ValueError, match="uint8 or uint16"):
        straight_alpha(alpha, torch.float32)


def test_premultiplied_alpha(device):
    rgb, alpha = _inputs(device)
    out = compose(rgb, alpha, mode="alpha", premultiplied=True).cpu()
    assert out[0, 0].tolist() == [100, 50, 25, 128]  # 200 * 128/255 = 100.4 -> 100
    assert out[0, 1].tolist() == [10, 20, 30, 255]
    assert out[1, 0].tolist() == [0, 0, 0, 0]
    assert bool((out[..., :3] <= out[..., 3:]).all())


def test_greenscreen(device):
    rgb, alpha = _inputs(device)
    out = compose(rgb, alpha, mode="greenscreen", background=(0, 255, 0)).cpu()
    assert out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [100, 178, 25]  # 0.5*200 + 0.5*0, 0.5*100 + 0.5*255 = 177.5 -> 178
    assert out[0, 1].tolist() == [10, 20, 30]
    assert out[1, 0].tolist() == [0, 255, 0]


def test_errors():
    rgb, alpha = _inputs("cpu")
    with pytest.raises(ValueError, match="output.format"):
        compose(rgb, alpha, mode="rgba")
    with pytest.raises(ValueError, match="does not match"):
        compose(rgb, alpha[:1], mode="alpha")
    with pytest.raises(ValueError, match="background"):
        compose(rgb, alpha, mode="greenscreen", background=(0, 300, 0))


def test_sixteen_bit_frames_keep_sixteen_bits(device):
    rgb = torch.tensor([[[40000, 1000, 65535], [257 * 3 + 1, 5, 7]]], dtype=torch.uint16, device=device)
    alpha = torch.tensor([[1.0, 0.5]], device=device)
    out = compose(rgb, alpha, mode="alpha").cpu()
    assert out.dtype == torch.uint16
    assert out[0, 0].tolist() == [40000, 1000, 65535, 65535]  # colour untouched, alpha at full 16-bit scale
    assert out[0, 1].tolist()[3] == 32768
    gs = compose(rgb, alpha, mode="greenscreen", background=(0, 255, 0)).cpu()
    assert gs.dtype == torch.uint16
    assert gs[0, 0].tolist() == [40000, 1000, 65535]  # alpha 1: the source, all 16 bits
    assert gs[0, 1].tolist() == [round((257 * 3 + 1) / 2), round((5 + 65535) / 2), round(7 / 2)]


@pytest.mark.parametrize("kw", [{"mode": "alpha"}, {"mode": "alpha", "premultiplied": True},
                                {"mode": "greenscreen", "background": (10, 200, 30)}])
def test_both_eyes_in_one_batch_equal_per_eye(device, kw):
    from vr180matte.matte.composite import compose_batch

    g = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (2, 5, 7, 3), dtype=torch.uint8, generator=g).to(device)
    alpha = torch.rand(2, 5, 7, generator=g).to(device)
    both = compose_batch(rgb, alpha, **kw)
    for i in range(2):
        assert torch.equal(both[i], compose(rgb[i], alpha[i], **kw))
    with pytest.raises(ValueError, match="compose_batch expects"):
        compose_batch(rgb[0], alpha[0], **kw)


@pytest.mark.parametrize("mode,premultiplied,dtype", [("alpha", False, torch.uint8), ("alpha", True, torch.uint8),
                                                       ("greenscreen", False, torch.uint8),
                                                       ("alpha", False, torch.uint16), ("greenscreen", False, torch.uint16)])
def test_eyes_composed_into_their_views_of_the_frame_equal_the_joined_frame(mode, premultiplied, dtype):
    """The pipeline composes each eye straight into its half of the output frame (``out=``): the same values as
    composing the whole frame with the eyes' alphas joined, and the caller's alpha is left untouched."""
    from vr180matte.io.layouts import get_layout

    g = torch.Generator().manual_seed(1)
    top = 255 if dtype == torch.uint8 else 65535
    frame = torch.randint(0, top + 1, (40, 96, 3), generator=g, dtype=torch.int32).to(dtype)
    alphas = [torch.rand(40, 48, generator=g) * 1.2 - 0.1 for _ in range(2)]  # beyond [0, 1]: clamped
    kept = [a.clone() for a in alphas]
    lay = get_layout("sbs")
    kw = dict(mode=mode, premultiplied=premultiplied, background=(0, 255, 0))
    ref = compose(frame, lay.join(*alphas), **kw)
    out = torch.empty_like(ref)
    for eye, a, view in zip(lay.split(frame), alphas, lay.split(out)):
        assert compose(eye, a, out=view, **kw) is view
    assert torch.equal(out, ref)
    assert all(torch.equal(a, k) for a, k in zip(alphas, kept))
    with pytest.raises(ValueError, match="does not fit"):
        compose(frame, lay.join(*alphas), out=torch.empty(40, 96, 3 if mode == "alpha" else 4, dtype=dtype), **kw)


@pytest.mark.parametrize("mode,premultiplied", [("alpha", False), ("alpha", True), ("greenscreen", False)])
@pytest.mark.parametrize("layout", ["sbs", "sbs_rl", "tb"])
def test_both_eyes_composed_in_one_call_over_strided_views(mode, premultiplied, layout):
    """The GPU policy composes both eyes in one call over (2, H, W, C) views of the decoded and the output
    frame (frame_matter.eye_stack): the same bytes as composing each eye into its own view."""
    from vr180matte.io.layouts import get_layout
    from vr180matte.matte.composite import channels
    from vr180matte.pipeline.frame_matter import eye_stack

    lay = get_layout(layout)
    g = torch.Generator().manual_seed(3)
    shape = (40, 2 * 48, 3) if lay.axis == 1 else (2 * 40, 48, 3)
    frame = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    left, right = lay.split(frame)
    alphas = {"left": torch.rand(left.shape[:2], generator=g), "right": torch.rand(right.shape[:2], generator=g)}
    kw = dict(mode=mode, premultiplied=premultiplied, background=(10, 200, 30))
    ref = torch.empty((*shape[:2], channels(mode)), dtype=torch.uint8)
    for eye, view in zip(("left", "right"), lay.split(ref)):
        compose(lay.split(frame)[0 if eye == "left" else 1], alphas[eye], out=view, **kw)
    order = ("left", "right") if lay.left_first else ("right", "left")
    out = torch.empty_like(ref)
    res = compose(eye_stack(lay, frame), torch.stack([alphas[e] for e in order]), out=eye_stack(lay, out), **kw)
    assert res.shape == (2, 40, 48, channels(mode)) and res.data_ptr() == out.data_ptr()
    assert torch.equal(out, ref)
