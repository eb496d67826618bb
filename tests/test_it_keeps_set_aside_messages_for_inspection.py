"""A malformed Kafka message is not only counted: the edge keeps it (where it is, what is wrong with it, how it
begins) in its database for an operator, once however often a restart replays it, and never more than a bounded
number, whatever a flood of them."""

import json
import logging
from pathlib import Path

import pytest
from django.utils import timezone

import edge_app.ingest
import edge_app.models
from edge_app.ingest import Ingestor
from edge_app.models import EdgeStatus, IngestPosition, SetAsideMessage, WindowAggregate
from fogwire.limits import MAX_MESSAGE_BYTES
from tests.conftest import ingest_to_end, produce, read_to_end, reading
from tests.corpus import BATCH_READINGS, KAFKA_MESSAGES

T0 = 1_577_142_000_000


def _kept():
    return list(SetAsideMessage.objects.order_by("offset").values_list("offset", "readings", "problem", "value",
                                                                         "value_bytes"))


@pytest.mark.edge_db
@pytest.mark.django_db(transaction=True)
def test_it_keeps_each_malformed_message_with_where_and_why(kafka_bootstrap, topic):
    bad_batch = json.dumps({"readings": [["h", T0 + 1000, 100.0], *BATCH_READINGS.values()]}).encode()
    huge = KAFKA_MESSAGES["batch larger than any message"]
    produce(kafka_bootstrap, topic, [
        reading("h", T0, 300.0),
        ("h", b"power=12"),
        ("h", bad_batch),
        ("h", None),
        ("h", huge),
    ])

    ingest_to_end(kafka_bootstrap, topic)

    assert list(WindowAggregate.objects.values_list("average_w", "readings")) == [(200.0, 2)]  # the good ones
    [(o1, whole1, problem1, value1, size1), (o2, batch, problem2, value2, size2), (o3, whole3, problem3, value3, size3),
     (o4, whole4, problem4, value4, size4)] = _kept()
    assert (o1, whole1, bytes(value1), size1) == (1, None, b"power=12", 8)
    assert problem1 == "not JSON (JSONDecodeError)"
    assert (o2, batch, size2) == (2, len(BATCH_READINGS), len(bad_batch))
    assert bytes(value2) == bad_batch[:edge_app.models.SET_ASIDE_VALUE_BYTES]
    assert problem2.startswith("reading 1: not a [household, ts, power_w] list; reading 2: ")
    assert problem2.endswith(f"; and {len(BATCH_READINGS) - edge_app.ingest.SET_ASIDE_PROBLEMS_SAID} more")
    assert (o3, whole3, value3, size3) == (3, None, None, None) and "tombstone" in problem3
    assert (o4, whole4, size4) == (4, None, len(huge)) and len(value4) == edge_app.models.SET_ASIDE_VALUE_BYTES
    assert f"more than a message's {MAX_MESSAGE_BYTES}" in problem4
    assert EdgeStatus.objects.get(edge_id="edge-test").malformed == 3 + len(BATCH_READINGS)


@pytest.mark.edge_db
@pytest.mark.django_db(transaction=True)
def test_it_says_how_many_more_problems_a_batch_had_however_long_those_it_says(kafka_bootstrap, topic):
    """Each of these readings' problems says the node's clock: five of them fill the column, and the count of the
    rest, cut off before, is what tells an operator how much of the batch was bad."""
    far = 4_102_444_800_000  # 2100-01-01: past any clock's now + slack
    bad = [["h", far + i, 100.0] for i in range(edge_app.ingest.SET_ASIDE_PROBLEMS_SAID + 3)]
    produce(kafka_bootstrap, topic, [("h", json.dumps({"readings": [["h", T0, 100.0], *bad]}).encode())])

    ingest_to_end(kafka_bootstrap, topic)

    [(_, readings, problem, _, _)] = _kept()
    assert readings == len(bad)
    assert problem.startswith("reading 1: time ") and "by this node's clock" in problem
    assert problem.endswith("…; and 3 more") and len(problem) == edge_app.models.SET_ASIDE_PROBLEM_CHARS


@pytest.mark.edge_db
@pytest.mark.django_db(transaction=True)
def test_it_keeps_a_replayed_message_once(kafka_bootstrap, topic):
    """A restart reads again from the oldest open window's offset: what it already set aside is not kept twice."""
    produce(kafka_bootstrap, topic, [reading("h", T0, 100.0), ("h", b"power=12"), reading("h", T0 + 1000, 300.0)])
    first = read_to_end(Ingestor(edge_id="edge-test", topic=topic, bootstrap=kafka_bootstrap, window_seconds=5,
                                 grace_seconds=2, idle_seconds=60, live_windows=False))
    first.flush()
    first.close()
    assert [p.resume_offset for p in IngestPosition.objects.all() if p.counted_offset == 3] == [0]  # open window

    ingest_to_end(kafka_bootstrap, topic)

    assert [row[:2] for row in _kept()] == [(1, None)]
    assert list(WindowAggregate.objects.values_list("average_w", "readings")) == [(200.0, 2)]


@pytest.mark.edge_db
@pytest.mark.django_db(transaction=True)
def test_it_keeps_a_bounded_number_of_a_flood(kafka_bootstrap, topic, monkeypatch, caplog):
    monkeypatch.setattr(edge_app.ingest, "FLUSH_EVERY_SECONDS", 3600)  # the test says when a flush comes
    monkeypatch.setattr(edge_app.ingest, "SET_ASIDE_PER_FLUSH", 4)
    monkeypatch.setattr(edge_app.models, "SET_ASIDE_KEEP", 6)
    caplog.set_level(logging.WARNING, logger="fog.edge.ingest")
    ingest = Ingestor(edge_id="edge-test", topic=topic, bootstrap=kafka_bootstrap, window_seconds=5,
                      grace_seconds=2, idle_seconds=60)
    for flood in range(2):
        produce(kafka_bootstrap, topic, [("h", f"bad {flood * 10 + n}".encode()) for n in range(10)])
        if not flood:
            ingest.connect()
        end = ingest.end_offsets()
        while not ingest.at_end(end):
            ingest.handle_one_poll()
        ingest.flush()
    ingest.close()

    # A flush kept the first 4 it read (offsets 0-3, then 10-13), the table the newest 6 of those.
    assert [(offset, bytes(value)) for offset, _, _, value, _ in _kept()] == [
        (n, f"bad {n}".encode()) for n in (2, 3, 10, 11, 12, 13)]
    assert caplog.text.count("6 more malformed messages than the 4 a flush kept") == 2
    assert EdgeStatus.objects.get(edge_id="edge-test").malformed == 20  # every one counted, kept or not


@pytest.mark.edge_db
def test_it_shows_set_aside_messages_in_the_admin(admin_client):
    now = timezone.now()
    SetAsideMessage.keep("edge-1", [
        SetAsideMessage(edge_id="edge-1", topic="readings", partition=3, offset=41, readings=None,
                        problem="not JSON (JSONDecodeError)", value=b"<b>\xff power", value_bytes=5000, seen_at=now),
        SetAsideMessage(edge_id="edge-1", topic="readings", partition=0, offset=7, readings=2,
                        problem="reading 4: power -3.0 is negative", value=b'{"readings": []}', value_bytes=16,
                        seen_at=now),
    ])
    listed = admin_client.get("/admin/edge_app/setasidemessage/").content.decode()
    assert "readings[3] offset 41" in listed and "the whole message" in listed
    assert "readings[0] offset 7" in listed and "2 readings of its batch" in listed
    [first] = SetAsideMessage.objects.filter(offset=41)
    shown = admin_client.get(f"/admin/edge_app/setasidemessage/{first.id}/change/").content.decode()
    assert "&lt;b&gt;\\xff power" in shown and "4,990 bytes more" in shown  # escaped, and said cut
    assert admin_client.get("/admin/edge_app/setasidemessage/add/").status_code == 403


def test_it_says_its_bounds_as_they_are():
    readme = " ".join((Path(__file__).parent.parent / "README.md").read_text().split())
    assert f"its first {edge_app.models.SET_ASIDE_VALUE_BYTES:,} bytes" in readme
    assert f"the newest {edge_app.models.SET_ASIDE_KEEP:,} an edge are kept" in readme
    assert f"at most {edge_app.ingest.SET_ASIDE_PER_FLUSH:,} a flush" in readme
