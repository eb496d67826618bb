"""The long-running loops run CPython's full garbage collections where they pause, not in a burst
(fogwire/fullgc.py): none on their own however much the loop allocates, one where the loop waits once the
interval is up and the room allows, one anywhere when long overdue; and FOG_FULL_GC_SECONDS=0 leaves
everything to CPython."""

import gc
import time

import pytest

from fogwire.fullgc import NEVER, OVERDUE_FACTOR, FullCollections
from simulation.scenario import RunStats


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def collections():
    clock = Clock()
    taken = FullCollections(60, clock=clock).start()
    yield taken, clock
    taken.stop()


def full_collections_during(work):
    """How many generation-2 collections ran while `work()` ran (however they were started)."""
    seen = []

    def count(phase, info):
        if phase == "start" and info["generation"] == 2:
            seen.append(1)

    gc.callbacks.append(count)
    try:
        work()
    finally:
        gc.callbacks.remove(count)
    return len(seen)


def churn():
    """What the ingest does at real time: a large heap that lives on, and as many objects again made and dropped."""
    kept = [{"window": [i]} for i in range(200_000)]
    for _ in range(5):
        burst = [{"reading": [i]} for i in range(200_000)]
        kept[: len(burst) // 2] = burst[: len(burst) // 2]
    return kept


def test_it_runs_no_full_collection_of_its_own_while_a_loop_allocates(collections):
    assert gc.get_threshold()[2] == NEVER
    assert full_collections_during(churn) == 0


def test_it_leaves_collections_to_cpython_when_the_interval_is_zero():
    before = gc.get_threshold()
    off = FullCollections(0).start()
    try:
        assert gc.get_threshold() == before and not off.active
        assert full_collections_during(churn) > 0  # what the loops met before: CPython's rule, mid-burst
        assert not off.handle_one_pause() and not off.handle_one_step()
    finally:
        off.stop()
    assert gc.get_threshold() == before


def test_it_gives_cpython_its_thresholds_back_when_the_loop_ends():
    before = gc.get_threshold()
    taken = FullCollections(60).start()
    taken.stop()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_it_collects_in_a_pause_once_the_interval_is_up(collections):
    taken, clock = collections
    assert not taken.handle_one_pause()
    clock.now += 59
    assert not taken.handle_one_pause()
    clock.now += 1
    assert full_collections_during(taken.handle_one_pause) == 1
    assert taken.collections == 1 and not taken.handle_one_pause()  # the interval starts again


def test_it_waits_for_a_pause_with_room_for_the_collection(collections):
    taken, clock = collections
    clock.now += 61
    assert not taken.handle_one_pause(room_s=0.1)  # the first one's length is not known: not in a short pause
    taken.took = 0.3  # the last full collection's length
    assert not taken.handle_one_pause(room_s=0.55)  # a window is due before twice that: not now
    assert taken.handle_one_pause(room_s=1.0)


def test_it_collects_anywhere_when_long_overdue(collections):
    taken, clock = collections
    taken.took = 0.3
    clock.now += 61
    assert not taken.handle_one_step()  # busy, not yet overdue: wait for a pause
    clock.now += 60 * OVERDUE_FACTOR - 61
    assert taken.handle_one_pause(room_s=0.0)  # overdue: even a pause without room
    clock.now += 60 * OVERDUE_FACTOR
    assert taken.handle_one_step()  # overdue: even in the middle of the work


@pytest.mark.serial  # wall-clock time to 50 ms
def test_it_gives_the_ingest_the_time_to_its_next_live_window():
    from edge_app.ingest import Ingestor

    ingest = Ingestor(edge_id="gc", topic="unused", bootstrap="127.0.0.1:1", window_seconds=5, grace_seconds=2,
                      idle_seconds=60, live_grace_seconds=1)
    assert ingest.room_s() is None  # nothing open: no window can be due
    now_ms = int(time.time() * 1000)
    ts = now_ms - 100
    start = ts - ts % 5000
    ingest.book.add("h", ts, 10.0, 0, 0, time.monotonic(), now_ms)  # arrived 0.1 s after its stamp
    due_s = (start + 5000 + 1000 + 100) / 1000
    assert ingest.room_s() == pytest.approx(due_s - time.time(), abs=0.05)


@pytest.mark.serial  # wall-clock time to 100 ms
def test_it_offers_the_simulation_s_wait_for_its_next_step():
    offered = []

    class Recording(FullCollections):
        def handle_one_pause(self, room_s=None):
            offered.append(room_s)
            return False

    stats = RunStats(until=10, collections=Recording(60), speed=1.0)
    stats.pace(0)  # the first step is due at once: no wait, nothing offered
    stats.pace(0.3)
    assert len(offered) == 1 and 0.2 < offered[0] <= 0.3
