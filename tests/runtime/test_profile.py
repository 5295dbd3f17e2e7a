"""StageTimer under concurrency: busy seconds per stage summed over threads, queue waits, wall, efficiency."""
import threading
import time

import pytest

from vr180matte.runtime.profile import StageTimer, TimedQueue


def test_busy_wait_and_wall_under_threads():
    timer = StageTimer()
    timer.start()
    q = TimedQueue(1, timer, "frames")

    def producer():
        for i in range(4):
            with timer("decode"):
                time.sleep(0.01)
            q.put(i)  # the consumer is slow: these puts block on the full queue
        q.put(None)

    def consumer():
        while q.get() is not None:
            with timer("refine"):
                time.sleep(0.06)

    ts = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    timer.stop()
    s = timer.summary()
    assert s["busy_s"]["decode"] == pytest.approx(0.04, abs=0.03)
    assert s["busy_s"]["refine"] == pytest.approx(0.24, abs=0.05)
    assert s["busiest_stage"] == "refine"
    # overlapped: the wall is close to the busiest stage, far below the sum of stages
    assert s["wall_s"] < s["busy_s"]["refine"] + 0.04
    assert 1.0 <= s["efficiency"] < 1.3
    assert s["wait_s"]["frames.put"] > 0.1  # producer was held back by the slow consumer
    assert s["threads"] == {"decode": 1, "refine": 1}
    assert timer.as_dict().keys() == {"decode", "refine"}


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
