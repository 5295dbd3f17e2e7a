"""``vr180matte estimate`` on a real short clip: it runs, prints time and cost, and its time is close to a real run."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from synth import davis_sbs_clip

EXE = [sys.executable, "-m", "vr180matte.cli"]
SETS = ["hardware.device=cpu", "processing.scale_factor=0.25", "refine.method=bilinear",
        "detection.image_size=640"]


def _sets() -> list[str]:
    out = []
    for s in SETS:
        out += ["--set", s]
    return out


def test_measured_estimate_is_within_30_percent_of_a_real_run(tmp_path):
    clip = davis_sbs_clip(tmp_path / "p48.mp4", "davis2016_parkour", count=48)
    p = subprocess.run([*EXE, "estimate", clip, "--frames", "16", "--price", "1.5", "--json", *_sets()],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    est = json.loads(p.stdout)
    assert est["source"] == "measured" and est["probe"]["frames"] == 16
    assert est["frames"] == est["frames_processed"] == 48  # one chunk: no overlap processed twice
    assert abs(est["cost_usd"] - est["wall_s"] / 3600 * 1.5) < 1e-3
    assert 0 < est["cost_per_30s_clip_usd"]

    t0 = time.perf_counter()
    p = subprocess.run([*EXE, "run", clip, "-o", tmp_path / "out", "--quiet", *_sets()],
                       capture_output=True, text=True, timeout=600)
    real = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr
    print(f"estimated {est['wall_s']:.1f}s, real {real:.1f}s")
    assert abs(est["wall_s"] - real) <= 0.3 * real, (est["wall_s"], real)
    assert not list(tmp_path.glob("vr180matte-estimate-*")), "the probe leaves nothing behind"


def test_gpu_table_estimate_says_it_is_an_estimate_and_prints_time_and_cost(tmp_path):
    clip = davis_sbs_clip(tmp_path / "p4.mp4", "davis2016_parkour", count=4)
    p = subprocess.run([*EXE, "estimate", clip, "--gpu", "H100"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "estimated" in p.stdout and "wall time" in p.stdout and "$" in p.stdout, p.stdout
    p = subprocess.run([*EXE, "estimate", clip, "--gpu", "h100", "--price", "2", "--json"], capture_output=True,
                       text=True, timeout=120)
    est = json.loads(p.stdout)
    assert est["source"] == "estimated" and est["usd_per_hour"] == 2.0 and est["cost_usd"] > 0
    p = subprocess.run([*EXE, "estimate", clip, "--gpu", "tpu9"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "h100" in p.stderr, p.stderr
