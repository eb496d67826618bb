"""At real time a window is stored `live grace` after its end, not when its household's next reading comes;
replays, lagging streams and a consumer that has not read that far keep to event time."""

import json
import time

import pytest

from edge_app.windows import APPLIED, LIVE_WITHIN_MS, WindowBook
from tests.conftest import produce, reading

pytestmark = pytest.mark.serial  # windows must close within a poll of their wall-clock due time

W, GRACE, LIVE_GRACE = 5000, 2000, 500
NOW = 1_800_000_000_000  # the edge's clock in the pure tests: a multiple of 5 s


def connected_ingestor(edge_id, topic, bootstrap, **options):
    """The real Ingestor on a test topic with 5 s windows, 2 s of grace and 0.5 s of live grace, connected (the
    client is the setting the kafka_client fixture chose, unless `client` is given)."""
    from edge_app.ingest import Ingestor

    ingest = Ingestor(edge_id=edge_id, topic=topic, bootstrap=bootstrap, window_seconds=W // 1000,
                      grace_seconds=GRACE / 1000, idle_seconds=600, live_grace_seconds=LIVE_GRACE / 1000, **options)
    ingest.connect()
    return ingest


def test_it_closes_a_live_window_by_the_wall_clock_at_end_plus_grace():
    book = WindowBook(W, GRACE, 60)
    book.add("h", NOW + 1000, 10.0, 0, 0, 0.0, wall_ms=NOW + 1010)
    book.add("h", NOW + 3000, 30.0, 0, 1, 0.0, wall_ms=NOW + 3010)  # the household's last reading for a while
    assert book.close_live(NOW + W + GRACE - 20) == 0  # its clock: 3000 + (6980 - 3010) < 7000
    assert book.close_live(NOW + W + GRACE + 10) == 1
    (window,) = book.take_closed()
    assert (window.start, window.average, window.count) == (NOW, 20.0, 2)
    assert not book.add("h", NOW + 4000, 99.0, 0, 2, 0.0, wall_ms=NOW + 7100)  # a straggler is late, as ever


def test_it_closes_a_live_window_after_the_shorter_live_grace_and_counts_a_later_reading_late():
    live_grace = 500
    book = WindowBook(W, GRACE, 60, live_grace_ms=live_grace)
    delay = 600  # the stream's usual delay, which the household's clock already allows for
    book.add("h", NOW + 3000, 30.0, 0, 0, 0.0, wall_ms=NOW + 3000 + delay)
    assert book.close_live(NOW + W + live_grace + delay - 20) == 0
    assert book.close_live(NOW + W + live_grace + delay) == 1
    assert not book.add("h", NOW + 4900, 99.0, 0, 1, 0.0, wall_ms=NOW + W + live_grace + delay + 10)
    # Event time keeps the full grace: a replay of the same readings closes the window only at end + GRACE.
    replay = WindowBook(W, GRACE, 60, live_grace_ms=live_grace)
    replay.add("h", NOW + 3000, 30.0, 0, 0, 0.0)
    replay.add("h", NOW + W + GRACE - 1, 30.0, 0, 1, 0.0)
    assert replay.add("h", NOW + 4900, 99.0, 0, 2, 0.0) and not replay.take_closed()


def test_it_counts_the_wall_clock_only_as_far_as_the_consumer_has_read():
    book = WindowBook(W, GRACE, 60, live_grace_ms=1000)
    book.add("h", NOW + 3000, 30.0, 0, 0, 0.0, wall_ms=NOW + 3100)
    due = NOW + W + 1000 + 100  # end + live grace + the stream's delay
    # Still reading records stamped before the window's due time: a straggler for it may be among the unread.
    assert book.close_live(due + 5000, read_ms=due - 1) == 0
    assert book.close_live(due + 5000, read_ms=due) == 1  # read past it: whatever comes now is late anyway


def test_it_never_closes_a_replay_of_past_data_by_the_wall_clock():
    book = WindowBook(W, GRACE, 60)
    past = NOW - 10 * LIVE_WITHIN_MS
    book.add("h", past + 1000, 10.0, 0, 0, 0.0, wall_ms=NOW)
    assert book.close_live(NOW + 3600_000) == 0
    assert book.open_windows() == 1


def test_it_waits_for_a_stream_that_runs_behind_the_edges_clock():
    book = WindowBook(W, GRACE, 60)
    delay = 10_000  # this household's readings arrive 10 s after their event time
    book.add("late-meter", NOW + 1000, 10.0, 0, 0, 0.0, wall_ms=NOW + 1000 + delay)
    assert book.close_live(NOW + W + GRACE + 100) == 0
    assert book.close_live(NOW + W + GRACE + delay - 1100) == 0
    assert book.close_live(NOW + W + GRACE + delay) == 1


def test_it_closes_a_live_window_once_whatever_else_closes_it(tmp_path):
    book = WindowBook(W, GRACE, 60)
    book.add("h", NOW + 1000, 10.0, 0, 0, 0.0, wall_ms=NOW + 1000)
    book.add("h", NOW + 7500, 20.0, 0, 1, 0.0, wall_ms=NOW + 7500)  # event time closes it first
    assert len(book.take_closed()) == 1
    assert book.close_live(NOW + 60_000) == 1  # only the second window, never the first again
    assert [w.start for w in book.take_closed()] == [NOW + W]


@pytest.mark.django_db(transaction=True)
def test_it_stores_a_real_time_window_grace_after_its_end(kafka_client, kafka_bootstrap, topic):
    from edge_app.models import WindowAggregate

    ingest = connected_ingestor("edge-live", topic, kafka_bootstrap)
    try:
        now = int(time.time() * 1000)
        start = now - now % W
        produce(kafka_bootstrap, topic, [reading(f"live-{i}", now, 100.0 + i) for i in range(3)])
        deadline = time.monotonic() + 30
        # A high watermark cached from a fetch before the produce says "caught up" with nothing read, so
        # the loop also waits for the three households.
        while not (ingest.caught_up() and len(ingest.book.households) == 3) and time.monotonic() < deadline:
            ingest.handle_one_poll()
        assert ingest.caught_up() and len(ingest.book.households) == 3
        assert not WindowAggregate.objects.exists()  # nothing is due before end + grace
        # The stream's delay, from the readings' event time to their records' timestamps (here the test
        # producer's start-up); at real time the simulation stamps readings as it sends them.
        # Each household's own: its readings' records may carry timestamps a few ms apart.
        delays = {household: state.newest_at - now for household, state in ingest.book.households.items()}
        stored_at = {}
        while len(stored_at) < 3 and time.monotonic() < deadline:
            ingest.handle_one_poll(timeout_ms=50)
            seen = time.time() * 1000
            for household in WindowAggregate.objects.values_list("household", flat=True):
                stored_at.setdefault(household, seen)
        stored = sorted(WindowAggregate.objects.values_list("household", "window_start", "average_w"))
        assert stored == [(f"live-{i}", start, 100.0 + i) for i in range(3)]  # with no further reading
        for household, at in stored_at.items():
            due = start + W + LIVE_GRACE + delays[household]
            assert due <= at < due + 1000, household  # not before its time, and within a poll or two of it
    finally:
        ingest.close()


@pytest.mark.django_db(transaction=True)
def test_it_stops_waiting_for_a_message_when_a_live_window_is_due(kafka_client, kafka_bootstrap, topic):
    """A poll that finds nothing to read waits for the next message only until the next live window is due: one
    that waited its whole timeout held the close back by as much (between a producer's sends windows come due,
    staggered ones all the time)."""
    from edge_app.models import WindowAggregate

    ingest = connected_ingestor("edge-due", topic, kafka_bootstrap)
    try:
        produce(kafka_bootstrap, topic, [reading("due", int(time.time() * 1000), 1.0)])
        deadline = time.monotonic() + 30
        while not (ingest.caught_up() and "due" in ingest.book.households) and time.monotonic() < deadline:
            ingest.handle_one_poll(timeout_ms=50)
        due = ingest.book.next_live_due_ms()
        assert due is not None and due > time.time() * 1000  # read before its window is due
        while not WindowAggregate.objects.exists() and time.monotonic() < deadline:
            ingest.handle_one_poll(timeout_ms=20_000)  # nothing more comes: only the due window ends the wait
        stored_at = time.time() * 1000
        assert WindowAggregate.objects.filter(household="due").exists()
        assert due <= stored_at < due + 1000
    finally:
        ingest.close()


class _QuietSource:
    """A Kafka source with no records: how long each poll is asked to wait for one is what these tests look at."""

    name = "quiet"

    def __init__(self, away_since_ms=None):
        self.read_times, self.waits, self.away = {0: -1}, [], away_since_ms

    def poll(self, timeout_ms, max_records):
        self.waits.append(timeout_ms)
        return {}

    def high_watermarks(self):
        return {0: 1}  # read to its end (next_offsets below): caught up

    def away_since_ms(self):
        return self.away

    def positions(self, partitions):
        return dict.fromkeys(partitions)

    def commit(self, offsets, wait=False):
        pass


def _waiting_ingestor(ts, source):
    """The ingestor with one live reading at `ts`, read at once, and `source` for its Kafka."""
    ingest = _unconnected_ingestor()
    ingest.source, ingest.next_offsets = source, {0: 1}
    ingest._apply(0, _records(0, "h", ts, ts), time.monotonic(), ts)
    return ingest


@pytest.mark.django_db(transaction=True)
def test_it_waits_for_a_message_until_the_next_window_is_due_and_no_longer():
    from edge_app.models import EdgeStatus

    EdgeStatus.for_edge("edge-clocks")
    now = int(time.time() * 1000)
    ingest = _waiting_ingestor(now - now % W + 1, _QuietSource())
    due = ingest.book.next_live_due_ms()
    before = time.time() * 1000
    ingest.handle_one_poll(timeout_ms=20_000)
    after = time.time() * 1000
    (wait,) = ingest.source.waits
    # Up to its due time (rounded up) from when the poll asked, some moment between the two readings of the clock
    # (setting the ingestor up took a while on a busy machine), not the poll's 20 s.
    assert due - after <= wait <= due - before + 50


@pytest.mark.django_db(transaction=True)
def test_it_waits_the_whole_timeout_while_the_read_clock_holds_a_due_window_back():
    """The broker away (or a partition behind): a window due on the wall clock is not on the read clock, which
    only a record read moves on. Waiting for the wall clock, the loop polled a hundred times a second."""
    from edge_app.models import EdgeStatus

    EdgeStatus.for_edge("edge-clocks")
    now = int(time.time() * 1000)
    ingest = _waiting_ingestor(now - 2 * W, _QuietSource(away_since_ms=now - 3 * W))  # due since a window ago
    for _ in range(4):
        ingest.handle_one_poll(timeout_ms=300)
    assert ingest.book.open_windows() == 1  # held back: nothing read since before it was due
    assert ingest.source.waits[1:] == [300] * 3  # the first knew of no hold yet


@pytest.mark.django_db(transaction=True)
def test_it_dates_a_reading_from_when_it_reached_kafka_not_from_when_the_ingest_got_to_it(kafka_client,
                                                                                       kafka_bootstrap, topic):
    """A reading that waited in Kafka while the ingest was busy (storing the last burst's windows) does not make
    its household look that much slower: its next window would be held back by the wait."""
    ingest = connected_ingestor("edge-waited", topic, kafka_bootstrap)
    try:
        deadline = time.monotonic() + 30
        produce(kafka_bootstrap, topic, [reading("waited", int(time.time() * 1000), 1.0)])
        while "waited" not in ingest.book.households and time.monotonic() < deadline:
            ingest.handle_one_poll(timeout_ms=50)  # read at once: its partition's usual lag
        now = int(time.time() * 1000)
        produce(kafka_bootstrap, topic, [reading("waited", now, 1.0)])  # same household, same partition
        time.sleep(1.5)  # the ingest is busy elsewhere
        state = ingest.book.households["waited"]
        while state.newest_ts != now and time.monotonic() < deadline:
            ingest.handle_one_poll(timeout_ms=50)
        read_at = time.time() * 1000
        assert state.newest_ts == now and read_at - now >= 1500
        assert state.newest_at - now < 500
    finally:
        ingest.close()


def _unconnected_ingestor():
    from edge_app.ingest import Ingestor

    return Ingestor(edge_id="edge-clocks", topic="unused", bootstrap="127.0.0.1:1", window_seconds=W // 1000,
                    grace_seconds=GRACE / 1000, idle_seconds=600, live_grace_seconds=LIVE_GRACE / 1000)


def _records(offset, household, ts, stamp):
    return [(offset, (json.dumps({"household": household, "ts": ts, "power_w": 1.0}).encode(), stamp))]


def test_it_reads_a_producer_clock_that_runs_behind_on_the_edges_clock():
    """A producer 3 s behind the edge stamps its records 3 s early: its readings, read at once, arrive when the
    edge read them, and a reading that waited in Kafka for a busy ingest arrives when it would have been read."""
    ingest = _unconnected_ingestor()
    behind, transit = 3000, 20
    for i in range(3):  # readings a second apart, each read as soon as sent
        ts = NOW + i * 1000  # the producer's clock
        ingest._apply(0, _records(i, "h", ts, ts), 0.0, ts + behind + transit)
    assert ingest.book.households["h"].newest_at == NOW + 2000 + behind + transit
    ts = NOW + 3000
    ingest._apply(0, _records(3, "h", ts, ts), 0.0, ts + behind + transit + 1500)  # waited 1.5 s in Kafka
    assert ingest.book.households["h"].newest_at == ts + behind + transit
    # Its window closes by its household's clock, the skew and transit allowed for, not 3 s early.
    assert ingest.book.close_live(NOW + W + LIVE_GRACE + behind + transit - 10) == 0
    assert ingest.book.close_live(NOW + W + LIVE_GRACE + behind + transit + 10) == 1


def test_it_closes_no_window_early_after_a_record_stamped_ahead_of_the_edges_clock():
    """One record stamped 20 s ahead (a producer's clock, or on purpose; a malformed one too) was the smallest lag
    of its partition for two periods: every reading of it arrived 20 s before it was read, and its household's
    window closed 15 s before its end, the rest of its readings late."""
    ingest = _unconnected_ingestor()
    transit = 20
    for i in range(3):  # a live household, read as soon as sent
        ts = NOW + i * 1000
        ingest._apply(0, _records(i, "h", ts, ts + transit), 0.0, ts + transit)
    ingest._apply(0, [(3, (b"junk", NOW + 2500 + 20_000))], 0.0, NOW + 2500 + transit)
    ts = NOW + 3000
    ingest._apply(0, _records(4, "h", ts, ts + transit), 0.0, ts + transit)
    assert ingest.book.households["h"].newest_at == ts + transit  # when it was read, not 20 s before
    assert ingest.book.close_live(ts + 100) == 0  # the window ends at NOW + 5000
    assert ingest.book.add("h", NOW + 4000, 1.0, 0, 5, 0.0, NOW + 4000 + transit) == APPLIED
    assert ingest.book.close_live(NOW + W + LIVE_GRACE + transit + 10) == 1


def test_it_closes_live_windows_a_part_at_a_time():
    book = WindowBook(W, GRACE, 60, live_grace_ms=LIVE_GRACE)
    for i in range(7):
        book.add(f"h{i}", NOW + 1000, 1.0, 0, i, 0.0, wall_ms=NOW + 1000)
    book.add("later", NOW + 1000, 1.0, 0, 7, 0.0, wall_ms=NOW + 1400)  # its stream runs 400 ms behind
    due = NOW + W + LIVE_GRACE
    assert book.close_live(due, limit=3) == 3 and book.next_live_due_ms() == due  # the rest stay due, at once
    assert book.close_live(due, limit=3) == 3
    assert book.close_live(due, limit=3) == 1 and book.close_live(due, limit=3) == 0
    assert book.next_live_due_ms() == due + 400 and book.close_live(due + 400) == 1
    assert sorted(w.household for w in book.take_closed()) == [f"h{i}" for i in range(7)] + ["later"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kafka_client", ["confluent"], indirect=True)  # the setting alone: no client's part
def test_it_keeps_to_event_time_when_live_windows_are_off(kafka_client, kafka_bootstrap, topic):

    ingest = connected_ingestor("edge-off", topic, kafka_bootstrap, live_windows=False)
    try:
        now = int(time.time() * 1000)
        produce(kafka_bootstrap, topic, [reading("off-0", now, 1.0)])
        end = now - now % W + W
        while time.time() * 1000 < end + LIVE_GRACE + 2000:  # 2 s past the moment a live window would have closed
            ingest.handle_one_poll(timeout_ms=100)
        assert ingest.book.open_windows() == 1 and not ingest.book.take_closed()
    finally:
        ingest.close()


@pytest.mark.django_db(transaction=True)
def test_it_keeps_to_event_time_until_it_has_read_everything(kafka_client, kafka_bootstrap, topic):

    ingest = connected_ingestor("edge-behind", topic, kafka_bootstrap)
    try:
        now = int(time.time() * 1000)
        # At the start of a window: each is due a whole window (and the live grace) after its readings came, so
        # none is due by the wall clock before the ingest can have read them all, wherever `now` falls.
        start = now - 5000 - (now - 5000) % W
        produce(kafka_bootstrap, topic, [reading(f"hh-{i % 50}", start + i % 20, 1.0) for i in range(30_000)])
        ingest.handle_one_poll(timeout_ms=2000)  # one poll reads at most part of what is there
        assert not ingest.caught_up()
        # Read at most as far as records stamped about now (-1 while a partition has given nothing): windows
        # due later stay open, however late the wall clock, until the ingest has read everything.
        deadline = time.monotonic() + 60
        while not ingest.caught_up() and time.monotonic() < deadline:
            clock = ingest.read_clock()
            assert clock is not None and clock <= time.time() * 1000
            assert ingest.book.close_live(now + 600_000, clock) == 0
            ingest.handle_one_poll()
        opened = ingest.book.open_windows()
        assert ingest.read_clock() is None and opened > 0
        assert ingest.book.close_live(now + 600_000, None) == opened  # read everything: the wall clock counts in full
    finally:
        ingest.close()


@pytest.mark.django_db(transaction=True)
def test_it_closes_no_live_window_while_paused_for_its_budget_nor_before_it_reads_what_came_meanwhile(
        kafka_client, kafka_bootstrap, topic):
    """Paused partitions are not fetched, so the broker's high watermark the ingest last saw is frozen: it must
    not take that for having read everything, or the readings still in Kafka would find their window closed.
    Right after resuming, before a fetch has answered, the watermarks are still the frozen ones: the ingest
    asks the broker for its ends as it resumes, and counts itself behind until it has read to them. (The reading
    sent during the pause also finds its window open because the pause does not count as its household's
    time, shift_idle; with many households, windows came due before the first fetch answered.)"""
    from edge_app.models import EdgeStatus, WindowAggregate

    EdgeStatus.objects.create(edge_id="edge-paused")
    ingest = connected_ingestor("edge-paused", topic, kafka_bootstrap, client=kafka_client)
    try:
        now = int(time.time() * 1000)
        start = now - now % W
        produce(kafka_bootstrap, topic, [reading("paused-0", now, 1.0)])
        deadline = time.monotonic() + 30
        while not (ingest.caught_up() and ingest.book.open_windows()) and time.monotonic() < deadline:
            ingest.handle_one_poll()
        ingest.set_budget(1, 0)  # the one open window fills the budget: the next poll pauses
        ingest.handle_one_poll(timeout_ms=100)
        assert ingest.paused_at is not None
        later = now + 1 if (now + 1) % W else now - 1  # its window, another moment (one moment comes once)
        produce(kafka_bootstrap, topic, [reading("paused-0", later, 3.0)])  # sent while paused
        while time.time() * 1000 < start + W + LIVE_GRACE + 3000:
            ingest.handle_one_poll(timeout_ms=100)
        assert ingest.paused_at is not None and ingest.caught_up()  # what a frozen watermark would claim
        assert ingest.book.open_windows() == 1 and not ingest.book.closed

        ingest.gate.budget = ingest.gate.low_water = 10  # room again: the next poll resumes
        deadline = time.monotonic() + 30
        while not ingest.book.closed and ingest.book.open_windows() and time.monotonic() < deadline:
            ingest.handle_one_poll(timeout_ms=1)  # polls that return before the first fetch is answered
            # The watermark is still the frozen one: what Kafka holds is known from the resume on, not the fetch.
            assert ingest.totals["readings"] + ingest.pending["readings"] == 2 or not ingest.caught_up()
        assert ingest.paused_at is None
        ingest.flush()
        stored = WindowAggregate.objects.get(household="paused-0")
        assert (stored.readings, stored.average_w) == (2, 2.0) and ingest.totals["late"] == 0
    finally:
        ingest.close()


@pytest.mark.django_db(transaction=True)
def test_it_closes_no_live_window_before_it_reads_what_came_while_the_merge_paused_a_partition(
        kafka_client, kafka_bootstrap, topic):
    """Unkeyed input: the merge pauses a partition that runs far ahead of the others and resumes it once they
    have caught up. Its watermark froze meanwhile, as under the budget."""
    from kafka import KafkaProducer

    from edge_app.models import WindowAggregate

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")

    def send(stamp, power):
        producer.send(topic, json.dumps({"node_id": "n-0", "power_value": power}).encode(), partition=0,
                      timestamp_ms=stamp)
        producer.flush()

    ingest = connected_ingestor("edge-merge-paused", topic, kafka_bootstrap, client=kafka_client, legacy=True)
    try:
        now = int(time.time() * 1000)
        start = now - now % W
        send(now, 1.0)
        deadline = time.monotonic() + 30
        while not (ingest.caught_up() and ingest.book.open_windows()) and time.monotonic() < deadline:
            ingest.handle_one_poll()
        ingest.source.pause([0])
        ingest.merge_paused = {0}  # as the merge pauses a partition far ahead (LEGACY_BUFFER_MAX)
        send(now + 1 if (now + 1) % W else now - 1, 3.0)  # its window, sent while paused
        time.sleep(max(0, (start + W + LIVE_GRACE + 1000) / 1000 - time.time()))  # the window is due
        deadline = time.monotonic() + 30
        while not ingest.book.closed and ingest.book.open_windows() and time.monotonic() < deadline:
            ingest.handle_one_poll(timeout_ms=1)  # the first resumes it; then polls before a fetch is answered
            assert ingest.totals["readings"] + ingest.pending["readings"] == 2 or not ingest.caught_up()
        ingest.flush()
        stored = WindowAggregate.objects.get(household="n-0")
        assert (stored.readings, stored.average_w) == (2, 2.0) and ingest.totals["late"] == 0
    finally:
        ingest.close()
        producer.close()
