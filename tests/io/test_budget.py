"""Host-memory budgets of the I/O path (io/budget.py): the counts a frame size affords, and that the reader and
the writer apply them."""
from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np

from synth import gradient_sbs, write_video
from vr180matte.io import budget
from vr180matte.io.probe import probe
from vr180matte.io.reader import FrameReader
from vr180matte.io.writer import SegmentWriter

W6K, H6K = 6144, 3072


def test_6k_counts_are_capped_and_their_parts_fit_their_budgets():
    threads = budget.decoder_threads(16, W6K, H6K, 8)
    assert 2 <= threads < 16
    assert threads * budget.DECODER_FRAMES_PER_THREAD * W6K * H6K * 1.5 <= budget.DECODER_BUDGET
    assert budget.decoder_threads(16, W6K, H6K, 10) < threads  # 10-bit frames are twice the bytes
    contexts = budget.encoder_contexts(8, W6K, H6K)
    assert 1 <= contexts < 8
    assert contexts * budget.ENCODER_FRAMES_PER_CONTEXT * W6K * H6K * 8 <= budget.ENCODER_BUDGET
    ahead = budget.read_ahead(8, W6K, H6K)
    assert 2 <= ahead < 8 and ahead * W6K * H6K * 3 <= budget.READ_AHEAD_BUDGET
    assert budget.read_ahead(8, W6K, H6K, 2) <= ahead


def test_small_frames_keep_what_was_asked_and_floors_hold():
    assert budget.decoder_threads(16, 1920, 960) == 16
    assert budget.encoder_contexts(8, 1920, 960) == 8
    assert budget.read_ahead(8, 1920, 960) == 8
    assert budget.decoder_threads(1, W6K, H6K) == 1 and budget.read_ahead(1, W6K, H6K) == 1
    assert budget.decoder_threads(16, 16384, 8192, 12) == 2  # never below what keeps decoding parallel
    assert budget.encoder_contexts(8, 16384, 8192) == 1
    assert budget.read_ahead(8, 16384, 8192, 2) == 2


def test_one_context_threads_by_frames_while_their_frames_fit_the_encoder_budget():
    frame = W6K * H6K * 8  # a yuva444p10le frame
    assert budget.encoder_frame_threads(1, 2, W6K, H6K)  # 2 cores: 2 more frames fit next to the context's
    assert (budget.ENCODER_FRAMES_PER_CONTEXT + 2) * frame <= budget.ENCODER_BUDGET
    assert not budget.encoder_frame_threads(1, 16, W6K, H6K)  # 16 frames of 151 MB would not
    assert not budget.encoder_frame_threads(2, 2, W6K, H6K)  # parallel contexts give the frame parallelism
    assert budget.encoder_frame_threads(1, 16, 1920, 960)  # small frames afford one per thread


def test_reader_and_writer_apply_the_budget(tmp_path):
    path = write_video(tmp_path / "c.mp4", lambda i: gradient_sbs(i, 128, 64), n=3, codec="libx264")
    info = probe(path)
    small = FrameReader(path, info, read_ahead=8, threads=16)
    assert (small.read_ahead, small.threads) == (8, 16)
    big = FrameReader(path, dataclasses.replace(info, width=W6K, height=H6K), read_ahead=8, threads=16)
    assert big.read_ahead == budget.read_ahead(8, W6K, H6K) < 8
    assert big.threads == budget.decoder_threads(16, W6K, H6K) < 16 and big.threads_asked == 16
    w = SegmentWriter(tmp_path / "x.mov", "prores4444", W6K, H6K, Fraction(1, 30), Fraction(30), encoders=8,
                      threads=16)
    try:
        assert w.encoders == budget.encoder_contexts(8, W6K, H6K) < 8
        assert "8 asked; host-memory budget" in w.encoder_reason
        assert w.thread_type == "slice"  # parallel contexts
    finally:
        w._pool.abort() if w._pool is not None else None
        w._container.close()
    frames = [f.rgb for f in small]  # the small reader still reads every frame
    assert len(frames) == 3 and frames[0].dtype == np.uint8
