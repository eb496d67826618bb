"""A step of the edge's wall clock (NTP setting it) is not time passed: live windows close when their
households' time says so, not when the step would, and no reading still to come is counted late."""

import time

import pytest

from edge_app import ingest as ingest_module
from edge_app.windows import APPLIED, WindowBook
from tests.conftest import produce, reading
from tests.test_it_closes_live_windows_on_time import GRACE, W, connected_ingestor

NOW = 1_800_000_000_000  # the edge's clock in the pure tests: a multiple of 5 s


@pytest.mark.parametrize("step", [7000, -7000], ids=["forward", "back"])
@pytest.mark.parametrize("second_reading", [False, True], ids=["silent", "a reading after the step"])
def test_it_moves_its_live_households_clocks_with_a_step_of_the_edges_clock(step, second_reading):
    book = WindowBook(W, GRACE, 60, live_grace_ms=500)
    assert book.add("h", NOW + 1000, 10.0, 0, 0, 0.0, wall_ms=NOW + 1100) == APPLIED
    due = NOW + W + 500 + 100  # end + live grace + the stream's delay, on the clock before the step
    book.shift_clock(step)
    assert book.close_live(due + step - 1) == 0  # neither early (forward) ...
    if second_reading:
        assert book.add("h", NOW + 4000, 40.0, 0, 1, 0.0, wall_ms=NOW + 4100 + step) == APPLIED  # on the new clock
        assert book.close_live(due + step - 1) == 0
    assert book.close_live(due + step) == 1  # ... nor late (back)
    (window,) = book.take_closed()
    assert (window.start, window.average, window.count) == ((NOW, 25.0, 2) if second_reading else (NOW, 10.0, 1))


class SteppedClock:
    """The `time` the ingest sees: the wall clock `step_s` off the real one, the monotonic clock and sleep real."""

    monotonic, sleep, clock_gettime = staticmethod(time.monotonic), staticmethod(time.sleep), staticmethod(time.clock_gettime)
    CLOCK_BOOTTIME = time.CLOCK_BOOTTIME

    def __init__(self):
        self.step_s = 0.0

    def time(self):
        return time.time() + self.step_s


@pytest.mark.serial  # the readings must be read within a second or two of the time they carry
@pytest.mark.django_db(transaction=True)
def test_it_stores_a_live_window_whole_when_the_edges_clock_steps_forward_past_its_end(kafka_bootstrap, topic,
                                                                                      monkeypatch, caplog):
    from edge_app.models import EdgeStatus, WindowAggregate

    clock = SteppedClock()
    monkeypatch.setattr(ingest_module, "time", clock)
    ingest = connected_ingestor("edge-step", topic, kafka_bootstrap)
    try:
        while time.time() * 1000 % W > 1500:  # early in a window, so a second reading a second later is in it
            time.sleep(0.05)
        now = int(time.time() * 1000)
        start = now - now % W
        produce(kafka_bootstrap, topic, [reading(f"step-{i}", now, 100.0) for i in range(3)])
        deadline = time.monotonic() + 30
        while len(ingest.book.households) < 3 and time.monotonic() < deadline:
            ingest.handle_one_poll(timeout_ms=50)
        clock.step_s = 8.0  # past the window's end, its live grace and the stream's delay
        ingest.handle_one_poll(timeout_ms=50)
        assert not WindowAggregate.objects.exists()  # the step closed nothing
        produce(kafka_bootstrap, topic, [reading(f"step-{i}", now + 1000, 200.0) for i in range(3)])
        while WindowAggregate.objects.count() < 3 and time.monotonic() < deadline:
            ingest.handle_one_poll(timeout_ms=50)
        ingest.flush()
        stored = sorted(WindowAggregate.objects.values_list("household", "window_start", "average_w", "readings"))
        assert stored == [(f"step-{i}", start, 150.0, 2) for i in range(3)]
        assert EdgeStatus.objects.get(edge_id="edge-step").late == 0
        assert [r.getMessage() for r in caplog.records if "stepped" in r.getMessage()] == [
            "the edge's clock stepped +8.0 s; its live windows keep to the time that passed"]
    finally:
        ingest.close()
