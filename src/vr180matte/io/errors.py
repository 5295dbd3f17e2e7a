"""Error types of the video I/O layer, kept importable from here; they live in :mod:`vr180matte.errors`.

They are separate from the generic exceptions so the CLI can turn them into a one-line message and a documented
exit code without a traceback: every message says what is wrong and what the user can do about it.
"""
from __future__ import annotations

from ..errors import DiskFullError, InputError, OutputError, disk_full, is_disk_full

__all__ = ["InputError", "OutputError", "DiskFullError", "disk_full", "is_disk_full"]
