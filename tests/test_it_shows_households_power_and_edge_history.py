"""The page's drill-downs, read through the API from what the real cloud stored: one household's
last hour, a state's households, total power per minute, and an edge's last hour."""

import asyncio
import time

import pytest
from cloud_app import api
from cloud_app.engine import connect, connect_async
from cloud_app.keys import Keys, shard_of
from cloud_app.postal import locate
from cloud_app.store import SERIES_MAX, CloudStore
from tests.conftest import EDGE_ID, free_port, store_through_cloud

pytestmark = pytest.mark.engines  # the reads over the store's shards, on one Redis and on a cluster

MINUTE = 60_000


def windows(household, count, start_ms, start_id, power=100.0):
    return [(start_id + i, household, start_ms + i * 5000, start_ms + (i + 1) * 5000, power + i, 4)
            for i in range(count)]


@pytest.fixture
def now_minute():
    return int(time.time() * 1000) // MINUTE * MINUTE


def test_it_shows_one_households_last_hour_oldest_first(client, cloud_settings, cloud, now_minute):
    start = now_minute - 10 * MINUTE
    rows = windows("hh-view", 30, start, 0)
    store_through_cloud(cloud, rows[15:])  # out of order: the newer half first
    store_through_cloud(cloud, rows[:15])
    store_through_cloud(cloud, rows[:15])  # a resend adds nothing
    body = client.get("/api/households/hh-view/").json()
    assert (body["postal_code"], body["state"]) == locate("hh-view")
    assert body["edge"] == EDGE_ID and body["window_start"] == rows[-1][2]
    assert [(p["window_start"], p["power_w"]) for p in body["series"]] == [(r[2], r[4]) for r in rows]


def test_it_keeps_a_bounded_series_of_the_last_hour(client, cloud_settings, cloud, now_minute):
    start = now_minute - 2 * 3600 * 1000
    rows = windows("hh-long", SERIES_MAX + 100, start, 0)
    for i in range(0, len(rows), 200):
        store_through_cloud(cloud, rows[i:i + 200])
    series = client.get("/api/households/hh-long/").json()["series"]
    newest_end = rows[-1][3]
    expected = [r[2] for r in rows if r[3] > newest_end - 3600 * 1000]
    assert [p["window_start"] for p in series] == expected
    assert len(series) <= SERIES_MAX
    # Read from the stored tuples themselves: no batch writes a second copy of its windows (a series list is a v1
    # household's only).
    client = connect(cloud.redis_url)
    try:
        assert not client.exists(Keys(cloud.prefix).series(shard_of(EDGE_ID), "hh-long"))
    finally:
        client.close()


def test_it_shows_the_last_hour_of_staggered_windows_and_skips_the_gaps(client, cloud_settings, cloud, now_minute):
    """Windows at a phase of their own (FOG_WINDOW_STAGGER) and a household silent for a while: its series is
    what was stored, read back from its newest window."""
    start = now_minute - 30 * MINUTE + 1700
    rows = [row for row in windows("hh-staggered", 200, start, 0) if not 50 <= row[0] < 80]
    store_through_cloud(cloud, rows)
    series = client.get("/api/households/hh-staggered/").json()["series"]
    assert [(p["window_start"], p["window_end"], p["power_w"]) for p in series] == [(r[2], r[3], r[4]) for r in rows]


def test_it_refuses_unknown_households_states_and_edges(client, cloud_settings, cloud):
    assert client.get("/api/households/nobody/").status_code == 404
    assert client.get("/api/states/XX/households/").status_code == 404
    assert client.get("/api/edges/no-such-edge/history/").status_code == 404


@pytest.mark.parametrize("household", ["a" * 10_000_000, "a" * 129, "x*", "a b", "\u00e4", "%00", "%2E%2E"],
                         ids=["ten million characters", "one too many", "glob", "space", "umlaut", "nul", "dots"])
def test_it_answers_an_id_no_household_may_have_with_a_404_and_no_read_of_the_store(client, cloud_settings,
                                                                                    household, monkeypatch):
    monkeypatch.setattr(api, "outage", api.StoreOutage())  # this test's outage, not one of the tests after it
    cloud_settings.FOG_CLOUD_REDIS_URL = f"redis://127.0.0.1:{free_port()}/12"  # nothing listens: a read is a 503
    response = client.get(f"/api/households/{household}/")
    assert response.status_code == 404 and response.json()["detail"].startswith("no household ")
    assert client.get("/api/households/nobody/").status_code == 503  # an id a household may have: read


def test_it_lists_exactly_the_households_of_a_state(client, cloud_settings, cloud, now_minute):
    households = [f"hh-state-{i}" for i in range(60)]
    store_through_cloud(cloud, [(i, hh, now_minute, now_minute + 5000, 50.0, 1) for i, hh in enumerate(households)])
    for state in {locate(hh)[1] for hh in households}:
        body = client.get(f"/api/states/{state}/households/?page_size=500").json()
        assert sorted(r["household"] for r in body["results"]) == sorted(h for h in households if locate(h)[1] == state)
        assert body["count"] == len(body["results"])


def test_it_rolls_up_total_power_per_minute_exactly_once(client, cloud_settings, cloud, now_minute):
    a = windows("hh-power-a", 24, now_minute - 3 * MINUTE, 0, power=600.0)  # two minutes of 5 s windows
    b = windows("hh-power-b", 12, now_minute - 3 * MINUTE, 100, power=1200.0)  # the first of those minutes
    store_through_cloud(cloud, a + b)
    store_through_cloud(cloud, b)  # a resend is not counted again
    points = {p["minute"]: p["power_w"] for p in client.get("/api/power/").json()}
    assert len(points) == 60
    for minute in (now_minute - 3 * MINUTE, now_minute - 2 * MINUTE):
        expected = sum(avg * (we - ws) for _, _, ws, we, avg, _ in a + b if ws // MINUTE * MINUTE == minute) / MINUTE
        assert points[minute] == pytest.approx(expected)
    assert points[now_minute - 10 * MINUTE] is None


@pytest.mark.parametrize("seconds", [7, 120])
def test_it_rolls_up_power_exactly_whatever_the_window_length(client, cloud_settings, cloud, now_minute, seconds):
    """A window's energy goes to each minute it spans, its share of it: all of it to the minute it starts in made
    a steady 1000 W read 1050 and 933 W with 7 s windows, 2000 W and nothing with 120 s ones."""
    length, start = seconds * 1000, now_minute - 10 * MINUTE
    rows = [(i, "hh-long", start + i * length, start + (i + 1) * length, 1000.0, 3) for i in range(6 * MINUTE // length)]
    store_through_cloud(cloud, rows)
    points = {p["minute"]: p["power_w"] for p in client.get("/api/power/").json()}
    whole = range(start, rows[-1][3] // MINUTE * MINUTE, MINUTE)  # the minutes the windows cover from end to end
    assert len(whole) >= 5 and [points[m] for m in whole] == [pytest.approx(1000.0)] * len(whole)


def test_it_marks_a_minute_whose_windows_may_still_come_as_not_complete(client, cloud_settings, cloud, cloud_reader,
                                                                        now_minute):
    from cloud_app.reader import power_settled_ms

    # Two windows of the current minute are stored, its other ten are still to come: 200 W over a sixth of it.
    store_through_cloud(cloud, windows("hh-filling", 2, now_minute, 0, power=1200.0))
    points = {p["minute"]: p for p in client.get("/api/power/").json()}
    assert points[now_minute]["complete"] is False and points[now_minute]["power_w"] > 0
    assert points[now_minute - 2 * MINUTE]["complete"] is True
    for window_seconds in (5, 120):  # the last window reaching into a minute ends up to a window after it
        cloud_settings.FOG_WINDOW_SECONDS = window_seconds
        settled = now_minute + MINUTE + power_settled_ms()  # complete from then on, not a millisecond before
        assert settled >= now_minute + MINUTE + window_seconds * 1000 + cloud_settings.FOG_GRACE_SECONDS * 1000
        assert {p["minute"]: p["complete"] for p in cloud_reader.power(settled - 1)}[now_minute] is False
        assert {p["minute"]: p["complete"] for p in cloud_reader.power(settled)}[now_minute] is True


def test_it_records_an_edges_backlog_acks_and_offline_periods(client, cloud_settings, cloud, redis_url,
                                                             cloud_prefix, now_minute):
    store_through_cloud(cloud, windows("hh-edge", 7, now_minute - MINUTE, 0))
    now = int(time.time() * 1000)
    beats = [(now - 20_000, 40), (now - 19_000, 38), (now - 9_000, 12), (now - 8_000, 10)]  # a 10 s gap

    async def beat():
        client_ = connect_async(redis_url)
        store = CloudStore(client_, cloud_prefix)
        for at, backlog in beats:
            await store.heartbeat("edge-h", {"backlog": backlog}, now_ms=at)
        await client_.aclose()

    asyncio.run(beat())
    history = client.get("/api/edges/edge-h/history/").json()
    asked = int(time.time() * 1000)  # the request's own minute may be the next, when `now` was near its end
    assert history["minutes"][-1] in (now // MINUTE * MINUTE, asked // MINUTE * MINUTE)
    backlog = dict(zip(history["minutes"], history["backlog"]))
    assert backlog[(now - 8_000) // MINUTE * MINUTE] == 10  # the minute's last beat
    assert {"start": now - 19_000, "end": now - 9_000} in history["offline"]
    assert history["offline"][-1] == {"start": now - 8_000, "end": None}  # no beat since: offline now
    acked = client.get(f"/api/edges/{EDGE_ID}/history/").json()["acked"]
    assert sum(acked) == 7
