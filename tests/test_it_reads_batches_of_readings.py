"""Readings in batches (`{"readings": [[household, ts, power_w], ...]}`, the simulation's default) and one a
message are the same readings to the edge: the same windows, a bad reading set aside on its own."""

import json
import time
import zlib

import pytest
from kafka import KafkaConsumer, TopicPartition

from edge_app.ingest import Ingestor
from edge_app.models import EdgeStatus, WindowAggregate
from edge_app.readings import MalformedReading, parse_message
from fogwire.limits import (
    EARLIEST_MS, FUTURE_SLACK_MS, MAX_HOUSEHOLD_ID, MAX_MESSAGE_BYTES, MAX_POWER_W, MAX_READING_BYTES,
    MAX_READINGS_PER_MESSAGE,
)
from tests.conftest import ingest_to_end, make_topic, produce, read_to_end, reading, run_manage

T0 = 1_577_142_000_000


def _batch(*readings):
    """One key for every batch: a household's readings stay in one partition, as the simulation keeps them."""
    return "batches", json.dumps({"readings": [list(r) for r in readings]}).encode()


def _windows():
    return sorted(WindowAggregate.objects.values_list("household", "window_start", "average_w", "readings"))


@pytest.mark.edge_db
@pytest.mark.django_db(transaction=True)
def test_it_keeps_the_rest_of_a_batch_around_a_bad_reading(kafka_bootstrap, topic, caplog):
    produce(kafka_bootstrap, topic, [
        _batch(("a", T0, 100.0), ("b", T0, 10.0), ("a", T0 + 2000, "300"), ("a", T0 + 4000, 300.0)),
        ("batches", reading("b", T0 + 2000, 30.0)[1]),  # a single reading between batches
        _batch(("b", T0 + 5000, 50.0), [7, T0, 1.0], ("a", T0 + 5000, 500.0)),
    ])

    ingest = ingest_to_end(kafka_bootstrap, topic)

    assert _windows() == [("a", T0, 200.0, 2), ("a", T0 + 5000, 500.0, 1), ("b", T0, 20.0, 2),
                          ("b", T0 + 5000, 50.0, 1)]
    assert ingest.totals["malformed"] == 2 and ingest.totals["readings"] == 6
    assert EdgeStatus.objects.get(edge_id="edge-test").malformed == 2
    said = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert any("offset 0, reading 2 of its batch: 'power_w' must be a number" in line for line in said), said
    assert any("offset 2, reading 1 of its batch: household id must be" in line for line in said), said


@pytest.mark.edge_db
@pytest.mark.django_db(transaction=True)
def test_it_counts_a_replayed_batch_once(kafka_bootstrap, topic):
    """A restart replays from the oldest offset an open window needs: a batch read twice counts once."""
    produce(kafka_bootstrap, topic, [_batch(("a", T0, 100.0), ("b", T0 + 9000, 1.0)),
                                     _batch(("a", T0 + 12000, 300.0), ("b", T0 + 10500, 3.0))])
    first = read_to_end(Ingestor(edge_id="edge-test", topic=topic, bootstrap=kafka_bootstrap, window_seconds=5,
                                 grace_seconds=2, idle_seconds=60, live_windows=False))
    first.flush()
    first.close()
    assert _windows() == [("a", T0, 100.0, 1)]  # b's [5, 10) s is open: the first batch is needed again
    [partition] = [p for p, offset in first.next_offsets.items() if offset == 2]
    assert first.needed_offsets()[partition] == 0
    again = ingest_to_end(kafka_bootstrap, topic)

    assert _windows() == [("a", T0, 100.0, 1), ("a", T0 + 10000, 300.0, 1), ("b", T0 + 5000, 1.0, 1),
                          ("b", T0 + 10000, 3.0, 1)]
    assert first.totals["readings"] + again.totals["readings"] == 4
    assert EdgeStatus.objects.get(edge_id="edge-test").readings == 4


@pytest.mark.edge_db
@pytest.mark.django_db(transaction=True)
def test_it_makes_the_same_windows_of_batches_as_of_single_readings(kafka_bootstrap, topic):
    single, batched = f"{topic}-single", f"{topic}-batched"
    for name, per_message in ((single, "1"), (batched, str(MAX_READINGS_PER_MESSAGE))):
        make_topic(kafka_bootstrap, name, partitions=4)
        result = run_manage("runsimulation", "--households", "1500", "--until", "20", "--topic", name,
                            "--bootstrap", kafka_bootstrap, "--readings-per-message", per_message)
        assert result.returncode == 0, result.stderr
        assert "sent=15000 failed=0" in result.stdout

    ingest_to_end(kafka_bootstrap, single, edge_id="edge-single")
    from_single = _windows()
    WindowAggregate.objects.all().delete()  # one edge database: the second topic's windows start afresh
    ingest_to_end(kafka_bootstrap, batched, edge_id="edge-batched")

    assert len(from_single) == 1500 * 4 and _windows() == from_single
    assert dict(EdgeStatus.objects.values_list("edge_id", "readings")) == {"edge-single": 15000, "edge-batched": 15000}

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    try:
        partitions = sorted(consumer.partitions_for_topic(batched))
        consumer.assign([TopicPartition(batched, p) for p in partitions])
        consumer.seek_to_beginning()
        seen, sizes, deadline = 0, [], time.monotonic() + 60
        while seen < 15000 and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=5000).items():
                for record in records:
                    readings = json.loads(record.value)["readings"]
                    sizes.append(len(readings))
                    seen += len(readings)
                    assert {zlib.crc32(hh.encode()) % len(partitions) for hh, _, _ in readings} == {tp.partition}
    finally:
        consumer.close()
    assert seen == 15000 and len(partitions) == 4
    assert max(sizes) <= MAX_READINGS_PER_MESSAGE and len(sizes) < 15000 / 100


@pytest.mark.parametrize("raw,problem", [
    (json.dumps({"readings": [["h", T0, 1.0]] * MAX_READINGS_PER_MESSAGE}).encode(), None),
    (json.dumps({"readings": [["h", T0, 1.0]] * (MAX_READINGS_PER_MESSAGE + 1)}).encode(),
     f"more than {MAX_READINGS_PER_MESSAGE}"),
    (b'{"readings": []}', "a batch of no readings"),
    (json.dumps({"household": "h", "ts": T0, "power_w": 1.0, "readings": [["h", T0, 1.0]]}).encode(),
     "both a batch"),
    (b'{"household": "h", "ts": 1577142000000, "power_w": 1.0, "pad": "' + b"x" * MAX_READING_BYTES + b'"}',
     f"more than a reading's {MAX_READING_BYTES}"),
    (b"{" * (MAX_READING_BYTES + 1), f"more than a reading's {MAX_READING_BYTES}"),  # no batch: refused unparsed
    (json.dumps({"readings": [["h", T0, 1.0]], "pad": "x" * MAX_MESSAGE_BYTES}).encode(), "more than a message's"),
])
def test_it_bounds_a_batch_by_its_readings_and_its_bytes(raw, problem):
    if problem is None:
        readings, problems = parse_message(raw, T0)
        assert len(readings) == MAX_READINGS_PER_MESSAGE and problems == []
    else:
        with pytest.raises(MalformedReading, match=problem):
            parse_message(raw, T0)


# Field values as JSON text, each at or just past a bound the edge checks (fogwire.limits), or of a type it refuses.
HOUSEHOLDS = [b'"h1"', b'""', b'".."', b'"a.b"', b'"%s"' % (b"x" * MAX_HOUSEHOLD_ID), b'"%s"' % (b"x" * (MAX_HOUSEHOLD_ID + 1)),
              b'"h\\u00fc"', b'"h 1"', b"5", b"null", b"true", b'["h1"]']
TIMES = [b"%d" % T0, b"%d" % EARLIEST_MS, b"%d" % (EARLIEST_MS - 1), b"%d" % (T0 + FUTURE_SLACK_MS),
         b"%d" % (T0 + FUTURE_SLACK_MS + 1), b"-1", b"true", b"%d.0" % T0, b'"%d"' % T0, b"null"]
POWERS = [b"0", b"0.0", b"-0.0", b"-1e-300", b"5", b"123.25", b"%d" % MAX_POWER_W, b"%d.0" % MAX_POWER_W,
          b"%d.000001" % MAX_POWER_W, b"%d" % (MAX_POWER_W + 1), b"1e400", b"-1e400", b"NaN", b"Infinity",
          b"-Infinity", b"true", b"false", b'"5"', b"null", b"1" + b"0" * 29]


def _alone(household, ts, power):
    try:
        return parse_message(b'{"household": %s, "ts": %s, "power_w": %s}' % (household, ts, power), T0)[0]
    except MalformedReading:
        return []


def test_it_takes_a_reading_from_a_batch_exactly_when_it_takes_it_alone():
    """Whatever its fields, a reading in a batch is taken, with the same value, exactly when it would be taken
    sent alone, and the readings beside it are kept: a batch's readings are checked by a quicker path."""
    cases = [(h, t, p) for h in HOUSEHOLDS for t in TIMES[:2] for p in POWERS[:6]]
    cases += [(HOUSEHOLDS[0], t, p) for t in TIMES for p in POWERS]
    for household, ts, power in cases:
        raw = b'{"readings": [["ok", %d, 1], [%s, %s, %s], ["ok", %d, 2]]}' % (T0, household, ts, power, T0 + 1)
        readings, problems = parse_message(raw, T0)
        alone = _alone(household, ts, power)
        assert readings == [("ok", T0, 1.0), *alone, ("ok", T0 + 1, 2.0)], (household, ts, power)
        assert [type(value) for reading in readings for value in reading] == [str, int, float] * len(readings)
        assert [place for place, _ in problems] == ([] if alone else [1]), (household, ts, power, problems)
    for item in (b"[]", b'["h1", %d]' % T0, b'["h1", %d, 1, 2]' % T0, b'{"household": "h1"}', b'"h1"', b"null"):
        readings, problems = parse_message(b'{"readings": [%s, ["ok", %d, 1]]}' % (item, T0), T0)
        assert readings == [("ok", T0, 1.0)] and [place for place, _ in problems] == [0], item


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_it_keeps_the_rest_of_a_batch_around_a_household_id_that_is_not_utf8(bom):
    """A Latin-1 id (a meter named in a legacy encoding) in one reading set its whole batch aside, uncounted."""
    raw = bom + b'{"readings": [["h1", %d, 5], ["M\xfcller", %d, 1], ["h3", %d, 2]]}' % (T0, T0, T0)
    readings, problems = parse_message(raw, T0)
    assert readings == [("h1", T0, 5.0), ("h3", T0, 2.0)]
    assert [place for place, _ in problems] == [1] and problems[0][1].startswith("household id must be")
    with pytest.raises(MalformedReading, match="not JSON"):  # such a byte outside a string: no JSON at all
        parse_message(b'{"readings": [["h1", %d, 5]]}\xfc' % T0, T0)


@pytest.mark.parametrize("digits", [400, 5000])  # past a float's range (orjson refuses it), past json's int limit
def test_it_keeps_the_rest_of_a_batch_around_an_integer_of_thousands_of_digits(digits):
    raw = b'{"readings": [["h1", %d, 5], ["h2", %s, 1], ["h3", %d, %s]]}' % (T0, b"9" * digits, T0, b"7" * digits)
    readings, problems = parse_message(raw, T0)
    assert readings == [("h1", T0, 5.0)]
    assert problems == [(1, f"'ts' must be an integer (epoch ms), got an integer of {digits} digits"),
                        (2, f"'power_w' must be a number, got an integer of {digits} digits")]
    # Nor as a household id, whichever parser reads it (a BOM sends a message to the second).
    for raw in (b'{"readings": [[%s, %d, 5]]}' % (b"1" * digits, T0), b'\xef\xbb\xbf{"readings": [[%s, %d, 5]]}' % (
            b"1" * digits, T0), b'\xef\xbb\xbf{"readings": [[-%s, %d, 5]]}' % (b"1" * 25, T0)):
        readings, problems = parse_message(raw, T0)
        assert readings == [] and problems[0][1].startswith("household id must be"), problems
    with pytest.raises(MalformedReading, match=f"must be a list of .*, got an integer of {digits} digits"):
        parse_message(b'{"readings": %s}' % (b"1" * digits), T0)


@pytest.mark.edge_db
@pytest.mark.django_db(transaction=True)
def test_it_keeps_what_a_poll_brought_beyond_its_room_for_the_next(kafka_bootstrap, topic):
    """Near the disk budget a poll may apply only so many readings: batches beyond that wait, in order, and the
    windows do not close by a clock that passed readings still waiting."""
    households = [f"h{i}" for i in range(MAX_READINGS_PER_MESSAGE)]
    for step in range(3):  # each batch stamped later than the one before
        produce(kafka_bootstrap, topic, [_batch(*[(h, T0 + step * 2000, 10.0 * step) for h in households])])
        time.sleep(0.05)
    ingest = Ingestor(edge_id="edge-test", topic=topic, bootstrap=kafka_bootstrap, window_seconds=5,
                      grace_seconds=2, idle_seconds=60)
    ingest.connect()
    ingest.set_budget(1500, 100)  # room for 1500 readings: two batches (the second applied whole), not three
    ingest.per_message = 1  # as if the last poll had seen single readings: this one asks for many messages
    end = ingest.end_offsets()
    [partition] = [p for p, offset in end.items() if offset]
    poll = ingest.source.poll

    def all_three(timeout_ms, max_records):  # however Kafka's fetches split them, one poll brings all three
        came, deadline = [], time.monotonic() + 30
        while len(came) < 3 and time.monotonic() < deadline:
            came += poll(timeout_ms, max_records).get(partition, [])
        ingest.source.poll = poll
        return {partition: came}

    ingest.source.poll = all_three
    ingest.handle_one_poll()
    assert ingest.next_offsets[partition] == 2 and [m[0] for m in ingest.carry[partition]] == [2]
    # The clock of live windows stops at the last batch applied, not at the one read and carried.
    assert ingest.read_clock() == ingest.applied_times[partition] < ingest.source.read_times[partition]
    while not ingest.at_end(end):
        ingest.handle_one_poll()
    ingest.finish()
    ingest.close()

    assert not ingest.carry and ingest.totals["readings"] == 3 * len(households)
    assert set(WindowAggregate.objects.values_list("average_w", "readings")) == {(10.0, 3)}
    assert WindowAggregate.objects.count() == len(households)
