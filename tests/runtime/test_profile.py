"""StageTimer under concurrency: busy seconds per stage summed over threads, queue waits, wall, efficiency."""
import threading
import time

import pytest

from vr180matte.runtime.profile import StageTimer, TimedQueue


def test_busy_wait_and_wall_under_threads():
    """Lower bounds come from the sleeps themselves (a sleep never ends early); the overlap claim compares two
    measured figures with 0.15 s of slack, so a loaded machine stretches both sides alike."""
    timer = StageTimer()
    timer.start()
    q = TimedQueue(1, timer, "frames")

    def producer():
        for i in range(4):
            with timer("decode"):
                time.sleep(0.05)
            q.put(i)  # the consumer is slow: these puts block on the full queue
        q.put(None)

    def consumer():
        while q.get() is not None:
            with timer("refine"):
                time.sleep(0.1)

    ts = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    timer.stop()
    s = timer.summary()
    assert s["busy_s"]["decode"] >= 0.2 and s["busy_s"]["refine"] >= 0.4
    assert s["busiest_stage"] == "refine"
    # overlapped: the wall is at least the busiest stage but below the two stages run one after the other
    assert s["busy_s"]["refine"] <= s["wall_s"] < s["busy_s"]["refine"] + s["busy_s"]["decode"]
    assert s["efficiency"] == pytest.approx(s["wall_s"] / s["busy_s"]["refine"], rel=1e-3) and s["efficiency"] >= 1.0
    assert s["wait_s"]["frames.put"] > 0  # producer was held back by the slow consumer
    assert s["threads"] == {"decode": 1, "refine": 1}
    assert timer.as_dict().keys() == {"decode", "refine"}


def test_sync_runs_at_every_stage_boundary():
    """performance.profile_sync: the device is synchronised on entering and on leaving each stage, so queued
    kernels are charged to the stage that queued them; a disabled timer never synchronises."""
    calls = []
    timer = StageTimer(sync=lambda: calls.append("sync"))
    with timer("segment"):
        calls.append("work")
    with timer("encode"):
        pass
    assert calls == ["sync", "work", "sync", "sync", "sync"]
    assert timer.calls == {"segment": 1, "encode": 1}
    calls.clear()
    with StageTimer(enabled=False, sync=lambda: calls.append("sync"))("segment"):
        pass
    assert calls == []
    assert StageTimer().sync is None  # production default: no synchronisation


def test_busy_seconds_sum_over_threads_without_lost_updates():
    timer = StageTimer()
    alive = threading.Barrier(4)  # all four threads live at once, so their idents are distinct

    def work():
        alive.wait()
        for _ in range(2000):
            with timer("x"):
                pass
            timer.add("y", 0.001)
        alive.wait()

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert timer.calls["x"] == 8000
    assert timer.as_dict()["y"] == pytest.approx(8.0, abs=1e-6)
    assert timer.summary()["threads"]["x"] == 4


def test_one_off_stages_are_not_the_busiest():
    timer = StageTimer()
    timer.add("load_models", 5.0)
    timer.add("encode", 1.0)
    s = timer.summary()
    assert s["busiest_stage"] == "encode" and s["busiest_stage_s"] == 1.0
    assert StageTimer(enabled=False).summary()["efficiency"] is None


def test_overlapping_stages_are_timed_per_thread_and_cores_counted():
    """run_stages books each stage's whole per-item time (all its steps) under ``pipeline_busy_s``; the busiest
    thread bounds the wall; process CPU over the wall gives the cores' utilisation."""
    from vr180matte.pipeline.overlap import run_stages

    timer = StageTimer()
    timer.start()

    def burn(seconds: float) -> None:  # real CPU work, so cpu_s sees it: CPU seconds, not wall (load-proof)
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    def finish(x):
        with timer("refine"):
            burn(0.02)
        with timer("composite"):
            burn(0.02)
        return x

    run_stages(range(8), [("segment", lambda x: (burn(0.005), x)[1]), ("finish", finish),
                          ("encode", lambda x: None)], timer=timer, depth=2)
    timer.stop()
    s = timer.summary()
    pipe = s["pipeline_busy_s"]
    assert set(pipe) == {"segment", "finish", "encode"}
    # finish ran refine + composite one after another: its thread time is their sum (0.32 s), not either one
    assert pipe["finish"] >= s["busy_s"]["refine"] + s["busy_s"]["composite"] - 0.01
    assert s["pipeline_busiest"] == "finish" and s["pipeline_busiest_s"] == pipe["finish"]
    assert s["pipeline_efficiency"] == pytest.approx(s["wall_s"] / pipe["finish"], rel=1e-3)
    assert 1.0 <= s["pipeline_efficiency"] < s["efficiency"]  # per step the busiest is only half of finish
    assert s["cpu_s"] >= 8 * 0.045 and s["cores"] >= 1  # the burns alone are 0.36 CPU seconds
    assert 0 < s["core_utilization"] <= 1.05


def test_pipeline_stage_times_include_the_decode_thread():
    timer = StageTimer()
    timer.add("decode", 2.0)
    timer.add_pipeline("segment", 1.0)
    s = timer.summary()
    assert s["pipeline_busy_s"] == {"decode": 2.0, "segment": 1.0} and s["pipeline_busiest"] == "decode"
    assert s["cpu_s"] is None and s["core_utilization"] is None  # start() never called
