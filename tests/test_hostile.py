"""Hostile-tester cases of issue 15, through the real CLI in real subprocesses on real files.

Each test is one misbehaviour that was found: it must now be refused with one line and a documented exit code,
or be handled correctly, and never report success for work not done.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from synth import gradient_sbs, tone, write_video

sys.path.insert(0, str(Path(__file__).parent / "io"))  # test_rotation helpers

EXE = [sys.executable, "-m", "vr180matte"]
FAST = ["--set", "matting.engine=passthrough", "--set", "hardware.device=cpu", "--quiet"]


def cli(*args, timeout=180, prefix=()):
    return subprocess.run([*prefix, *EXE, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def one_line_error(proc) -> str:
    lines = [l for l in proc.stderr.strip().splitlines() if l.startswith("vr180matte: error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Errno" not in lines[0], proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hostile")
    return write_video(d / "clip.mp4", lambda i: gradient_sbs(i, 256, 128), n=24, fps=24, audio=tone(1.0))


# ------------------------------------------------------------------ disk full


def _can_mount_private_tmpfs(tmp_path: Path) -> bool:
    if not shutil.which("unshare"):
        return False
    d = tmp_path / "probe-mnt"
    d.mkdir()
    p = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {d}"],
                       capture_output=True, timeout=30)
    return p.returncode == 0


def _in_small_disk(mount: Path, size_kb: int) -> list[str]:
    """Prefix that runs a command in a private mount namespace where ``mount`` is a ``size_kb`` tmpfs.

    The mount exists only inside that namespace and vanishes with the process: nothing on the machine changes.
    """
    mount.mkdir(exist_ok=True)
    return ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size={size_kb}k tmpfs "{mount}" && exec "$0" "$@"']


@pytest.mark.parametrize("where", ["encoding", "joining"])
def test_a_full_disk_is_its_own_error_and_says_how_much_space_is_needed(clip, tmp_path, where):
    if not _can_mount_private_tmpfs(tmp_path):
        pytest.skip("cannot mount a private tmpfs here (unshare -rm)")
    # how big is the finished output of this clip?
    ref = tmp_path / "ref"
    p = cli("run", clip, "-o", ref, *FAST)
    assert p.returncode == 0, p.stderr
    size_kb = (ref / "clip.alpha.mov").stat().st_size // 1024
    # encoding: not even the segment fits; joining: the segment fits, the joined copy next to it does not
    limit = 48 if where == "encoding" else int(size_kb * 1.5) + 64
    mount = tmp_path / "small"
    out = mount / "out"
    p = cli("run", clip, "-o", out, *FAST, prefix=_in_small_disk(mount, limit))
    assert p.returncode == 7, p.stderr
    line = one_line_error(p)
    assert "disk full" in line and "free" in line and "No space left" not in line
    if where == "joining":
        assert "needed" in line, line


# ------------------------------------------------------------------ one run per output


def test_a_second_run_into_the_same_output_is_refused_naming_the_first(tmp_path):
    import os
    import signal
    import socket
    import time

    src = write_video(tmp_path / "busy.mp4", lambda i: gradient_sbs(i, 256, 128), n=240)
    out = tmp_path / "out"
    slow = [*FAST, "--set", "processing.chunk_size=6", "--set", "processing.overlap_frames=0"]
    first = subprocess.Popen([*EXE, "run", str(src), "-o", str(out), *slow], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / ".vr180matte" / "busy" / "manifest.json").exists():  # written after the lock is taken
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.005)
        # A known state, not a race: the first run is stopped (SIGSTOP) while it holds the lock, and stays so for
        # the whole of the second run, however long that takes to start on a loaded machine.
        os.kill(first.pid, signal.SIGSTOP)
        _, status = os.waitpid(first.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), "the first run ended before it could be held (240 frames in milliseconds?)"
        try:
            second = cli("run", src, "-o", out, *slow)
        finally:
            os.kill(first.pid, signal.SIGCONT)
        assert second.returncode == 8, second.stderr
        line = one_line_error(second)
        assert f"pid {first.pid} on {socket.gethostname()}" in line and "busy" in line
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err  # the first run was not disturbed
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGKILL)
    stats = json.loads((out / "busy.stats.json").read_text())
    assert stats["frames_out"] == 240
    assert not (out / ".vr180matte").exists()  # lock and work folder gone after success


# ------------------------------------------------------------------ rejected runs leave nothing behind


def test_a_run_refused_after_planning_leaves_no_output_folder_or_manifest(clip, tmp_path):
    out = tmp_path / "never"
    models = tmp_path / "no-models"
    p = cli("run", clip, "-o", out, "--set", "matting.engine=det-sam2", "--set", f"models.dir={models}",
            "--set", "hardware.device=cpu", "--quiet")
    assert p.returncode == 3, p.stderr
    one_line_error(p)
    assert not out.exists(), sorted(str(x) for x in out.rglob("*"))


def test_a_refused_run_into_an_existing_folder_leaves_it_as_it_was(clip, tmp_path):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    p = cli("run", clip, "-o", out, "--set", "matting.engine=det-sam2", "--set", f"models.dir={tmp_path / 'none'}",
            "--set", "hardware.device=cpu", "--quiet")
    assert p.returncode == 3, p.stderr
    assert sorted(x.name for x in out.iterdir()) == ["mine.txt"]


# ------------------------------------------------------------------ sizes refused before decoding


def test_frames_too_big_for_the_memory_budget_are_refused_before_decoding(tmp_path):
    import time

    big = write_video(tmp_path / "big.mp4", lambda i: gradient_sbs(i, 4096, 2048), n=2)
    out = tmp_path / "out"
    t0 = time.monotonic()
    p = cli("run", big, "-o", out, *FAST, "--set", "processing.max_memory_gb=0.5")
    assert p.returncode == 4, p.stderr
    line = one_line_error(p)
    assert "4096x2048" in line and "read_ahead" in line
    assert not out.exists()
    assert time.monotonic() - t0 < 60


# ------------------------------------------------------------------ display-matrix rotation


def test_a_rotated_input_is_matted_upright_and_stats_say_so(tmp_path):
    import av
    import numpy as np

    from test_rotation import upright_sbs, write_rotated  # tests/io/test_rotation.py

    frames = [upright_sbs(i, 256, 128) for i in range(6)]
    src = write_rotated(tmp_path / "phone.mp4", frames, 90)
    out = tmp_path / "out"
    p = cli("run", src, "-o", out, *FAST, "--set", "output.format=greenscreen", "--set", "output.crf=0")
    assert p.returncode == 0, p.stderr
    stats = json.loads((out / "phone.stats.json").read_text())
    assert stats["rotation"]["input_deg"] == 90 and "upright" in stats["rotation"]["applied"]
    with av.open(str(out / stats["outputs"][0])) as c:
        frame = next(c.decode(video=0))
        assert frame.rotation == 0  # no display matrix: the pixels themselves are upright
        got = frame.to_ndarray(format="rgb24")
    assert got.shape == frames[0].shape  # 256x128 as displayed, not 128x256 as stored
    # passthrough alpha is 1 everywhere, so the greenscreen picture is the input as a player shows it
    assert np.abs(got.astype(int) - frames[0]).mean() < 6
    assert got[:12, :16, 0].mean() > 200 and got[-12:, -16:, 2].mean() > 200  # the corners are where they belong


# ------------------------------------------------------------------ subtitle and timecode tracks


def _with_extra_tracks(path: Path, timecode: str | None = None, subtitle: bool = False) -> Path:
    """An SBS clip with a start timecode (MOV: a tmcd track) and/or a subtitle track (MKV: SubRip)."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 256, 128, "yuv420p"
        if timecode:
            s.metadata["timecode"] = timecode
        sub = out.add_mux_stream("subrip") if subtitle else None
        for i in range(6):
            for p in s.encode(av.VideoFrame.from_ndarray(gradient_sbs(i, 256, 128), format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
        if sub is not None:
            pk = av.Packet(b"a line of dialogue")
            pk.stream, pk.pts, pk.dts, pk.duration, pk.time_base = sub, 0, 0, 200, Fraction(1, 1000)
            out.mux(pk)
    return path


def test_a_timecode_track_is_carried_to_the_output(tmp_path):
    import av

    src = _with_extra_tracks(tmp_path / "tc.mov", timecode="01:02:03:04")
    assert json.loads(cli("probe", src, "--json").stdout)["timecode"] == "01:02:03:04"
    out = tmp_path / "out"
    p = cli("run", src, "-o", out, *FAST)
    assert p.returncode == 0, p.stderr
    stats = json.loads((out / "tc.stats.json").read_text())
    assert stats["streams"]["timecode_carried"] and stats["streams"]["dropped"] == []
    with av.open(str(out / stats["outputs"][0])) as c:
        assert [s.metadata.get("timecode") for s in c.streams if s.type == "data"] == ["01:02:03:04"]


def test_a_subtitle_track_is_dropped_with_a_warning_and_said_in_stats(tmp_path):
    src = _with_extra_tracks(tmp_path / "subs.mkv", subtitle=True)
    out = tmp_path / "out"
    p = cli("run", src, "-o", out, *FAST)
    assert p.returncode == 0, p.stderr
    assert "subtitle (srt) not carried" in p.stderr
    stats = json.loads((out / "subs.stats.json").read_text())
    assert [s["type"] for s in stats["streams"]["dropped"]] == ["subtitle"]


# ------------------------------------------------------------------ CJK file names


def test_a_cjk_file_name_prints_no_font_warnings(clip, tmp_path):
    src = tmp_path / "雪山滑雪_스키.mp4"
    src.write_bytes(clip.read_bytes())
    out = tmp_path / "out"
    p = cli("run", src, "-o", out, *FAST, "--set", "performance.profile_enabled=true")
    assert p.returncode == 0, p.stderr
    assert (out / "雪山滑雪_스키.report.png").stat().st_size > 0
    assert "Glyph" not in p.stderr and "missing from" not in p.stderr and "font" not in p.stderr.lower(), p.stderr


# ------------------------------------------------------------------ SIGTERM to a single run


def test_sigterm_to_a_run_keeps_finished_chunks_and_exits_143_with_one_line(tmp_path):
    import signal
    import time

    src = write_video(tmp_path / "term.mp4", lambda i: gradient_sbs(i, 256, 128), n=360)
    out = tmp_path / "out"
    slow = [*FAST, "--set", "processing.chunk_size=6", "--set", "processing.overlap_frames=0"]
    proc = subprocess.Popen([*EXE, "run", str(src), "-o", str(out), *slow], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    work = out / ".vr180matte" / "term"
    deadline = time.monotonic() + 120
    while not (work / "chunk_00001.done.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    line = one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, "", err))
    assert "SIGTERM" in line and "run the same command again to resume" in line
    assert (work / "chunk_00001.done.json").exists() and not (out / "term.alpha.mov").exists()


# ------------------------------------------------------------------ truncated Matroska


def test_a_truncated_mkv_is_refused_not_half_processed(tmp_path):
    full = write_video(tmp_path / "full.mkv", lambda i: gradient_sbs(i, 256, 128), n=30, fps=24, codec="ffv1",
                       pix_fmt="yuv444p", audio=tone(1.25))
    data = full.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.55)])  # 30 frames declared (by duration), about 17 present
    out = tmp_path / "out"
    p = cli("run", cut, "-o", out, *FAST)
    assert p.returncode == 2, p.stderr
    assert "truncated or corrupt" in one_line_error(p)
    assert not out.exists()
    p = cli("run", full, "-o", out, *FAST)  # the intact file runs
    assert p.returncode == 0, p.stderr
