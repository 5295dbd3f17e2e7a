"""Golden frames: a fixed DAVIS parkour SBS run must produce exactly these alpha planes.

Refactors must not change a single output byte. A change that is MEANT to change the matte (a new detector, a
better refiner) re-records the hashes on purpose and says so in its commit:
``VR180MATTE_REGOLD=1 .venv/bin/python -m pytest tests/pipeline/test_golden.py``.
"""
import hashlib
import json
import os
from pathlib import Path

import av

from synth import davis_sbs_clip
from vr180matte.pipeline import run

GOLDEN = Path(__file__).with_name("golden_parkour.json")
SETS = ["hardware.device=cpu", "processing.scale_factor=0.5", "processing.chunk_size=6", "processing.overlap_frames=2"]


def _alpha_hashes(path: Path) -> list[str]:
    with av.open(str(path)) as c:
        return [hashlib.sha256(f.to_ndarray(format="rgba")[..., 3].tobytes()).hexdigest()[:16]
                for f in c.decode(video=0)]


def test_parkour_alpha_frames_are_unchanged(tmp_path):
    clip = davis_sbs_clip(tmp_path / "parkour_sbs.mp4", "davis2016_parkour", count=12)
    result = run(clip, out_dir=tmp_path / "o", overrides=SETS, quiet=True)
    hashes = _alpha_hashes(result.outputs[0])
    assert len(hashes) == 12
    if os.environ.get("VR180MATTE_REGOLD"):
        GOLDEN.write_text(json.dumps({"settings": SETS, "alpha_sha256_16": hashes}, indent=1) + "\n")
    assert hashes == json.loads(GOLDEN.read_text())["alpha_sha256_16"]


def test_overlapped_stages_give_the_same_bytes_as_serial(tmp_path):
    """processing.memory_pipeline (decode | segment | finish | encode in threads) changes speed, never output."""
    clip = davis_sbs_clip(tmp_path / "p.mp4", "davis2016_parkour", count=6)
    sets = ["hardware.device=cpu", "processing.scale_factor=0.25", "processing.chunk_size=4",
            "processing.overlap_frames=1"]
    # the shortest queues between the threads (processing.stage_queue=1), so they block on each other most
    a = run(clip, out_dir=tmp_path / "a", overrides=sets + ["processing.memory_pipeline=true",
                                                             "processing.stage_queue=1"], quiet=True)
    b = run(clip, out_dir=tmp_path / "b", overrides=sets + ["processing.memory_pipeline=false"], quiet=True)
    assert _alpha_hashes(a.outputs[0]) == _alpha_hashes(b.outputs[0])
    conc = a.stats["concurrency"]
    assert conc["overlap"] and not b.stats["concurrency"]["overlap"]
    assert conc["busiest_stage"] is not None
    # each thread's own busy time, the decode thread included; the busiest of them bounds the wall
    assert set(conc["pipeline_busy_s"]) == {"decode", "segment", "finish", "encode"}
    assert conc["pipeline_busiest_s"] <= conc["wall_s"] * 1.01 and conc["pipeline_efficiency"] >= 0.99
    assert 0 < conc["core_utilization"] <= 1.05 and conc["cpu_s"] > 0


def test_parallel_eyes_batch_equals_eye_by_eye(tmp_path):
    """processing.parallel_eyes runs refine and temporal smoothing on both eyes as one batch: same alpha."""
    import numpy as np

    clip = davis_sbs_clip(tmp_path / "p.mp4", "davis2016_parkour", count=4)
    sets = ["hardware.device=cpu", "processing.scale_factor=0.25", "processing.chunk_size=0"]
    outs = []
    for flag in ("true", "false"):
        r = run(clip, out_dir=tmp_path / flag, overrides=sets + [f"processing.parallel_eyes={flag}"], quiet=True)
        with av.open(str(r.outputs[0])) as c:
            outs.append([f.to_ndarray(format="rgba")[..., 3].astype(np.int16) for f in c.decode(video=0)])
    assert len(outs[0]) == len(outs[1]) == 4
    for a, b in zip(*outs):
        assert np.abs(a - b).max() <= 1  # a batched convolution may round differently in the last bit
