"""The cloud acknowledges a tuple only once Redis has it on disk, and counts it once only while Redis keeps its
dedup record, so it refuses to run on a Redis that does not fsync every write or may evict keys when full, unless
told --allow-volatile. Shown on a redis-server of the test's own whose settings the
test changes while it runs (CONFIG SET), as an operator could."""

import asyncio

import redis as redis_lib

from cloud_app.engine import connect_async
from cloud_app.server import CloudServer
from cloud_app.store import CloudStore
from fogwire import protocol as wire
from tests.conftest import EDGE_ID, EDGE_SECRET, answer, free_port, make_rows, run_manage


def _runcloud(own_redis, *extra):
    env = {"FOG_CLOUD_REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/1",
           "FOG_EDGE_REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/0"}
    return run_manage("runcloud", "--until", "0.5", "--heartbeat-port", str(free_port()), "--data-port",
                      str(free_port()), *extra, env=env)


def test_it_refuses_a_redis_that_could_lose_an_acknowledged_tuple(own_redis):
    client = redis_lib.Redis(port=own_redis.port)
    try:
        durable = _runcloud(own_redis)
        assert durable.returncode == 0, durable.stderr

        client.config_set("appendfsync", "everysec")
        refused = _runcloud(own_redis)
        assert refused.returncode == 1
        assert "appendfsync is 'everysec'" in refused.stderr and "--allow-volatile" in refused.stderr

        allowed = _runcloud(own_redis, "--allow-volatile")
        assert allowed.returncode == 0, allowed.stderr
        assert "volatile Redis" in allowed.stderr

        client.config_set("appendfsync", "always")
        client.config_set("appendonly", "no")
        off = _runcloud(own_redis)
        assert off.returncode == 1 and "persistence is off" in off.stderr

        client.config_set("appendonly", "yes")
        client.config_set("maxmemory-policy", "allkeys-lru")
        evicting = _runcloud(own_redis)
        assert evicting.returncode == 1
        assert "maxmemory-policy is 'allkeys-lru'" in evicting.stderr and "--allow-volatile" in evicting.stderr
    finally:
        client.close()


def test_it_stops_acknowledging_while_a_running_store_does_not_fsync_every_write(own_redis):
    """A CONFIG SET under a running cloud: batches are answered store-unavailable (the edge keeps them) from the
    next check on, until the store fsyncs again."""
    url = f"redis://127.0.0.1:{own_redis.port}/1"
    client = redis_lib.Redis.from_url(url)

    async def scenario():
        store_client = connect_async(url)
        server = CloudServer(CloudStore(store_client, "test:durable:"), {EDGE_ID: EDGE_SECRET}, max_connections=8)

        async def deliver(household):
            answered = await answer(server, make_rows(2, household))
            return answered if isinstance(answered, str) else answered[1]  # the reasons, or the refusal's

        try:
            outcomes = [await server.check_durability(), await deliver("before")]
            client.config_set("appendfsync", "everysec")
            outcomes += [await server.check_durability(), await deliver("during")]
            client.config_set("appendfsync", "always")
            outcomes += [await server.check_durability(), await deliver("after")]
            return outcomes
        finally:
            await store_client.aclose()

    try:
        before, stored, problem, during, fixed, after = asyncio.run(scenario())
    finally:
        client.config_set("appendfsync", "always")
        client.close()
    assert before == "" and stored == ["", ""]
    assert "appendfsync is 'everysec'" in problem and during == wire.R_STORE_DOWN
    assert fixed == "" and after == ["", ""]
