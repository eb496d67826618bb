"""One batched, asynchronous Kafka producer behind a small interface.

Two clients: confluent-kafka (librdkafka, the default) and kafka-python.
kafka-python's pure-Python producer falls short of the simulation's target
(`bench simulate --client kafka-python` against the default shows it), so
confluent-kafka is the default and kafka-python stays selectable
(`--client kafka-python`) for comparison.

Readings go one a message, keyed by household, or, by default, in batches:
`send_batch` puts many readings into one message for the partition
`partition_of` names, the one the client's own partitioner would choose for
the household's id as a key, so a household's readings stay in one
partition whichever way they are sent. Every reading in a message
Kafka refuses is counted (and the first error kept), never silently dropped:
`close()` says how many were lost.
"""

import logging
import threading
import time
import zlib
from functools import partial

from fogwire.ratelog import RateLimitedLog

log = logging.getLogger("fog.simulation")

CONNECT_TIMEOUT_S = 10
LINGER_MS = 20
BATCH_BYTES = 1024 * 1024
QUEUE_MAX_MESSAGES = 1_000_000  # librdkafka's local queue; full while Kafka is away, then send() waits
QUEUE_MAX_KBYTES = 1024 * 1024  # ... or at this many KiB, which batches reach first:
QUEUE_MAX_KBYTES_BATCHED = 128 * 1024  # about a million readings, as many as one a message
TOPIC_WAIT_S = 10  # a topic made just now may show no partitions for a moment
# A reading waits for Kafka however long it is away (the clients' own defaults give up after 2 or 5 minutes
# and drop it): the local queue bounds the memory, and a full queue holds the run back until Kafka takes
# readings again. Only a stop ends the wait; close() counts what is left as not sent.
QUEUE_MAX_READINGS = 1_000_000  # kafka-python's queue has no bound of its own: readings not yet confirmed
ROOM_SLICE_S = 0.05  # how often a run held back by a full queue looks for room (and for a stop request)
HELD_BACK_LOG_S = 60  # ... and says so at most this often
HELD_BACK = ("Kafka is taking no readings: %s wait in the producer's queue, which is full; the run waits for room "
             "(a stop ends the wait, counting what is left as not sent)")
NO_METADATA = ("Kafka has not said where topic %r is within max_block_ms; the run waits for it (a stop ends the "
               "wait, counting what is left as not sent)")
# A stopped run waits this long for Kafka to take what is queued: process managers kill soon after asking.
STOP_FLUSH_S = 5
FLUSH_SLICE_S = 0.25  # a stop request is seen this often while the run's end waits for Kafka
ANSWER_SLICE_MAX_S = 2.0  # ... and at least this often while its start does (each wait twice the last)


class KafkaUnavailable(Exception):
    pass


class StoppedBeforeStart(Exception):
    """A stop request (`signal`: its name) came while the producer waited for Kafka to answer at the start."""

    def __init__(self, signal):
        super().__init__(signal)
        self.signal = signal


def _answered(ask, stop_flag, refused):
    """ask(seconds) in slices until it answers, for up to CONNECT_TIMEOUT_S: what it returned; `refused()` the
    KafkaUnavailable to raise once the time is up (ask raises `Retry` while Kafka has not answered). A stop
    request ends the wait at the next slice (StoppedBeforeStart), not after the timeout. Each slice is twice the
    last, from FLUSH_SLICE_S to ANSWER_SLICE_MAX_S: a request's answer is lost with its slice, and a broker
    far away may take longer than the first ones to answer at all."""
    deadline, seconds = time.monotonic() + CONNECT_TIMEOUT_S, FLUSH_SLICE_S
    while True:
        if stop_flag():
            raise StoppedBeforeStart(stop_flag())
        try:
            return ask(max(0.0, min(seconds, deadline - time.monotonic())) or FLUSH_SLICE_S)
        except Retry as exc:
            if time.monotonic() >= deadline:
                raise refused(exc.__cause__ or exc) from None
            seconds = min(2 * seconds, ANSWER_SLICE_MAX_S)


class Retry(Exception):
    """Kafka has not answered this slice of a start-up wait."""


def _partitions(count_now, topic, bootstrap, stop_flag=lambda: None):
    """The topic's partition count, asked again for up to TOPIC_WAIT_S while it is 0 (a topic made just now)."""
    deadline = time.monotonic() + TOPIC_WAIT_S
    while True:
        if stop_flag():
            raise StoppedBeforeStart(stop_flag())
        count = count_now()
        if count:
            return count
        if time.monotonic() >= deadline:
            raise KafkaUnavailable(f"topic {topic!r} on {bootstrap} shows no partitions")
        time.sleep(0.1)


class ConfluentProducer:
    name = "confluent-kafka"

    def __init__(self, bootstrap, topic, stop_flag=lambda: None, batched=False):
        from confluent_kafka import KafkaException, Producer
        from confluent_kafka.admin import AdminClient, NewTopic

        self.topic, self.stop_flag, self.batched = topic, stop_flag, batched
        self._refused = KafkaException  # what produce() raises for a message it will never send (too large)
        self.sent = self.failed = 0
        self.first_error = None
        self._held_log = RateLimitedLog(log, 1, HELD_BACK_LOG_S)
        # A restarted broker is retried within a second (librdkafka's default backoff grows to 10 s).
        config = {"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": CONNECT_TIMEOUT_S * 1000,
                  "reconnect.backoff.max.ms": 1000}
        admin = AdminClient({**config, "log_level": 0, "logger": _quiet})

        def topics(seconds):
            try:
                return admin.list_topics(timeout=seconds)
            except KafkaException as exc:
                raise Retry from exc

        metadata = _answered(topics, stop_flag, lambda exc: KafkaUnavailable(
            f"Kafka at {bootstrap} is unreachable: {exc.args[0].str() if exc.args else exc}"))
        if topic not in metadata.topics:
            # -1: the broker's own defaults for partitions and replicas.
            made = admin.create_topics([NewTopic(topic, num_partitions=-1, replication_factor=-1)])[topic]

            def created(seconds):
                try:
                    return made.result(seconds)
                except TimeoutError as exc:  # concurrent.futures' is the built-in one
                    raise Retry from exc
                except KafkaException as exc:
                    if "TOPIC_ALREADY_EXISTS" not in str(exc):
                        raise KafkaUnavailable(f"topic {topic!r} can't be created on {bootstrap}: {exc}") from None
                    return None

            _answered(created, stop_flag, lambda exc: KafkaUnavailable(
                f"topic {topic!r} can't be created on {bootstrap}: no answer within {CONNECT_TIMEOUT_S} s"))

        def count_now():
            try:
                found = admin.list_topics(topic, timeout=ANSWER_SLICE_MAX_S).topics.get(topic)
            except KafkaException:  # asked again until TOPIC_WAIT_S is up
                return 0
            return 0 if found is None or found.error is not None else len(found.partitions)

        self.partitions = _partitions(count_now, topic, bootstrap, stop_flag)
        # One reading a message: delivery reports for failures only, as a Python callback per delivered
        # message cost more than producing it; sent = produced - failed, once close() has flushed everything.
        # Batches: a report for each (tens a second at real time), which says how many readings it carried.
        self.producer = Producer({**config, "acks": "all", "enable.idempotence": True, "linger.ms": LINGER_MS,
                                  "message.timeout.ms": 0,  # never: see QUEUE_MAX_READINGS
                                  "batch.size": BATCH_BYTES, "queue.buffering.max.messages": QUEUE_MAX_MESSAGES,
                                  "queue.buffering.max.kbytes": QUEUE_MAX_KBYTES_BATCHED if batched else QUEUE_MAX_KBYTES,
                                  "logger": _quiet,
                                  "delivery.report.only.error": not batched, "on_delivery": self._failed})
        self.produced = 0
        self._produce = self.producer.produce

    def _failed(self, err, msg, readings=1):
        if err is not None:
            self.failed += readings
            if self.first_error is None:
                self.first_error = str(err)
                log.error("Kafka refused %s (topic %s): %s", "a reading" if readings == 1 else f"{readings} readings",
                          self.topic, err)

    def _reported(self, readings, err, msg):
        if err is None:
            self.sent += readings
        else:
            self._failed(err, msg, readings)

    def partition_of(self, household):
        """librdkafka's default partitioner (consistent_random) for a key: CRC-32 of it."""
        return zlib.crc32(household.encode()) % self.partitions

    def send(self, key, value):
        self._handed(1, self.topic, value, key)

    def send_batch(self, partition, value, readings):
        """One message of `readings` readings, to `partition`."""
        self._handed(readings, self.topic, value, None, partition=partition, on_delivery=partial(self._reported,
                                                                                                 readings))

    def _handed(self, readings, *message, **named):
        try:
            self._produce(*message, **named)
        except self._refused as exc:  # MSG_SIZE_TOO_LARGE, say: Kafka would refuse it whenever it came
            self._failed(exc.args[0].str() if exc.args else exc, None, readings)
        except BufferError:  # the local queue is full: let deliveries drain, then retry
            # Kafka may stay away for good: once a stop is asked for, a reading that finds the queue full is
            # counted as not accepted at once (the summary says what was lost), without waiting for room.
            self._held_log.warning(HELD_BACK, f"{len(self.producer):,} messages")
            while not self.stop_flag():
                self.producer.poll(ROOM_SLICE_S)
                try:
                    self._produce(*message, **named)
                    break
                except BufferError:
                    continue
            else:
                self._failed(f"stopped ({self.stop_flag()}) while the local queue was full: Kafka took no "
                             "readings", None, readings)
        self.produced += readings

    def poll(self):
        self.producer.poll(0)

    def close(self, timeout=60):
        """Wait for every message; anything still unsent after `timeout` (STOP_FLUSH_S once a stop is asked
        for) is counted as failed."""
        flushed = flush_in_slices(lambda seconds: self.producer.flush(seconds) == 0, timeout, self.stop_flag)
        if self.batched:  # every batch handed over was reported, or is lost
            self.producer.poll(0)  # reports of the last deliveries the flush saw
            left = self.produced - self.sent - self.failed
        else:
            left = 0 if flushed else len(self.producer)
        if left:
            self.failed += left
            self.first_error = self.first_error or (f"{left} readings unconfirmed when the run ended: Kafka may hold "
                                                     "some of them, so count the topic before sending any again")
        self.sent = self.produced - self.failed
        return self.failed


class KafkaPythonProducer:
    name = "kafka-python"

    def __init__(self, bootstrap, topic, stop_flag=lambda: None, batched=False, queue_max=QUEUE_MAX_READINGS):
        from kafka import KafkaProducer
        from kafka.errors import KafkaError, KafkaTimeoutError
        from kafka.partitioner.default import murmur2

        self.topic, self.stop_flag, self._timeout, self.batched = topic, stop_flag, KafkaTimeoutError, batched
        self._kafka_error = KafkaError
        self._murmur2 = murmur2
        self.sent = self.failed = self.produced = 0
        self.first_error = None
        self._stalled = False  # the last send waited for Kafka (no metadata within max_block_ms, or no room)
        self.queue_max = queue_max
        self._held_log = RateLimitedLog(log, 1, HELD_BACK_LOG_S)
        self._counting = threading.Lock()
        self._settled = False  # close() counted what was left: callbacks after that count nothing
        try:
            self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=LINGER_MS,
                                          batch_size=BATCH_BYTES, max_block_ms=CONNECT_TIMEOUT_S * 1000,
                                          request_timeout_ms=CONNECT_TIMEOUT_S * 1000,
                                          delivery_timeout_ms=float("inf"),  # never: see QUEUE_MAX_READINGS
                                          reconnect_backoff_max_ms=1000)  # as librdkafka's: a restarted broker
            self.partitions = _partitions(lambda: len(self.producer.partitions_for(topic) or ()), topic, bootstrap)
        except KafkaError as exc:
            raise KafkaUnavailable(f"Kafka at {bootstrap} is unreachable: {exc}") from None
        except ValueError as exc:  # kafka-python checks a topic's name as it looks it up
            raise KafkaUnavailable(f"topic {topic!r}: {exc}") from None

    def partition_of(self, household):
        """kafka-python's default partitioner for a key: murmur2 of it."""
        return (self._murmur2(household.encode()) & 0x7FFFFFFF) % self.partitions

    def _ok(self, readings, _metadata):
        with self._counting:  # as _error: on kafka-python's I/O thread, or on ours if the send is done already
            if not self._settled:
                self.sent += readings

    def _error(self, readings, exc):
        with self._counting:  # errbacks run on kafka-python's I/O thread, a stalled send's on ours
            if not self._settled:
                self.failed += readings
        if self.first_error is None:
            self.first_error = str(exc)
            log.error("Kafka refused %s (topic %s): %s", "a reading" if readings == 1 else f"{readings} readings",
                      self.topic, exc)

    def send(self, key, value):
        self._handed(1, key=key, value=value)

    def send_batch(self, partition, value, readings):
        """One message of `readings` readings, to `partition`."""
        self._handed(readings, value=value, partition=partition)

    def _handed(self, readings, **message):
        self.produced += readings
        while True:
            if self._stalled and self.stop_flag():  # Kafka is away and a stop is asked for: don't wait again
                self._error(readings, f"stopped ({self.stop_flag()}) while Kafka took no readings")
                return
            waiting = self.produced - readings - self.sent - self.failed
            if waiting >= self.queue_max:  # the queue is full: wait for Kafka to confirm some
                self._held_back(HELD_BACK, f"{waiting:,} readings")
                time.sleep(ROOM_SLICE_S)
                continue
            try:
                future = self.producer.send(self.topic, **message)
            except self._timeout:  # no metadata for the topic within max_block_ms: Kafka is away, wait on
                self._held_back(NO_METADATA, self.topic)
                continue
            except self._kafka_error as exc:  # MessageSizeTooLargeError, say: Kafka would refuse it whenever it came
                self._error(readings, exc)
                return
            break
        self._stalled = False
        future.add_callback(self._ok, readings).add_errback(self._error, readings)

    def _held_back(self, message, *args):
        self._stalled = True
        self._held_log.warning(message, *args)

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
            except self._kafka_error:  # a batch Kafka found too large, split and sent again, failed (UnknownError)
                time.sleep(seconds)  # what is left is counted once the time is up, as for a timeout
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
        except self._kafka_error:  # its I/O thread outlived the join, or a last flush failed: counted below
            pass
        # Under the lock, and the last count: an I/O thread that outlived the join may still run callbacks of
        # readings counted here, which would count them twice: the figures close returns stay as they were.
        with self._counting:
            self._settled = True
            left = self.produced - self.sent - self.failed
            if left > 0:
                self.failed += left
        if left > 0:
            self.first_error = self.first_error or (f"{left} readings unconfirmed when the run ended: Kafka may hold "
                                                     "some of them, so count the topic before sending any again")
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
