"""At real time, a broker that goes away closes no live window by the wall clock until it is back.

With the broker away the ingest's cached high watermarks say it has read everything, while the producers
hold back what they could not send, stamped with its time. The windows those readings belong to stay open,
and take them once the broker is back: none is late, and each window's average is of all its readings. The
broker here is the test's own (SIGKILLed and started again), not the suite's.
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


def _poll_until(ingest, moment_ms):
    while time.time() * 1000 < moment_ms:
        ingest.handle_one_poll(timeout_ms=50)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_it_closes_no_live_window_while_the_broker_is_away(own_kafka, client):
    from edge_app.ingest import Ingestor
    from edge_app.models import WindowAggregate

    topic, bootstrap = f"away-{uuid.uuid4().hex[:8]}", own_kafka.bootstrap
    produce(bootstrap, topic, [reading("warm-up", int(time.time() * 1000) - 60_000, 1.0)])  # makes the topic
    ingest = Ingestor(edge_id=f"edge-away-{client}", topic=topic, bootstrap=bootstrap, window_seconds=W // 1000,
                      grace_seconds=GRACE / 1000, idle_seconds=600, live_grace_seconds=LIVE_GRACE / 1000,
                      client=client)
    ingest.connect()
    held_back = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 120_000, "linger.ms": 0})
    try:
        # Early in a window, so that it is due (end + live grace) while the broker is away.
        wait_for(lambda: time.time() * 1000 % W < 500, timeout=10, interval=0.01)
        now = int(time.time() * 1000)
        start = now - now % W
        produce(bootstrap, topic, [reading("h", now, 10.0)])
        assert wait_for(lambda: (ingest.handle_one_poll(timeout_ms=50), "h" in ingest.book.households)[1], timeout=20)
        os.kill(own_kafka.kafka.our_pid(), signal.SIGKILL)
        # Stamped and handed to the producer now, within the window; it reaches the broker once that is back.
        held_back.produce(topic, key=b"h", value=reading("h", start + W - 1000, 30.0)[1])
        held_back.poll(0)
        _poll_until(ingest, start + W + LIVE_GRACE + 3000)  # well past the window's live due time
        assert not WindowAggregate.objects.filter(household="h").exists()
        assert ingest.book.open_windows() >= 1
        own_kafka.kafka.pidfile.unlink(missing_ok=True)
        own_kafka.restart(own_kafka.kafka)
        assert held_back.flush(60) == 0
        deadline = time.monotonic() + 60
        while not WindowAggregate.objects.filter(household="h").exists() and time.monotonic() < deadline:
            ingest.handle_one_poll(timeout_ms=50)
        assert list(WindowAggregate.objects.filter(household="h").values_list("window_start", "readings", "average_w")) \
            == [(start, 2, 20.0)]
        ingest.flush()
        assert ingest.totals["late"] == 0
    finally:
        ingest.close()
