"""Keyed input keeps a household in one partition. One whose readings come from a second partition (producers that
partition differently, or partitions added to the topic) may find its windows closed by the other's readings while
the edge reads a backlog: the edge names it, with both partitions, so the late count has a cause."""

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
def test_it_names_a_household_whose_readings_come_from_a_second_partition(kafka_bootstrap, topic, caplog):
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for second in range(20):  # "moves" goes to partition 1 halfway, as when partitions are added
        for household, partition in (("stays", 0), ("moves", 0 if second < 10 else 1)):
            key, value = reading(household, T0 + second * 1000, 100.0)
            producer.send(topic, key=key.encode(), value=value, partition=partition)
    producer.flush(60)
    producer.close()

    ingest = Ingestor(edge_id="edge-moved", topic=topic, bootstrap=kafka_bootstrap, window_seconds=5,
                      grace_seconds=2, idle_seconds=600)
    ingest.connect()
    try:
        end, deadline = ingest.end_offsets(), time.monotonic() + 30
        with caplog.at_level(logging.WARNING, logger="fog.edge.ingest"):
            while not ingest.at_end(end) and time.monotonic() < deadline:
                ingest.handle_one_poll(timeout_ms=100)
            ingest.finish()
    finally:
        ingest.close()

    assert ingest.at_end(end)
    said = [r.getMessage() for r in caplog.records if "belong in one partition" in r.getMessage()]
    # Whichever partition the client gave first, the household that moved is named with both; the other never.
    moved = {MOVED.format(topic=topic, now=1, before=0), MOVED.format(topic=topic, now=0, before=1)}
    assert said and all(line.startswith("household moves: ") and any(m in line for m in moved) for line in said), said
    assert ingest.totals["readings"] == 40

