"""A topic written in transactions is read to its end. Each transaction leaves a marker at an offset of its own,
after its records, and an aborted one leaves its records too: no reading is at those offsets, and no client gives
them, but the broker's high watermark counts them. The ingest took the offset after its last reading for where it
had read to, so such a partition never looked read to its end: `runedge --burst` never ended, and live windows
waited on it for ever."""

import json
import time

import pytest

from edge_app.ingest import Ingestor
from edge_app.models import IngestPosition, WindowAggregate
from tests.conftest import reading

T0 = 1_577_142_000_000


def _write_in_transactions(bootstrap, topic, transactions, legacy):
    """[(household, commit)]: ten readings each, in partition 0, each batch in a transaction of its own; `legacy`:
    as the prototype's unkeyed messages, timed by their records."""
    from confluent_kafka import Producer

    for number, (household, commit) in enumerate(transactions):
        producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{topic}-{number}"})
        producer.init_transactions(30)
        producer.begin_transaction()
        for i in range(10):
            if legacy:
                producer.produce(topic, value=json.dumps({"node_id": household, "power_value": 100.0}).encode(),
                                 partition=0, timestamp=T0 + i * 1000)
            else:
                producer.produce(topic, key=household.encode(), value=reading(household, T0 + i * 1000, 100.0)[1],
                                 partition=0)
        producer.flush(30)
        (producer.commit_transaction if commit else producer.abort_transaction)(30)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("last", ["committed", "aborted"])
@pytest.mark.parametrize("legacy", [False, True], ids=["keyed", "legacy-input"])  # the merge of unkeyed input too
def test_it_reads_to_the_end_a_partition_whose_last_offsets_hold_no_reading(kafka_client, kafka_bootstrap, topic,
                                                                              last, legacy):
    _write_in_transactions(kafka_bootstrap, topic, [("kept", True)] + ([("dropped", False)] if last == "aborted" else []),
                           legacy)
    ingest = Ingestor(edge_id="edge-test", topic=topic, bootstrap=kafka_bootstrap, window_seconds=5, grace_seconds=2,
                      idle_seconds=600, legacy=legacy)
    ingest.connect()
    try:
        end = ingest.end_offsets()  # what a burst run reads to
        assert end[0] == (11 if last == "committed" else 22)  # the records and a marker a transaction
        deadline = time.monotonic() + 20
        while not ingest.at_end(end) and time.monotonic() < deadline:
            ingest.handle_one_poll(timeout_ms=100)
        assert ingest.at_end(end), (ingest.next_offsets, end)
        assert ingest.caught_up()  # the read clock holds no live window back for it
        ingest.finish()
    finally:
        ingest.close()
    assert ingest.totals["readings"] == 10
    assert set(WindowAggregate.objects.values_list("household", flat=True)) == {"kept"}
    position = IngestPosition.objects.get(edge_id="edge-test", topic=topic, partition=0)
    assert (position.resume_offset, position.counted_offset) == (end[0], end[0])  # a restart reads nothing again
