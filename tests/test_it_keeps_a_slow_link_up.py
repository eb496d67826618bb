"""A link with a round trip of over a second is up, and delivers: a beat waited 800 ms for its answer, so
such a link was down for good and the sender gave it nothing."""

import pytest

from edge_app.link import Heartbeat
from tests.conftest import EDGE_ID, EDGE_SECRET, CloudThread, free_port
from tooling.chaos.proxy import Proxy

DELAY_S = 0.5  # each way, on every chunk: a round trip of a second and more


class SlowProxy(Proxy):
    delay_s = DELAY_S


@pytest.mark.django_db(transaction=True)
def test_it_counts_a_link_of_a_second_and_more_round_trip_as_up(redis_url, cloud_prefix):
    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}).start()
    proxy = SlowProxy(free_port(), int(cloud.hb_addr.rsplit(":", 1)[1])).start()
    beat = Heartbeat(edge_id=EDGE_ID, secret=EDGE_SECRET, address=f"tcp://127.0.0.1:{proxy.listen_port}")
    try:
        # The first beat also waits for the connection (two handshakes through the proxy); one of the next answers.
        assert any(beat.handle_one_beat() for _ in range(4))
        assert beat.handle_one_beat()  # and it stays up
    finally:
        beat.close()
        proxy.stop()
        cloud.stop()
