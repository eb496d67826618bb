"""Three edges, each with its own id, secret, database, topic and queue, deliver into one cloud: real
`runedge --burst` children into a real `runcloud`. Every window of every edge arrives exactly once, and
the API and the dashboard's websocket show each edge."""

import asyncio

import pytest

from tests.conftest import open_dashboard
from tooling.fleet import T0_MS

HOUSEHOLDS, SECONDS = 12, 150  # 360 windows an edge; T0_MS starts a window


@pytest.fixture
def fleet(fleet_of):
    return fleet_of(3)


def test_it_stores_every_window_of_every_edge_exactly_once(fleet, cloud_settings, client):
    fleet.produce(HOUSEHOLDS, SECONDS)
    fleet.start_replicas(1)
    fleet.start_edges("--timeout", "240")
    codes = fleet.wait_edges(300)
    for edge in fleet.edges:
        assert codes[edge.edge_id] == 0, fleet.log(edge.edge_id)

    for edge in fleet.edges:
        expected = {(household, start) for household in edge.households(HOUSEHOLDS)
                    for start in range(T0_MS, T0_MS + SECONDS * 1000, 5000)}
        copies = fleet.cloud_windows(edge)
        assert set(copies) == expected, edge.edge_id
        assert set(copies.values()) == {1}, edge.edge_id
        report = fleet.reconcile(edge)
        assert report["ok"], report
        assert report["totals"]["expected"] == report["totals"]["acked"] == len(expected)

    ids = {edge.edge_id for edge in fleet.edges}
    edges = {row["edge"]: row for row in client.get("/api/edges/").json()}
    assert set(edges) == ids
    for edge_id in ids:
        assert edges[edge_id]["acked"] == HOUSEHOLDS * SECONDS // 5
        assert edges[edge_id]["backlog"] == 0
    states = client.get("/api/states/").json()
    assert sum(row["tuples"] for row in states) == 3 * HOUSEHOLDS * SECONDS // 5
    assert sum(row["households"] for row in states) == 3 * HOUSEHOLDS

    async def first_message():
        socket, summary = await open_dashboard()
        await socket.disconnect()
        return summary

    summary = asyncio.run(first_message())  # what the dashboard paints first, over the real websocket
    assert {row["edge"] for row in summary["edges"]} == ids
