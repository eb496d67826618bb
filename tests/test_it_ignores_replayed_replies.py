"""Finding 1: a man in the middle answers some requests with an earlier, genuine cloud reply.

The proxy speaks nng's wire format (an 8-byte SP handshake, then messages
of an 8-byte length and a 4-byte request id ahead of the body): it keeps
the first genuine reply, and in place of some later replies sends that one
again with only the request id rewritten, dropping the real answer. The
edge must refuse every such reply, send those tuples again, and in the end
have no tuple ACKED that the cloud does not hold.
"""

import asyncio
import struct

import pytest

from cloud_app.keys import Keys
from cloud_app.store import Record
from tooling.chaos.proxy import Proxy
from edge_app.models import Status, WindowAggregate
from tests.conftest import EDGE_ID, EDGE_SECRET, CloudThread, free_port, add_pending, edge_sender, send_until_all_acked

TUPLES = 1000
REPLAY_EVERY = 3  # every third reply from the cloud is swapped for the first one
MOST_REPLAYS = 6


class ReplayingProxy(Proxy):
    def __init__(self, listen_port, target_port):
        super().__init__(listen_port, target_port)
        self.first_reply, self.replies, self.replayed = None, 0, 0

    async def _forward(self, source, sink, to_client):
        try:
            sink.write(await source.readexactly(8))  # the SP handshake
            while True:
                header = await source.readexactly(8)
                message = await source.readexactly(struct.unpack(">Q", header)[0])
                if to_client:
                    message = self._tamper(message)
                sink.write(struct.pack(">Q", len(message)) + message)
                await sink.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            sink.transport.abort()

    def _tamper(self, message):
        """The reply to send on instead of `message` (a request id + the cloud's reply)."""
        self.replies += 1
        if self.first_reply is None:
            self.first_reply = message[4:]
        elif self.replies % REPLAY_EVERY == 0 and self.replayed < MOST_REPLAYS:
            self.replayed += 1
            return message[:4] + self.first_reply  # genuine, but another request's
        return message


@pytest.mark.django_db(transaction=True)
def test_it_acks_nothing_the_cloud_lacks_when_replies_are_replayed(redis_url, cloud_prefix, redis_client):
    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}).start()
    proxy = ReplayingProxy(free_port(), int(cloud.data_addr.rsplit(":", 1)[1])).start()
    add_pending(TUPLES)
    sender = edge_sender(f"tcp://127.0.0.1:{proxy.listen_port}", batch=50, in_flight=3, ack_timeout_ms=2000)
    try:
        assert send_until_all_acked(sender, timeout=120)
    finally:
        sender.close()
        proxy.stop()
        cloud.stop()
    assert proxy.replayed >= 3 and sender.totals["untrusted"] >= proxy.replayed
    acked = set(WindowAggregate.objects.filter(status=Status.ACKED).values_list("household", "window_start"))
    stored = {(r.household, r.ws) for r in map(Record.decode, redis_client.hvals(Keys(cloud_prefix).tuples(EDGE_ID)))}
    assert len(acked) == TUPLES and acked - stored == set()  # 0 tuples ACKED that the cloud lacks
