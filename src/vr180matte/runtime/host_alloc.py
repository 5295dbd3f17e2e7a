"""Large host tensors on transparent huge pages (torch's ``THP_MEM_ALLOC_ENABLE``).

Why: at 6K the frame path allocates tens of full-resolution host tensors a frame (one eye's float alpha is 38 MB,
an RGBA frame 75 MB). glibc serves each from a fresh ``mmap`` and the kernel faults it in 4 KB at a time; on the
2-core VM that system time was ~15% of a run's CPU. With ``THP_MEM_ALLOC_ENABLE=1`` torch's CPU allocator advises
allocations of 2 MB or more ``MADV_HUGEPAGE``, so they fault in 2 MB at a time (the kernel's ``madvise`` THP mode,
the common default, honours exactly that): 30 allocations of 64 MB took 16 thousand page faults instead of 492
thousand here. Measured on a 12-frame 6K run, three runs each way: system time halved, wall time 11% less, peak
RSS unchanged (docs/benchmarks.md).

torch reads the variable at its first large allocation (tested), so the CLI sets it before any work; a value the user
set is kept (``THP_MEM_ALLOC_ENABLE=0`` turns it off). Where THP does not exist (not Linux) torch ignores it.
Child processes (chunk-parallel workers, a local Ray cluster) inherit it.
"""
from __future__ import annotations

import os

ENV = "THP_MEM_ALLOC_ENABLE"


def use_huge_pages() -> bool:
    """Ask torch for huge pages for large host tensors unless the user decided; whether it is on now."""
    os.environ.setdefault(ENV, "1")
    return os.environ[ENV] == "1"
