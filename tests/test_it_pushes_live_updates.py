"""The dashboard websocket: summary first, then updates from the cloud through the real Redis channel layer."""

import asyncio
import time

import pytest

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
    assert [t["id"] for t in update["recent"]] == list(range(124, 109, -1))  # the newest 15, newest first
    stored = make_rows(25, household="live", start_id=100)
    assert sum(update["power"].values()) == pytest.approx(sum(avg * (we - ws) for _, _, ws, we, avg, _ in stored))
    assert update["ends"] == {str(we): 1 for _, _, _, we, _, _ in stored}  # every tuple's window end, counted


def test_it_merges_updates_so_a_client_gets_at_most_four_a_second():
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
