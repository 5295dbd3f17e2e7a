"""Large host tensors on huge pages (runtime/host_alloc.py): the CLI asks torch for them before any work, a
user's choice is kept, and torch really honours the request: allocating and filling large tensors takes a small
fraction of the page faults. Measured in fresh processes, because torch reads the variable once, at its first
large allocation."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vr180matte import cli
from vr180matte.runtime import host_alloc

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
PROBE = (
    "import resource, torch; from vr180matte.runtime.host_alloc import use_huge_pages; on = use_huge_pages(); "
    "r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt; "
    "[torch.ones(64 << 20, dtype=torch.uint8) for _ in range(8)]; "
    "print(on, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)"
)


def _probe(env_value: str | None) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if k != host_alloc.ENV}
    if env_value is not None:
        env[host_alloc.ENV] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120,
                         check=True).stdout.split()
    return out[0] == "True", int(out[1])


def _thp_mode() -> str | None:
    m = re.search(r"\[(\w+)\]", THP.read_text()) if THP.exists() else None
    return m.group(1) if m else None


@pytest.mark.skipif(_thp_mode() != "madvise", reason="the kernel gives huge pages only where advised (THP madvise)")
def test_large_tensors_fault_in_by_huge_pages_once_asked():
    on, faults_on = _probe(None)  # asked by default
    off, faults_off = _probe("0")  # the user's "no" is kept
    assert on and not off
    assert faults_off > 8 * (64 << 20) // 4096 // 2  # 4 KB pages: tens of thousands of faults for 512 MB
    assert faults_on * 4 < faults_off


def test_the_cli_asks_before_running_and_keeps_a_users_choice(tmp_path, monkeypatch):
    monkeypatch.delenv(host_alloc.ENV, raising=False)
    assert cli.main(["run", str(tmp_path / "nope.mp4"), "-o", str(tmp_path)]) == 2  # input not found
    assert os.environ[host_alloc.ENV] == "1"
    monkeypatch.setenv(host_alloc.ENV, "0")
    assert host_alloc.use_huge_pages() is False and os.environ[host_alloc.ENV] == "0"
