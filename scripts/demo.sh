#!/usr/bin/env bash
# Sets up .venv/ if needed, generates the demo VR180 clip, and mattes it with the embedded engine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/vr180matte sample sample/vr180_sample.mp4
exec .venv/bin/vr180matte run sample/vr180_sample.mp4 -o out/ --set hardware.device=cpu "$@"
