"""Staggered windows (FOG_WINDOW_STAGGER): each household's windows start at a phase of its own, the same in every
process, so at real time their ends spread over the window instead of all falling in one instant; each reading
still lands in exactly one window, and a replay after a restart makes the same windows."""

import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from edge_app.models import IngestPosition, WindowAggregate
from edge_app.windows import PHASE_STEP_MS, WindowBook, window_phase
from tests.conftest import consume_readings, produce, read_to_end, reading

ROOT = Path(__file__).resolve().parent.parent

W, GRACE = 5000, 2000
T0 = 1_700_000_000_000  # in the past (the edge refuses readings far ahead), a multiple of W


def households(n):
    return [f"house-{i:05d}" for i in range(n)]


def staggered_start(household, ts):
    """The start of the staggered window holding `ts`, computed here from the household's phase."""
    return ts - (ts - window_phase(household, W)) % W


def test_it_gives_each_household_one_phase_on_the_grid_and_spreads_them_over_the_window():
    phases = Counter(window_phase(h, W) for h in households(5000))
    assert set(phases) <= set(range(0, W, PHASE_STEP_MS))
    assert len(phases) == W // PHASE_STEP_MS  # every phase is used
    assert max(phases.values()) < 3 * 5000 / len(phases)  # none takes a crowd


def test_it_gives_a_household_the_same_phase_in_another_process():
    names = households(50)
    code = ("from edge_app.windows import window_phase; "
            f"print(','.join(str(window_phase(h, {W})) for h in {names!r}))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a hash() of the name would move with this
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == ",".join(str(window_phase(h, W)) for h in names)


def test_it_puts_each_reading_into_exactly_one_window_of_its_household():
    book = WindowBook(W, GRACE, 60, stagger=True)
    readings = [(h, T0 + k * 700, float(k % 13) + i) for i, h in enumerate(households(200)) for k in range(60)]
    for offset, (h, ts, power) in enumerate(readings):
        book.add(h, ts, power, 0, offset, 0.0)
    book.close_all()
    closed = book.take_closed()
    starts = defaultdict(set)
    for window in closed:
        assert window.end - window.start == W
        starts[window.household].add(window.start % W)
    assert all(len(offsets) == 1 for offsets in starts.values())  # one phase a household
    assert len({offsets.pop() for offsets in starts.values()}) > 20  # and households apart
    expected = defaultdict(list)
    by_window = {(w.household, w.start): w for w in closed}
    starts_of = defaultdict(list)
    for household, start in by_window:
        starts_of[household].append(start)
    for h, ts, power in readings:
        (start,) = [s for s in starts_of[h] if s <= ts < s + W]
        expected[h, start].append(power)
    assert sum(w.count for w in closed) == len(readings)
    for key, powers in expected.items():
        assert by_window[key].count == len(powers)
        assert by_window[key].average == pytest.approx(sum(powers) / len(powers))


def test_it_gives_a_household_forgotten_after_its_silence_the_same_phase_when_it_comes_back():
    book = WindowBook(W, GRACE, idle_seconds=1, stagger=True)
    book.add("house-7", T0 + 1234, 50.0, 0, 0, 0.0)
    assert book.close_idle(10.0) == 1 and "house-7" not in book.households  # closed, then forgotten
    (first,) = book.take_closed()
    book.add("house-7", T0 + 3_600_000 + 4321, 60.0, 0, 1, 20.0)
    book.close_all()
    (again,) = book.take_closed()
    assert first.start % W == again.start % W != 0  # house-7's phase is not 0: its windows are not aligned
    assert first.start <= T0 + 1234 < first.end and again.start <= T0 + 3_600_000 + 4321 < again.end


def live_closes(stagger):
    """How many of 1000 live households' windows each 100 ms of the wall clock closes, over two windows: every
    household reads every second, all at the same instants (as the simulation sends them)."""
    book = WindowBook(W, GRACE, 60, live_grace_ms=1000, stagger=stagger)
    names = households(1000)
    closes = []
    for tick in range(0, 3 * W, 100):
        now = T0 + tick
        if tick % 1000 == 0:
            for offset, h in enumerate(names):
                book.add(h, now, 100.0, 0, tick + offset, 0.0, wall_ms=now + 50)
        closes.append(book.close_live(now))
    return closes


def test_it_spreads_the_ends_of_live_windows_where_aligned_ones_close_at_once():
    aligned, staggered = live_closes(False), live_closes(True)
    assert max(aligned) == 1000  # every household's window in one instant
    assert sum(staggered) >= 1000 and max(staggered) <= 60  # at most a few percent at any 100 ms


@pytest.mark.django_db(transaction=True)
def test_it_stores_each_reading_once_through_a_restart_that_replays_stored_windows(kafka_client, kafka_bootstrap,
                                                                                   topic):
    from edge_app.ingest import Ingestor

    names = households(30)
    timeline = [(h, T0 + second * 1000, 10.0 * i + second) for second in range(60) for i, h in enumerate(names)]
    first, rest = timeline[: 33 * len(names)], timeline[33 * len(names):]

    def ingestor():
        return Ingestor(edge_id="edge-test", topic=topic, bootstrap=kafka_bootstrap, window_seconds=W // 1000,
                        grace_seconds=GRACE / 1000, idle_seconds=600, live_windows=False, stagger=True)

    produce(kafka_bootstrap, topic, [reading(*r) for r in first])
    before = read_to_end(ingestor())
    before.flush()  # windows closed so far stored, with positions inside the open ones
    before.close()  # a restart: the open windows are read again from Kafka, with readings of stored ones
    # The restart reads again, from each partition's resume offset, readings of windows already stored.
    stored_first = set(WindowAggregate.objects.values_list("household", "window_start"))
    resume = dict(IngestPosition.objects.values_list("partition", "resume_offset"))
    read_again = [(h, staggered_start(h, ts))
                  for h, ts, _, record in consume_readings(kafka_bootstrap, topic, len(first))
                  if record.offset >= resume[record.partition]]
    assert stored_first & set(read_again)
    produce(kafka_bootstrap, topic, [reading(*r) for r in rest])
    after = read_to_end(ingestor())
    after.finish()
    after.close()

    expected = defaultdict(list)
    for h, ts, power in timeline:
        expected[h, staggered_start(h, ts)].append(power)
    stored = {(t.household, t.window_start): (t.average_w, t.readings) for t in WindowAggregate.objects.all()}
    assert set(stored) == set(expected)
    for key, powers in expected.items():
        assert stored[key] == (pytest.approx(sum(powers) / len(powers)), len(powers))
    assert sum(count for _, count in stored.values()) == len(timeline)
