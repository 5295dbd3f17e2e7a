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
