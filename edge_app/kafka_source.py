"""The ingest's Kafka consumer behind one small interface, for two clients.

`KafkaPythonSource` (kafka-python, pure Python) and `ConfluentSource`
(confluent-kafka, librdkafka in C) do the same few things the ingest needs:
find the topic's partitions, assign them by hand at given offsets (no group
membership, so a restarted ingest owns its partitions at once instead of
waiting out a dead member's session), poll batches as
{partition: [(offset, value), ...]}, tell the broker's ends and high
watermarks, and commit offsets for Kafka's own lag tools (the database holds
the position that counts). FOG_EDGE_KAFKA_CLIENT picks one; `bench ingest`
measures both on the same readings, and the default is the one it found
faster (confluent-kafka: librdkafka decodes the record batches in C, where
kafka-python's pure-Python decoding was its largest share of the profile).

caught_up() needs each partition's high watermark after every poll, so both
sources answer it from what the last fetch response carried instead of asking
the broker: kafka-python's `highwater()` and confluent-kafka's
`get_watermark_offsets(cached=True)`. librdkafka updates the cached high
offset with every fetch response, even an empty one, whereas its
`stats_cb` statistics arrive only every statistics.interval.ms and would add
a JSON parse of every partition's stats to the loop.

Both also keep, per partition, the timestamp of the newest record read
(`read_times`): how far in time the ingest has read a partition it has not
read to the end (edge_app/ingest.py, `read_clock`), and since when the broker
has been away (`away_since_ms`, a BrokerWatch): a cached high watermark is
the last one a fetch brought, so with the broker away the ingest looks read to
the end while the producers hold back what they could not send, stamped with
its time; live windows closed by the wall clock meanwhile would find those
readings late once the broker is back.
"""

import logging
import time
import uuid

log = logging.getLogger("fog.edge.ingest")

MAX_POLL_RECORDS = 20000
FETCH_MAX_BYTES = 64 * 1024 * 1024
PARTITION_FETCH_BYTES = 16 * 1024 * 1024
FETCH_WAIT_MS = 100
# Reconnect within a second once a restarted broker is back (both clients' default backoff grows
# to many seconds, a long stall after a short outage).
RECONNECT_BACKOFF_MAX_MS = 1000
METADATA_TIMEOUT_S = 10
PROBE_TIMEOUT_S = 2  # kafka-python's source first asks each bootstrap server for a TCP connection this long
COMMIT_WAIT_MS = 2000  # the final, synchronous offset commit of a closing ingest
TOPIC_POLL_SECONDS = 0.5
LIBRDKAFKA_LOG_LEVEL = 2  # syslog's: critical and worse (a broker away is 3, logged on every retry)
# A broker back: every partition's fetches have resumed, and their cached high watermarks are fresh, within this
# (fetches wait at most FETCH_WAIT_MS; a reconnect takes up to RECONNECT_BACKOFF_MAX_MS).
BACK_SETTLE_S = 2.0
AWAY_CHECK_S = 0.25  # how often a source asks its client whether a broker answers (kafka-python: every metric)
AWAY_CHECK_MAX_S = 2.0  # confluent: its metadata request waits twice as long after each unanswered one, to this


class BrokerWatch:
    """Since when (epoch ms, the edge's clock) the broker may hold records the consumer has not heard of: from the
    moment the client found every broker away until BACK_SETTLE_S after it heard from one again. No I/O: the
    sources tell it what their client says."""

    def __init__(self, clock=time.monotonic, wall=time.time):
        self.clock, self.wall = clock, wall
        self.since_ms = self.back_at = None
        self.asked = -AWAY_CHECK_S  # when a source last asked its client (clock)

    def ask_now(self):
        """Whether a source's client is due to be asked again (at most every AWAY_CHECK_S)."""
        if self.clock() - self.asked < AWAY_CHECK_S:
            return False
        self.asked = self.clock()
        return True

    def waiting(self):
        """Away, and not heard from since."""
        return self.since_ms is not None and self.back_at is None

    def away(self):
        if self.since_ms is None:
            self.since_ms = int(self.wall() * 1000)
        self.back_at = None

    def heard(self):
        """The client heard from a broker (it answered a request, or is connected to it again)."""
        if self.waiting():
            self.back_at = self.clock()

    def away_since_ms(self):
        if self.back_at is not None and self.clock() - self.back_at >= BACK_SETTLE_S:
            self.since_ms = self.back_at = None
        return self.since_ms


class KafkaSourceError(Exception):
    """The source cannot go on (no such topic, a broker that never answers)."""


class OffsetsDeleted(Exception):
    """The positions of these partitions are no longer in the broker's log (retention deleted them, or the
    topic was made anew): {partition: the offset asked for, None where the client does not say}. Neither
    client resets on its own (no auto offset reset), so the ingest counts the gap and seeks on. `batches`
    holds what the same poll read from other partitions (it is not delivered again)."""

    def __init__(self, offsets, batches=None):
        super().__init__(offsets)
        self.offsets, self.batches = offsets, batches or {}


class KafkaPythonSource:
    name = "kafka-python"
    timestamps = False

    def __init__(self, bootstrap, client_id, group_id):
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        self.bootstrap, self.topic, self.tps = bootstrap, None, {}
        self.read_times = {}  # partition -> the timestamp (epoch ms) of the newest record read from it
        self.admin = None  # the topic id's admin client, made at the first check (topic_id)
        _answers(bootstrap)

        class Consumer(KafkaConsumer):
            def __init__(self, **config):
                try:
                    super().__init__(**config)
                except BaseException:
                    # Its I/O thread and sockets run from before its bootstrap: a consumer that failed it would
                    # keep them for ever, one more at each try while the ingest waits for Kafka.
                    client = getattr(self, "_client", None)
                    if client is not None:
                        client.close()
                    raise

        try:
            self.consumer = Consumer(
                bootstrap_servers=bootstrap, group_id=group_id, client_id=client_id, enable_auto_commit=False,
                auto_offset_reset="none", max_poll_records=MAX_POLL_RECORDS, fetch_max_bytes=FETCH_MAX_BYTES,
                max_partition_fetch_bytes=PARTITION_FETCH_BYTES, fetch_max_wait_ms=FETCH_WAIT_MS,
                reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
                # As long as confluent's metadata wait, not its own 30 s: within a loop's lock on PostgreSQL.
                bootstrap_timeout_ms=METADATA_TIMEOUT_S * 1000,
                isolation_level="read_committed")  # as confluent-kafka's default: no reading of an aborted transaction
        except KafkaError as exc:  # no broker answered (NoBrokersAvailable, KafkaTimeoutError): the ingest waits
            raise KafkaSourceError(f"Kafka at {bootstrap} does not answer: {exc}") from None
        self.watch = BrokerWatch()

    def away_since_ms(self):
        """See BrokerWatch: kafka-python says it in its connection count (a metric of consumer.metrics(), an
        interface it calls unstable; it is read at most every AWAY_CHECK_S). 0 while a broker that refuses
        connections (its process down) is away; a host that drops packets counts as connected while each
        attempt waits, so then, as before, only the idle backstop holds its windows."""
        if self.watch.ask_now():
            try:
                connected = self.consumer.metrics()["consumer-metrics"]["connection-count"] >= 1
            except Exception:  # noqa: BLE001 -- a metric not there (another version): nothing known, nothing held
                connected = True
            self.watch.heard() if connected else self.watch.away()
        return self.watch.away_since_ms()

    def partitions(self, topic):
        return sorted(self.consumer.partitions_for_topic(topic) or ())

    def topic_id(self, topic):
        """The broker's id of the topic (a UUID: a topic deleted and made again gets a new one), '' if unknown."""
        from kafka.admin import KafkaAdminClient

        try:
            # Kept for the next check (every RETENTION_CHECK_SECONDS): a client made each time connected anew.
            if self.admin is None:
                self.admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="fog-edge-topic-id")
            found = self.admin.describe_topics([topic])
            return str(found[0].get("topic_id") or "") if found and not found[0].get("error_code") else ""
        except Exception as exc:  # an older broker, or one away: the check is skipped, never the reading
            log.debug("topic id of %s not read: %s", topic, exc)
            self._close_admin()  # the next check starts from a new one
            return ""

    def _close_admin(self):
        admin, self.admin = self.admin, None
        if admin is not None:
            try:
                admin.close()
            except Exception as exc:  # noqa: BLE001 -- a client that failed may fail to close too; it is dropped
                log.debug("topic id client not closed: %s", exc)

    def low_offsets(self, topic, partitions):
        from kafka import TopicPartition

        found = self.consumer.beginning_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in found.items()}

    def assign(self, topic, offsets):
        from kafka import TopicPartition

        self.topic = topic
        self.tps = {p: TopicPartition(topic, p) for p in offsets}
        self.consumer.assign(list(self.tps.values()))
        for partition, offset in offsets.items():
            self.consumer.seek(self.tps[partition], offset)

    def end_offsets(self, timeout_s=None):
        """{partition: the broker's end offset now}; within `timeout_s` if given, else the client's own."""
        found = self.consumer.end_offsets(list(self.tps.values()), timeout_ms=None if timeout_s is None else timeout_s * 1000)
        return {tp.partition: offset for tp, offset in found.items()}

    def high_watermarks(self):
        """{partition: high watermark} from the last fetch responses; None where none came yet."""
        return {p: self.consumer.highwater(tp) for p, tp in self.tps.items()}

    def positions(self, partitions):
        """{partition: the client's position, None where it has none}: past the last record it gave, and past
        the transaction markers and aborted records it passed over after it (read_committed). It asks nothing of
        the broker (no wait): a position still to be found is None. Any other error (a log truncated under it) is
        raised as the poll would have raised it: kafka-python raises such an error once."""
        from kafka.errors import KafkaTimeoutError

        found = {}
        for p in partitions:
            try:
                found[p] = self.consumer.position(self.tps[p], timeout_ms=0)
            except KafkaTimeoutError:
                found[p] = None
        return found

    def seek(self, partition, offset):
        self.consumer.seek(self.tps[partition], offset)

    def pause(self, partitions=None):
        self.consumer.pause(*(self.tps[p] for p in (self.tps if partitions is None else partitions)))

    def resume(self, partitions=None):
        self.consumer.resume(*(self.tps[p] for p in (self.tps if partitions is None else partitions)))

    def poll(self, timeout_ms, max_records=MAX_POLL_RECORDS):
        from kafka.errors import OffsetOutOfRangeError

        try:
            batches = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except OffsetOutOfRangeError as exc:
            raise OffsetsDeleted({tp.partition: offset for tp, offset in exc.args[0].items()}) from None
        for tp, messages in batches.items():
            if messages:
                stamp = messages[-1].timestamp  # None for a record of the oldest message format
                self.read_times[tp.partition] = -1 if stamp is None else stamp
        if self.timestamps:
            # -1 where a record has no timestamp, as confluent-kafka gives it: legacy input takes its event time
            # from the stamp, and None would stop its merge (no order against a number).
            return {tp.partition: [(m.offset, (m.value, -1 if m.timestamp is None else m.timestamp)) for m in messages]
                    for tp, messages in batches.items()}
        return {tp.partition: [(m.offset, m.value) for m in messages] for tp, messages in batches.items()}

    def commit(self, offsets, wait=False):
        """Informational only (the database holds the positions). `wait`: synchronously, which also settles
        the asynchronous commits still in flight that closing would cancel and kafka-python log as an ERROR."""
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        committed = {self.tps[p]: OffsetAndMetadata(o, "", -1) for p, o in offsets.items()}
        try:
            if wait:
                self.consumer.commit(committed, timeout_ms=COMMIT_WAIT_MS)
            else:
                self.consumer.commit_async(committed)
        except (KafkaError, AssertionError) as exc:
            log.debug("offset commit to Kafka skipped: %s", exc)

    def close(self):
        self._close_admin()
        self.consumer.close(autocommit=False)


class ConfluentSource:
    name = "confluent"
    timestamps = False

    def __init__(self, bootstrap, client_id, group_id):
        from confluent_kafka import Consumer

        self.bootstrap, self.topic, self.tps = bootstrap, None, {}
        self.read_times = {}  # partition -> the timestamp (epoch ms) of the newest record read from it
        self.admin = None  # the topic id's admin client, made at the first check (topic_id)
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group_id, "client.id": client_id,
            "enable.auto.commit": False, "enable.auto.offset.store": False, "auto.offset.reset": "error",
            "fetch.max.bytes": FETCH_MAX_BYTES, "max.partition.fetch.bytes": PARTITION_FETCH_BYTES,
            "fetch.wait.max.ms": FETCH_WAIT_MS, "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
            # librdkafka logs a broker that is down on every retry, at its error level (%3|...|FAIL|, 200 lines in
            # 8 s): only what is worse than that here; error_cb and the loop's own errors say it once.
            "log_level": LIBRDKAFKA_LOG_LEVEL, "error_cb": self._client_error,
        })
        self.watch, self._check_s = BrokerWatch(), AWAY_CHECK_S

    def _client_error(self, error):
        """librdkafka's errors beside the stream (called within poll, on the ingest's thread)."""
        from confluent_kafka import KafkaError

        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self.watch.away()
        if error.fatal():
            log.error("Kafka consumer: fatal client error: %s", error)
        else:
            log.debug("Kafka client (will retry): %s", error)

    def away_since_ms(self):
        """See BrokerWatch: librdkafka says when every broker is away (error_cb), not when one is back. A metadata
        request answered says it, asked every AWAY_CHECK_S, each waiting twice as long as the last unanswered
        one (to AWAY_CHECK_MAX_S: a broker far away). Not records: librdkafka's local queue hands out what it
        fetched before the broker went away."""
        from confluent_kafka import KafkaException

        if self.watch.waiting() and self.watch.ask_now():
            try:
                self.consumer.list_topics(self.topic, timeout=self._check_s)
                self.watch.heard()
                self._check_s = AWAY_CHECK_S
            except KafkaException:
                self._check_s = min(2 * self._check_s, AWAY_CHECK_MAX_S)
        return self.watch.away_since_ms()

    def _call(self, what, function, *args, **kwargs):
        """function(...), retried while its error is a passing one (a new topic's leader not elected
        yet, a broker restarting) for up to METADATA_TIMEOUT_S; then a KafkaSourceError saying what failed."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + METADATA_TIMEOUT_S
        while True:
            try:
                return function(*args, **kwargs)
            except KafkaException as exc:
                error = exc.args[0]
                if error.fatal() or time.monotonic() >= deadline:
                    raise KafkaSourceError(f"{what} on {self.bootstrap}: {error.str()}") from None
                log.debug("%s: %s; retrying", what, error.str())
                time.sleep(TOPIC_POLL_SECONDS)

    def topic_id(self, topic):
        """The broker's id of the topic (a UUID: a topic deleted and made again gets a new one), '' if unknown."""
        from confluent_kafka import TopicCollection
        from confluent_kafka.admin import AdminClient

        try:
            if self.admin is None:  # kept for the next check (every RETENTION_CHECK_SECONDS), as its connections
                self.admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": LIBRDKAFKA_LOG_LEVEL})
            uid = self.admin.describe_topics(TopicCollection([topic]))[topic].result(timeout=METADATA_TIMEOUT_S).topic_id
            bits = (uid.get_most_significant_bits() % 2**64) << 64 | uid.get_least_significant_bits() % 2**64
            return str(uuid.UUID(int=bits)) if bits else ""
        except Exception as exc:  # an older broker, or one away: the check is skipped, never the reading
            log.debug("topic id of %s not read: %s", topic, exc)
            return ""

    def partitions(self, topic):
        metadata = self._call(f"metadata of topic {topic!r}", self.consumer.list_topics, topic,
                              timeout=METADATA_TIMEOUT_S)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            return []
        return sorted(found.partitions)

    def _watermarks(self, topic, partition, cached=False):
        from confluent_kafka import TopicPartition

        return self._call(f"offsets of {topic}[{partition}]", self.consumer.get_watermark_offsets,
                          TopicPartition(topic, partition), timeout=METADATA_TIMEOUT_S, cached=cached)

    def low_offsets(self, topic, partitions):
        return {p: self._watermarks(topic, p)[0] for p in partitions}

    def assign(self, topic, offsets):
        from confluent_kafka import TopicPartition

        self.topic = topic
        self.tps = {p: TopicPartition(topic, p) for p in offsets}
        self._call(f"assigning {topic}", self.consumer.assign,
                   [TopicPartition(topic, p, offset) for p, offset in offsets.items()])

    def end_offsets(self, timeout_s=None):
        """{partition: the broker's end offset now}; within `timeout_s` in all if given (a KafkaException past
        it), else each partition retried as `_call` does."""
        if timeout_s is None:
            return {p: self._watermarks(self.topic, p)[1] for p in self.tps}
        deadline = time.monotonic() + timeout_s
        return {p: self.consumer.get_watermark_offsets(tp, timeout=max(deadline - time.monotonic(), 0.001))[1]
                for p, tp in self.tps.items()}

    def positions(self, partitions):
        """{partition: the client's position, None where it has none}: past the last record it gave, and past
        the transaction markers and aborted records it passed over after it (read_committed)."""
        found = self._call(f"positions in {self.topic}", self.consumer.position, [self.tps[p] for p in partitions])
        return {tp.partition: tp.offset if tp.offset >= 0 else None for tp in found}

    def seek(self, partition, offset):
        """Read `partition` from `offset` on. After an offset-reset error its fetcher is stopped and refuses
        a seek, so the partition is assigned afresh at that offset instead."""
        from confluent_kafka import TopicPartition

        what = f"seeking {self.topic}[{partition}] to {offset}"
        self._call(what, self.consumer.incremental_unassign, [TopicPartition(self.topic, partition)])
        self._call(what, self.consumer.incremental_assign, [TopicPartition(self.topic, partition, offset)])

    def pause(self, partitions=None):
        self.consumer.pause([self.tps[p] for p in (self.tps if partitions is None else partitions)])

    def resume(self, partitions=None):
        self.consumer.resume([self.tps[p] for p in (self.tps if partitions is None else partitions)])

    def high_watermarks(self):
        """{partition: high watermark} cached from the last fetch responses; None where none came yet."""
        marks = {}
        for p, tp in self.tps.items():
            try:
                high = self.consumer.get_watermark_offsets(tp, cached=True)[1]
            except Exception:  # noqa: BLE001 -- not known yet is the only answer we need from a failure
                high = -1
            marks[p] = high if high >= 0 else None
        return marks

    def poll(self, timeout_ms, max_records=MAX_POLL_RECORDS):
        from confluent_kafka import KafkaError

        # consume() waits out its whole timeout unless the batch fills, which would hold every window
        # close back by up to timeout_ms: take what is queued, and wait only for the first message.
        messages = self.consumer.consume(max_records, 0)
        if not messages:
            first = self.consumer.poll(timeout_ms / 1000)
            if first is None:
                return {}
            messages = [first, *(self.consumer.consume(max_records - 1, 0) if max_records > 1 else ())]
        batches, deleted, newest = {}, {}, {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._AUTO_OFFSET_RESET:  # "error" reset policy: the offset is gone
                    offset = message.offset()
                    deleted[message.partition()] = offset if offset is not None and offset >= 0 else None
                    continue
                # Errors in the stream (a broker gone, a partition moved) are retried by librdkafka;
                # a fatal one means this consumer cannot go on.
                if error.fatal():
                    raise KafkaSourceError(f"consumer of {self.topic} on {self.bootstrap}: {error.str()}")
                log.warning("Kafka consumer of %s: %s", self.topic, error.str())
                continue
            batch = batches.get(message.partition())
            if batch is None:
                batch = batches[message.partition()] = []
            newest[message.partition()] = message
            batch.append((message.offset(), (message.value(), message.timestamp()[1]) if self.timestamps
                          else message.value()))
        for partition, message in newest.items():
            self.read_times[partition] = message.timestamp()[1]  # -1 where the record has none
        if deleted:
            raise OffsetsDeleted(deleted, batches)
        return batches

    def commit(self, offsets, wait=False):
        from confluent_kafka import KafkaException, TopicPartition

        try:
            self.consumer.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in offsets.items()],
                                 asynchronous=not wait)
        except KafkaException as exc:
            log.debug("offset commit to Kafka skipped: %s", exc)

    def close(self):
        self.consumer.close()


SOURCES = {source.name: source for source in (ConfluentSource, KafkaPythonSource)}
DEFAULT_CLIENT = "confluent"


def _answers(bootstrap):
    """Some broker of `bootstrap` takes a TCP connection, or a KafkaSourceError says none does: a quiet refusal
    before kafka-python's consumer, which logs every try of its bootstrap at WARNING and ERROR while it fails."""
    import socket

    from fogsite.env import host_ports

    problems = []
    for host, port in host_ports(bootstrap):  # each host:port, as the setting's check (env_hostport) made sure
        try:
            socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
            return
        except OSError as exc:
            problems.append(f"{host}:{port}: {exc}")
    raise KafkaSourceError(f"Kafka at {bootstrap} does not answer ({'; '.join(problems)})")


def open_source(client, bootstrap, client_id, group_id, timestamps=False):
    """A source of `client`'s kind. With `timestamps`, each message's value comes as (value, the record's
    timestamp in epoch ms), for input whose event time is the record's (`runedge --legacy-input`)."""
    try:
        source = SOURCES[client]
    except KeyError:
        raise KafkaSourceError(f"unknown Kafka client {client!r}; expected one of {', '.join(SOURCES)}") from None
    opened = source(bootstrap, client_id, group_id)
    opened.timestamps = timestamps
    return opened
