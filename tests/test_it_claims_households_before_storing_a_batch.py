"""A batch is two steps on a sharded store: its new households are claimed (in their own shards), then its
tuples are stored (in the edge's shard). Whatever fails between the two, the edge gets no reply and sends
the batch again: the claims it finds are its own, so every tuple is stored once, the quota counts each
household once, and no other edge can take a household claimed for a batch not yet stored."""

import asyncio

import pytest

from cloud_app.engine import connect_async
from cloud_app.keys import Keys
from cloud_app.store import CloudStore
from fogwire import protocol as wire
from tests.conftest import EDGE_ID, make_rows

pytestmark = pytest.mark.engines
OTHER = "edge-other"


def test_it_stores_a_batch_once_when_it_comes_again_after_its_claims_alone(redis_url, cloud_prefix, redis_client,
                                                                            cloud_reader):
    rows = make_rows(20, household="claimed")  # 5 households
    households = sorted({row[1] for row in rows})

    async def scenario():
        crashed = connect_async(redis_url)
        try:
            claims = await CloudStore(crashed, cloud_prefix, households_per_edge=5).claim(EDGE_ID, households)
        finally:
            await crashed.aclose()  # the cloud dies here: claimed, nothing stored, no reply to the edge
        after_claims = (redis_client.hlen(Keys(cloud_prefix).tuples(EDGE_ID)), cloud_reader.household_count())
        client = connect_async(redis_url)  # another replica (or the restarted one), knowing nothing
        try:
            store = CloudStore(client, cloud_prefix, households_per_edge=5)
            thief = await store.store(OTHER, [(0, households[0], rows[0][2], rows[0][3], 1.0, 1)])
            again = await store.store(EDGE_ID, rows)
            once_more = await store.store(EDGE_ID, rows)
        finally:
            await client.aclose()
        return claims, after_claims, thief, again, once_more

    claims, after_claims, thief, again, once_more = asyncio.run(scenario())
    assert claims == {household: "" for household in households}
    assert after_claims == (0, 0)  # the claims alone store nothing and show nothing
    assert thief.reasons == [wire.R_NOT_OWNER]  # a claim holds though its batch is not stored yet
    assert (again.new, again.duplicates, again.reasons) == (20, 0, [""] * 20)
    assert (once_more.new, once_more.duplicates) == (0, 20)
    assert redis_client.scard(Keys(cloud_prefix).owned(EDGE_ID)) == 5  # within the quota of 5, each once
    assert sum(count for _, _, count in cloud_reader.state_sums().values()) == 20
    assert cloud_reader.household_count() == 5
    assert cloud_reader.stats()["tuples"] == 20


def test_it_gives_a_household_to_one_of_two_edges_claiming_it_at_once(redis_url, cloud_prefix, cloud_reader):
    rows = make_rows(10, household="contested")

    async def scenario():
        client = connect_async(redis_url)
        try:
            first, second = CloudStore(client, cloud_prefix), CloudStore(client, cloud_prefix)  # two replicas
            return await asyncio.gather(first.store(EDGE_ID, rows), second.store(OTHER, rows))
        finally:
            await client.aclose()

    mine, theirs = asyncio.run(scenario())
    for household in {row[1] for row in rows}:
        stored_by = {edge for edge, result in ((EDGE_ID, mine), (OTHER, theirs))
                     for row, why in zip(rows, result.reasons) if row[1] == household and why == ""}
        refused = {why for result in (mine, theirs) for row, why in zip(rows, result.reasons)
                   if row[1] == household and why}
        assert len(stored_by) == 1 and refused == {wire.R_NOT_OWNER}
        assert cloud_reader.household(household)["edge"] in stored_by
    assert mine.new + theirs.new == 10  # every window stored by exactly one edge
    assert sum(count for _, _, count in cloud_reader.state_sums().values()) == 10
