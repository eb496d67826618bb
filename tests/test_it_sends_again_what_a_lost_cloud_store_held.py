"""A cloud store emptied or replaced under the same address (a Redis restarted without its data, flushed, a
new one behind the same name): the heartbeat's reply names another store, and the edge sends again every
acknowledged tuple it still holds, which the cloud then has once, counted once."""

import pytest

from cloud_app.keys import SHARDS, Keys
from edge_app import cloud_store
from edge_app.models import EdgeStatus, Status, WindowAggregate
from fogwire import protocol as wire
from tests.conftest import (ACKED_LINK_TUPLES as TUPLES, EDGE_ID, EDGE_SECRET, add_pending, send_until_all_acked,
                            wait_for)
from tooling.bench.common import delete_prefix

pytestmark = [pytest.mark.edge_db, pytest.mark.django_db(transaction=True)]


def stored(redis_client, prefix):
    """(the edge's tuples in the cloud's store, the tuples its counters say were stored)."""
    keys = Keys(prefix)
    counted = sum(int(redis_client.hget(keys.stats(shard), "tuples") or 0) for shard in range(SHARDS))
    return redis_client.hlen(keys.tuples(EDGE_ID)), counted


def sent_again():
    return EdgeStatus.objects.get(edge_id=EDGE_ID).sent_again


def store():
    return EdgeStatus.objects.get(edge_id=EDGE_ID).cloud_store


def test_it_sends_everything_acknowledged_again_to_a_store_that_lost_it(acked_link, redis_url, redis_client, cloud_prefix,
                                                                          monkeypatch):
    beat, sender = acked_link
    first = store()
    assert stored(redis_client, cloud_prefix) == (TUPLES, TUPLES) and sent_again() == 0
    acked_at = dict(WindowAggregate.objects.values_list("id", "acked_at"))

    monkeypatch.setattr(cloud_store, "RESEND_CHUNK", 70)  # a few chunks, over several beats
    monkeypatch.setattr(cloud_store, "RESEND_SECONDS_PER_BEAT", 0)
    delete_prefix(redis_url, cloud_prefix)  # the store loses everything; the cloud goes on running
    assert wait_for(lambda: beat.handle_one_beat() and store() != first, timeout=10, interval=0)
    assert store() and sent_again() == TUPLES  # recorded once every tuple was put back
    assert WindowAggregate.objects.filter(status=Status.RESEND).count() == TUPLES
    assert send_until_all_acked(sender)
    assert stored(redis_client, cloud_prefix) == (TUPLES, TUPLES)  # each once, counted once
    # Retention counts from the first acknowledgement: a tuple sent again is not kept another period.
    assert dict(WindowAggregate.objects.values_list("id", "acked_at")) == acked_at

    monkeypatch.setattr(cloud_store, "RECHECK_AFTER_SECONDS", 0)
    assert beat.handle_one_beat()  # the same store again: nothing more is sent
    assert sent_again() == TUPLES and not WindowAggregate.objects.exclude(status=Status.ACKED).exists()

    second = store()
    delete_prefix(redis_url, cloud_prefix)  # and lost once more, soon after: sent again once more
    assert wait_for(lambda: beat.handle_one_beat() and store() != second, timeout=10, interval=0)
    assert sent_again() == 2 * TUPLES
    assert send_until_all_acked(sender)
    assert stored(redis_client, cloud_prefix) == (TUPLES, TUPLES)


def test_it_sends_again_what_was_in_flight_when_the_store_changed(acked_link, redis_url, cloud_prefix):
    """A reply the old store sent before it lost everything, applied by the sender only after the change was
    heard: those tuples are ACKED only after they were all put back, and are looked at again."""
    beat, _ = acked_link
    in_flight = list(WindowAggregate.objects.order_by("id").values_list("id", flat=True)[:10])
    WindowAggregate.objects.filter(id__in=in_flight).update(status=Status.SENT)
    delete_prefix(redis_url, cloud_prefix)
    assert beat.handle_one_beat() and sent_again() == TUPLES - len(in_flight)
    WindowAggregate.objects.filter(id__in=in_flight).update(status=Status.ACKED)  # the old store's reply lands
    beat.store_watch.recheck = (0, beat.store_watch.recheck[1])  # its time has come
    assert beat.handle_one_beat() and sent_again() == TUPLES
    assert WindowAggregate.objects.filter(status=Status.RESEND).count() == TUPLES


def test_it_sends_fresh_tuples_before_those_it_sends_again(acked_link, redis_url, redis_client, cloud_prefix):
    """Millions to send again must not hold up the page's fresh windows, nor pause the ingest at its disk budget
    (the heartbeat's backlog): fresh tuples go first, the others where a batch has room."""
    beat, sender = acked_link
    delete_prefix(redis_url, cloud_prefix)
    assert beat.handle_one_beat() and sent_again() == TUPLES
    assert not WindowAggregate.objects.backlog().exists()
    add_pending(30, base_ms=1_600_000_000_000)
    fresh = set(WindowAggregate.objects.filter(status=Status.PENDING).values_list("id", flat=True))
    first = set(row[0] for row in sender._next_batch())
    assert fresh < first and len(first) == 100  # the fresh ones, then those to send again to fill the batch
    assert WindowAggregate.objects.backlog().count() == 100  # the batch claimed; the rest wait outside it
    sender.requeue_sent()  # claimed here, no answer: as after a restart (or a timeout, a redial)
    assert WindowAggregate.objects.backlog().count() == 30  # those sent again wait outside it once more
    assert send_until_all_acked(sender)
    assert stored(redis_client, cloud_prefix) == (TUPLES + 30, TUPLES + 30)


def test_it_sends_nothing_again_when_replicas_answer_from_two_stores_in_turn(acked_link, redis_client, cloud_prefix):
    beat, _ = acked_link
    key = Keys(cloud_prefix).store_id(EDGE_ID)
    first = redis_client.get(key)
    redis_client.set(key, "other-store")
    assert beat.handle_one_beat() and sent_again() == TUPLES  # a store not heard of before: everything again
    WindowAggregate.objects.update(status=Status.ACKED)
    for turn in range(4):
        redis_client.set(key, first if turn % 2 == 0 else "other-store")
        assert beat.handle_one_beat()
    assert sent_again() == TUPLES and not WindowAggregate.objects.exclude(status=Status.ACKED).exists()
    # Each lacks what the other acknowledged: the beats do not ask (edge_app/cloud_store.py, probes) while
    # stores take turns, or everything would go again at each turn.
    redis_client.delete(Keys(cloud_prefix).tuples(EDGE_ID))
    for _ in range(5):
        assert beat.handle_one_beat() and beat.store_watch.probes(EdgeStatus.objects.get().cloud_store_since) == ()
    assert sent_again() == TUPLES


def test_it_takes_no_store_identity_that_is_not_a_short_printable_id():
    for store, read in (("0123abcd", "0123abcd"), ("", ""), ("x" * 65, ""), ("a b", ""), (7, ""), (None, "")):
        beat = wire.heartbeat(EDGE_ID, EDGE_SECRET)
        reply = wire.heartbeat_reply(EDGE_ID, EDGE_SECRET, wire.request_nonce(beat), store=store)
        assert wire.read_store(wire.open_reply(reply, beat, EDGE_SECRET, wire.KIND_HEARTBEAT)) == read, store
