"""The simulation's producer keeps every reading handed to it while Kafka is away, however long that lasts.

The clients' own defaults give a message up after 2 (kafka-python) or 5 (librdkafka) minutes and drop its
readings; kafka-python's queue also grows without bound meanwhile. Readings now wait for the broker, and a
full queue holds the run back until Kafka takes readings again; only a stop ends that wait, counting what
was not sent. The broker is the test's own (SIGKILLed and started again), not the suite's.
"""

import logging
import os
import signal
import threading
import time
import uuid

from confluent_kafka import Consumer, TopicPartition

from simulation.producer import CLIENTS, KafkaPythonProducer


def _messages_in(bootstrap, topic, partitions):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    try:
        total = 0
        for p in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def test_it_sends_every_reading_handed_over_while_kafka_was_away(own_kafka):
    """Both clients through one outage (a broker's restart takes seconds)."""
    topics = {client: f"held-{client}-{uuid.uuid4().hex[:8]}" for client in CLIENTS}
    producers = {client: CLIENTS[client](own_kafka.bootstrap, topics[client], batched=True) for client in CLIENTS}
    own_kafka.kill(own_kafka.kafka)
    for producer in producers.values():
        for n in range(3):
            producer.send_batch(n % producer.partitions, b'{"batch": %d}' % n, 10)
            producer.poll()
    # librdkafka gave these up 300 s after they were handed over, kafka-python 120 s: the wait has no end
    # now, which no test waits out; what this one checks is that nothing handed over is lost meanwhile.
    time.sleep(1)
    own_kafka.restart(own_kafka.kafka)
    for client, producer in producers.items():
        assert producer.close(timeout=60) == 0, (client, producer.first_error)
        assert producer.sent == 30, client
        assert _messages_in(own_kafka.bootstrap, topics[client], producer.partitions) == 3, client


def test_it_holds_the_run_back_once_kafka_pythons_queue_is_full(own_kafka, caplog):
    """kafka-python's queue has no bound of its own: without one, a run at real time during an outage piles
    up every reading in memory. At the bound a send waits; a stop ends the wait and counts the reading."""
    topic, stop = f"bound-{uuid.uuid4().hex[:8]}", threading.Event()
    producer = KafkaPythonProducer(own_kafka.bootstrap, topic, stop_flag=lambda: "SIGTERM" if stop.is_set() else None,
                                   batched=True, queue_max=20)
    broker = own_kafka.kafka.our_pid()
    os.kill(broker, signal.SIGSTOP)  # a broker that hangs: connected, answering nothing
    held = threading.Thread(target=producer.send_batch, args=(0, b"third", 10))
    try:
        caplog.set_level(logging.WARNING, logger="fog.simulation")
        producer.send_batch(0, b"first", 10)
        producer.send_batch(0, b"second", 10)  # 20 unconfirmed: at the bound
        held.start()
        held.join(1.5)
        assert held.is_alive(), "a send at the bound went into the queue instead of waiting"
        assert "Kafka is taking no readings: 20 readings wait in the producer's queue" in caplog.text
        stop.set()
        held.join(2)
        assert not held.is_alive(), "a stop did not end the wait"
        assert producer.failed == 10 and "stopped (SIGTERM)" in producer.first_error
    finally:
        stop.set()  # a held send ends, and the module's broker goes on, also after a failed assertion
        os.kill(broker, signal.SIGCONT)
    stop.clear()
    assert producer.close(timeout=60) == 10
    assert producer.sent == 20
    assert _messages_in(own_kafka.bootstrap, topic, producer.partitions) == 2
