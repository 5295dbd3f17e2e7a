"""Error types of the video I/O layer.

They are separate from the generic exceptions so the CLI can turn them into a one-line message and a non-zero exit
without a traceback: every message says what is wrong and what the user can do about it.
"""
from __future__ import annotations


class InputError(ValueError):
    """The input cannot be used as given (missing, not a video, truncated, wrong layout); the user can fix it."""


class OutputError(OSError):
    """The output cannot be written or does not verify (unwritable folder, muxing failure, frame-count mismatch)."""
