#!/bin/bash
# The prepared device run of issue 19: every GPU figure the issue asks for, in one call of the device tool.
#
#   device:  carry [".gpu_kit"], command "bash benchmarks/gpu_check.sh", timeout_s 600   (results under $OUT)
#   here:    bash benchmarks/gpu_check.sh --cpu-dry-run      (the same steps, tiny, on the CPU: checks the wiring)
#
# Build .gpu_kit first with ../shared/tools/gpu_kit.sh (what the GPU machine lacks: PyAV, sam2, ultralytics, the
# bundled detector; see ../shared/DESIGN.md "The lent GPU machine"); this script sources its install.sh itself.
# Steps, in order of importance (each under its own time limit, so one slow or failing step cannot eat the
# others' time; a missing benchmark is recorded as missing):
#   e2e_prores      det-sam2 hiera-tiny, scale 0.5, 6K, ProRes 4444: fps, engine fps, stage split, GPU busy %,
#                   peak VRAM, host RSS (benchmarks/gpu_e2e.py)
#   e2e_greenscreen the same with greenscreen H.264
#   host_reads      host reads / ops per frame of the GPU path (benchmarks/host_reads.py)
#   mobilesam       MobileSAM resident vs legacy predict (benchmarks/mobilesam_resident.py)
#   encode_parallel ProRes encoder contexts (benchmarks/encode_parallel.py)
#   memory_6k       host memory of the I/O path at 6K (benchmarks/memory_6k.py)
#   e2e_h100        configs/h100.yaml (large SAM2, scale 1.0), 24 frames
#   throughput_6k   the CPU-era throughput benchmark (embedded engine: needs mediapipe, absent on the H200)
# Each step writes $OUT/<step>.log and, when its last line is JSON, $OUT/<step>.json; $OUT/gpu_check.json (also
# the last line printed) holds every step's status, seconds and figures.
set -uo pipefail
DRY=0
[ "${1:-}" = "--cpu-dry-run" ] && DRY=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if [ "$DRY" = 0 ] && [ -f .gpu_kit/install.sh ]; then
  # shellcheck disable=SC1091
  source .gpu_kit/install.sh || exit 9
fi
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
OUT=${OUT:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$OUT"
SUMMARY="$OUT/steps.jsonl"
: > "$SUMMARY"

# A dry run keeps within DRY_BUDGET_S seconds in all (default 220: the CI smoke test allows 240); steps that no
# longer fit are recorded as skipped. A full dry run of every step takes about 8 minutes on the 2-core VM.
BUDGET=${DRY_BUDGET_S:-220}
START=$(date +%s)

step() {  # step NAME LIMIT_S SCRIPT ARGS... : run one benchmark under a time limit, record how it went
  local name=$1 limit=$2 script=$3
  shift 3
  if [ "$DRY" = 1 ]; then
    local left=$(( BUDGET - ($(date +%s) - START) ))
    if [ "$left" -lt 20 ]; then
      echo "{\"step\": \"$name\", \"status\": \"skipped\", \"why\": \"dry-run budget\"}" >> "$SUMMARY"
      echo "[$name] skipped: dry-run budget spent"
      return
    fi
    [ "$left" -lt "$limit" ] && limit=$left
  fi
  if [ ! -f "benchmarks/$script" ]; then
    echo "{\"step\": \"$name\", \"status\": \"missing\", \"script\": \"$script\"}" >> "$SUMMARY"
    echo "[$name] missing: benchmarks/$script"
    return
  fi
  echo "[$name] $script $* (limit ${limit}s)"
  local t0 rc
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$PY" "benchmarks/$script" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  local secs
  secs=$(echo "$(date +%s.%N) - $t0" | bc 2>/dev/null || echo 0)
  tail -n 1 "$OUT/$name.log" | "$PY" -c 'import json,sys; json.loads(sys.stdin.read())' 2>/dev/null \
    && tail -n 1 "$OUT/$name.log" > "$OUT/$name.json"
  "$PY" - "$name" "$rc" "$secs" "$OUT/$name.json" >> "$SUMMARY" <<'PY'
import json, pathlib, sys
name, rc, secs, path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3] or 0), pathlib.Path(sys.argv[4])
status = "ok" if rc == 0 else ("timeout" if rc in (124, 137) else "failed")
print(json.dumps({"step": name, "status": status, "rc": rc, "seconds": round(secs, 1),
                  "result": json.loads(path.read_text()) if path.exists() else None}))
PY
  echo "[$name] rc=$rc"
}

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
             torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
  nproc
} > "$OUT/machine.txt" 2>&1

if [ "$DRY" = 1 ]; then
  # The same steps, tiny, on the CPU (each benchmark's --smoke mode); the cheap ones first, so that a short
  # budget still checks most scripts.
  step encode_parallel 200 encode_parallel.py --smoke
  step e2e_prores 200 gpu_e2e.py --smoke
  step memory_6k 200 memory_6k.py --smoke
  step e2e_greenscreen 200 gpu_e2e.py --smoke --set output.format=greenscreen
  step e2e_h100 200 gpu_e2e.py --smoke --config configs/h100.yaml --set matting.sam2_model=sam2.1_hiera_tiny \
    --set processing.scale_factor=0.5 --set detection.image_size=256
  step throughput_6k 200 throughput_6k.py --smoke
  step mobilesam 200 mobilesam_resident.py --smoke
  step host_reads 200 host_reads.py --smoke
else
  step e2e_prores 140 gpu_e2e.py --frames 60
  step e2e_greenscreen 80 gpu_e2e.py --frames 40 --set output.format=greenscreen
  step host_reads 60 host_reads.py
  step mobilesam 40 mobilesam_resident.py --device cuda
  step encode_parallel 50 encode_parallel.py --frames 24
  step memory_6k 50 memory_6k.py
  step e2e_h100 100 gpu_e2e.py --frames 24 --config configs/h100.yaml
  step throughput_6k 40 throughput_6k.py --frames 10 --scales 0.5
fi

"$PY" - "$SUMMARY" "$OUT/machine.txt" "$DRY" > "$OUT/gpu_check.json" <<'PY'
import json, pathlib, sys
steps = [json.loads(l) for l in pathlib.Path(sys.argv[1]).read_text().splitlines() if l.strip()]
print(json.dumps({"dry_run": sys.argv[3] == "1", "machine": pathlib.Path(sys.argv[2]).read_text().splitlines(),
                  "steps": {s["step"]: s for s in steps}}))
PY
cat "$OUT/gpu_check.json"
# A device run always exits 0 (what it measured comes back under $OUT); a dry run fails when a step failed (its
# wiring is broken), not when it ran out of time.
if [ "$DRY" = 1 ] && grep -q '"status": "failed"' "$SUMMARY"; then exit 1; fi
exit 0
