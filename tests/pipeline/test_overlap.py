"""pipeline/overlap.py: threaded stages keep order, and an interrupt never leaves a worker mid-item."""
import os
import signal
import threading
import time

import pytest

from vr180matte.pipeline.overlap import run_stages
from vr180matte.runtime.profile import StageTimer


def test_items_pass_every_stage_in_order():
    seen = []
    run_stages(range(20), [("a", lambda x: x * 2), ("b", lambda x: x + 1), ("c", seen.append)], timer=StageTimer())
    assert seen == [2 * i + 1 for i in range(20)]


def test_an_interrupt_while_the_caller_waits_returns_only_after_the_worker_left_its_item():
    """The signal lands while the caller waits for a slow last stage (as SIGTERM did in CI): run_stages may raise
    only once that stage has finished its item, or the caller would close an encoder the stage is still using."""
    state = {"inside": 0, "done": 0}
    third = threading.Event()

    def slow(item):
        state["inside"] += 1
        if item == 2:
            third.set()  # the signal is sent only now: inside item 2, whatever the machine's speed
        time.sleep(0.3)
        state["inside"] -= 1
        state["done"] += 1

    def interrupt(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    def send_when_inside():
        if third.wait(60):
            os.kill(os.getpid(), signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        threading.Thread(target=send_when_inside, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            run_stages(range(6), [("feed", lambda x: x), ("slow", slow)], timer=StageTimer(), depth=8)
        assert third.is_set()
        assert state["inside"] == 0, "returned while the last stage was still inside an item"
        assert 3 <= state["done"] < 6, state  # items 0 and 1, then item 2 finished after the signal; not all
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_an_error_in_a_stage_stops_the_chain_and_reaches_the_caller():
    def boom(x):
        if x == 3:
            raise ValueError("stage failed on 3")
        return x

    seen = []
    with pytest.raises(ValueError, match="stage failed on 3"):
        run_stages(range(50), [("a", lambda x: x), ("b", boom), ("c", seen.append)], timer=StageTimer())
    assert seen == list(range(len(seen))) and len(seen) <= 3  # in order, nothing after the failed item
