"""What of the machine this process may use, read the same way by every layer (io's FFmpeg thread counts, the
device policy). It lives this low so the I/O layer can ask without reaching up into ``runtime``."""
from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count: containers and taskset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)
