"""The edge's ingest on confluent-kafka and on kafka-python: the one chosen is the one used, the
caught-up check follows the broker's high watermarks, and a missing topic says so. (The other
ingest tests run on both clients through the kafka_client fixture.)"""

import logging
import time

import pytest

from edge_app.ingest import Ingestor
from edge_app.kafka_source import KafkaSourceError
from tests.conftest import make_topic, produce, reading, wait_for

T0 = 1_577_142_000_000


def _ingestor(topic, bootstrap, edge_id="edge-client"):
    return Ingestor(edge_id=edge_id, topic=topic, bootstrap=bootstrap, window_seconds=5, grace_seconds=2,
                    idle_seconds=60)


def _poll_until_caught_up(ingest):
    def polled_and_caught_up():
        ingest.handle_one_poll()
        return ingest.caught_up()
    return wait_for(polled_and_caught_up, timeout=60)


@pytest.mark.django_db(transaction=True)
def test_it_is_caught_up_only_once_it_has_read_to_the_high_watermark(kafka_client, kafka_bootstrap, topic):
    produce(kafka_bootstrap, topic, [reading(f"h{i % 7}", T0 + i * 1000, 100.0 + i) for i in range(300)])
    ingest = _ingestor(topic, kafka_bootstrap)
    ingest.connect()
    try:
        assert ingest.source.name == kafka_client
        assert not ingest.caught_up(), "no fetch has told the high watermark yet"
        end = ingest.end_offsets()
        assert sum(end.values()) == 300
        assert _poll_until_caught_up(ingest)
        assert ingest.at_end(end) and ingest.next_offsets == end

        produce(kafka_bootstrap, topic, [reading(f"h{i % 7}", T0 + (300 + i) * 1000, 1.0) for i in range(200)])
        end = ingest.end_offsets()
        # A partition's cached watermark can predate the produce by one fetch, so the test reads to the
        # broker's end first; then caught up must follow.
        assert wait_for(lambda: (ingest.handle_one_poll(), ingest.at_end(end))[1], timeout=60)
        assert _poll_until_caught_up(ingest)
        assert ingest.next_offsets == end
        ingest.finish()
        assert ingest.totals["readings"] == 500 and ingest.totals["malformed"] == 0
    finally:
        ingest.close()


@pytest.mark.django_db(transaction=True)
def test_it_names_a_topic_that_does_not_exist(kafka_client, kafka_bootstrap):
    ingest = _ingestor("no-such-topic-for-the-edge", kafka_bootstrap)
    with pytest.raises(KafkaSourceError, match=r"topic 'no-such-topic-for-the-edge' does not exist on 127\.0\.0\.1"):
        ingest.connect(wait_seconds=1)
    ingest.close()


@pytest.mark.django_db(transaction=True)
def test_its_loop_waits_for_a_missing_topic_and_starts_once_it_is_made(kafka_bootstrap, topic, caplog):
    from edge_app.loops import IngestStep

    name = f"{topic}-made-late"  # the topic fixture deletes it
    step = IngestStep({"topic": name, "idle": 60}, control=None)
    try:
        with caplog.at_level(logging.INFO, logger="fog.edge"):
            assert not step.step() and not step.step() and not step.finished(None)  # no traceback, no end
            make_topic(kafka_bootstrap, name, 2)
            produce(kafka_bootstrap, name, [reading("h1", T0, 100.0)])
            assert wait_for(lambda: step.step() or step.connected, timeout=30)
        said = [r.getMessage() for r in caplog.records]
        assert sum("does not exist" in line and "waits for it" in line for line in said) == 1  # said once
        assert any(f"topic {name!r} is there" in line for line in said)
        assert wait_for(lambda: (step.step(), step.ingest.totals["readings"] + step.ingest.pending["readings"])[1]
                        == 1, timeout=30)
    finally:
        step.close()


@pytest.mark.parametrize("client, listener", [("confluent", False), ("kafka-python", False), ("kafka-python", True)],
                         ids=["confluent", "kafka-python", "kafka-python, a port that says nothing"])
def test_its_loop_waits_for_a_kafka_that_does_not_answer_as_it_starts(settings, caplog, client, listener,
                                                                       monkeypatch):
    """Ended, the loop was enqueued again every few seconds, each a restart its supervisor counted as a crash,
    and ten within a minute ended the edge as failed. Each try leaves nothing running: kafka-python's consumer
    starts its I/O thread before it finds no broker, and kept it for ever."""
    import socket
    import threading

    from edge_app import kafka_source
    from edge_app.loops import IngestStep

    monkeypatch.setattr(kafka_source, "METADATA_TIMEOUT_S", 2)  # each try's wait for a broker (10 s)
    silent = socket.create_server(("127.0.0.1", 0))  # takes connections into its backlog, answers none
    port = silent.getsockname()[1]
    if not listener:
        silent.close()  # nothing listens there
    settings.FOG_KAFKA_BOOTSTRAP = f"127.0.0.1:{port}"
    threads = set(threading.enumerate())
    step = IngestStep({"topic": "power", "idle": 60, "kafka_client": client}, control=None)
    try:
        with caplog.at_level(logging.WARNING, logger="fog.edge"):
            assert not step.step() and not step.connected  # no end, no traceback
        said = [r.getMessage() for r in caplog.records]
        assert sum("Kafka does not answer" in line and "the ingest waits for it" in line for line in said) == 1
        if client == "kafka-python":
            assert wait_for(lambda: set(threading.enumerate()) <= threads, timeout=5), \
                [t.name for t in set(threading.enumerate()) - threads]
    finally:
        step.close()
        silent.close()


@pytest.mark.django_db(transaction=True)
def test_it_reads_a_topic_made_again_from_its_beginning(kafka_client, kafka_bootstrap, topic, caplog):
    """Deleted and made again while the edge was away, the topic's offsets start again at 0: positions kept
    from the old one would skip the new one's first readings, and nothing would say so."""
    produce(kafka_bootstrap, topic, [reading(f"h{i % 3}", T0 + i * 1000, 1.0) for i in range(30)])
    first = _ingestor(topic, kafka_bootstrap)
    first.connect()
    try:
        assert _poll_until_caught_up(first)
        first.finish()
    finally:
        first.close()
    _make_again(kafka_bootstrap, topic)
    produce(kafka_bootstrap, topic, [reading(f"h{i % 3}", T0 + i * 1000, 2.0) for i in range(90)])
    again = _ingestor(topic, kafka_bootstrap)
    with caplog.at_level(logging.ERROR, logger="fog.edge.ingest"):
        again.connect()
    try:
        assert set(again.next_offsets.values()) == {0}
        assert any("was deleted and made again" in r.getMessage() for r in caplog.records)
        assert _poll_until_caught_up(again)
        again.finish()
        assert again.totals["readings"] == 90  # counted too: the old topic's marks are gone with it
    finally:
        again.close()


@pytest.mark.django_db(transaction=True)
def test_its_loop_starts_again_to_read_partitions_added_to_the_topic(kafka_bootstrap, topic, caplog):
    from kafka.admin import KafkaAdminClient, NewPartitions

    from edge_app.loops import IngestStep

    step = IngestStep({"topic": topic, "idle": 60}, control=None)
    try:
        assert step.step() and not step.restart  # connected, at the topic's 3 partitions
        step.handle_one_partition_check()
        assert not step.restart
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="fog-tests")
        try:
            admin.create_partitions({topic: NewPartitions(total_count=4)})
        finally:
            admin.close()
        with caplog.at_level(logging.WARNING, logger="fog.edge"):
            assert wait_for(lambda: (step.handle_one_partition_check(), step.restart)[1], timeout=30)
        assert any("new partitions [3]" in r.getMessage() for r in caplog.records)
    finally:
        step.close()
    again = IngestStep({"topic": topic, "idle": 60}, control=None)  # what its supervisor starts
    try:
        assert again.step() and sorted(again.ingest.next_offsets) == [0, 1, 2, 3]
    finally:
        again.close()


@pytest.mark.django_db(transaction=True)
def test_its_loop_starts_again_to_read_a_topic_made_again_while_it_ran(kafka_bootstrap, topic, caplog):
    """Deleted and made again under a running edge, the topic is read on at the old offsets, which skip the new
    one's first readings: the loop's check sees the new id and ends, and the loop started again reads it all."""
    from edge_app.loops import IngestStep

    step = IngestStep({"topic": topic, "idle": 60}, control=None)
    try:
        assert step.step()
        step.handle_one_partition_check()
        assert not step.restart
        _make_again(kafka_bootstrap, topic)
        with caplog.at_level(logging.ERROR, logger="fog.edge"):
            assert wait_for(lambda: (step.handle_one_partition_check(), step.restart)[1], timeout=30)
        assert any("was deleted and made again while this edge read it" in r.getMessage() for r in caplog.records)
    finally:
        step.close()


@pytest.mark.django_db(transaction=True)
# confluent-kafka asks the broker at each check; kafka-python answers from its metadata cache, which may name a
# deleted topic until it is refreshed (metadata_max_age_ms, 5 minutes by default): with it the deletion is said later.
@pytest.mark.parametrize("kafka_client", ["confluent"], indirect=True)
def test_its_loop_says_when_the_topic_it_reads_is_deleted_and_when_it_is_back(kafka_client, kafka_bootstrap, topic,
                                                                               caplog):
    """Deleted under a running edge, the topic's polls just found nothing: the edge said nothing at all."""
    from confluent_kafka.admin import AdminClient

    from edge_app.loops import TOPIC_GONE_CHECKS, IngestStep

    step = IngestStep({"topic": topic, "idle": 60}, control=None)
    try:
        assert step.step()
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        admin.delete_topics([topic])[topic].result(timeout=30)
        with caplog.at_level(logging.WARNING, logger="fog.edge"):
            assert wait_for(lambda: (step.handle_one_partition_check(), step.topic_gone)[1] == 1, timeout=30)
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # one look may be a broker catching up
            for _ in range(TOPIC_GONE_CHECKS + 2):
                step.handle_one_partition_check()
            gone = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(gone) == 1 and f"topic {topic} is gone" in gone[0]  # said once
            _make_again(kafka_bootstrap, topic)
            assert wait_for(lambda: (step.handle_one_partition_check(), step.topic_gone)[1] == 0, timeout=30)
        assert any(f"topic {topic} is there again" in r.getMessage() for r in caplog.records)
    finally:
        step.close()


def _make_again(bootstrap, name):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 60
    while True:
        try:
            admin.delete_topics([name])[name].result(timeout=30)
        except KafkaException:
            pass  # gone already
        # The broker finishes a deletion in the background, and a closing client's last metadata request can
        # make the topic anew (auto-creation, with the broker's default partitions): delete and try again.
        try:
            admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])[name].result(timeout=30)
            return
        except KafkaException:
            assert time.monotonic() < deadline, f"{name} could not be made again within 60 s"
            time.sleep(0.5)


@pytest.mark.django_db(transaction=True)
def test_it_hands_over_readings_without_waiting_out_the_poll_timeout(kafka_client, kafka_bootstrap, topic):
    """A poll returns as soon as readings are there (a batch call that waited for a full batch would hold
    every window close back by the whole timeout)."""
    produce(kafka_bootstrap, topic, [reading("h1", T0 + i * 1000, 100.0) for i in range(10)])
    ingest = _ingestor(topic, kafka_bootstrap)
    ingest.connect()
    try:
        started = time.monotonic()
        while not ingest.handle_one_poll(timeout_ms=60_000) and time.monotonic() - started < 60:
            pass
        assert ingest.totals["readings"] + ingest.pending["readings"] == 10
        assert time.monotonic() - started < 30, "the poll waited out its timeout with readings at hand"
    finally:
        ingest.close()
