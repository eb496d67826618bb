"""A link the network dropped half-open (a NAT or a proxy that forgot the connections, a peer that hangs): the
edge's requests and beats go out without an error and nothing comes back, and nng would dial again only once
the kernel gave up on the connections, a quarter of an hour later, or never. The edge makes its sockets anew
and delivers everything once over new connections, to the same address."""

from urllib.parse import urlsplit

import pytest

from edge_app.link import REDIAL_EVERY_SECONDS, Heartbeat
from edge_app.models import Status, WindowAggregate
from tests.conftest import (EDGE_ID, EDGE_SECRET, CloudThread, add_pending, edge_sender, free_port,
                            send_until_all_acked, wait_for)
from tooling.chaos.proxy import Proxy

pytestmark = pytest.mark.django_db(transaction=True)

TUPLES = 200


def port(address):
    return urlsplit(address.replace("tcp://", "http://")).port


def test_it_delivers_everything_once_over_new_connections(redis_url, redis_client, cloud_prefix):
    from cloud_app.keys import Keys

    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}).start()
    beats = Proxy(free_port(), port(cloud.hb_addr)).start()
    data = Proxy(free_port(), port(cloud.data_addr)).start()
    beat = Heartbeat(edge_id=EDGE_ID, secret=EDGE_SECRET, address=f"tcp://127.0.0.1:{beats.listen_port}",
                     timeout_ms=500)
    sender = edge_sender(f"tcp://127.0.0.1:{data.listen_port}", batch=50, in_flight=2, ack_timeout_ms=500)
    try:
        add_pending(TUPLES // 2)
        assert wait_for(beat.handle_one_beat, timeout=5, interval=0.1)
        assert send_until_all_acked(sender, timeout=20)

        beats.freeze()
        data.freeze()
        add_pending(TUPLES // 2, base_ms=1_600_000_000_000)

        def delivered():
            beat.handle_one_beat()
            sender._link_checked = -1e9
            sender.handle_one_round()
            return not WindowAggregate.objects.exclude(status=Status.ACKED).exists()

        assert wait_for(delivered, timeout=REDIAL_EVERY_SECONDS + 15, interval=0.1)
        assert redis_client.hlen(Keys(cloud_prefix).tuples(EDGE_ID)) == TUPLES
    finally:
        beat.close()
        sender.close()
        cloud.stop()
        beats.stop()
        data.stop()
