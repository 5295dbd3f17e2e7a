"""Parallel intra-only encoding: N contexts on consecutive frames give the packets (and files) one context gives."""
from __future__ import annotations

import hashlib
import threading
from fractions import Fraction

import av
import numpy as np
import pytest

from vr180matte.io.errors import OutputError
from vr180matte.io.parallel_encode import EncodePool, FilePool
from vr180matte.io.writer import SegmentWriter

TB = Fraction(1, 15360)
VFR_PTS = [507, 1019, 2043, 2555, 3579, 4091, 5115]  # 1/30 s and 2/30 s steps


def _frames(n: int, h: int = 64, w: int = 160, dtype=np.uint8) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    top = np.iinfo(dtype).max
    out = []
    for i in range(n):
        img = rng.integers(0, top + 1, (h, w, 4), dtype=dtype)
        img[: h // 2, :, 3] = (np.arange(w) * top // (w - 1)).astype(dtype)[None, :]  # an alpha ramp
        img[..., 0] = (img[..., 0] // (i + 1)).astype(dtype)  # each frame different
        out.append(img)
    return out


def _video_packets(path) -> list[tuple]:
    with av.open(str(path)) as c:
        return [(p.pts, p.dts, p.duration, hashlib.sha256(bytes(p)).hexdigest()) for p in c.demux(video=0) if p.size]


@pytest.mark.parametrize("dtype,bit_depth,threads", [(np.uint8, 8, 1), (np.uint16, 10, 1), (np.uint8, 8, 3)])
def test_parallel_prores_packets_equal_one_encoder(tmp_path, dtype, bit_depth, threads):
    """threads=3: the one context threads by frames (io/budget.py affords them at this size), each of the three
    parallel contexts by slices (their split over the contexts is the writer's): the same packets either way."""
    frames = _frames(len(VFR_PTS), dtype=dtype)
    paths, kinds = {}, {}
    for n in (1, 3):
        paths[n] = tmp_path / f"n{n}.mov"
        with SegmentWriter(paths[n], "prores4444", 160, 64, TB, Fraction(30), encoders=n, bit_depth=bit_depth,
                           threads=threads) as w:
            for i, (img, pts) in enumerate(zip(frames, VFR_PTS)):
                w.write(img, pts, i, duration=512)
        assert w.frames_written == len(frames)
        kinds[n] = w.thread_type
    assert kinds == {1: "frame", 3: "slice"}
    one, three = _video_packets(paths[1]), _video_packets(paths[3])
    assert len(one) == len(frames) and [p[0] for p in one] == VFR_PTS
    assert three == one
    assert paths[3].read_bytes() == paths[1].read_bytes()  # the muxer writes the same file, too
    assert "3 prores_ks contexts" in w.encoder_reason and w.busy_s > 0


def test_parallel_png_sequence_equals_serial(tmp_path):
    frames = _frames(5)
    for n in (1, 3):
        with SegmentWriter(tmp_path / f"n{n}", "png", 160, 64, TB, Fraction(30), encoders=n) as w:
            for i, img in enumerate(frames):
                w.write(img, i * 512, i)
    names = sorted(p.name for p in (tmp_path / "n1").iterdir())
    assert names == [f"{i:06d}.png" for i in range(5)]
    for name in names:
        assert (tmp_path / "n3" / name).read_bytes() == (tmp_path / "n1" / name).read_bytes()


def test_inter_codecs_ignore_encoders(tmp_path):
    """H.264 has inter frames: it is never split over contexts."""
    with SegmentWriter(tmp_path / "o.mp4", "h264", 64, 32, TB, Fraction(30), encoders=4, preset="ultrafast") as w:
        assert w.encoders == 1 and w.busy_s == 0.0
        w.write(np.zeros((32, 64, 3), np.uint8), 0, 0)


def test_pool_muxes_in_submission_order_when_later_items_finish_first():
    """Item 0 finishes only after item 1 has: the muxer still gets 0 first."""
    first_may_finish = threading.Event()
    muxed = []

    def job(ctx, item):
        if item == 0:
            assert first_may_finish.wait(5)
        if item == 1:
            first_may_finish.set()
        return [(ctx, item)]

    pool = EncodePool(["a", "b", "c"], job, muxed.append, key=lambda p: p[1])
    for i in range(7):
        pool.submit(i, i)
    pool.close()
    assert [m[1] for m in muxed] == list(range(7))
    assert [m[0] for m in muxed] == ["a", "b", "c", "a", "b", "c", "a"]  # consecutive frames, round robin


def test_packets_returned_late_are_muxed_in_frame_order():
    """A frame-threaded encoder returns frame i's packet from a later call or from the flush: still in order."""
    held = {"a": [], "b": []}
    muxed = []

    def job(ctx, item):  # context "a" hands back its packets one call late, "b" two calls late
        held[ctx].append(item)
        delay = 1 if ctx == "a" else 2
        return [held[ctx].pop(0)] if len(held[ctx]) > delay else []

    pool = EncodePool(["a", "b"], job, muxed.append, key=lambda p: p)
    for i in range(9):
        pool.submit(i, i)
    pool.close(flush=lambda ctx: [held[ctx].pop(0) for _ in list(held[ctx])])
    assert muxed == list(range(9))

    lost = EncodePool(["a"], lambda ctx, item: [] if item == 1 else [item], muxed.append, key=lambda p: p)
    with pytest.raises(RuntimeError, match="no packet for 2 frame"):
        for i in range(3):
            lost.submit(i, i)
        lost.close()


def test_a_failing_job_surfaces_in_the_caller():
    def job(ctx, item):
        if item == 2:
            raise av.error.ExternalError(22, "bad frame")
        return []

    pool = EncodePool([0, 1], job, lambda p: None)
    with pytest.raises(av.error.FFmpegError):
        for i in range(6):
            pool.submit(i, i)
        pool.close()
    pool.abort()

    files = FilePool(2, lambda item: 1 / 0 if item == 1 else None)
    with pytest.raises(ZeroDivisionError):
        for i in range(4):
            files.submit(i)
        files.close()


def test_writer_turns_a_worker_error_into_an_output_error(tmp_path, monkeypatch):
    w = SegmentWriter(tmp_path / "x.mov", "prores4444", 160, 64, TB, Fraction(30), encoders=2)

    def broken(ctx, item):
        raise av.error.ExternalError(22, "encoder refused the frame")

    monkeypatch.setattr(w._pool, "_job", broken)
    with pytest.raises(OutputError, match="encoding .* failed"):
        for i, img in enumerate(_frames(4)):
            w.write(img, i, i)
    w._pool.abort()
