"""Batch runs through the real CLI: many videos, a bad one in the middle, a re-run that skips finished work."""
import json
import subprocess
import sys

from synth import gradient_sbs, tone, write_video

EXE = [sys.executable, "-m", "vr180matte.cli", "batch"]
FAST = ["--set", "matting.engine=passthrough", "--set", "hardware.device=cpu", "--quiet"]


def test_batch_goes_on_past_a_bad_video_and_a_rerun_skips_finished_ones(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "b"):
        write_video(src / f"{name}.mp4", lambda i: gradient_sbs(i, 128, 64), n=4, audio=tone(0.2))
    (src / "broken.mp4").write_text("not a video\n" * 20)
    (src / "notes.txt").write_text("ignored: not a video suffix")
    out = tmp_path / "out"

    p = subprocess.run([*EXE, src, "-o", out, *FAST], capture_output=True, text=True, timeout=300)
    assert p.returncode == 6, p.stderr
    assert p.stderr.count("vr180matte: error:") == 1 and "broken.mp4" in p.stderr
    items = {i["input"].split("/")[-1]: i for i in json.loads((out / "batch.json").read_text())["items"]}
    assert sorted(items) == ["a.mp4", "b.mp4", "broken.mp4"]
    assert items["a.mp4"]["status"] == items["b.mp4"]["status"] == "done"
    assert items["broken.mp4"]["status"] == "failed" and "\n" not in items["broken.mp4"]["error"]
    assert (out / "a.alpha.mov").exists() and (out / "b.alpha.mov").exists()

    mtime = (out / "a.alpha.mov").stat().st_mtime_ns
    p = subprocess.run([*EXE, src / "a.mp4", src / "b.mp4", "-o", out, *FAST], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    items = json.loads((out / "batch.json").read_text())["items"]
    assert [i["status"] for i in items] == ["skipped", "skipped"]
    assert (out / "a.alpha.mov").stat().st_mtime_ns == mtime, "finished output left untouched"
