"""At real time, a broker that goes away closes no live window by the wall clock until it is back.

With the broker away the ingest's cached high watermarks say it has read everything, while the producers
hold back what they could not send, stamped with its time. The windows those readings belong to stay open,
and take them once the broker is back: none is late, and each window's average is of all its readings. The
broker here is the test's own (SIGKILLed and started again), not the suite's; both Kafka clients' ingests
read through the same outage, each its own topic (a broker's restart is most of this test's time).
"""

import os
import signal
import time
import uuid

import pytest
from confluent_kafka import Producer

from tests.conftest import produce, reading, wait_for

pytestmark = pytest.mark.serial  # windows close by the wall clock

W, GRACE, LIVE_GRACE = 5000, 2000, 500
CLIENTS = ("confluent", "kafka-python")


def _poll_all_until(ingests, done, timeout):
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        for ingest in ingests:
            ingest.handle_one_poll(timeout_ms=25)
    return done()


@pytest.mark.django_db(transaction=True)
def test_it_closes_no_live_window_while_the_broker_is_away(own_kafka):
    from edge_app.ingest import Ingestor
    from edge_app.models import WindowAggregate

    bootstrap, run = own_kafka.bootstrap, uuid.uuid4().hex[:8]
    topics = {client: f"away-{run}-{client}" for client in CLIENTS}
    for topic in topics.values():
        produce(bootstrap, topic, [reading("warm-up", int(time.time() * 1000) - 60_000, 1.0)])  # makes the topic
    ingests = {client: Ingestor(edge_id=f"edge-away-{client}", topic=topic, bootstrap=bootstrap,
                                window_seconds=W // 1000, grace_seconds=GRACE / 1000, idle_seconds=600,
                                live_grace_seconds=LIVE_GRACE / 1000, client=client)
               for client, topic in topics.items()}
    held_back = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 120_000, "linger.ms": 0})
    try:
        for ingest in ingests.values():
            ingest.connect()
        # Early in a window, so that it is due (end + live grace) while the broker is away.
        wait_for(lambda: time.time() * 1000 % W < 500, timeout=10, interval=0.01)
        now = int(time.time() * 1000)
        start = now - now % W
        for client, topic in topics.items():
            produce(bootstrap, topic, [reading(f"h-{client}", now, 10.0)])
        assert _poll_all_until(ingests.values(), lambda: all(f"h-{client}" in ingest.book.households
                                                              for client, ingest in ingests.items()), timeout=20)
        os.kill(own_kafka.kafka.our_pid(), signal.SIGKILL)
        # Stamped and handed to the producer now, within the window; it reaches the broker once that is back.
        for client, topic in topics.items():
            held_back.produce(topic, key=f"h-{client}".encode(), value=reading(f"h-{client}", start + W - 1000, 30.0)[1])
        held_back.poll(0)
        assert _poll_all_until(ingests.values(), lambda: time.time() * 1000 >= start + W + LIVE_GRACE + 3000,
                               timeout=30)  # well past the window's live due time
        for client, ingest in ingests.items():
            assert not WindowAggregate.objects.filter(household=f"h-{client}").exists(), client
            assert ingest.book.open_windows() >= 1, client
        own_kafka.kafka.pidfile.unlink(missing_ok=True)
        own_kafka.restart(own_kafka.kafka)
        assert held_back.flush(60) == 0
        stored = {client: WindowAggregate.objects.filter(household=f"h-{client}") for client in CLIENTS}
        _poll_all_until(ingests.values(), lambda: all(rows.exists() for rows in stored.values()), timeout=60)
        for client, ingest in ingests.items():
            assert list(stored[client].values_list("window_start", "readings", "average_w")) == [(start, 2, 20.0)], \
                client
            ingest.flush()
            assert ingest.totals["late"] == 0, client
    finally:
        for ingest in ingests.values():
            ingest.close()
