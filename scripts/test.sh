#!/usr/bin/env bash
# Sets up .venv/ if needed, then runs the test suite (slow benchmarks are excluded).
# Two pytest-xdist workers, a test file per worker at a time (--dist loadfile: a module's fixtures, e.g. the Ray
# cluster of tests/jobs/test_cluster.py, are built once): much of a test is waiting on FFmpeg, a child process or
# a single-threaded stage, so one test at a time leaves CI's 2 cores a third idle.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# OpenMP threads that finish a parallel region sleep at once instead of spinning (libgomp spins for a while by
# default): two workers' torch pools share 2 cores, and one's spinning took the other's time. The smoke file, the
# most subprocess-heavy, ran in 177 s instead of 207 s with it (docs/benchmarks.md). The product is unchanged:
# a run alone on the machine measured no clear difference either way.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
exec .venv/bin/python -m pytest -q -m "not slow" -n 2 --dist loadfile "$@"
