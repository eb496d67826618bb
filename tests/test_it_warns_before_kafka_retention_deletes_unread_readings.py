"""Kafka's retention: a warning while there is time, a loud error and a count once unread readings are gone.

The shared broker checks retention every five minutes (Kafka's default), so
this test runs a broker of its own that checks every second; the topic's
short retention is set through the admin client, as an operator would.
"""

import logging
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from edge_app.budget import RetentionAlarm, retention_seconds_left, unread_lost
from edge_app.ingest import Ingestor
from edge_app.kafka_retention import RetentionWatch
from edge_app.models import EdgeStatus
from tests.conftest import EDGE_ID, ROOT, make_topic, produce, reading, wait_for
from tooling.chaos.pipeline import _free_pair
from tooling.localservices import Kafka, Paths

T0 = 1_577_142_000_000
RETENTION_MS = 8_000  # short, so the suite waits little for the deletion; the warning still comes first
MARGIN_SECONDS = 3600


# --- the decisions, without I/O ----------------------------------------------


def test_it_takes_the_sooner_of_time_and_size_retention():
    common = dict(now_ms=100_000, needed=10, earliest=0, end=110, bytes_per_record=100)
    by_time = retention_seconds_left(**common, needed_ts_ms=90_000, retention_ms=60_000, retention_bytes=-1,
                                     records_per_second=50)
    assert by_time == 50.0  # written at 90 s, deleted from 150 s on
    # 100 unread records of 100 bytes against 20,000 bytes, 50 more records (5,000 bytes) a second
    by_size = retention_seconds_left(**common, needed_ts_ms=90_000, retention_ms=60_000, retention_bytes=20_000,
                                     records_per_second=50)
    assert by_size == 2.0
    assert retention_seconds_left(**common, needed_ts_ms=90_000, retention_ms=-1, retention_bytes=-1,
                                  records_per_second=50) is None
    assert retention_seconds_left(**{**common, "needed": 110}, needed_ts_ms=None, retention_ms=60_000,
                                  retention_bytes=-1, records_per_second=0) is None  # nothing unread
    assert retention_seconds_left(**{**common, "earliest": 20}, needed_ts_ms=None, retention_ms=60_000,
                                  retention_bytes=-1, records_per_second=0) == 0.0
    assert (unread_lost(10, 20), unread_lost(20, 10)) == (10, 0)


def test_it_warns_once_per_crossing_of_the_margin():
    alarm = RetentionAlarm(100)
    assert [alarm.observe(s) for s in (500, 99, 50, 10, None, 80)] == [False, True, False, False, False, True]


# --- a real broker that deletes ---------------------------------------------------


class QuickRetentionKafka(Kafka):
    """The project's broker, checking retention every second instead of every five minutes, from its start
    instead of 30 s after it (log.initial.task.delay.ms)."""

    def config(self):
        return super().config() + "log.retention.check.interval.ms=1000\nlog.initial.task.delay.ms=0\n"


@pytest.fixture(scope="module")
def broker(services):
    folder = Path(tempfile.mkdtemp(prefix="fog-retention-"))
    kafka = QuickRetentionKafka(Paths(ROOT, folder, libs=Path(settings.VAR_DIR) / "kafka" / "libs"), "127.0.0.1",
                                _free_pair())
    try:
        kafka.up(lambda line: None)
        yield f"127.0.0.1:{kafka.port}"
    finally:
        kafka.down(lambda line: None)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def short_topic(broker):
    name = f"retention-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=broker, client_id="fog-tests")
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1,
                                  topic_configs={"retention.ms": str(RETENTION_MS), "segment.ms": "1000"})])
    yield name
    admin.delete_topics([name])
    admin.close()


def earliest(bootstrap, topic):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        tp = TopicPartition(topic, 0)
        return consumer.beginning_offsets([tp])[tp]
    finally:
        consumer.close()


def messages(caplog, level, text):
    return [r for r in caplog.records if r.levelno == level and text in r.getMessage()]


@pytest.mark.django_db(transaction=True)
def test_it_warns_before_retention_deletes_unread_readings_and_counts_those_it_deleted(kafka_client, broker, short_topic, caplog):
    produce(broker, short_topic, [reading("house-1", T0 + s * 1000, 100.0) for s in range(40)])
    ingest = Ingestor(edge_id=EDGE_ID, topic=short_topic, bootstrap=broker, window_seconds=5, grace_seconds=2,
                      idle_seconds=600)
    watch = RetentionWatch(edge_id=EDGE_ID, topic=short_topic, bootstrap=broker, margin_seconds=MARGIN_SECONDS)
    stopped = Ingestor(edge_id="edge-stopped", topic=short_topic, bootstrap=broker, window_seconds=5,
                       grace_seconds=2, idle_seconds=600)
    stopped.connect()  # another edge stores its position at offset 0 and is not running while Kafka deletes
    stopped.flush()
    stopped.close()
    try:
        ingest.connect()  # behind: it has read nothing, as an edge paused by its budget
        ingest.source.pause()  # paused like that edge, so no client fetches ahead (librdkafka would at once)
        with caplog.at_level(logging.WARNING, logger="fog.edge"):
            left = watch.handle_one_check(ingest.needed_offsets())[0]
            watch.handle_one_check(ingest.needed_offsets())
        assert 0 < left <= RETENTION_MS / 1000
        assert len(messages(caplog, logging.WARNING, "may delete unread readings")) == 1  # once, not per check
        assert earliest(broker, short_topic) == 0  # the warning came while everything was still there
        status = EdgeStatus.objects.get(edge_id=EDGE_ID)
        assert 0 < status.retention_left_seconds <= RETENTION_MS / 1000 and status.retention_checked_at

        assert wait_for(lambda: earliest(broker, short_topic) > 0, timeout=180, interval=1)
        assert earliest(broker, short_topic) == 40
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fog.edge"):
            assert watch.handle_one_check(ingest.needed_offsets()) == {0: 0.0}
            ingest.source.resume()
            produce(broker, short_topic, [reading("house-1", T0 + s * 1000, 100.0) for s in range(100, 110)])
            assert wait_for(lambda: ingest.handle_one_poll() or ingest.totals["readings"] + ingest.pending["readings"]
                            >= 10, timeout=60, interval=0)
            wait_for(lambda: ingest.handle_one_poll() and False, timeout=2, interval=0)
        errors = messages(caplog, logging.ERROR, "deleted 40 records")
        assert errors and all("before" in r.getMessage() or "not read" in r.getMessage() for r in errors)
        status = EdgeStatus.objects.get(edge_id=EDGE_ID)
        assert status.lost_to_retention == 40  # counted once, by the ingest that had to go past them
        assert ingest.totals["readings"] + ingest.pending["readings"] == 10  # and it went on with what is there

        for _ in range(2):  # its stored position is gone from Kafka: counted on start, too, and only once
            restarted = Ingestor(edge_id="edge-stopped", topic=short_topic, bootstrap=broker, window_seconds=5,
                                 grace_seconds=2, idle_seconds=600)
            restarted.connect()
            if restarted.dirty:  # as its loop does on the way out (IngestStep.close): the count goes with the position
                restarted.flush()
            restarted.close()
            assert EdgeStatus.objects.get(edge_id="edge-stopped").lost_to_retention == 40
    finally:
        ingest.close()
        watch.close()


@pytest.mark.django_db(transaction=True)
def test_it_says_that_a_compacted_topic_deletes_readings_nobody_can_count(kafka_bootstrap, topic, caplog):
    """Compaction keeps a household's latest reading only, read or not: the watch says so, at most every so often."""
    compacted = f"{topic}-compacted"
    make_topic(kafka_bootstrap, compacted, 1, cleanup_policy="compact")
    produce(kafka_bootstrap, compacted, [reading("house-1", T0 + s * 1000, 100.0) for s in range(3)])
    produce(kafka_bootstrap, topic, [reading("house-1", T0, 100.0)])
    for name in (compacted, topic, compacted):
        watch = RetentionWatch(edge_id=EDGE_ID, topic=name, bootstrap=kafka_bootstrap, margin_seconds=MARGIN_SECONDS)
        try:
            with caplog.at_level(logging.WARNING, logger="fog.edge"):
                watch.handle_one_check({0: 0})
                watch.handle_one_check({0: 0})
        finally:
            watch.close()
    assert len(messages(caplog, logging.WARNING, "is compacted")) == 2  # once a watch, and not for `topic`
