"""Sizes refused before decoding: the encoder limits are measured facts, kept checked here."""
from __future__ import annotations

import av
import numpy as np
import pytest

from vr180matte.errors import ResourceError
from vr180matte.runtime.limits import MAX_ENCODE_PIXELS, check_encoder, check_memory, frame_memory_bytes

PRORES = {"profile": "4444", "vendor": "apl0", "alpha_bits": "16"}


def test_encoder_dimension_limits_are_refused_without_encoding():
    check_encoder("libx264", 16384, 8192, "yuv420p", {"bf": "0"})  # opens fine
    with pytest.raises(ResourceError, match="libx264 cannot encode 32768x8192") as e:
        check_encoder("libx264", 32768, 8192, "yuv420p", {"bf": "0"})
    assert "\n" not in str(e.value)


def test_prores_pixel_limit_refuses_what_the_encoder_would_fail_on():
    with pytest.raises(ResourceError, match="maintain_sbs=false"):
        check_encoder("prores_ks", 16384, 8192, "yuva444p10le", PRORES)
    check_encoder("prores_ks", 8192, 8192, "yuva444p10le", PRORES)


@pytest.mark.slow
def test_the_prores_limit_is_a_measured_fact(tmp_path):
    """prores_ks opens at 16384x8192 but fails on the first frame; 8192x8192 encodes (about 2 GB, some seconds)."""
    def encode(w, h):
        with av.open(str(tmp_path / "t.mov"), "w") as out:
            s = out.add_stream("prores_ks", rate=24)
            s.width, s.height, s.pix_fmt, s.options = w, h, "yuva444p10le", PRORES
            for p in s.encode(av.VideoFrame(w, h, "rgba")):
                out.mux(p)
            for p in s.encode():
                out.mux(p)

    assert MAX_ENCODE_PIXELS["prores_ks"] == 8192 * 8192
    encode(8192, 8192)
    with pytest.raises(av.error.FFmpegError):
        encode(16384, 8192)


def test_memory_budget_refusal_says_what_to_lower():
    need = frame_memory_bytes(16384, 8192, 8)
    assert need > 4 * 2**30
    with pytest.raises(ResourceError, match=r"processing\.read_ahead") as e:
        check_memory(16384, 8192, 8, max_memory_gb=4.0)
    assert "16384x8192" in str(e.value) and "\n" not in str(e.value)
    check_memory(6144, 3072, 8, max_memory_gb=40.0)  # the 6K case the product is for fits


def test_frames_between_the_overlapping_stages_count_against_the_budget():
    """processing.stage_queue holds decoded frames (segment -> finish) and RGBA outputs (finish -> encode)."""
    frame = 6144 * 3072 * 3
    more = frame_memory_bytes(6144, 3072, 8, stage_queue=6) - frame_memory_bytes(6144, 3072, 8, stage_queue=2)
    assert more == 4 * frame + 4 * (6144 * 3072 * 4)
    # a budget the reader's queue alone cannot free up names the stage queue
    with pytest.raises(ResourceError, match=r"lower processing\.stage_queue"):
        check_memory(6144, 3072, 1, max_memory_gb=1.0, stage_queue=8)
    check_memory(6144, 3072, 8, max_memory_gb=4.0, stage_queue=4)  # the default fits a modest budget
