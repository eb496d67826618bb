"""Finding 6: no Kafka message can stop ingest, one far-ahead reading does not make its household's genuine
readings late, huge powers never make an infinite average, a burst run with a refused tuple ends, and
silent households leave memory with resume positions still exact."""

import json
import re
import time

import pytest

from cloud_app.keys import Keys
from edge_app.ingest import Ingestor
from edge_app.readings import MalformedReading, parse_reading
from edge_app.models import IngestPosition, WindowAggregate
from edge_app.windows import APPLIED, DUPLICATE, LATE, LIVE_BACKSTOP_IDLES, MAX_JUMP_MS, WindowBook
from fogwire.ratelog import RateLimitedLog
from tests.conftest import (EDGE_SECRET, CloudThread, child_env, edge_db, ingest_to_end, produce, reading,
                            read_to_end, run_manage, store_through_cloud)

T0 = 1_577_142_000_000
HOUR = 3_600_000


@pytest.mark.django_db(transaction=True)
def test_it_skips_200000_brackets_and_reads_on(kafka_client, kafka_bootstrap, topic):
    produce(kafka_bootstrap, topic, [reading("h", T0, 100.0), ("h", b"[" * 200_000), reading("h", T0 + 1000, 300.0)])
    for run in range(2):  # and again from the same offsets, as a restarted edge would
        IngestPosition.objects.all().delete()
        ingest = ingest_to_end(kafka_bootstrap, topic, edge_id=f"edge-poison-{run}")
        assert ingest.totals["malformed"] == 1 and ingest.totals["readings"] == 2
    assert list(WindowAggregate.objects.values_list("average_w", "readings")) == [(200.0, 2)]


@pytest.mark.parametrize("raw, says", [
    (b"[" * 4000, "not JSON (RecursionError)"),  # under the size cap, over the parser's recursion limit
    (b"{" * 5000, "more than a reading's"),
    (json.dumps({"household": "h", "ts": T0, "power_w": 10 ** 400}).encode(), "got an integer of 401 digits"),
    (b'{"household": "h", "ts": 1577142000000, "power_w": NaN}', "is not finite"),  # JSON to Python only
    (None, "tombstone"),
])
def test_it_makes_any_parsing_failure_a_malformed_reading(raw, says):
    with pytest.raises(MalformedReading, match=re.escape(says)):
        parse_reading(raw, T0)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32"])
def test_it_reads_a_reading_that_orjson_refuses_but_json_reads(encoding):
    text = json.dumps({"household": "h", "ts": T0, "power_w": 12.5})
    assert parse_reading(text.encode(encoding), T0) == ("h", T0, 12.5)


def test_it_logs_malformed_readings_without_flooding(caplog):
    clock = [0.0]
    limited = RateLimitedLog(__import__("logging").getLogger("fog.test"), lines=3, seconds=60, clock=lambda: clock[0])
    with caplog.at_level("WARNING", logger="fog.test"):
        for i in range(1000):
            limited.warning("bad %d", i)
        clock[0] = 61.0
        limited.warning("bad again")
        for i in range(4):
            limited.warning("late %d", i)
        clock[0] = 122.0
        limited.flush()  # the flood stopped: told without a further warning
        limited.flush()
    assert [r.getMessage() for r in caplog.records] == ["bad 0", "bad 1", "bad 2",
                                                         "... and 997 more like it within 60 s", "bad again",
                                                         "late 0", "late 1", "... and 2 more like it within 60 s"]


@pytest.mark.django_db(transaction=True)
def test_it_accepts_the_genuine_readings_after_one_far_ahead(kafka_client, kafka_bootstrap, topic):
    messages = [reading("h", T0 + i * 1000, 100.0) for i in range(10)]
    messages.append(reading("h", T0 + 23 * HOUR, 5000.0))  # a wrong clock
    messages += [reading("h", T0 + (10 + i) * 1000, 200.0) for i in range(100)]
    produce(kafka_bootstrap, topic, messages)
    ingest = ingest_to_end(kafka_bootstrap, topic, edge_id="edge-ahead")
    assert (ingest.totals["readings"], ingest.totals["late"]) == (111, 0)
    stored = dict(WindowAggregate.objects.values_list("window_start", "readings"))
    assert sum(stored.values()) == 111 and stored[T0 + 23 * HOUR] == 1
    assert stored[T0 + 10_000] == 5  # genuine readings after the stray one, windowed as usual


def test_it_believes_a_jump_two_readings_agree_on():
    book = WindowBook(5000, 2000, 60)
    for i in range(10):
        book.add("h", T0 + i * 1000, 1.0, 0, i, 0.0)
    jump = T0 + MAX_JUMP_MS + HOUR  # the meter was off for an hour
    assert book.add("h", jump, 1.0, 0, 10, 0.0) and book.add("h", jump + 1000, 1.0, 0, 11, 0.0)
    assert not book.add("h", T0 + 10_000, 1.0, 0, 12, 0.0)  # now old readings are late
    assert {w.start for w in book.take_closed()} == {T0, T0 + 5000}


def test_it_takes_a_households_genuine_readings_after_a_stray_first_one():
    book = WindowBook(5000, 2000, idle_seconds=10)
    assert book.add("h", T0 + 23 * HOUR, 9.0, 0, 0, 0.0) == APPLIED  # its first reading, 23 h ahead
    added = [book.add("h", T0 + second * 1000, 1.0, 0, second, float(second)) for second in range(1, 31)]
    assert added == [APPLIED] * 30  # not late: the stray one no longer sets the household's clock
    book.close_idle(40.0)
    closed = {(w.start, w.count) for w in book.take_closed()}
    assert (T0 + 23 * HOUR, 1) in closed and (T0 + 5000, 5) in closed and (T0 + 20_000, 5) in closed
    assert book.add("h", T0 + 3000, 1.0, 0, 99, 41.0) == LATE  # its clock is the genuine one's now


def test_it_takes_genuine_readings_after_a_stray_first_one_that_came_twice():
    book = WindowBook(5000, 2000, idle_seconds=10)
    book.add("h", T0 + 5 * HOUR, 9.0, 0, 0, 0.0)
    assert book.add("h", T0 + 5 * HOUR, 9.0, 1, 0, 0.0) == DUPLICATE  # a copy confirms nothing
    assert [book.add("h", T0 + second * 1000, 1.0, 0, second, 0.0) for second in range(1, 11)] == [APPLIED] * 10


def test_it_keeps_a_live_households_clock_against_a_stray_reading_far_behind():
    now = T0 + 24 * HOUR  # the edge's clock: the first reading comes at about its own time
    book = WindowBook(5000, 2000, idle_seconds=10)
    assert book.add("h", now, 1.0, 0, 0, 0.0, now + 300) == APPLIED
    assert book.add("h", now - 2 * HOUR, 9999.0, 0, 1, 0.0, now + 1300) == LATE  # the stray one, not the meter
    assert book.add("h", now + 2000, 1.0, 0, 2, 0.0, now + 2300) == APPLIED


def test_it_keeps_a_live_households_clock_against_one_reading_minutes_ahead():
    # Within MAX_JUMP_MS of the household's clock, but five minutes ahead of the edge's own: a wrong clock.
    now = T0 + 24 * HOUR  # the edge's clock when the first reading comes, 0.3 s after its time
    book = WindowBook(5000, 2000, idle_seconds=10, live_grace_ms=1000)
    assert [book.add("h", now + s * 1000, 1.0, 0, s, float(s), now + s * 1000 + 300) for s in range(10)] == [APPLIED] * 10
    assert book.add("h", now + 310_000, 9999.0, 0, 10, 10.0, now + 10_300) == APPLIED  # in a window of its own
    later = [book.add("h", now + s * 1000, 1.0, 0, s + 1, float(s), now + s * 1000 + 300) for s in range(10, 40)]
    assert later == [APPLIED] * 30  # not late: the stray one did not move the household's clock
    assert book.add("h", now + 310_500, 2.0, 0, 41, 40.0, now + 40_300) == APPLIED
    assert book.add("h", now + 311_000, 2.0, 0, 42, 40.5, now + 40_800) == APPLIED  # two in a row: a jump
    assert book.add("h", now + 41_000, 1.0, 0, 43, 41.0, now + 41_300) == LATE  # believed


def test_it_takes_a_live_households_readings_after_a_first_one_minutes_ahead():
    now = T0 + 24 * HOUR
    book = WindowBook(5000, 2000, idle_seconds=10, live_grace_ms=1000)
    assert book.add("h", now + 300_000, 9999.0, 0, 0, 0.0, now + 300) == APPLIED  # its first: five minutes ahead
    later = [book.add("h", now + s * 1000, 1.0, 0, s, float(s), now + s * 1000 + 300) for s in range(1, 30)]
    assert later == [APPLIED] * 29  # the genuine ones, live, set the clock


def test_it_closes_a_stray_window_and_forgets_silent_households():
    book = WindowBook(5000, 2000, idle_seconds=10)
    book.add("steady", T0, 1.0, 0, 0, 0.0)
    book.add("steady", T0 + 23 * HOUR, 9.0, 0, 1, 0.0)  # stray
    book.add("gone", T0, 1.0, 0, 2, 0.0)
    for second in range(1, 100):
        book.add("steady", T0 + second * 1000, 1.0, 0, 2 + second, float(second))
        book.close_idle(float(second))
    assert set(book.households) == {"steady"}  # "gone" left memory
    stray = [w for w in book.take_closed() if w.start == T0 + 23 * HOUR]
    assert [(w.household, w.average) for w in stray] == [("steady", 9.0)]  # closed by the idle timeout
    assert book.resume_offsets({0: 200}) == {0: 2 + 95}  # the open window's first reading, not the stray one's


@pytest.mark.django_db(transaction=True)
def test_it_resumes_exactly_after_forgetting_silent_households(kafka_client, kafka_bootstrap, topic):
    # 40 households speak once early and fall silent; one speaks throughout. The edge stops halfway,
    # having forgotten the silent ones, and a new one resumes from the stored positions.
    early = [reading(f"early-{h}", T0 + h, 10.0 + h) for h in range(40)]
    steady = [reading("steady", T0 + i * 1000, float(i)) for i in range(60)]
    produce(kafka_bootstrap, topic, early + steady[:30])
    first = read_to_end(Ingestor(edge_id="edge-evict", topic=topic, bootstrap=kafka_bootstrap, window_seconds=5,
                                 grace_seconds=2, idle_seconds=60))
    for household, state in first.book.households.items():
        if household.startswith("early"):
            state.last_seen -= 3600  # they fell silent an hour ago (wall clock)
    first.book.close_idle(time.monotonic())
    first.flush()
    assert set(first.book.households) == {"steady"} and first.book.open_windows() == 1
    first.close()  # a stop without finish(): the open window is replayed by the next run

    produce(kafka_bootstrap, topic, steady[30:])
    ingest_to_end(kafka_bootstrap, topic, edge_id="edge-evict")
    stored = sorted(WindowAggregate.objects.values_list("household", "window_start", "readings", "average_w"))
    expected = sorted([(f"early-{h}", T0, 1, 10.0 + h) for h in range(40)]
                      + [("steady", T0 + w * 5000, 5, float(sum(range(w * 5, w * 5 + 5))) / 5) for w in range(12)])
    assert stored == expected


def test_it_ends_a_burst_run_with_a_tuple_the_cloud_refuses_for_good(kafka_client, kafka_bootstrap, topic, edge_env, redis_url,
                                                                    cloud_prefix, redis_client):
    produce(kafka_bootstrap, topic, [reading(f"h{h}", T0 + i * 1000, 50.0) for i in range(10) for h in range(3)])
    cloud = CloudThread(redis_url, cloud_prefix, {edge_env["FOG_EDGE_ID"]: EDGE_SECRET, "edge-first": EDGE_SECRET})
    cloud.start()
    edge_env["FOG_HEARTBEAT_PORT"], edge_env["FOG_DATA_PORT"] = (a.rsplit(":", 1)[1] for a in (cloud.hb_addr,
                                                                                             cloud.data_addr))
    try:
        store_through_cloud(cloud, [(1, "h1", T0 - 5000, T0, 1.0, 1)], edge="edge-first")  # h1 is another edge's
        result = run_manage("runedge", "--burst", "--timeout", "90", "--topic", topic, "-v", "0",
                            env=child_env(edge_env), timeout=150)
    finally:
        cloud.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"lifetime: .*acked=4 pending=0 refused=2$", result.stdout.strip()), result.stdout
    with edge_db(edge_env) as db:
        assert db.execute("select distinct household, refusal from edge_app_windowaggregate where status = 3"
                          ).fetchall() == [("h1", "household-of-another-edge")]
    assert redis_client.hlen(Keys(cloud_prefix).tuples(edge_env["FOG_EDGE_ID"])) == 4


@pytest.mark.django_db(transaction=True)
def test_it_takes_no_reading_of_an_aborted_transaction_with_either_client(kafka_client, kafka_bootstrap, topic):
    """A producer that aborts its transaction has its records in the log all the same: read uncommitted (as
    kafka-python did by default) they were windowed and counted, where confluent-kafka never saw them."""
    from confluent_kafka import Producer

    for transaction, (household, power, commit) in enumerate([("aborted", 40_000.0, False), ("kept", 100.0, True)]):
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"{topic}-{transaction}"})
        producer.init_transactions(30)
        producer.begin_transaction()
        for i in range(10):
            producer.produce(topic, key=household.encode(), value=reading(household, T0 + i * 1000, power)[1],
                             partition=0)
        producer.flush(30)
        (producer.commit_transaction if commit else producer.abort_transaction)(30)
    ingest = Ingestor(edge_id="edge-test", topic=topic, bootstrap=kafka_bootstrap, window_seconds=5, grace_seconds=2,
                      idle_seconds=600)
    ingest.connect()
    try:
        deadline = time.monotonic() + 20
        while ingest.totals["readings"] + ingest.pending["readings"] < 10 and time.monotonic() < deadline:
            ingest.handle_one_poll()
        for _ in range(5):  # anything after them too
            ingest.handle_one_poll(timeout_ms=100)
        ingest.finish()
    finally:
        ingest.close()
    assert set(WindowAggregate.objects.values_list("household", flat=True)) == {"kept"}
    assert ingest.totals["readings"] == 10


def test_it_keeps_a_window_the_idle_timeout_stored_closed_when_its_first_reading_proves_the_stray():
    book = WindowBook(5000, 2000, idle_seconds=10)
    assert book.add("h", T0, 10.0, 0, 0, 0.0) == APPLIED
    book.close_idle(11.0)
    assert [(w.start, w.count) for w in book.take_closed()] == [(T0, 1)]  # stored
    assert book.add("h", T0 - 11 * 60_000, 5.0, 0, 1, 11.5) == APPLIED  # far behind: the first was the stray
    assert book.add("h", T0 + 200, 20.0, 0, 2, 12.0) == LATE  # its window is stored: late, not a second copy
    book.close_all()
    assert [w.start for w in book.take_closed()] == [T0 - 11 * 60_000]  # the genuine reading's alone


def test_it_keeps_a_window_closed_after_a_jump_two_readings_agreed_on():
    book = WindowBook(5000, 2000, idle_seconds=10)
    book.add("h", T0, 10.0, 0, 0, 0.0)
    jump = T0 + 20 * 60_000
    assert book.add("h", jump, 1.0, 0, 1, 1.0) == APPLIED and book.add("h", jump + 1000, 1.0, 0, 2, 2.0) == APPLIED
    assert [w.start for w in book.take_closed()] == [T0]  # the clock jumped: the window before it closed
    assert book.add("h", T0 + 300, 30.0, 0, 3, 3.0) == LATE  # not taken for a stray first reading: late
    book.close_all()
    assert T0 not in [w.start for w in book.take_closed()]


def test_it_keeps_a_live_window_open_for_a_meter_that_reads_less_often_than_the_idle_timeout():
    """A minute's window of a meter reading every 12 s, idle timeout 10 s: closed between two readings, the
    rest of its readings were late. A live window closes by its household's clock instead."""
    window, now = 60_000, T0 + 24 * HOUR
    book = WindowBook(window, 2000, idle_seconds=10, live_grace_ms=1000)
    added = []
    for tick in range(0, window + 1, 2500):  # the ingest's idle checks and live closing, every 2.5 s
        if tick % 12_000 < 2500 and tick < window:
            reading_ms = now + tick // 12_000 * 12_000
            added.append(book.add("h", reading_ms, 100.0, 0, len(added), tick / 1000, reading_ms + 300))
        book.close_idle(tick / 1000)
        book.close_live(now + tick)
    assert added == [APPLIED] * 5 and book.take_closed() == []  # open to its end, its household silent for 12 s
    book.close_live(now + window + 1000 + 300)
    assert [(w.start, w.count) for w in book.take_closed()] == [(now - now % window, 5)]


def test_it_closes_a_live_window_by_the_idle_timeout_once_it_has_ended_when_nothing_else_does():
    """close_live waits for the consumer's read clock: one that stands still (a partition that never catches
    up) must not keep a window open for good."""
    now = T0 + 24 * HOUR  # aligned to the window
    book = WindowBook(5000, 2000, idle_seconds=10, live_grace_ms=1000)
    assert book.add("h", now, 1.0, 0, 0, 0.0, now + 300) == APPLIED
    backstop = 6 + 10 * LIVE_BACKSTOP_IDLES  # its end and live grace, 6 s after its reading, and the idle timeouts
    book.close_idle(backstop - 0.1)
    assert book.take_closed() == []
    book.close_idle(backstop + 0.1)
    assert [(w.start, w.count) for w in book.take_closed()] == [(now, 1)]


def test_it_takes_the_readings_a_stalled_loop_held_up_in_kafka():
    """The loop stalled 16 s (a slow commit, a pause of the machine): the live windows' readings of meanwhile
    wait in Kafka, and are read after it, each in time for its window, not late."""
    now = T0 + 24 * HOUR
    book = WindowBook(5000, 2000, idle_seconds=10, live_grace_ms=1000)
    assert [book.add("h", now + s * 1000, 1.0, 0, s, float(s), now + s * 1000 + 300) for s in range(3)] == [APPLIED] * 3
    book.close_idle(18.0)  # the first check after the stall; close_live waits for the read clock
    assert book.take_closed() == []
    held = [book.add("h", now + s * 1000, 1.0, 0, s, 18.0, now + 18_000) for s in range(3, 8)]
    assert held == [APPLIED] * 5


def test_it_counts_a_pause_for_the_budget_out_of_a_live_windows_idle_timeout():
    now = T0 + 24 * HOUR
    book = WindowBook(5000, 2000, idle_seconds=10, live_grace_ms=1000)
    book.add("h", now, 1.0, 0, 0, 0.0, now + 300)
    book.shift_idle(100.0)  # the ingest paused 100 s: the readings of meanwhile are still to be read
    backstop = 100 + 6 + 10 * LIVE_BACKSTOP_IDLES
    book.close_idle(backstop - 0.1)
    assert book.take_closed() == []
    book.close_idle(backstop + 0.1)
    assert [w.start for w in book.take_closed()] == [now]


def test_it_closes_a_window_whose_household_repeats_one_reading_for_ever():
    """A frozen meter (or a producer retrying in a loop) sends the same reading again and again: each copy is a
    duplicate, and its window still closes an idle timeout after the reading it holds, its resume offset freed."""
    book = WindowBook(5000, 2000, idle_seconds=10)
    assert book.add("h", T0, 1.0, 0, 0, 0.0) == APPLIED
    copies = [book.add("h", T0, 1.0, 0, n, n * 5.0) for n in range(1, 4)]  # 5, 10, 15 s later
    assert copies[:1] == [DUPLICATE]
    book.close_idle(10.5)
    assert [(w.start, w.count) for w in book.take_closed()] == [(T0, 1)]
    assert book.open_windows() == 0 and book.resume_offsets({0: 4}) == {0: 4}


def test_it_drops_the_timetable_entries_of_live_windows_closed_while_the_read_clock_stands_still(monkeypatch):
    from edge_app import windows

    monkeypatch.setattr(windows, "STALE_LIVE_MIN", 20)
    now = T0 + 24 * HOUR
    book = WindowBook(5000, 2000, idle_seconds=10, live_grace_ms=500)
    for second in range(600):  # ten minutes, a reading a second from each of three households
        for household in ("a", "b", "c"):
            book.add(household, now + second * 1000, 1.0, 0, second, float(second), now + second * 1000 + 100)
        book.close_live(now + second * 1000, read_ms=-1)  # a partition that never catches up
        book.close_idle(float(second))
    assert len(book.take_closed()) >= 3 * 115  # closed by their households' clocks
    assert book.live_entries <= 2 * (windows.STALE_LIVE_MIN + book.open_windows()) + 3
    assert book.live_entries == sum(len(entries) for entries in book.live_due.values())
    book.close_live(now + 600_000, read_ms=None)  # caught up at last: what is left closes as before
    assert book.open_windows() == 3 and all(w.count for w in book.take_closed())
