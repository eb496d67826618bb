"""Two edges dial two `runcloud` replicas that share one store (FOG_CLOUD_HOST lists both). One replica
is SIGKILLed mid-drain; the edges deliver the rest through the other, and every window of every edge
is in the cloud exactly once: 0 lost, 0 duplicated."""

import pytest

from tooling.fleet import T0_MS

HOUSEHOLDS, SECONDS = 20, 400  # 1600 windows an edge, in batches of 20: a drain of many requests
KILL_AT = 0.3  # share of all windows stored when the first replica dies


@pytest.fixture
def fleet(fleet_of):
    return fleet_of(2)


def test_it_delivers_every_window_exactly_once_when_a_replica_dies_mid_drain(fleet):
    fleet.produce(HOUSEHOLDS, SECONDS)
    total = sum(edge.windows for edge in fleet.edges)
    fleet.start_replicas(2)
    fleet.start_edges("--batch", "20", "--in-flight", "2", "--timeout", "240")
    fleet.wait(lambda: fleet.stored() >= KILL_AT * total, 180, f"{KILL_AT:.0%} of {total} windows to be stored")
    fleet.kill_replica(0)
    at_kill = fleet.stored()
    assert at_kill < total, "the drain ended before the replica died; make it longer"

    codes = fleet.wait_edges(300)
    for edge in fleet.edges:
        assert codes[edge.edge_id] == 0, fleet.log(edge.edge_id)
    survivor = fleet.stop_replica(1)
    # Both replicas carried data: the survivor stored less than everything, and all the rest after the kill.
    assert total - at_kill <= survivor["tuples"] < total, (survivor, at_kill, total)

    for edge in fleet.edges:
        expected = {(household, start) for household in edge.households(HOUSEHOLDS)
                    for start in range(T0_MS, T0_MS + SECONDS * 1000, 5000)}
        copies = fleet.cloud_windows(edge)
        assert set(copies) == expected, f"{edge.edge_id}: {len(expected - set(copies))} lost"
        assert set(copies.values()) == {1}, f"{edge.edge_id}: duplicated"
        report = fleet.reconcile(edge)
        assert report["ok"] and report["totals"]["acked"] == len(expected), report
