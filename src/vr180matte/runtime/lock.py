"""One run per output: an exclusive lock on a job's work folder.

Two runs writing the same output (same folder, same input name) would delete each other's segments and
hand-offs. The lock is an ``fcntl.flock`` on ``OUT/.vr180matte/<stem>.lock``: the kernel drops it when its
process ends in any way (kill -9, crash, power loss of a local disk), so a lock left by a dead run never blocks
anything; the next run takes it over and says so. The file holds the owner's pid, host and start time, so the
refusal names the other run. The lock file sits beside the work folder, not in it, because a run that finds a
changed input or config deletes and recreates the work folder while holding the lock.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from ..errors import LockedError

log = logging.getLogger(__name__)


def _owner_text(info: dict) -> str:
    pid, host = info.get("pid", "?"), info.get("host", "?")
    since = info.get("started")
    when = f", started {since}" if since else ""
    return f"pid {pid} on {host}{when}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkLock:
    """Exclusive, non-blocking lock of ``path``; a context manager. Raises :class:`LockedError` when held."""

    def __init__(self, path: Path, what: str):
        self.path = Path(path)
        self.what = what  # what is being protected, for the message ("output folder out/ for clip.mp4")
        self._fd: int | None = None

    def acquire(self) -> "WorkLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):  # retries only when another process unlinked the file between our open and lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise LockedError(
                    f"{self.what} is in use by another vr180matte run ({_owner_text(self._read())}); wait for it to "
                    f"finish or stop it, or write to another folder with -o (lock: {self.path})"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file after we opened it: lock the new one
                os.close(fd)
                continue
            self._fd = fd
            previous = self._read()
            if previous.get("pid") and not (previous.get("host") == socket.gethostname() and
                                             previous.get("pid") == os.getpid()):
                alive = previous.get("host") == socket.gethostname() and _pid_alive(int(previous["pid"]))
                log.warning("taking over the lock of %s left by a run that %s (%s)", self.what,
                            "no longer holds it" if alive else "ended without releasing it", _owner_text(previous))
            self._write({"pid": os.getpid(), "host": socket.gethostname(),
                         "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            return self
        raise LockedError(f"{self.what}: cannot take the lock {self.path} (it keeps being replaced)")

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text() or "{}")
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError, UnicodeDecodeError):
            return {}

    def _write(self, info: dict) -> None:
        assert self._fd is not None
        data = json.dumps(info).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            # unlink while still holding the lock (a waiter re-checks the inode), then drop it
            self.path.unlink(missing_ok=True)
            parent = self.path.parent
            if parent.exists() and not any(parent.iterdir()):
                parent.rmdir()
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "WorkLock":
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()
