import pytest

from vr180matte.runtime.chunks import WorkDir, plan_chunks


@pytest.mark.parametrize("total,size,overlap", [(100, 30, 5), (90, 30, 0), (1000, 300, 60), (61, 20, 10)])
def test_every_frame_is_written_exactly_once(total, size, overlap):
    chunks = plan_chunks(total, size, overlap)
    written = [f for c in chunks for f in range(c.write_start, c.write_end)]
    assert written == list(range(total))
    for prev, nxt in zip(chunks, chunks[1:]):
        # the next chunk starts processing at the frame whose masks the previous one hands off
        assert prev.handoff_frame == (nxt.process_start if overlap else nxt.process_start - 1)
        assert nxt.process_start == prev.process_end - nxt.overlap_in


def test_single_chunk_and_blend_ramp():
    (only,) = plan_chunks(50, 0, 10)
    assert (only.process_start, only.write_end, only.process_end) == (0, 50, 50)
    assert only.handoff_frame is None
    c = plan_chunks(100, 30, 4)[1]
    w = [c.blend_weight(f) for f in range(c.process_start, c.process_start + 5)]
    assert w[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8]) and w[4] is None


def test_overlap_clamped_and_tiny_tail_folded():
    chunks = plan_chunks(100, 10, 50)
    assert all(c.overlap_in <= 5 for c in chunks)
    chunks = plan_chunks(102, 50, 5)  # a 2-frame tail is folded into the previous chunk
    assert len(chunks) == 2 and chunks[-1].write_end == 102


def test_workdir_resumes_only_with_same_input_and_config(tmp_path):
    chunks = plan_chunks(100, 30, 5)
    w = WorkDir(tmp_path, "clip")
    assert w.prepare("fp1", "cfg1", chunks) == 0
    w.mark_done(0, {"ok": 1})
    w.mark_done(1, {"ok": 1})
    w.partial(w.segment_path(2, ".mov")).write_bytes(b"half")
    assert WorkDir(tmp_path, "clip").prepare("fp1", "cfg1", chunks) == 2
    assert not list(w.root.glob("*.partial*")), "partial segments are discarded on resume"
    assert WorkDir(tmp_path, "clip").prepare("fp1", "cfg2", chunks) == 0
    assert not w.done_marker(0).exists()
