"""Golden frames: a fixed DAVIS parkour SBS run must produce exactly these decoded planes.

Every plane of every decoded output frame is hashed as the decoder gives it (ProRes 4444, tagged ``ap4h``, decodes
as ``yuva444p12le``: Y, U, V and alpha, 16-bit little-endian samples, no conversion to 8-bit RGB; until the join kept
the tag the file said ProRes HQ and decoded as ``yuva444p10le``), on a stereo clip whose right
eye is the left shifted by a known disparity, with the engine named (``embedded``: never ``auto``, whose choice
depends on the weights a machine holds). The versions of PyAV, FFmpeg, torch and numpy that produced the hashes
are stored beside them: when they differ from the running ones the test fails saying so, since a library upgrade
can change bytes without any change of ours.

Refactors must not change a single output byte. A change that is MEANT to change the output (a new detector, a
better refiner, another pixel conversion in the writer) or a library upgrade re-records the hashes on purpose and
says so in its commit: ``VR180MATTE_REGOLD=1 .venv/bin/python -m pytest tests/pipeline/test_golden.py``.
"""
import hashlib
import json
import os
from pathlib import Path

import av
import numpy as np
import torch

from synth import davis_frames, davis_sbs_clip, write_video
from vr180matte.pipeline import run

GOLDEN = Path(__file__).with_name("golden_parkour.json")
SETS = ["hardware.device=cpu", "matting.engine=embedded", "processing.scale_factor=0.5", "processing.chunk_size=6",
        "processing.overlap_frames=2"]
DISPARITY = 6  # px: the right eye is the left shifted left by this much (a subject in front of infinity)


def library_versions() -> dict[str, str]:
    return {"pyav": av.__version__, "ffmpeg": str(getattr(av, "ffmpeg_version_info", "")),
            "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "torch": torch.__version__, "numpy": np.__version__}


def plane_hashes(path: Path) -> tuple[str, list[list[str]]]:
    """(pix_fmt, per frame the sha256 (16 hex) of each plane's samples, row padding cut off)."""
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            fmt = f.format
            hashes = []
            for plane in f.planes:
                depth = max(comp.bits for comp in fmt.components)
                row = plane.width * (2 if depth > 8 else 1)
                rows = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)[:, :row]
                hashes.append(hashlib.sha256(rows.tobytes()).hexdigest()[:16])
            out.append(hashes)
    return fmt.name, out


def _alpha_hashes(path: Path) -> list[str]:
    with av.open(str(path)) as c:
        return [hashlib.sha256(f.to_ndarray(format="rgba")[..., 3].tobytes()).hexdigest()[:16]
                for f in c.decode(video=0)]


def stereo_parkour_clip(path: Path, count: int) -> Path:
    import cv2

    frames, _ = davis_frames("davis2016_parkour", count)

    def sbs(i: int) -> np.ndarray:
        left = cv2.cvtColor(cv2.imread(str(frames[i])), cv2.COLOR_BGR2RGB)
        return np.concatenate([left, np.roll(left, -DISPARITY, axis=1)], axis=1)

    return write_video(path, sbs, n=len(frames), fps=24, options={"crf": "12"})


def test_parkour_output_planes_are_unchanged(tmp_path):
    clip = stereo_parkour_clip(tmp_path / "parkour_sbs.mp4", count=12)
    result = run(clip, out_dir=tmp_path / "o", overrides=SETS, quiet=True)
    assert result.stats["engine"] == "embedded"
    pix_fmt, hashes = plane_hashes(result.outputs[0])
    assert len(hashes) == 12 and pix_fmt == "yuva444p12le" and all(len(h) == 4 for h in hashes)
    now = {"settings": SETS, "disparity_px": DISPARITY, "versions": library_versions(), "pix_fmt": pix_fmt,
           "planes": ["Y", "U", "V", "A"], "sha256_16": hashes}
    if os.environ.get("VR180MATTE_REGOLD"):
        GOLDEN.write_text(json.dumps(now, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    if golden.get("versions") != now["versions"]:
        raise AssertionError(
            f"library versions changed since the golden hashes were recorded: {golden.get('versions')} -> "
            f"{now['versions']}. Bytes may differ for that reason alone; check the output, then re-record with "
            "VR180MATTE_REGOLD=1 and say so in the commit")
    assert golden["settings"] == SETS and golden["pix_fmt"] == pix_fmt
    diff = [(i, p) for i, (a, b) in enumerate(zip(hashes, golden["sha256_16"])) for p, x, y in zip("YUVA", a, b)
            if x != y]
    assert not diff, f"output bytes changed (frame, plane): {diff[:12]}{' ...' if len(diff) > 12 else ''}"


def test_overlapped_stages_give_the_same_bytes_as_serial(tmp_path):
    """processing.memory_pipeline (decode | segment | finish | encode in threads) changes speed, never output."""
    clip = davis_sbs_clip(tmp_path / "p.mp4", "davis2016_parkour", count=6)
    sets = ["hardware.device=cpu", "processing.scale_factor=0.25", "processing.chunk_size=4",
            "processing.overlap_frames=1", "detection.image_size=640"]  # small detector input: not what is checked
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
    sets = ["hardware.device=cpu", "processing.scale_factor=0.25", "processing.chunk_size=0",
            "detection.image_size=640"]  # a small detector input: detection is not what this checks
    outs = []
    for flag in ("true", "false"):
        r = run(clip, out_dir=tmp_path / flag, overrides=sets + [f"processing.parallel_eyes={flag}"], quiet=True)
        with av.open(str(r.outputs[0])) as c:
            outs.append([f.to_ndarray(format="rgba")[..., 3].astype(np.int16) for f in c.decode(video=0)])
    assert len(outs[0]) == len(outs[1]) == 4
    for a, b in zip(*outs):
        assert np.abs(a - b).max() <= 1  # a batched convolution may round differently in the last bit
