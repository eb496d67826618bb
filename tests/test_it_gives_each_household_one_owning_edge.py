"""Finding 4: the first edge to deliver a household owns it; another edge's tuples for it are refused with
a stable reason and change nothing it shows. Each edge brings at most its quota of households."""

import asyncio

import pytest

from cloud_app.keys import Keys, shard_of
from cloud_app.ownership import Claims
from cloud_app.run import store_client
from cloud_app.store import CloudStore, StoreChanged
from fogwire import protocol as wire
from tests.conftest import EDGE_ID, EDGE_SECRET, CloudThread, counted, deliver, make_rows
from tooling.bench.common import delete_prefix

OTHER, OTHER_SECRET = "edge-other", "other-secret"
pytestmark = pytest.mark.engines


def _latest(reader):
    return {row["household"]: row for row in reader.households(0, 500)[1]}


def _total(reader):
    return sum(total for _, total, _ in reader.state_sums().values())


def _send(cloud, rows, edge=EDGE_ID, secret=EDGE_SECRET):
    return deliver(cloud, rows, edge, secret)


def test_it_refuses_another_edges_tuples_for_a_household_it_does_not_own(cloud, redis_client, client, cloud_settings,
                                                                           cloud_reader):
    keys = Keys(cloud.prefix)
    mine = make_rows(5, household="mine")  # mine-0 .. mine-4
    assert _send(cloud, mine)[1] == [""] * 5
    latest_before = _latest(cloud_reader)
    total_before = _total(cloud_reader)

    # A later window of an owned household, with a fake value, next to a household nobody has delivered yet.
    forged = [(0, "mine-2", mine[-1][2] + 3_600_000, mine[-1][3] + 3_600_000, 43_000.0, 1),
              (1, "theirs-0", mine[0][2], mine[0][3], 50.0, 1)]
    codes, reasons = _send(cloud, forged, OTHER, OTHER_SECRET)
    assert reasons == [wire.R_NOT_OWNER, ""] and codes[0] == "" and codes[1]

    latest = _latest(cloud_reader)
    assert {k: v for k, v in latest.items() if k != "theirs-0"} == latest_before
    assert latest["theirs-0"]["edge"] == OTHER
    assert redis_client.hlen(keys.tuples(OTHER)) == 1
    assert redis_client.hget(keys.owners(shard_of("mine-2")), "mine-2") == EDGE_ID.encode()
    assert counted(cloud_reader.stats, f"refused:{wire.R_NOT_OWNER}", 1)
    assert _total(cloud_reader) == pytest.approx(total_before + 50.0)
    shown = client.get("/api/households/?page_size=500").json()["results"]
    assert {row["household"]: row["edge"] for row in shown}["mine-2"] == EDGE_ID

    # The owner goes on delivering it.
    later = [(100, "mine-2", forged[0][2], forged[0][3], 120.0, 4)]
    assert _send(cloud, later)[1] == [""]


def test_it_refuses_households_beyond_an_edges_quota_and_keeps_the_ones_within(redis_url, cloud_prefix,
                                                                              redis_client):
    keys = Keys(cloud_prefix)
    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET, OTHER: OTHER_SECRET},
                        households_per_edge=3).start()
    try:
        first = _send(cloud, make_rows(4, household="q"))  # q-0 .. q-3: one too many
        again = _send(cloud, make_rows(2, household="q", start_id=10, base_ms=1_577_145_600_000))  # q-0, q-1: owned
        other = _send(cloud, make_rows(3, household="o"), OTHER, OTHER_SECRET)  # a quota per edge
    finally:
        cloud.stop()
    assert first[1] == ["", "", "", wire.R_QUOTA]
    assert again[1] == ["", ""]
    assert other[1] == ["", "", ""]
    assert redis_client.scard(keys.owned(EDGE_ID)) == 3
    assert not redis_client.hexists(keys.owners(shard_of("q-3")), "q-3")
    assert redis_client.hlen(keys.tuples(EDGE_ID)) == 5


def test_it_gives_back_the_quota_place_of_a_household_another_edge_claimed_first(redis_url, cloud_prefix,
                                                                                 redis_client):
    """Two replicas: this edge's reads the household as nobody's, the other edge's claims it before this one's
    claim lands. The place this edge reserved for it comes back, so its quota still takes a new household."""
    keys = Keys(cloud_prefix)

    async def race():
        store = store_client(redis_url)
        mine, theirs = Claims(store, keys, 2), Claims(store, keys, 2)
        read = mine._look_up

        async def other_claims_meanwhile(edge, unknown, reasons, others):
            free = await read(edge, unknown, reasons, others)
            assert await theirs.claim(OTHER, unknown) == {"raced": ""}
            return free

        mine._look_up = other_claims_meanwhile
        lost = await mine.claim(EDGE_ID, ["raced"])
        mine._look_up = read
        try:
            return lost, await mine.claim(EDGE_ID, ["new-0", "new-1"])
        finally:
            await store.aclose()

    lost, new = asyncio.run(race())
    assert lost == {"raced": wire.R_NOT_OWNER}
    assert new == {"new-0": "", "new-1": ""}  # both places of the quota of 2
    assert redis_client.smembers(keys.owned(EDGE_ID)) == {b"new-0", b"new-1"}


def test_it_claims_the_households_again_in_a_store_emptied_under_a_running_cloud(cloud, redis_client, redis_url):
    """A cloud remembers owners; a store emptied (or replaced behind its address) keeps none of them. The owner
    sends its tuples again (it hears of the new store in the heartbeat's reply), and they claim their households
    anew, also through a replica that remembers them from another edge's refused batch: another edge can't take
    them through a third replica, and each holds a place in the owner's quota."""
    keys, rows = Keys(cloud.prefix), make_rows(2, household="kept")
    later = [(10, "kept-0", rows[-1][3], rows[-1][3] + 5000, 80.0, 1)]
    replicas = [CloudThread(redis_url, cloud.prefix, {EDGE_ID: EDGE_SECRET, OTHER: OTHER_SECRET}).start()
                for _ in range(2)]
    try:
        assert _send(replicas[0], rows)[1] == ["", ""]
        assert _send(cloud, later, OTHER, OTHER_SECRET)[1] == [wire.R_NOT_OWNER]  # `cloud` remembers the owner
        delete_prefix(redis_url, cloud.prefix)
        assert _send(cloud, rows)[1] == ["", ""]
        assert _send(replicas[1], later, OTHER, OTHER_SECRET)[1] == [wire.R_NOT_OWNER]
    finally:
        for replica in replicas:
            replica.stop()
    assert redis_client.hget(keys.owners(shard_of("kept-0")), "kept-0") == EDGE_ID.encode()
    assert redis_client.smembers(keys.owned(EDGE_ID)) == {b"kept-0", b"kept-1"}


def test_it_writes_a_batch_only_into_the_store_its_households_were_claimed_in(redis_url, cloud_prefix, redis_client):
    """Emptied between a batch's claims and its write, the store gets nothing of it: the write says so, and the
    batch, sent again, claims its households anew."""
    keys, rows = Keys(cloud_prefix), make_rows(2, household="moved")

    async def emptied_in_between():
        client = store_client(redis_url)
        store = CloudStore(client, cloud_prefix)
        try:
            known = await store.store_id(EDGE_ID)
            owners = await store.claim(EDGE_ID, ["moved-0", "moved-1"])
            delete_prefix(redis_url, cloud_prefix)
            with pytest.raises(StoreChanged):
                await store.write(EDGE_ID, rows, owners, known=known)
            assert not redis_client.exists(keys.tuples(EDGE_ID))
            return await store.store(EDGE_ID, rows)
        finally:
            await client.aclose()

    assert asyncio.run(emptied_in_between()).reasons == ["", ""]
    assert redis_client.hget(keys.owners(shard_of("moved-0")), "moved-0") == EDGE_ID.encode()
    assert redis_client.hlen(keys.tuples(EDGE_ID)) == 2


def test_it_claims_again_for_batches_of_one_shard_that_meet_an_emptied_store_at_once(redis_url, cloud_prefix):
    """A cloud process writes several batches of an edge at once (its workers): each that meets the new store
    claims its households again, whichever met it first."""

    async def at_once():
        client = store_client(redis_url)
        store = CloudStore(client, cloud_prefix)
        try:
            await store.store(EDGE_ID, make_rows(2, household="before"))
            delete_prefix(redis_url, cloud_prefix)
            return await asyncio.gather(*(store.store(EDGE_ID, make_rows(2, household=f"batch{n}", start_id=10 * n))
                                          for n in range(4)))
        finally:
            await client.aclose()

    assert [result.reasons for result in asyncio.run(at_once())] == [["", ""]] * 4
