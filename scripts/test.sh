#!/usr/bin/env bash
# Sets up .venv/ if needed, then runs the test suite (slow benchmarks are excluded).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -m "not slow" "$@"
