"""What the finish half hands the writer: for straight alpha the decoded frame itself and an alpha plane (no RGBA
frame built), else composed pixels; the written alpha is the same either way."""
from __future__ import annotations

import av
import numpy as np
import pytest

from synth import davis_sbs_clip
from vr180matte.io.picture import RgbAlpha
from vr180matte.pipeline import run
from vr180matte.pipeline.frame_finish import FrameFinisher

SETS = ["hardware.device=cpu", "processing.scale_factor=0.25", "processing.chunk_size=0",
        "detection.image_size=640", "output.format=alpha"]  # a small detector input: detection is not checked


def _decoded(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgba") for f in c.decode(video=0)]


@pytest.mark.parametrize("policy", ["cpu", "gpu"])
def test_straight_alpha_hands_over_the_decoded_frame_and_premultiplied_composes(tmp_path, monkeypatch, policy):
    clip = davis_sbs_clip(tmp_path / "p.mp4", "davis2016_parkour", count=3)
    seen = []
    finish = FrameFinisher.finish

    def spy(self, seg):
        out = finish(self, seg)
        seen.append((seg.rgb, out))
        return out

    monkeypatch.setattr(FrameFinisher, "finish", spy)
    sets = SETS + [f"hardware.policy={policy}"]
    straight = run(clip, out_dir=tmp_path / "s", overrides=sets, quiet=True)
    assert len(seen) == 3
    for rgb, out in seen:
        assert set(out) == {None} and isinstance(out[None], RgbAlpha)
        assert out[None].rgb is rgb  # the decoded frame itself: no copy of the colour
        assert out[None].alpha.shape == rgb.shape[:2] and out[None].alpha.dtype == np.uint8
    seen.clear()
    pre = run(clip, out_dir=tmp_path / "p", overrides=sets + ["refine.premultiplied=true"], quiet=True)
    assert len(seen) == 3 and all(isinstance(out[None], np.ndarray) and out[None].shape[2] == 4 for _, out in seen)
    a, b = _decoded(straight.outputs[0]), _decoded(pre.outputs[0])
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert np.array_equal(x[..., 3], y[..., 3])  # the same alpha either way
        assert (x[..., 3] > 0).any() and (x[..., 3] < 255).any()
        soft = (y[..., 3] > 0) & (y[..., 3] < 200)  # premultiplied colour is darker where alpha is partial
        assert y[..., :3][soft].mean() < 0.9 * x[..., :3][soft].mean()


def test_separate_eye_files_hand_over_eye_views(tmp_path, monkeypatch):
    clip = davis_sbs_clip(tmp_path / "p.mp4", "davis2016_parkour", count=2)
    seen = []
    finish = FrameFinisher.finish
    monkeypatch.setattr(FrameFinisher, "finish", lambda self, seg: seen.append((seg.rgb, finish(self, seg))) or seen[-1][1])
    r = run(clip, out_dir=tmp_path / "e", overrides=SETS + ["output.maintain_sbs=false", "output.codec=png"],
            quiet=True)
    rgb, out = seen[-1]
    assert set(out) == {"left", "right"}
    w = rgb.shape[1] // 2
    assert np.shares_memory(out["left"].rgb, rgb) and np.array_equal(out["right"].rgb, rgb[:, w:])
    assert len(r.outputs) == 2 and all(p.is_dir() and len(list(p.glob("*.png"))) == 2 for p in r.outputs)


def test_passthrough_engine_hands_over_the_decoded_frame_and_one_opaque_plane(tmp_path, monkeypatch):
    """The passthrough engine (the I/O path alone) writes each decoded frame with alpha 1 from the frame itself
    and one read-only opaque plane; separate eye files get each eye's own half."""
    from synth import write_video
    from vr180matte.pipeline.frame_matter import OpaqueMatter

    def sbs(i):  # the eyes differ (the right one mirrored), so a swapped or wrong half would show
        x = np.linspace(0, 255, 96, dtype=np.float32)[None, :, None]
        left = np.broadcast_to(x + 8 * i, (64, 96, 3)).clip(0, 255).astype(np.uint8)
        return np.concatenate([left, left[:, ::-1]], axis=1)

    clip = write_video(tmp_path / "c.mp4", sbs, n=3, options={"crf": "10"})
    seen = []
    finish = OpaqueMatter.finish
    monkeypatch.setattr(OpaqueMatter, "finish", lambda self, seg: seen.append((seg.rgb, finish(self, seg))) or seen[-1][1])
    sets = ["hardware.device=cpu", "matting.engine=passthrough"]
    run(clip, out_dir=tmp_path / "sbs", overrides=sets, quiet=True)
    assert len(seen) == 3 and all(out[None].rgb is rgb for rgb, out in seen)
    planes = {id(out[None].alpha) for _, out in seen}
    assert len(planes) == 1 and (seen[0][1][None].alpha == 255).all() and not seen[0][1][None].alpha.flags.writeable
    seen.clear()
    r = run(clip, out_dir=tmp_path / "eyes", overrides=sets + ["output.maintain_sbs=false"], quiet=True)
    rgb = seen[0][0]
    for path in r.outputs:
        eye = "left" if "_left" in path.name else "right"
        want = rgb[:, :96] if eye == "left" else rgb[:, 96:]
        got = _decoded(path)[0]
        assert got.shape == (64, 96, 4) and (got[..., 3] == 255).all()
        assert np.abs(got[..., :3].astype(int) - want).mean() < 2, eye
