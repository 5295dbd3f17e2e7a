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


# ------------------------------------------------------------------ one run per output (issue 15)

HOLDER = """
import sys, time
from pathlib import Path
from vr180matte.runtime.chunks import WorkDir
with WorkDir(Path(sys.argv[1]), "clip").lock():
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_live_lock_is_refused_naming_the_other_run_and_a_dead_ones_is_taken_over(tmp_path, caplog):
    import json
    import os
    import socket
    import subprocess
    import sys

    from vr180matte.errors import LockedError

    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError) as exc:
            WorkDir(tmp_path, "clip").lock().acquire()
        line = str(exc.value)
        assert "\n" not in line and f"pid {holder.pid} on {socket.gethostname()}" in line and "clip" in line
        assert WorkDir(tmp_path, "other").lock().acquire().held  # another output is independent
    finally:
        holder.kill()  # like kill -9: no clean-up runs, the lock file stays behind
        holder.wait()
    lock_file = tmp_path / ".vr180matte" / "clip.lock"
    assert json.loads(lock_file.read_text())["pid"] == holder.pid
    with WorkDir(tmp_path, "clip").lock() as lock:
        assert lock.held
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    assert "taking over the lock" in caplog.text and str(holder.pid) in caplog.text
    assert not lock_file.exists()


def test_the_lock_is_exclusive_within_one_process_too_and_leaves_nothing_behind(tmp_path):
    from vr180matte.errors import LockedError

    work = WorkDir(tmp_path, "clip")
    with work.lock():
        with pytest.raises(LockedError):
            WorkDir(tmp_path, "clip").lock().acquire()
    assert not (tmp_path / ".vr180matte").exists()
