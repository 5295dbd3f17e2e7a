"""ProcessingReport writes a JSON and a PNG; sample memory is capped."""
import json

from vr180matte.quality import report as R


def test_report_json_and_png(out_dir):
    rep = R.ProcessingReport()
    for i in range(50):
        rep.sample(i * 0.5, 500 + i, None if i < 10 else 100 + i, i * 2)
    rep.add_chunk({"start": 0, "end": 50, "seconds": 12.0, "t0": 0.0, "t1": 12.0})
    rep.add_chunk({"start": 50, "end": 100, "seconds": 12.5, "t0": 12.0, "t1": 24.5})
    paths = rep.write(out_dir, "clip", {"decode": 2.0, "segment": 20.0, "refine": 4.0, "encode": 0.0}, 100)
    assert [p.name for p in paths] == ["clip.report.json", "clip.report.png"]
    data = json.loads(paths[0].read_text())
    assert data["stages"]["segment"] == {"seconds": 20.0, "fps": 5.0}
    assert data["stages"]["encode"]["fps"] is None
    assert data["peak_rss_mb"] == 549 and data["peak_vram_mb"] == 149
    assert len(data["chunks"]) == 2 and len(data["samples"]) == 50
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < paths[1].stat().st_size < 200_000


def test_samples_are_capped(monkeypatch):
    monkeypatch.setattr(R, "_MAX_SAMPLES", 100)
    rep = R.ProcessingReport()
    for i in range(1000):
        rep.sample(i, 1, None, i)
    assert len(rep.samples) <= 101
    assert rep.samples[-1]["t"] >= 900  # still spans the whole run


def test_report_carries_wall_busy_and_waits(out_dir):
    from vr180matte.runtime.profile import StageTimer

    timer = StageTimer()
    timer.add("decode", 2.0)
    timer.add("refine", 8.0)
    timer.add_wait("frames.put", 5.5)
    s = timer.summary()
    s["wall_s"] = 10.0  # as if the run took 10 s of wall time
    s["efficiency"] = 10.0 / 8.0
    rep = R.ProcessingReport()
    rep.sample(0.0, 100, None, 0)
    paths = rep.write(out_dir, "clip", timer.as_dict(), 20, timing=s)
    data = json.loads(paths[0].read_text())
    assert data["timing"]["wall_s"] == 10.0 and data["timing"]["busiest_stage"] == "refine"
    assert data["timing"]["wait_s"] == {"frames.put": 5.5}
    assert data["timing"]["fps_wall"] == 2.0 and data["timing"]["efficiency"] == 1.25
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
