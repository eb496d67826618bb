"""The dashboard websocket: summary first, then updates from the cloud through the real Redis channel layer."""

import asyncio
import time

import pytest
from channels.testing import WebsocketCommunicator

from cloud_app.consumers import merge
from tests.conftest import EDGE_ID, EDGE_SECRET, CloudThread, make_rows, store_through_cloud


def test_it_sends_the_summary_then_the_update_of_a_stored_batch(cloud_settings, redis_url, cloud_prefix):
    from fogsite.asgi import application

    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}, publish=True).start()
    store_through_cloud(cloud, make_rows(10, household="early"))
    time.sleep(1.0)  # that batch's update goes out before anyone listens

    async def scenario():
        socket = WebsocketCommunicator(application, "/ws/dashboard/", headers=[(b"origin", b"http://localhost"),
                                                                                (b"host", b"localhost")])
        connected, _ = await socket.connect()
        assert connected
        summary = await socket.receive_json_from(timeout=5)
        assert summary["type"] == "summary"
        assert sum(s["tuples"] for s in summary["states"]) == 10  # a late joiner sees what is there
        await asyncio.get_running_loop().run_in_executor(
            None, store_through_cloud, cloud, make_rows(25, household="live", start_id=100))
        update = await socket.receive_json_from(timeout=5)
        await socket.disconnect()
        return update

    try:
        update = asyncio.run(scenario())
    finally:
        cloud.stop()
    assert update["type"] == "update"
    assert update["acked"] == 25 and update["edges"] == {EDGE_ID: 25}
    assert update["states"]  # the touched states' absolute sums
    assert [t["id"] for t in update["recent"]] == list(range(124, 109, -1))  # the newest 15, newest first
    stored = make_rows(25, household="live", start_id=100)
    assert sum(update["power"].values()) == pytest.approx(sum(avg * (we - ws) for _, _, ws, we, avg, _ in stored))
    assert update["ends"] == {str(we): 1 for _, _, _, we, _, _ in stored}  # every tuple's window end, counted


def test_it_merges_updates_so_a_client_gets_at_most_two_a_second():
    pending = merge(None, {"acked": 3, "edges": {"e": 3}, "states": {"BY": [1, 10.0, 3]}, "beats": {}, "ts": 1,
                           "power": {"60000": 5.0}, "recent": [{"id": 2}, {"id": 1}], "ends": {"5000": 3}})
    pending = merge(pending, {"acked": 2, "edges": {"e": 2, "f": 1}, "states": {"BY": [1, 20.0, 5]},
                              "beats": {"e": {"backlog": 4, "ts": 2}}, "ts": 2,
                              "power": {"60000": 1.5, "120000": 2.0}, "recent": [{"id": 3}],
                              "ends": {"5000": 1, "10000": 1}})
    assert pending == {"acked": 5, "edges": {"e": 5, "f": 1}, "states": {"BY": [1, 20.0, 5]},
                       "beats": {"e": {"backlog": 4, "ts": 2}}, "ts": 2,
                       "power": {"60000": 6.5, "120000": 2.0}, "recent": [{"id": 3}, {"id": 2}, {"id": 1}],
                       "ends": {"5000": 4, "10000": 1}}
