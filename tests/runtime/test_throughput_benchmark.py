"""benchmarks/throughput_6k.py in its smoke mode: the script runs end to end and its last line has the issue's keys."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_throughput_benchmark_smoke(tmp_path):
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "throughput_6k.py"), "--frames", "4", "--small",
         "--scales", "0.25", "--keep", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    last = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(last) == {"fps_025", "fps_05", "ffmpeg_fps", "ratio_025", "busiest_stage_s", "wall_s", "efficiency",
                         "pipeline_efficiency", "core_utilization", "passthrough_fps", "fps_025_processing",
                         "ratio_025_processing", "command_s"}
    # like for like: our whole command is slower than its processing part alone, and the ratio uses the former
    assert last["fps_025"] < last["fps_025_processing"] and last["ratio_025"] < last["ratio_025_processing"]
    assert 0.99 <= last["pipeline_efficiency"] <= last["efficiency"] and 0 < last["core_utilization"] <= 1.05
    assert last["passthrough_fps"] > last["fps_025"]  # matting costs time: the I/O-only run is faster
    assert last["fps_025"] > 0 and last["ffmpeg_fps"] > 0 and last["fps_05"] is None
    assert last["ratio_025"] == pytest.approx(last["fps_025"] / last["ffmpeg_fps"], rel=1e-2)
    # the busiest stage can never take longer than the run it is part of (busy time is measured inside the wall)
    assert 0 < last["busiest_stage_s"] <= last["wall_s"] * 1.01 and last["efficiency"] >= 0.99
    stats = json.loads((tmp_path / "out_0.25" / "davis_sbs_6k.stats.json").read_text())
    assert stats["frames_out"] == 4
