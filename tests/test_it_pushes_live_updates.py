"""The dashboard websocket: summary first, then updates from the cloud through the real Redis channel layer."""

import asyncio
import time

from cloud_app.consumers import merge
from tests.conftest import (
    EDGE_ID,
    make_rows,
    open_dashboard,
    store_through_cloud,
    update_after_storing,
)


def test_it_sends_the_summary_then_the_update_of_a_stored_batch(publishing_cloud):
    store_through_cloud(publishing_cloud, make_rows(10, household="early"))
    time.sleep(1.0)  # that batch's update goes out before anyone listens

    async def scenario():
        socket, summary = await open_dashboard()
        assert sum(s["tuples"] for s in summary["states"]) == 10  # a late joiner sees what is there
        return await update_after_storing(socket, publishing_cloud, make_rows(25, household="live", start_id=100), 5)

    update = asyncio.run(scenario())
    assert update["type"] == "update"
    assert update["acked"] == 25 and update["edges"] == {EDGE_ID: 25}
    assert update["states"]  # the touched states' absolute sums


def test_it_merges_updates_so_a_client_gets_at_most_two_a_second():
    pending = merge(None, {"acked": 3, "edges": {"e": 3}, "states": {"BY": [1, 10.0, 3]}, "beats": {}, "ts": 1})
    pending = merge(pending, {"acked": 2, "edges": {"e": 2, "f": 1}, "states": {"BY": [1, 20.0, 5]},
                              "beats": {"e": {"backlog": 4, "ts": 2}}, "ts": 2})
    assert pending == {"acked": 5, "edges": {"e": 5, "f": 1}, "states": {"BY": [1, 20.0, 5]},
                       "beats": {"e": {"backlog": 4, "ts": 2}}, "ts": 2}
