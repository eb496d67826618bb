"""A cloud store that lost part of what it acknowledged and kept its identity (restored from an older copy, a
replica promoted before it had everything): the beats ask about acknowledged tuples, the store says it does not
hold one, and the edge sends again every acknowledged tuple it still holds, which the cloud then has once,
counted once."""

import asyncio
from datetime import timedelta

import pytest
from django.db.models import F

from cloud_app.engine import connect_async
from cloud_app.keys import Keys
from cloud_app.store import CloudStore, Record, tuple_field
from edge_app import cloud_store
from edge_app.link import Heartbeat
from edge_app.models import EdgeStatus, Status, WindowAggregate
from edge_app.store_probes import COLUMNS, StoreProbes
from fogwire import protocol as wire
from tests.conftest import (ACKED_LINK_TUPLES as BEFORE, EDGE_ID, EDGE_SECRET, CloudThread, add_pending, edge_sender,
                            send_until_all_acked, wait_for)
from tests.test_it_sends_again_what_a_lost_cloud_store_held import sent_again, store, stored

pytestmark = [pytest.mark.edge_db, pytest.mark.django_db(transaction=True)]

AFTER = 120  # tuples acknowledged after the copy was taken (ACKED_LINK_TUPLES before)
QUIET = timedelta(hours=1)


def snapshot(client, prefix):
    """Every key under `prefix` as DUMP gives it: a copy of the store, as a backup holds it."""
    return {key: client.dump(key) for key in client.scan_iter(match=f"{prefix}*", count=1000)}


def restore(client, prefix, copy):
    """The store as it was when `copy` was taken: keys made since go, the others are put back."""
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        if key not in copy:
            client.delete(key)
    for key, dumped in copy.items():
        client.restore(key, 0, dumped, replace=True)


def test_it_sends_everything_again_to_a_store_restored_from_an_older_copy(acked_link, redis_client, cloud_prefix):
    beat, sender = acked_link
    first = store()
    copy = snapshot(redis_client, cloud_prefix)
    add_pending(AFTER, base_ms=1_600_000_000_000)
    assert send_until_all_acked(sender)
    for _ in range(20):  # a store that holds everything it acknowledged: nothing is sent again
        assert beat.handle_one_beat()
    assert sent_again() == 0 and stored(redis_client, cloud_prefix) == (BEFORE + AFTER, BEFORE + AFTER)

    restore(redis_client, cloud_prefix, copy)  # the newest AFTER tuples are gone; the identity is the same
    assert stored(redis_client, cloud_prefix) == (BEFORE, BEFORE)
    add_pending(5, base_ms=1_700_000_000_000)  # acknowledged by the restored store before the next beat
    assert send_until_all_acked(sender)
    assert beat.handle_one_beat()  # the newest it said it held is not there: every acknowledged tuple is put back
    assert store() == first and sent_again() == BEFORE + AFTER + 5
    assert send_until_all_acked(sender)
    assert stored(redis_client, cloud_prefix) == (BEFORE + AFTER + 5,) * 2  # each once, counted once


def test_it_sends_everything_again_for_a_loss_at_most_every_so_often(acked_link, redis_client, cloud_prefix,
                                                                       monkeypatch):
    """A store that keeps losing what it takes (one that evicts) is not sent everything at every beat; what it
    lacks is asked about until it is."""
    beat, sender = acked_link
    monkeypatch.setattr(cloud_store, "RECHECK_AFTER_SECONDS", 0)
    tuples = Keys(cloud_prefix).tuples(EDGE_ID)

    def lose_all_then_more_come(base_ms):
        redis_client.delete(tuples)
        add_pending(10, base_ms=base_ms)  # acknowledged since: asked about (those sent again keep their time)
        assert send_until_all_acked(sender)

    lose_all_then_more_come(1_600_000_000_000)
    assert wait_for(lambda: beat.handle_one_beat() and sent_again() > 0, timeout=30, interval=0)
    assert send_until_all_acked(sender)
    assert beat.handle_one_beat() and not beat.store_watch.recheck  # the second look is over
    monkeypatch.setattr(cloud_store, "LOSS_RESEND_EVERY_SECONDS", 3600)
    lose_all_then_more_come(1_700_000_000_000)
    # Found (by the random probe: the newest is there), and asked about again at each beat, not sent yet.
    assert wait_for(lambda: beat.handle_one_beat() and beat.store_watch.loss_waiting, timeout=30, interval=0)
    for _ in range(3):
        assert beat.handle_one_beat() and beat.store_watch.probing.asked
    assert sent_again() == BEFORE + 10
    monkeypatch.setattr(cloud_store, "LOSS_RESEND_EVERY_SECONDS", 0)
    assert beat.handle_one_beat() and sent_again() == 2 * (BEFORE + 10) + 10
    assert send_until_all_acked(sender)
    assert stored(redis_client, cloud_prefix)[0] == BEFORE + 20  # stored anew each time it lost them


def test_it_sends_a_store_failed_back_to_what_the_other_acknowledged_meanwhile(acked_link, redis_client,
                                                                              cloud_prefix, monkeypatch):
    """Store 1 fails, the cloud is pointed at store 2, then back at store 1, repaired from a copy: what store 2
    acknowledged meanwhile is not in store 1, and is sent to it once stores no longer take turns."""
    beat, sender = acked_link
    monkeypatch.setattr(cloud_store, "RECHECK_AFTER_SECONDS", 0)
    copy = snapshot(redis_client, cloud_prefix)  # store 1, as it is restored later
    redis_client.set(Keys(cloud_prefix).store_id(EDGE_ID), "store-2")
    assert beat.handle_one_beat() and sent_again() == BEFORE  # a new store: everything again
    assert send_until_all_acked(sender)
    add_pending(AFTER, base_ms=1_600_000_000_000)  # acknowledged by store 2 only
    assert send_until_all_acked(sender)
    restore(redis_client, cloud_prefix, copy)
    assert beat.handle_one_beat() and beat.store_watch.turned  # store 1, heard before: said, nothing sent
    assert sent_again() == BEFORE
    monkeypatch.setattr(cloud_store, "TURNS_LOG_SECONDS", 0)
    assert wait_for(lambda: beat.handle_one_beat() and sent_again() > BEFORE, timeout=10, interval=0)
    assert send_until_all_acked(sender)
    assert stored(redis_client, cloud_prefix)[0] == BEFORE + AFTER


def test_it_goes_on_sending_again_what_a_store_lost_after_a_restart(acked_link, redis_client, cloud_prefix,
                                                                     monkeypatch):
    beat, sender = acked_link
    copy = snapshot(redis_client, cloud_prefix)
    add_pending(AFTER, base_ms=1_600_000_000_000)
    assert send_until_all_acked(sender)
    assert beat.handle_one_beat()  # the store says it holds the newest: the anchor
    restore(redis_client, cloud_prefix, copy)
    monkeypatch.setattr(cloud_store, "RESEND_CHUNK", 20)
    monkeypatch.setattr(cloud_store, "RESEND_SECONDS_PER_BEAT", 0)
    assert beat.handle_one_beat() and sent_again() == 20  # found, and one chunk put back
    assert store() == cloud_store.lost_mark(beat.store_watch.resend[0])
    beat.store_watch = cloud_store.StoreWatch()  # the heartbeat's loop begins again
    assert wait_for(lambda: beat.handle_one_beat() and not store().startswith("lost-"), timeout=10, interval=0)
    assert sent_again() == BEFORE + AFTER  # the rest too, from the start again: the cloud stores each once
    assert send_until_all_acked(sender)
    assert stored(redis_client, cloud_prefix) == (BEFORE + AFTER,) * 2


def test_it_asks_a_store_only_about_what_it_acknowledged_since_it_was_recorded(redis_url, cloud_prefix):
    """The same database under another edge id: what the cloud acknowledged to the first is not in the second's
    tuples, and was never that edge's to hold. It stays acknowledged."""
    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET, "renamed": EDGE_SECRET}).start()
    beats = [Heartbeat(edge_id=edge, secret=EDGE_SECRET, address=cloud.hb_addr, timeout_ms=1000)
             for edge in (EDGE_ID, "renamed")]
    sender = edge_sender(cloud.data_addr, batch=100, in_flight=2, ack_timeout_ms=2000)
    try:
        add_pending(BEFORE)
        assert wait_for(beats[0].handle_one_beat, timeout=5, interval=0.1)
        assert send_until_all_acked(sender)
        for _ in range(10):
            assert beats[1].handle_one_beat()
        assert EdgeStatus.objects.get(edge_id="renamed").sent_again == 0
        assert not WindowAggregate.objects.exclude(status=Status.ACKED).exists()
    finally:
        sender.close()
        for beat in beats:
            beat.close()
        cloud.stop()


def test_it_asks_again_about_what_got_no_answer_and_anchors_on_the_newest_held(acked_link):
    """A reply that does not come (dropped on the way, by accident or not), or does not answer, can't hide a
    loss."""
    beat, _ = acked_link
    status = EdgeStatus.objects.get(edge_id=EDGE_ID)
    since, watch = status.cloud_store_since, beat.store_watch
    first = watch.probes(since)
    last = WindowAggregate.objects.order_by("-acked_at").values_list("acked_at", flat=True).first()
    newest = set(WindowAggregate.objects.filter(acked_at=last).values_list(*COLUMNS))  # a batch: one time
    assert newest & set(first) and len(first) in (1, 2)  # the newest, and one at random (maybe the same)
    watch.hear(status.cloud_store, status.cloud_store, {}, first, None, since=since)  # a reply without an answer
    assert watch.probes(since)[:len(first)] == first
    probing = StoreProbes()
    first = probing.pick(since)
    second = probing.pick(since)  # the first beat's reply did not come
    assert second[:len(first)] == first
    assert probing.answered(second, [True] * len(second)) == [] and probing.asked == ()
    assert probing.anchor in first and probing.pick(since)[0] == probing.anchor


def test_it_finds_a_tuple_lost_in_the_middle_with_its_random_probe(acked_link, redis_client, cloud_prefix):
    """Also after a quiet spell: the tuples were acknowledged in a burst an hour ago, and nothing since."""
    beat, sender = acked_link
    WindowAggregate.objects.update(acked_at=F("acked_at") - QUIET)
    EdgeStatus.objects.filter(edge_id=EDGE_ID).update(cloud_store_since=F("cloud_store_since") - QUIET)
    # A fifth of the store's tuples lost, none of the newest (the last batch, acknowledged at one time): found
    # by the random probe within a few beats.
    last = WindowAggregate.objects.order_by("-acked_at").values_list("acked_at", flat=True).first()
    lost = [tuple_field(row.household, row.window_start, row.window_end)
            for row in WindowAggregate.objects.exclude(acked_at=last).order_by("id")[::5]]
    redis_client.hdel(Keys(cloud_prefix).tuples(EDGE_ID), *lost)
    assert wait_for(lambda: beat.handle_one_beat() and sent_again() > 0, timeout=30, interval=0)
    assert sent_again() == BEFORE
    assert send_until_all_acked(sender)
    assert stored(redis_client, cloud_prefix) == (BEFORE, BEFORE + len(lost))  # the lost ones stored again


def test_it_answers_probes_of_tuples_kept_under_their_id_by_an_older_cloud(redis_url, cloud_prefix):
    """As the store script finds them: under its id while the edge's layout is 'mixed', or not yet marked (a
    cloud before the window layout, upgraded, before its first batch)."""
    kept = Record(1000, 6000, 1.5, 3, "10115", "Berlin", 7000, EDGE_ID, 7, "house-1").encode()
    probes = [(7, "house-1", 1000, 6000), (7, "house-9", 1000, 6000), (8, "house-2", 1000, 6000),
              (9, "house-3", 1000, 6000)]

    async def ask():
        client = connect_async(redis_url)
        keys = Keys(cloud_prefix)
        answers = []
        try:
            await client.hset(keys.tuples(EDGE_ID), mapping={"7": kept, tuple_field("house-2", 1000, 6000): kept})
            for layout in ("mixed", None, "window"):
                if layout:
                    await client.hset(keys.edge(EDGE_ID), "dedup", layout)
                else:
                    await client.hdel(keys.edge(EDGE_ID), "dedup")
                answers.append(await CloudStore(client, cloud_prefix).held(EDGE_ID, probes))
            return answers
        finally:
            await client.aclose()

    # Under its id only when it is the same household's same window (ids begin again with an edge's database).
    assert asyncio.run(ask()) == [[True, False, True, False]] * 2 + [[False, False, True, False]]


def test_it_answers_only_well_formed_probes_and_takes_only_an_answer_to_each():
    good = [(1, "house-1", 1000, 6000), (2, "house-2", 6000, 11000)]
    beat = wire.heartbeat(EDGE_ID, EDGE_SECRET, probes=good)
    assert wire.read_probes(wire.open_request(beat, {EDGE_ID: EDGE_SECRET}.get, wire.KIND_HEARTBEAT)[2]) == tuple(good)
    for probes in ([list(good[0])] * (wire.MAX_PROBES + 1), [[1, "bad household", 1000, 6000]],
                   [[1, "house-1", -1, 6000]], [[1, "house-1", 1000]], [[True, "house-1", 1000, 6000]], "x"):
        assert wire.read_probes({"ts": 0, "probe": [list(good[1]), *probes]}) == (), probes  # none is answered

    reply = wire.heartbeat_reply(EDGE_ID, EDGE_SECRET, wire.request_nonce(beat), store="s1", held=[True, False])
    assert wire.read_held(wire.open_reply(reply, beat, EDGE_SECRET, wire.KIND_HEARTBEAT), tuple(good)) == (True, False)
    for held in ([True], [True, False, True], [1, 0], "yes", None):  # not an answer to each probe
        assert wire.read_held({"ts": 0, "store": "s1", "held": held}, tuple(good)) is None, held
