"""A cloud Redis at its memory limit (maxmemory, noeviction: the only policy runcloud accepts) refuses writes.
The cloud answers such a batch 'store-unavailable', which the edge sends again later, rather than a refusal
it would set aside; it writes none of it; and once memory is freed the batch sent again counts once. Shown on
a redis-server of the test's own, filled by CONFIG SET maxmemory as an operator's limit would."""

import asyncio

import redis as redis_lib

from cloud_app.engine import connect_async
from cloud_app.reader import CloudReader
from cloud_app.server import CloudServer
from cloud_app.store import CloudStore
from fogwire import protocol as wire
from tests.conftest import EDGE_ID, EDGE_SECRET, answer, make_rows

PREFIX = "test:full:"


def test_it_answers_store_unavailable_when_full_and_counts_the_batch_once_when_freed(own_redis):
    url = f"redis://127.0.0.1:{own_redis.port}/1"
    rows = make_rows(20)
    client = redis_lib.Redis.from_url(url)

    async def deliver():
        store_client = connect_async(url)
        try:
            return await answer(CloudServer(CloudStore(store_client, PREFIX), {EDGE_ID: EDGE_SECRET},
                                            max_connections=8), rows)
        finally:
            await store_client.aclose()

    try:
        client.config_set("maxmemory", max(1, client.info("memory")["used_memory"] // 2))  # already past it
        assert asyncio.run(deliver()) == wire.R_STORE_DOWN
        assert client.keys(PREFIX + "*") == []  # no claim, no tuple, no sum: nothing half written

        client.config_set("maxmemory", 0)
        codes, reasons = asyncio.run(deliver())
        assert reasons == [""] * len(rows) and all(codes)
        again = asyncio.run(deliver())  # a reply lost on the way: the edge sends the batch once more
        assert again == (codes, reasons)
        stats = CloudReader(client, PREFIX, 0.3).stats()
        assert stats["tuples"] == len(rows) and stats["dedup_hits"] == len(rows)
    finally:
        client.close()
