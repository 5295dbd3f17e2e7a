"""Every error vr180matte reports, with its exit code: the one table the CLI, the docs and the tests share.

Each class carries ``exit_code``; the CLI prints ``vr180matte: error: <first line of the message>`` and exits
with it, never with a traceback. Messages say what is wrong and what the user can do about it.

==== =========================================================================================================
code meaning
==== =========================================================================================================
0    success
2    bad input, config or command line (:class:`InputError`, :class:`ConfigError`, :class:`UsageError`)
3    engine or weights problem (:class:`EngineError`)
4    not enough memory / VRAM, or a size the codec cannot take (:class:`ResourceError`)
5    the written output does not verify (:class:`VerificationError`)
6    a batch finished but some of its videos failed (see ``batch.json``)
7    the output cannot be written: unwritable folder, disk full (:class:`OutputError`, :class:`DiskFullError`)
8    another run holds the output's work folder (:class:`LockedError`)
70   internal error (a bug): one line, ``-v`` shows the traceback
130  interrupted by Ctrl-C (SIGINT); finished chunks are kept, run again to resume
143  terminated by SIGTERM (:class:`Terminated`); finished chunks are kept, run again to resume
==== =========================================================================================================

Exit code 1 is never used, so a wrapper script can tell vr180matte's answers from a crash of the interpreter.
"""
from __future__ import annotations

import errno as _errno

EXIT_OK = 0
EXIT_INPUT = 2
EXIT_ENGINE = 3
EXIT_RESOURCE = 4
EXIT_VERIFY = 5
EXIT_BATCH = 6
EXIT_OUTPUT = 7
EXIT_LOCKED = 8
EXIT_INTERNAL = 70
EXIT_INTERRUPT = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM

#: code -> one-line meaning; README.md and docs/architecture.md print this table (a test keeps them in step).
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_INPUT: "bad input, config or command line",
    EXIT_ENGINE: "engine or weights problem",
    EXIT_RESOURCE: "not enough memory, or a frame size the codec cannot take",
    EXIT_VERIFY: "output verification failed",
    EXIT_BATCH: "some videos of a batch failed (see batch.json)",
    EXIT_OUTPUT: "output cannot be written (unwritable folder, disk full)",
    EXIT_LOCKED: "another run is using the same output (work folder locked)",
    EXIT_INTERNAL: "internal error (a bug; -v shows the traceback)",
    EXIT_INTERRUPT: "interrupted by Ctrl-C (run again to resume)",
    EXIT_TERMINATED: "terminated by SIGTERM (run again to resume)",
}


class Vr180MatteError(Exception):
    """Base of every error the user can act on; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_INTERNAL


class InputError(Vr180MatteError, ValueError):
    """The input cannot be used as given (missing, not a video, truncated, wrong layout); the user can fix it."""

    exit_code = EXIT_INPUT


class ConfigError(Vr180MatteError, ValueError):
    """A configuration problem the user can fix; the message says how."""

    exit_code = EXIT_INPUT


class UsageError(Vr180MatteError, ValueError):
    """A command-line problem (unknown subcommand argument, unknown model name)."""

    exit_code = EXIT_INPUT


class EngineError(Vr180MatteError, RuntimeError):
    """The engine cannot run: missing or corrupt weights, a model that fails to load, a download that fails."""

    exit_code = EXIT_ENGINE


class ResourceError(Vr180MatteError, RuntimeError):
    """Not enough memory/VRAM for the requested settings, or a size the codec cannot take; says what to lower."""

    exit_code = EXIT_RESOURCE


class VerificationError(Vr180MatteError, RuntimeError):
    """The written output does not match the input (frame count or duration)."""

    exit_code = EXIT_VERIFY


class OutputError(Vr180MatteError, OSError):
    """The output cannot be written (unwritable folder, muxing failure)."""

    exit_code = EXIT_OUTPUT


class DiskFullError(OutputError):
    """The disk filled up (ENOSPC); the message says where and how much space is needed."""

    exit_code = EXIT_OUTPUT


class HandoffError(Vr180MatteError, RuntimeError):
    """A chunk hand-off in the work folder cannot be read as plain data (damaged, or planted); delete the folder."""

    exit_code = EXIT_INPUT


class LockedError(Vr180MatteError, RuntimeError):
    """Another live run holds the work folder of this output; the message names it (pid, host)."""

    exit_code = EXIT_LOCKED


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so it unwinds exactly like Ctrl-C (finished chunks are kept).

    A ``KeyboardInterrupt`` subclass on purpose: every ``except KeyboardInterrupt`` that keeps work safe on
    Ctrl-C (batch bookkeeping, partial-file cleanup) does the same on SIGTERM, and ``except Exception`` does not
    swallow it.
    """

    exit_code = EXIT_TERMINATED


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is ENOSPC/EDQUOT: the disk or the user's quota is full."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, OSError) and exc.errno in (_errno.ENOSPC, _errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def disk_full(where, needed_bytes: int | None = None) -> DiskFullError:
    """A :class:`DiskFullError` for writing under ``where``, saying how much is free and (if known) needed."""
    import shutil
    from pathlib import Path

    folder = Path(where)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
        free_txt = f"{_fmt_bytes(free)} free"
    except OSError:
        free, free_txt = None, "free space unknown"
    need = ""
    if needed_bytes is not None:
        need = f", about {_fmt_bytes(needed_bytes)} needed"
        if free is not None and needed_bytes > free:
            need += f": free {_fmt_bytes(needed_bytes - free)} more"
    return DiskFullError(
        _errno.ENOSPC,
        f"disk full writing to {where} ({free_txt}{need}); free space or choose another output folder with -o, "
        "then run the same command again to resume",
    )


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for ``exc`` (internal error for anything not in the table)."""
    if isinstance(exc, Terminated):
        return EXIT_TERMINATED
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPT
    code = getattr(exc, "exit_code", None)
    if isinstance(exc, Vr180MatteError) and isinstance(code, int):
        return code
    if is_disk_full(exc):
        return EXIT_OUTPUT
    return EXIT_INTERNAL


def one_line(exc: BaseException | str) -> str:
    """First non-empty line of a message (what the CLI prints after ``vr180matte: error:``)."""
    text = str(exc).strip()
    if isinstance(exc, OSError) and not isinstance(exc, Vr180MatteError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    elif isinstance(exc, OSError) and exc.strerror and exc.args and len(exc.args) >= 2:
        text = str(exc.strerror).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[0].strip() if lines else type(exc).__name__


__all__ = [
    "EXIT_CODES", "EXIT_OK", "EXIT_INPUT", "EXIT_ENGINE", "EXIT_RESOURCE", "EXIT_VERIFY", "EXIT_BATCH",
    "EXIT_OUTPUT", "EXIT_LOCKED", "EXIT_INTERNAL", "EXIT_INTERRUPT", "EXIT_TERMINATED",
    "Vr180MatteError", "InputError", "ConfigError", "UsageError", "EngineError", "ResourceError",
    "VerificationError", "HandoffError", "OutputError", "DiskFullError", "LockedError", "Terminated",
    "is_disk_full", "disk_full", "exit_code_for", "one_line",
]
