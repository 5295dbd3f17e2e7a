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


def _items(out):
    return json.loads((out / "batch.json").read_text())["items"]


def test_same_name_inputs_get_distinct_outputs_and_a_rerun_skips_each_for_its_own_reason(tmp_path):
    for folder, shift in (("a", 0), ("b", 40)):
        (tmp_path / folder).mkdir()
        write_video(tmp_path / folder / "clip.mp4", lambda i, s=shift: gradient_sbs(i + s, 128, 64), n=3)
    out = tmp_path / "out"
    a, b = tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4"
    p = subprocess.run([*EXE, a, b, "-o", out, *FAST], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    items = _items(out)
    assert [i["status"] for i in items] == ["done", "done"]
    first, second = (out / items[0]["outputs"][0]), (out / items[1]["outputs"][0])
    assert first != second and first.exists() and second.exists()
    assert first == out / "clip.alpha.mov" and second.parent == out / "b"
    assert json.loads((out / items[1]["stats"]).read_text())["input"].endswith("b/clip.mp4")

    p = subprocess.run([*EXE, a, b, "-o", out, *FAST], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    items = _items(out)
    assert [i["status"] for i in items] == ["skipped", "skipped"]
    assert all("same input and config" in i["reason"] for i in items)
    # b alone, in a later batch: still its own output, never a's
    p = subprocess.run([*EXE, b, "-o", out, *FAST], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    (only,) = _items(out)
    assert only["status"] == "skipped" and only["outputs"][0].startswith("b/")


def test_a_changed_output_setting_reruns_a_finished_video(tmp_path):
    src = write_video(tmp_path / "v.mp4", lambda i: gradient_sbs(i, 128, 64), n=3)
    out = tmp_path / "out"
    p = subprocess.run([*EXE, src, "-o", out, *FAST], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([*EXE, src, "-o", out, *FAST, "--set", "output.format=greenscreen"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    (item,) = _items(out)
    assert item["status"] == "done" and "config changed" in item["reason"], item
    assert (out / "v.greenscreen.mp4").exists()
    # an edit of the input file re-runs too
    write_video(src, lambda i: gradient_sbs(i + 7, 128, 64), n=3)
    p = subprocess.run([*EXE, src, "-o", out, *FAST, "--set", "output.format=greenscreen"],
                       capture_output=True, text=True, timeout=300)
    (item,) = _items(out)
    assert item["status"] == "done" and "input file changed" in item["reason"], item


def test_an_empty_folder_is_refused_and_nothing_is_written(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no videos here")
    out = tmp_path / "out"
    p = subprocess.run([*EXE, tmp_path / "empty", "-o", out, *FAST], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    lines = [l for l in p.stderr.splitlines() if l.startswith("vr180matte: error:")]
    assert len(lines) == 1 and "no videos" in lines[0] and "Traceback" not in p.stderr
    assert not out.exists()


def test_sigterm_keeps_finished_chunks_records_interrupted_and_exits_143(tmp_path):
    import os
    import signal
    import time

    src = write_video(tmp_path / "long.mp4", lambda i: gradient_sbs(i, 256, 128), n=360)
    out = tmp_path / "out"
    slow = [*FAST, "--set", "processing.chunk_size=6", "--set", "processing.overlap_frames=0",
            "--set", "refine.method=guided"]
    proc = subprocess.Popen([*EXE, src, "-o", out, *slow], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    work = out / ".vr180matte" / "long"
    deadline = time.monotonic() + 120
    while not (work / "chunk_00000.done.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    lines = [l for l in err.splitlines() if l.startswith("vr180matte: error:")]
    assert len(lines) == 1 and "SIGTERM" in lines[0] and "resume" in lines[0] and "Traceback" not in err
    (item,) = _items(out)
    assert item["status"] == "interrupted" and "SIGTERM" in item["error"]
    assert (work / "chunk_00000.done.json").exists(), "finished chunks are kept"
    assert not (out / "long.alpha.mov").exists()
    p = subprocess.run([*EXE, src, "-o", out, *slow], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    stats = json.loads((out / "long.stats.json").read_text())
    assert stats["resumed_chunks"] >= 1 and stats["frames_out"] == 360
    assert os.path.exists(out / "long.alpha.mov")
