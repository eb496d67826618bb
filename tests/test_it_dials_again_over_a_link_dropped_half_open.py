"""A link the network dropped half-open (a NAT or a proxy that forgot the connections, a peer that hangs): the
edge's requests and beats go out without an error and nothing comes back, and nng would dial again only once
the kernel gave up on the connections, a quarter of an hour later, or never. The edge makes its sockets anew
and delivers everything once over new connections, to the same addresses: also when only one of two cloud
replicas is cut off, and nng's turns put an answer between the timeouts."""

import time
from urllib.parse import urlsplit

import pytest

from cloud_app.keys import Keys
from edge_app.link import REDIAL_EVERY_SECONDS, Heartbeat
from edge_app.models import Status, WindowAggregate
from tests.conftest import (EDGE_ID, EDGE_SECRET, CloudThread, add_pending, edge_sender, free_port,
                            send_until_all_acked, wait_for)
from tooling.chaos.proxy import Proxy

pytestmark = pytest.mark.django_db(transaction=True)

TUPLES = 200  # half delivered before the cut, half after it


def port(address):
    return urlsplit(address.replace("tcp://", "http://")).port


def addresses(proxies):
    return ",".join(f"tcp://127.0.0.1:{proxy.listen_port}" for proxy in proxies)


@pytest.mark.parametrize("dropped", [1, 2], ids=["one replica of two", "every replica"])
def test_it_delivers_everything_once_over_new_connections(redis_url, redis_client, cloud_prefix, dropped):
    clouds = [CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}).start() for _ in range(2)]
    beats = [Proxy(free_port(), port(cloud.hb_addr)).start() for cloud in clouds]
    data = [Proxy(free_port(), port(cloud.data_addr)).start() for cloud in clouds]
    beat = Heartbeat(edge_id=EDGE_ID, secret=EDGE_SECRET, address=addresses(beats), timeout_ms=500)
    sender = edge_sender(addresses(data), batch=20, in_flight=2, ack_timeout_ms=500)
    try:
        add_pending(TUPLES // 2)
        assert wait_for(beat.handle_one_beat, timeout=5, interval=0.1)
        assert send_until_all_acked(sender, timeout=20)

        frozen_at = time.monotonic()
        for proxy in beats[:dropped] + data[:dropped]:
            proxy.freeze()
        add_pending(TUPLES // 2, base_ms=1_600_000_000_000)

        def delivered_on_new_connections():
            beat.handle_one_beat()
            sender._link_checked = -1e9
            sender.handle_one_round()
            return (not WindowAggregate.objects.exclude(status=Status.ACKED).exists()
                    and min(beat.timeouts.dialled, sender.timeouts.dialled) > frozen_at)

        assert wait_for(delivered_on_new_connections, timeout=REDIAL_EVERY_SECONDS + 15, interval=0.1)
        assert redis_client.hlen(Keys(cloud_prefix).tuples(EDGE_ID)) == TUPLES
        # The dead connections are gone: a request waits out no timeout any more (with one replica of two cut
        # off, retries alone also got everything through, but every other request waited for its timeout).
        timeouts = sender.totals["timeouts"]
        add_pending(TUPLES // 2, base_ms=1_700_000_000_000)
        assert send_until_all_acked(sender, timeout=20) and sender.totals["timeouts"] == timeouts
    finally:
        beat.close()
        sender.close()
        for part in clouds + beats + data:
            part.stop()
