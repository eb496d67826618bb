"""While the cloud's Redis Cluster can't be reached, redis-py raises RedisClusterException, which is not a
RedisError. The cloud still answers each batch 'store-unavailable' (the edge sends it again later), keeps its
dashboard feed going, and its commands say in one line what failed instead of a traceback."""

import asyncio
import time

from channels.layers import get_channel_layer

from cloud_app.engine import connect_async
from cloud_app.server import DASHBOARD_GROUP, CloudServer
from cloud_app.store import CloudStore, StoreResult
from fogwire import protocol as wire
from tests.conftest import EDGE_ID, EDGE_SECRET, free_port, make_rows, refusal, run_manage


def unreachable_cluster():
    return f"redis+cluster://127.0.0.1:{free_port()}/"  # nothing listens there


def test_it_answers_store_unavailable_and_keeps_publishing(cloud_settings):
    async def scenario():
        client = connect_async(unreachable_cluster(), socket_connect_timeout=2)
        layer = get_channel_layer()
        server = CloudServer(CloudStore(client, cloud_settings.FOG_CLOUD_KEY_PREFIX), {EDGE_ID: EDGE_SECRET},
                             max_connections=8, channel_layer=layer)
        channel = await layer.new_channel()
        await layer.group_add(DASHBOARD_GROUP, channel)
        stop = asyncio.Event()
        publisher = asyncio.create_task(server._publisher(stop))
        try:
            reply = await server.handle_data(wire.batch_frame(EDGE_ID, EDGE_SECRET, make_rows(5)))
            beat = await server.handle_heartbeat(wire.heartbeat(EDGE_ID, EDGE_SECRET))  # not recorded, answered
            rows = make_rows(3)
            server._merge_update(EDGE_ID, StoreResult([""] * 3, [""] * 3, 3, 0, {"BY"}, [], int(time.time() * 1000)), rows)
            update = await asyncio.wait_for(layer.receive(channel), timeout=30)  # totals unreadable: sent anyway
            await asyncio.sleep(1)
            return refusal(reply), beat, update, publisher.done()
        finally:
            stop.set()
            await asyncio.wait_for(publisher, timeout=10)
            await layer.group_discard(DASHBOARD_GROUP, channel)
            await client.aclose()

    reason, beat, update, publisher_ended = asyncio.run(scenario())
    assert reason == wire.R_STORE_DOWN  # transient: the edge retries, nothing is set aside
    assert beat
    assert update["acked"] == 3 and update["states"] == {}
    assert not publisher_ended


def test_it_names_an_unreachable_cluster_in_one_line_at_start(services):
    env = {"FOG_CLOUD_REDIS_URL": unreachable_cluster(), "FOG_CLOUD_KEY_PREFIX": "test:down:",
           "FOG_EDGE_SECRETS": f"{EDGE_ID}:{EDGE_SECRET}"}
    for command in (["runcloud", "--until", "5"], ["reconcile"]):
        result = run_manage(*command, env=env, timeout=120)
        assert result.returncode != 0, command
        assert "Traceback" not in result.stderr, (command, result.stderr[-2000:])
        assert "cloud Redis at redis+cluster://127.0.0.1" in result.stderr, (command, result.stderr[-2000:])
