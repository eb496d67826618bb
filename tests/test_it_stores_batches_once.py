"""The cloud stores a batch once, answers repeats with the same postal codes, and keeps edges apart."""

import pytest

from cloud_app.postal import locate
from cloud_app.keys import Keys
from fogwire import protocol as wire
from tests.conftest import EDGE_ID, EDGE_SECRET, make_rows
from tests.conftest import deliver as _send


pytestmark = pytest.mark.engines


def _states(reader):
    return {f"{state}:{part}": value for state, sums in reader.state_sums().items()
            for part, value in zip(("households", "sum", "count"), sums)}


def test_it_answers_each_tuple_with_its_households_postal_code(cloud, redis_client):
    rows = make_rows(20)
    codes, reasons = _send(cloud, rows)
    assert reasons == [""] * 20
    assert codes == [locate(household)[0] for _, household, *_ in rows]
    assert redis_client.hlen(Keys(cloud.prefix).tuples(EDGE_ID)) == 20


def test_it_keeps_the_per_state_sums_of_what_it_stored(cloud, cloud_reader):
    rows = make_rows(50)
    _send(cloud, rows)
    expected = {}
    for _, household, _, _, average, _ in rows:
        state = locate(household)[1]
        total, count = expected.get(state, (0.0, 0))
        expected[state] = (total + average, count + 1)
    sums = _states(cloud_reader)
    for state, (total, count) in expected.items():
        assert abs(sums[f"{state}:sum"] - total) < 1e-6
        assert sums[f"{state}:count"] == count
    assert sum(v for k, v in sums.items() if k.endswith(":households")) == 5


def test_it_changes_nothing_when_the_same_batch_comes_again(cloud, redis_client, cloud_reader):
    rows = make_rows(30)
    first = _send(cloud, rows)
    before = _states(cloud_reader)
    second = _send(cloud, rows)
    assert second == first
    assert _states(cloud_reader) == before
    assert redis_client.hlen(Keys(cloud.prefix).tuples(EDGE_ID)) == 30
    assert cloud_reader.stats()["dedup_hits"] == 30


def test_it_keeps_two_edges_with_the_same_tuple_ids_apart(cloud, redis_client, cloud_reader):
    _send(cloud, make_rows(10))
    _send(cloud, make_rows(10, household="other"), edge="edge-other", secret="other-secret")
    assert redis_client.hlen(Keys(cloud.prefix).tuples(EDGE_ID)) == 10
    assert redis_client.hlen(Keys(cloud.prefix).tuples("edge-other")) == 10
    assert cloud_reader.stats()["tuples"] == 20


def test_it_records_heartbeats_per_edge(cloud, redis_client):
    beat = wire.heartbeat(EDGE_ID, EDGE_SECRET, backlog=42)
    assert "ts" in wire.open_reply(cloud.request(beat, data=False), beat, EDGE_SECRET, wire.KIND_HEARTBEAT)
    assert redis_client.hget(Keys(cloud.prefix).edge(EDGE_ID), "backlog") == b"42"


def test_it_keeps_the_latest_window_per_household_and_a_capped_feed(cloud, cloud_reader):
    rows = make_rows(300, household="one")
    _send(cloud, list(reversed(rows)))  # arrival order must not decide "latest"
    latest = cloud_reader.household("one-4")
    newest_of_one_4 = max(r for r in rows if r[1] == "one-4")
    assert latest["window_start"] == newest_of_one_4[2]
    assert len(cloud_reader.recent(1000)) == 200
