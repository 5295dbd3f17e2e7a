"""stats.json's io block: the decoder and encoder that actually ran, why, and their busy seconds."""
from __future__ import annotations

import json

import av
import numpy as np

from synth import gradient_sbs, write_video
from vr180matte.pipeline import run

PASS = ["hardware.device=cpu", "matting.engine=passthrough", "processing.chunk_size=4"]


def test_io_block_says_which_decoder_and_encoder_ran(tmp_path):
    clip = write_video(tmp_path / "c.mp4", lambda i: gradient_sbs(i, 128, 64), n=6, codec="libx264")
    result = run(clip, out_dir=tmp_path / "o", overrides=PASS, quiet=True)
    io = json.loads(result.stats_path.read_text())["io"]  # in the file, not only in memory
    dec, enc = io["decoder"], io["encoder"]
    assert dec["name"] == "h264 (CPU)" and dec["hardware"] is False and dec["reason"] == "CPU run"
    assert dec["threads"] == result.stats["policy"]["codec_threads"] and dec["busy_s"] > 0
    assert enc["name"] == "prores_ks" and enc["hardware"] is False and enc["reason"].startswith("CPU run")
    assert enc["contexts"] == max(1, result.stats["policy"]["encoders"]) and enc["busy_s"] > 0
    with av.open(str(result.outputs[0])) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 6
    assert all(np.asarray(f.to_ndarray(format="rgba")[..., 3]).min() == 255 for f in frames)  # passthrough: opaque
