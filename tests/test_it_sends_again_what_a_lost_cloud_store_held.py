"""A cloud store emptied or replaced under the same address (a Redis restarted without its data, flushed, a
new one behind the same name): the heartbeat's reply names another store, and the edge sends again every
acknowledged tuple it still holds, which the cloud then has once, counted once."""

import pytest

from cloud_app.keys import SHARDS, Keys
from edge_app.link import Heartbeat
from edge_app.models import EdgeStatus, Status, WindowAggregate
from fogwire import protocol as wire
from tests.conftest import (EDGE_ID, EDGE_SECRET, CloudThread, add_pending, edge_sender, send_until_all_acked,
                            wait_for)
from tooling.bench.common import delete_prefix

pytestmark = pytest.mark.django_db(transaction=True)

TUPLES = 300


def stored(redis_client, prefix):
    """(the edge's tuples in the cloud's store, the tuples its counters say were stored)."""
    keys = Keys(prefix)
    counted = sum(int(redis_client.hget(keys.stats(shard), "tuples") or 0) for shard in range(SHARDS))
    return redis_client.hlen(keys.tuples(EDGE_ID)), counted


def test_it_sends_everything_acknowledged_again_to_a_store_that_lost_it(redis_url, redis_client, cloud_prefix):
    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}).start()
    beat = Heartbeat(edge_id=EDGE_ID, secret=EDGE_SECRET, address=cloud.hb_addr, timeout_ms=1000)
    sender = edge_sender(cloud.data_addr, batch=100, in_flight=2, ack_timeout_ms=2000)
    try:
        add_pending(TUPLES)
        assert wait_for(beat.handle_one_beat, timeout=5, interval=0.1)
        first = EdgeStatus.objects.get(edge_id=EDGE_ID).cloud_store
        assert first  # the store's identity, heard with the first answer: nothing to send again
        assert send_until_all_acked(sender)
        assert stored(redis_client, cloud_prefix) == (TUPLES, TUPLES)

        delete_prefix(redis_url, cloud_prefix)  # the store loses everything; the cloud goes on running
        assert beat.handle_one_beat()
        status = EdgeStatus.objects.get(edge_id=EDGE_ID)
        assert status.cloud_store not in ("", first) and status.sent_again == TUPLES
        assert WindowAggregate.objects.filter(status=Status.PENDING).count() == TUPLES
        assert send_until_all_acked(sender)
        assert stored(redis_client, cloud_prefix) == (TUPLES, TUPLES)  # each once, counted once

        assert beat.handle_one_beat()  # the same store again: nothing more is sent
        assert EdgeStatus.objects.get(edge_id=EDGE_ID).sent_again == TUPLES
        assert not WindowAggregate.objects.exclude(status=Status.ACKED).exists()
    finally:
        beat.close()
        sender.close()
        cloud.stop()


def test_it_takes_no_store_identity_that_is_not_a_short_printable_id():
    nonce = b"n" * wire.NONCE_BYTES
    for store, read in (("0123abcd", "0123abcd"), ("", ""), ("x" * 65, ""), ("a b", ""), (7, ""), (None, "")):
        reply = wire.heartbeat_reply(EDGE_ID, EDGE_SECRET, nonce, store=store)
        payload = wire._decode(wire.split(reply).body)
        assert wire.read_store(payload) == read, store
