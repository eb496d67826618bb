"""Keyed input keeps a household in one partition. One whose readings come from a second partition (producers that
partition differently, or partitions added to the topic) may find its windows closed by the other's readings while
the edge reads a backlog: the edge names it, with both partitions, so the late count has a cause."""

import json
import logging
import time

import pytest
from kafka import KafkaProducer

from edge_app.ingest import Ingestor
from edge_app.windows import WindowBook
from tests.conftest import reading

T0 = 1_577_142_000_000
MOVED = "a reading in {topic}[{now}] after readings in {topic}[{before}]"


def test_it_notes_a_keyed_household_that_moves_partition_but_not_unkeyed_readings():
    keyed, unkeyed = WindowBook(5000, 2000, 60), WindowBook(5000, 2000, 60, keyed=False)
    for book in (keyed, unkeyed):
        book.add("stays", T0, 1.0, 0, 0, 0.0)
        book.add("stays", T0 + 1000, 1.0, 0, 1, 0.0)
        book.add("moves", T0, 1.0, 0, 2, 0.0)
        book.add("moves", T0 + 1000, 1.0, 2, 0, 0.0)
    assert keyed.moved == {"moves": (0, 2)}
    assert unkeyed.moved == {}  # unkeyed input spreads every household over every partition


@pytest.mark.django_db(transaction=True)
def test_it_names_a_household_whose_readings_come_from_a_second_partition(kafka_client, kafka_bootstrap, topic,
                                                                          caplog):
    ingest = Ingestor(edge_id="edge-moved", topic=topic, bootstrap=kafka_bootstrap, window_seconds=5,
                      grace_seconds=2, idle_seconds=600)
    ingest.connect()
    try:
        # "moves" goes to partition 1 after ten seconds, as when partitions are added to the topic.
        first = _read(ingest, caplog, kafka_bootstrap, topic, [(h, 0, s) for s in range(10) for h in ("stays", "moves")])
        moved = _read(ingest, caplog, kafka_bootstrap, topic, [("stays", 0, s) for s in range(10, 20)]
                      + [("moves", 1, s) for s in range(10, 20)])
        after = _read(ingest, caplog, kafka_bootstrap, topic, [("moves", 1, s) for s in range(20, 30)])
    finally:
        ingest.close()

    assert first == [] and after == []  # said once, at the move
    assert moved == [f"household moves: {MOVED.format(topic=topic, now=1, before=0)}. A household's readings "
                     "belong in one partition (the same key, and producers that partition alike; adding partitions "
                     "to a topic moves keys): while the edge reads a backlog, those of the partition it reads later "
                     "may count as late"]
    assert ingest.totals["readings"] == 50


@pytest.mark.django_db(transaction=True)
def test_it_says_nothing_of_unkeyed_readings_spread_over_every_partition(kafka_bootstrap, topic, caplog):
    ingest = Ingestor(edge_id="edge-unkeyed", topic=topic, bootstrap=kafka_bootstrap, window_seconds=5,
                      grace_seconds=2, idle_seconds=600, legacy=True)
    ingest.connect()
    try:
        said = _read(ingest, caplog, kafka_bootstrap, topic, [("n-0", s % 3, s) for s in range(30)], unkeyed=True)
    finally:
        ingest.close()
    assert said == []
    assert ingest.totals["readings"] == 30


def _read(ingest, caplog, bootstrap, topic, readings, unkeyed=False):
    """Send (household, partition, second) readings, read them all; the move warnings said meanwhile."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for household, partition, second in readings:
        if unkeyed:  # the prototype's: no key, the record's timestamp its time
            producer.send(topic, value=json.dumps({"node_id": household, "power_value": 100.0}).encode(),
                          partition=partition, timestamp_ms=T0 + second * 1000)
        else:
            key, value = reading(household, T0 + second * 1000, 100.0)
            producer.send(topic, key=key.encode(), value=value, partition=partition)
    producer.flush(60)
    producer.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fog.edge.ingest"):
        end, deadline = ingest.end_offsets(), time.monotonic() + 30
        while not ingest.at_end(end) and time.monotonic() < deadline:
            ingest.handle_one_poll(timeout_ms=100)
        ingest.finish()
    assert ingest.at_end(end)
    return [r.getMessage() for r in caplog.records if "belong in one partition" in r.getMessage()]
