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


def test_it_knows_windows_an_edge_sends_again_under_new_ids(cloud, redis_client, cloud_reader):
    # The edge's database began again (a new disk, a restore): its ids start over, its windows are the same.
    rows = make_rows(20)
    first = _send(cloud, rows)
    before = _states(cloud_reader)
    again = _send(cloud, make_rows(20, start_id=1000))
    assert again == first and _states(cloud_reader) == before
    assert cloud_reader.stats()["dedup_hits"] == 20
    assert redis_client.hlen(Keys(cloud.prefix).tuples(EDGE_ID)) == 20


def test_it_stores_new_windows_that_reuse_an_edges_old_ids(cloud, redis_client, cloud_reader):
    _send(cloud, make_rows(20))
    later = make_rows(20, base_ms=1_577_142_000_000 + 3_600_000)  # ids 0..19 again, an hour later
    codes, reasons = _send(cloud, later)
    assert reasons == [""] * 20 and all(codes)
    assert cloud_reader.stats()["tuples"] == 40 and cloud_reader.stats().get("dedup_hits", 0) == 0
    assert _states(cloud_reader)[f"{locate('hh-0')[1]}:count"] >= 8  # hh-0's 4 windows of each batch


def test_it_stores_a_window_of_another_length_from_the_same_start(cloud, redis_client, cloud_reader):
    # FOG_WINDOW_SECONDS changed from 5 to 10, the edge began again: the 10 s window is not the 5 s one.
    row = make_rows(1)[0]
    _send(cloud, [row])
    assert _send(cloud, [(row[0], row[1], row[2], row[2] + 10_000, 50.0, 6)])[1] == [""]
    assert cloud_reader.stats()["tuples"] == 2 and cloud_reader.stats().get("dedup_hits", 0) == 0


def test_it_counts_one_window_sent_twice_in_a_batch_once(cloud, cloud_reader):
    row = make_rows(1)[0]
    codes, reasons = _send(cloud, [row, (row[0] + 1, *row[1:])])
    assert reasons == ["", ""] and codes[0] == codes[1] == locate(row[1])[0]
    assert cloud_reader.stats()["tuples"] == 1 and cloud_reader.stats()["dedup_hits"] == 1


def test_it_refuses_other_figures_for_a_window_it_holds_and_keeps_the_first(cloud, cloud_reader):
    """Two figures for one window (in a batch, or a later one): the second was acknowledged, postal code and all,
    and the edge took as stored an average the cloud did not hold."""
    row = make_rows(1)[0]  # (id, household, start, end, average, readings)
    plz = locate(row[1])[0]
    other_average = (row[0] + 1, row[1], row[2], row[3], row[4] + 100.0, row[5])
    assert _send(cloud, [row, other_average]) == ([plz, ""], ["", wire.R_CONFLICT])
    assert _send(cloud, [(row[0] + 2, *row[1:5], row[5] + 1)]) == ([""], [wire.R_CONFLICT])  # another count
    assert _send(cloud, [(row[0] + 3, *row[1:])]) == ([plz], [""])  # the first's figures again, under a new id
    assert cloud_reader.household(row[1])["power_w"] == row[4]
    assert cloud_reader.stats()["tuples"] == 1 and cloud_reader.stats()["dedup_hits"] == 1  # a refusal, no repeat


def test_it_knows_the_tuples_a_cloud_kept_under_their_ids_before(cloud, redis_client, cloud_reader):
    """Stored by a cloud that deduplicated by id alone: the same window is still a repeat after the upgrade,
    and an old id on another window is not."""
    from cloud_app.store import Record

    rows = make_rows(10)
    keys = Keys(cloud.prefix)
    redis_client.hset(keys.tuples(EDGE_ID), mapping={
        str(tid): Record(ws, we, avg, n, locate(hh)[0], locate(hh)[1], 1, EDGE_ID, tid, hh).encode()
        for tid, hh, ws, we, avg, n in rows})
    codes, _ = _send(cloud, rows[:5] + make_rows(5, start_id=5, base_ms=1_577_142_000_000 + 3_600_000))
    assert cloud_reader.stats()["dedup_hits"] == 5 and cloud_reader.stats()["tuples"] == 5
    assert codes == [locate(hh)[0] for _, hh, *_ in rows]
    assert _send(cloud, rows[5:])[1] == [""] * 5  # their old records still count as stored
    assert cloud_reader.stats()["dedup_hits"] == 10
    assert _send(cloud, [rows[0], (77, *rows[0][1:])])[1] == ["", ""]  # found by its old id, then again by window
    assert cloud_reader.stats()["dedup_hits"] == 12 and cloud_reader.stats()["tuples"] == 5
