"""The retention watch: how long until Kafka may delete readings the edge has not yet read.

Every RETENTION_CHECK_SECONDS the ingest loop hands it the offsets it still
needs; it reads the topic's retention.ms and retention.bytes from the broker
(KafkaAdminClient.describe_configs), the partitions' earliest and end
offsets, and the timestamp of each needed record (a consumer of its own,
outside any group, so the ingest's positions stay untouched). The decision
is edge_app.budget's; the answer goes to EdgeStatus (admin, health page,
metrics) and, below FOG_EDGE_RETENTION_MARGIN_HOURS, a WARNING once.
Readings already deleted are the ingest's to count (it is the one that
would skip them); here they are an ERROR and zero seconds left.
"""

import logging
import time

from django.utils import timezone
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.errors import KafkaError

from edge_app.budget import RETENTION_CHECK_SECONDS, RetentionAlarm, retention_seconds_left
from edge_app.models import EdgeStatus
from fogwire.ratelog import RateLimitedLog

log = logging.getLogger("fog.edge.retention")

RECORD_OVERHEAD_BYTES = 70  # a record's share of Kafka's batch and record headers, roughly
FETCH_TIMEOUT_MS = 2000
COMPACTED_SAID_SECONDS = 600  # a compacted topic is said at most this often (the check runs every RETENTION_CHECK_SECONDS)
# The check runs in the ingest loop: while the broker is away it gives up quickly rather than stall it.
KAFKA_TIMEOUT_MS = 5000
CLIENT_LIMITS = {"request_timeout_ms": KAFKA_TIMEOUT_MS, "bootstrap_timeout_ms": KAFKA_TIMEOUT_MS,
                 "reconnect_backoff_max_ms": 1000}


class RetentionWatch:
    def __init__(self, *, edge_id, topic, bootstrap, margin_seconds, every_seconds=RETENTION_CHECK_SECONDS):
        self.edge_id, self.topic, self.bootstrap = edge_id, topic, bootstrap
        self.every = every_seconds
        self.alarm = RetentionAlarm(margin_seconds)
        self.admin = self.reader = None
        self.next_check = 0.0
        self.compacted_log = RateLimitedLog(log, 1, COMPACTED_SAID_SECONDS)
        self.last_end = {}  # partition -> (end offset, monotonic time): the inflow between checks
        self.sizes = {}  # partition -> bytes per record, from the last record read

    def due(self):
        return time.monotonic() >= self.next_check

    def _connect(self):
        if self.admin is None:
            self.admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=f"edge-{self.edge_id}-retention",
                                          **CLIENT_LIMITS)
        if self.reader is None:
            self.reader = KafkaConsumer(bootstrap_servers=self.bootstrap, client_id=f"edge-{self.edge_id}-retention",
                                        group_id=None, enable_auto_commit=False, auto_offset_reset="none",
                                        max_partition_fetch_bytes=256 * 1024, fetch_max_wait_ms=100, **CLIENT_LIMITS)

    def retention(self):
        """(retention.ms, retention.bytes) of the topic, -1 meaning no limit, and whether it is compacted."""
        wanted = {"retention.ms": None, "retention.bytes": None, "cleanup.policy": None}
        reply = self.admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, self.topic, wanted)],
                                            config_filter="all")
        configs = reply["topic"][self.topic]
        limits = tuple(int(configs.get(name, {}).get("value") or -1) for name in ("retention.ms", "retention.bytes"))
        return (*limits, "compact" in (configs.get("cleanup.policy", {}).get("value") or ""))

    def _record(self, tp, offset):
        """Timestamp (ms) and size (bytes) of the record at `offset`, or (None, None)."""
        self.reader.assign([tp])
        self.reader.seek(tp, offset)
        deadline = time.monotonic() + FETCH_TIMEOUT_MS / 1000
        while time.monotonic() < deadline:
            for record in self.reader.poll(timeout_ms=200, max_records=1).get(tp, []):
                size = max(record.serialized_key_size, 0) + max(record.serialized_value_size, 0)
                return record.timestamp, size + RECORD_OVERHEAD_BYTES
        return None, None

    def handle_one_check(self, needed):
        """Check every partition in `needed` ({partition: offset}); returns {partition: seconds left or None}."""
        self.next_check = time.monotonic() + self.every
        try:
            self._connect()
            retention_ms, retention_bytes, compacted = self.retention()
            if compacted:
                # Kafka keeps only each key's latest record: the readings before it are deleted unread, uncounted.
                self.compacted_log.warning(
                    "topic %s is compacted (cleanup.policy compact): Kafka deletes every reading of a household but "
                    "its latest, read or not, and nobody can count them. Read readings from a topic whose "
                    "cleanup.policy is delete", self.topic)
            tps = [TopicPartition(self.topic, p) for p in sorted(needed)]
            earliest = self.reader.beginning_offsets(tps, timeout_ms=KAFKA_TIMEOUT_MS)
            end = self.reader.end_offsets(tps, timeout_ms=KAFKA_TIMEOUT_MS)
            left = {tp.partition: self._partition(tp, needed[tp.partition], earliest[tp], end[tp], retention_ms,
                                                  retention_bytes) for tp in tps}
        except KafkaError as exc:
            log.warning("retention check of %s skipped: Kafka: %s", self.topic, exc)
            return None
        known = [seconds for seconds in left.values() if seconds is not None]
        soonest = min(known) if known else None
        EdgeStatus.for_edge(self.edge_id)
        EdgeStatus.objects.filter(edge_id=self.edge_id).update(retention_left_seconds=soonest,
                                                               retention_checked_at=timezone.now())
        if self.alarm.observe(soonest):
            partition = min((p for p in left if left[p] is not None), key=left.get)
            log.warning("Kafka's retention may delete unread readings of %s[%d] in %.0f s (margin %.0f s): "
                        "bring the cloud back or raise the topic's retention", self.topic, partition, soonest,
                        self.alarm.margin)
        return left

    def _partition(self, tp, needed, earliest, end, retention_ms, retention_bytes):
        now = time.monotonic()
        previous = self.last_end.get(tp.partition)
        self.last_end[tp.partition] = (end, now)
        rate = (end - previous[0]) / (now - previous[1]) if previous and now > previous[1] else 0.0
        if earliest > needed:
            log.error("Kafka's retention deleted %d records (readings or batches of them) of %s[%d] (offsets %d..%d) "
                      "the edge has not read",
                      earliest - needed, tp.topic, tp.partition, needed, earliest - 1)
            return 0.0
        timestamp, size = self._record(tp, needed) if needed < end else (None, None)
        if size:
            self.sizes[tp.partition] = size
        return retention_seconds_left(
            now_ms=int(time.time() * 1000), needed=needed, earliest=earliest, end=end, needed_ts_ms=timestamp,
            retention_ms=retention_ms, retention_bytes=retention_bytes,
            bytes_per_record=self.sizes.get(tp.partition, RECORD_OVERHEAD_BYTES), records_per_second=rate)

    def close(self):
        for client in (self.reader, self.admin):
            if client is not None:
                client.close()
