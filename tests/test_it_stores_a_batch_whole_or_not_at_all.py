"""Finding 5: huge averages never half-store a batch. The cloud refuses them by the shared power limit,
and should such values reach the store anyway, its script checks every running sum before it writes."""

import asyncio

import pytest
from cloud_app.engine import connect_async
from cloud_app.keys import Keys
from cloud_app.store import CloudStore, Record, StoreRefused
from fogwire import protocol as wire
from tests.conftest import EDGE_ID, counted, deliver, make_rows

pytestmark = pytest.mark.engines


def _snapshot(redis_client, prefix, but=()):
    """Every key under `prefix` (but those named) with its value."""
    return {key: redis_client.dump(key) for key in sorted(redis_client.scan_iter(match=f"{prefix}*"))
            if not key.decode().startswith(tuple(but))}


def test_it_refuses_two_huge_averages_and_stores_the_rest_of_the_batch(cloud, redis_client, cloud_reader):
    keys = Keys(cloud.prefix)
    rows = make_rows(6)
    rows[1] = rows[1][:4] + (1e308, 3)
    rows[4] = rows[4][:4] + (1e308, 3)
    codes, reasons = deliver(cloud, rows)
    assert reasons == ["", wire.R_TOO_POWERFUL, "", "", wire.R_TOO_POWERFUL, ""]
    assert codes[1] == codes[4] == "" and all(codes[i] for i in (0, 2, 3, 5))
    assert sorted(Record.decode(v).id for v in redis_client.hvals(keys.tuples(EDGE_ID))) == [0, 2, 3, 5]
    assert sum(total for _, total, _ in cloud_reader.state_sums().values()) == pytest.approx(
        sum(r[4] for i, r in enumerate(rows) if i not in (1, 4)))
    assert counted(cloud_reader.stats, f"refused:{wire.R_TOO_POWERFUL}", 2)


def test_its_store_writes_nothing_of_a_batch_that_would_make_a_sum_infinite(redis_url, cloud_prefix, redis_client):
    """The store itself, below the limits: 1e308 twice in one state must not half-store the batch. Only its
    households' claims stay (idempotent, they are the edge's), so the same ids come back as new tuples."""
    keys = Keys(cloud_prefix)

    async def scenario():
        client = connect_async(redis_url)
        store = CloudStore(client, cloud_prefix)
        try:
            first = await store.store(EDGE_ID, make_rows(3, household="before"))
            claims = (f"{cloud_prefix}owner:", f"{cloud_prefix}owned:")
            before = _snapshot(redis_client, cloud_prefix, but=claims)
            huge = [(10 + i, "same-house", 1_577_142_000_000 + i * 5000, 1_577_142_005_000 + i * 5000, 1e308, 1)
                    for i in range(2)]
            with pytest.raises(StoreRefused) as refused:
                await store.store(EDGE_ID, make_rows(2, household="innocent", start_id=20) + huge)
            assert refused.value.reason == wire.R_SUM_NOT_FINITE
            assert _snapshot(redis_client, cloud_prefix, but=claims) == before  # not one key changed but claims
            # The same ids, with sane values, are new tuples then, not duplicates of a half-stored batch.
            again = await store.store(EDGE_ID, [row[:4] + (100.0, 1) for row in huge])
            return first, again
        finally:
            await client.aclose()

    first, again = asyncio.run(scenario())
    assert (first.new, again.new, again.duplicates) == (3, 2, 0)
    assert redis_client.hlen(keys.tuples(EDGE_ID)) == 5


def test_it_stores_a_batch_whole_while_its_slot_migrates_to_another_cluster_node(tmp_path):
    """`redis-cli --cluster reshard` (adding a master) moves a slot key by key. The script declares every key
    it touches, so while some of them have moved the cluster refuses the whole call up front (the edge sends
    the batch again) instead of failing half way through it: Lua does not roll back."""
    import atexit
    import time

    import redis as redis_lib

    from cloud_app.engine import connect
    from cloud_app.keys import shard_of
    from cloud_app.postal import locate
    from cloud_app.reader import CloudReader
    from tooling.localservices import private_cluster

    cluster = private_cluster(tmp_path, lambda line: None)
    atexit.register(cluster.down, lambda line: None)  # also after an interrupted session
    prefix, ws, now_ms = "test:reshard:", 1_577_142_000_000, int(time.time() * 1000)
    keys, shard = Keys(prefix), shard_of(EDGE_ID)
    first, second = "mig-1", "mig-12"
    state = locate(first)[1]
    assert locate(second)[1] == state  # the second batch's state index exists, so it can move first

    async def store(rows):
        client = connect_async(cluster.url)
        try:
            return await CloudStore(client, prefix).store(EDGE_ID, rows, now_ms=now_ms)
        finally:
            await client.aclose()

    nodes = []
    try:
        asyncio.run(store([(0, first, ws, ws + 5000, 100.0, 1)]))
        client = connect(cluster.url)
        slot = client.keyslot(keys.states(shard))
        nodes = {node.port: redis_lib.Redis(host=node.host, port=node.port) for node in cluster.nodes}
        ids = {port: node.execute_command("CLUSTER", "MYID").decode() for port, node in nodes.items()}
        source = client.get_node_from_key(keys.states(shard)).port
        target = next(port for port in nodes if port != source)
        nodes[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        nodes[source].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        nodes[source].execute_command("MIGRATE", "127.0.0.1", target, keys.state_households(shard, state), 0, 5000)
        batch = [(1, second, ws + 5000, ws + 10000, 50.0, 1)]
        with pytest.raises(Exception):  # noqa: B017 (TRYAGAIN or ASK, as the client words it): nothing stored
            asyncio.run(store(batch))
        while moving := nodes[source].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            nodes[source].execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *moving)
        for node in nodes.values():
            node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
        again = asyncio.run(store(batch))  # the edge sends it again
        reader = CloudReader(connect(cluster.url), prefix, price_eur_per_kwh=1.0)
        assert (again.new, again.duplicates) == (1, 0)
        assert reader.state_sums()[state] == (2, 150.0, 2)
        assert reader.household_count() == 2
        assert reader.stats()["tuples"] == 2
    finally:
        for node in nodes.values() if nodes else ():
            node.close()
        cluster.down(lambda line: None)
