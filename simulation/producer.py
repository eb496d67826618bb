"""One batched, asynchronous Kafka producer behind a small interface.

Two clients: confluent-kafka (librdkafka, the default) and kafka-python.
kafka-python's pure-Python producer falls short of the simulation's target
(`bench simulate --client kafka-python` against the default shows it), so
confluent-kafka is the default and kafka-python stays selectable
(`--client kafka-python`) for comparison.

Every message Kafka refuses is counted (and its first error kept), never
silently dropped: `close()` says how many were lost.
"""

import logging
import threading
import time

log = logging.getLogger("fog.simulation")

CONNECT_TIMEOUT_S = 10
LINGER_MS = 20
BATCH_BYTES = 1024 * 1024
QUEUE_MAX_MESSAGES = 1_000_000  # librdkafka's local queue; full while Kafka is away, then send() waits
# A stopped run waits this long for Kafka to take what is queued: process managers kill soon after asking.
STOP_FLUSH_S = 5
FLUSH_SLICE_S = 0.25  # a stop request is seen this often while the run's end waits for Kafka


class KafkaUnavailable(Exception):
    pass


class ConfluentProducer:
    name = "confluent-kafka"

    def __init__(self, bootstrap, topic, stop_flag=lambda: None):
        from confluent_kafka import KafkaException, Producer
        from confluent_kafka.admin import AdminClient, NewTopic

        self.topic, self.stop_flag = topic, stop_flag
        self.sent = self.failed = 0
        self.first_error = None
        # A restarted broker is retried within a second (librdkafka's default backoff grows to 10 s).
        config = {"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": CONNECT_TIMEOUT_S * 1000,
                  "reconnect.backoff.max.ms": 1000}
        admin = AdminClient({**config, "log_level": 0, "logger": _quiet})
        try:
            metadata = admin.list_topics(timeout=CONNECT_TIMEOUT_S)
        except KafkaException as exc:
            raise KafkaUnavailable(f"Kafka at {bootstrap} is unreachable: {exc.args[0].str()}") from None
        if topic not in metadata.topics:
            # -1: the broker's own defaults for partitions and replicas.
            futures = admin.create_topics([NewTopic(topic, num_partitions=-1, replication_factor=-1)])
            try:
                futures[topic].result(CONNECT_TIMEOUT_S)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise KafkaUnavailable(f"topic {topic!r} can't be created on {bootstrap}: {exc}") from None
        # Delivery reports for failures only: a Python callback per delivered
        # message cost more than producing it. Sent = produced - failed, once
        # close() has flushed everything.
        self.producer = Producer({**config, "acks": "all", "enable.idempotence": True, "linger.ms": LINGER_MS,
                                  "batch.size": BATCH_BYTES, "queue.buffering.max.messages": QUEUE_MAX_MESSAGES,
                                  "queue.buffering.max.kbytes": 1024 * 1024, "logger": _quiet,
                                  "delivery.report.only.error": True, "on_delivery": self._failed})
        self.produced = 0
        self._produce = self.producer.produce

    def _failed(self, err, msg):
        if err is not None:
            self.failed += 1
            if self.first_error is None:
                self.first_error = str(err)
                log.error("Kafka refused a reading (topic %s): %s", self.topic, err)

    def send(self, key, value):
        try:
            self._produce(self.topic, value, key)
        except BufferError:  # the local queue is full: let deliveries drain, then retry
            # Kafka may stay away for good: once a stop is asked for, a reading that finds the queue full is
            # counted as not accepted at once (the summary says what was lost), without waiting for room.
            while not self.stop_flag():
                self.producer.poll(0.05)
                try:
                    self._produce(self.topic, value, key)
                    break
                except BufferError:
                    continue
            else:
                self._failed(f"stopped ({self.stop_flag()}) while the local queue was full: Kafka took no "
                             "readings", None)
        self.produced += 1

    def poll(self):
        self.producer.poll(0)

    def close(self, timeout=60):
        """Wait for every message; anything still unsent after `timeout` (STOP_FLUSH_S once a stop is asked
        for) is counted as failed."""
        flushed = flush_in_slices(lambda seconds: self.producer.flush(seconds) == 0, timeout, self.stop_flag)
        left = 0 if flushed else len(self.producer)
        if left:
            self.failed += left
            self.first_error = self.first_error or f"{left} readings still unsent when the run ended"
        self.sent = self.produced - self.failed
        return self.failed


class KafkaPythonProducer:
    name = "kafka-python"

    def __init__(self, bootstrap, topic, stop_flag=lambda: None):
        from kafka import KafkaProducer
        from kafka.errors import KafkaError, KafkaTimeoutError

        self.topic, self.stop_flag, self._timeout = topic, stop_flag, KafkaTimeoutError
        self.sent = self.failed = self.produced = 0
        self.first_error = None
        self._stalled = False  # the last send found no metadata for the topic within max_block_ms
        self._counting = threading.Lock()
        try:
            self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=LINGER_MS,
                                          batch_size=BATCH_BYTES, max_block_ms=CONNECT_TIMEOUT_S * 1000,
                                          request_timeout_ms=CONNECT_TIMEOUT_S * 1000)
            self.producer.partitions_for(topic)
        except KafkaError as exc:
            raise KafkaUnavailable(f"Kafka at {bootstrap} is unreachable: {exc}") from None

    def _ok(self, _metadata):
        self.sent += 1

    def _error(self, exc):
        with self._counting:  # errbacks run on kafka-python's I/O thread, a stalled send's on ours
            self.failed += 1
        if self.first_error is None:
            self.first_error = str(exc)
            log.error("Kafka refused a reading (topic %s): %s", self.topic, exc)

    def send(self, key, value):
        self.produced += 1
        if self._stalled and self.stop_flag():  # Kafka is away and a stop is asked for: don't wait again
            self._error(f"stopped ({self.stop_flag()}) while Kafka took no readings")
            return
        try:
            future = self.producer.send(self.topic, key=key, value=value)
        except self._timeout as exc:  # no metadata for the topic within max_block_ms: Kafka is away
            self._stalled = True
            self._error(exc)
            return
        self._stalled = False
        future.add_callback(self._ok).add_errback(self._error)

    def poll(self):
        pass

    def close(self, timeout=60):
        """Wait for every message; anything still unsent after `timeout` (STOP_FLUSH_S once a stop is asked
        for) is counted as failed."""

        def flush(seconds):
            try:
                self.producer.flush(seconds)
            except self._timeout:
                return False
            return True

        if not flush_in_slices(flush, timeout, self.stop_flag):
            # close() would flush again and raise again: end the I/O thread without sending instead. It fails
            # what is left (their errbacks run on it) before the join returns, so nothing is counted twice.
            self.producer._sender.force_close()
            self.producer._sender.join(CONNECT_TIMEOUT_S)
            timeout = 0
        try:
            self.producer.close(timeout)
        except self._timeout:  # its I/O thread outlived the join: what it holds is counted below
            pass
        left = self.produced - self.sent - self.failed
        if left > 0:
            self.failed += left
            self.first_error = self.first_error or f"{left} readings still unsent when the run ended"
        return self.failed


CLIENTS = {"confluent": ConfluentProducer, "kafka-python": KafkaPythonProducer}


def flush_in_slices(flush, timeout, stop_flag):
    """Call `flush(seconds)` in short slices until it says all went out (True) or `timeout` is up (False);
    a stop request, also one that comes while it waits, cuts the time left to STOP_FLUSH_S."""
    deadline, cut = time.monotonic() + timeout, False
    while True:
        if not cut and stop_flag():
            deadline, cut = min(deadline, time.monotonic() + STOP_FLUSH_S), True
        if flush(max(0.0, min(FLUSH_SLICE_S, deadline - time.monotonic()))):
            return True
        if time.monotonic() >= deadline:
            return False


class _QuietLogger:
    """librdkafka logs connection refusals at length; our own message says it once."""

    def log(self, *args, **kwargs):
        pass


_quiet = _QuietLogger()
