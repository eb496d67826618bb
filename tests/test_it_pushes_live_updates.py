"""The dashboard websocket: summary first, then updates from the cloud through the real Redis channel layer."""

import asyncio
import time

import pytest

from cloud_app.consumers import merge
from cloud_app.postal import locate
from tests.conftest import (
    EDGE_ID,
    EDGE_SECRET,
    answer,
    free_port,
    is_tick,
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
        return await update_after_storing(socket, publishing_cloud, live, 5)

    live = make_rows(25, household="live", start_id=100, base_ms=_minutes_ago(10))  # roll-ups are kept two hours

    update = asyncio.run(scenario())
    assert update["type"] == "update"
    assert update["acked"] == 25 and update["edges"] == {EDGE_ID: 25}
    assert update["states"]  # the touched states' absolute sums
    assert [t["id"] for t in update["recent"]] == list(range(124, 109, -1))  # the newest 15, newest first
    assert sum(update["power"].values()) == pytest.approx(sum(avg * (we - ws) for _, _, ws, we, avg, _ in live))
    assert update["ends"] == {str(we): 1 for _, _, _, we, _, _ in live}  # every tuple's window end, counted


def _minutes_ago(minutes):
    return (int(time.time()) // 60 - minutes) * 60000


def test_it_counts_nothing_twice_for_a_page_that_joins_before_an_update_of_what_it_was_sent(
        cloud_settings, redis_url, cloud_prefix):
    """The socket joins the updates' group, then reads the summary: an update published meanwhile may be of
    batches the summary holds. It carries totals (the page keeps the larger), so summary and update agree."""
    from channels.layers import get_channel_layer

    from cloud_app.run import store_client
    from cloud_app.server import CloudServer
    from cloud_app.store import CloudStore

    async def scenario():
        client = store_client(redis_url)
        server = CloudServer(CloudStore(client, cloud_prefix), {EDGE_ID: EDGE_SECRET}, max_connections=4,
                             channel_layer=get_channel_layer())
        try:
            first = make_rows(12, household="joiner", base_ms=base)
            assert (await answer(server, first))[1] == [""] * 12
            assert await server.publish_pending()  # nobody listens yet
            second = make_rows(12, household="other", start_id=12, base_ms=base)  # the same minute
            assert (await answer(server, second))[1] == [""] * 12  # stored; its update not yet published
            socket, summary = await open_dashboard()  # the summary holds both batches
            assert await server.publish_pending()
            update = await socket.receive_json_from(timeout=10)
            while is_tick(update):
                update = await socket.receive_json_from(timeout=10)
            await socket.disconnect()
            return first + second, summary, update
        finally:
            await client.aclose()

    base = _minutes_ago(5)
    rows, summary, update = asyncio.run(scenario())
    assert update["acked"] == 12  # what the batch added, for the rates
    power = {str(p["minute"]): p["power_w"] * 60000 for p in summary["power"] if p["power_w"] is not None}
    assert set(update["power"]) == {str(base)}
    for minute, wms in update["power"].items():  # every stored tuple's, once
        assert wms == pytest.approx(power[minute], abs=60) == sum(
            avg * (we - ws) for _, _, ws, we, avg, _ in rows if ws // 60000 * 60000 == int(minute))
    tuples = {state["state"]: state["tuples"] for state in summary["states"]}
    assert update["states"] and {state: sums[2] for state, sums in update["states"].items()} == {
        state: tuples[state] for state in update["states"]}
    assert {t["id"] for t in update["recent"]} <= {t["id"] for t in summary["recent"]}


def test_it_merges_updates_so_a_client_gets_at_most_four_a_second():
    pending = merge(None, {"acked": 3, "edges": {"e": 3}, "states": {"BY": [1, 10.0, 3]}, "beats": {}, "ts": 1,
                           "power": {"60000": 5.0}, "recent": [{"id": 2, "household": "h2"}, {"id": 1, "household": "h1"}],
                           "ends": {"5000": 3}})
    pending = merge(pending, {"acked": 2, "edges": {"e": 2, "f": 1}, "states": {"BY": [1, 20.0, 5]},
                              "beats": {"e": {"backlog": 4, "ts": 2}}, "ts": 2,
                              "power": {"60000": 6.5, "120000": 2.0}, "recent": [{"id": 3, "household": "h3"}],
                              "ends": {"5000": 1, "10000": 1}})
    # Another cloud process's update, read from the store before the last one: its totals are older, smaller.
    pending = merge(pending, {"acked": 1, "edges": {"f": 1}, "states": {"BY": [1, 15.0, 4]}, "ts": 3,
                              "power": {"60000": 6.0}, "ends": {"5000": 1}})
    # Counts add up; totals keep the newest, whatever the order they came in.
    assert pending == {"acked": 6, "edges": {"e": 5, "f": 2}, "states": {"BY": [1, 20.0, 5]},
                       "beats": {"e": {"backlog": 4, "ts": 2}}, "ts": 3,
                       "power": {"60000": 6.5, "120000": 2.0},
                       "recent": [{"id": 3, "household": "h3"}, {"id": 2, "household": "h2"}, {"id": 1, "household": "h1"}],
                       "ends": {"5000": 5, "10000": 1}}
    # The newest tuples: each once, the newest stored first, whichever process's update came first.
    def row(edge, household, start, acked_ms):
        return {"edge": edge, "household": household, "window_start": start, "window_end": start + 5000,
                "acked_ms": acked_ms}

    pending = merge(None, {"recent": [row("e", "h1", 5000, 200), row("e", "h1", 0, 200)]})
    pending = merge(pending, {"recent": [row("f", "h1", 5000, 100), row("e", "h1", 5000, 200)]})
    assert [(r["edge"], r["window_start"]) for r in pending["recent"]] == [("e", 5000), ("e", 0), ("f", 5000)]


def test_it_reads_an_updates_totals_with_the_next_batch_when_the_store_did_not_answer(
        cloud_settings, redis_url, cloud_prefix, caplog):
    """The totals are read when the update is published: if the store does not answer then, they are read with
    the next update that stores a batch (no later batch need touch the same minute or state), and not before:
    an update of heartbeats alone asks the store nothing."""
    from channels.layers import get_channel_layer

    from cloud_app.run import store_client
    from cloud_app.server import CloudServer
    from cloud_app.store import CloudStore

    def failed_reads():
        return sum("dashboard update without its totals" in r.getMessage() for r in caplog.records)

    async def scenario():
        client, away = store_client(redis_url), store_client(f"redis://127.0.0.1:{free_port()}/0")  # none there
        store = CloudStore(client, cloud_prefix)
        server = CloudServer(store, {EDGE_ID: EDGE_SECRET}, max_connections=4, channel_layer=get_channel_layer())
        try:
            assert (await answer(server, first))[1] == [""] * 12
            store.redis = away  # the store stops answering before the update goes out
            assert await server.publish_pending() and failed_reads() == 1  # it goes out, without its totals
            assert not await server.publish_pending()  # nothing read again while nothing is stored
            server._merge_beat(EDGE_ID, {"backlog": 1})  # the page hears of beats while the store is away
            assert await server.publish_pending() and failed_reads() == 1  # and they ask it nothing
            store.redis = client
            socket, _ = await open_dashboard()
            assert (await answer(server, second))[1] == [""] * 12  # another minute, other states
            assert await server.publish_pending()
            update = await socket.receive_json_from(timeout=10)
            while is_tick(update):
                update = await socket.receive_json_from(timeout=10)
            await socket.disconnect()
            return update
        finally:
            await client.aclose()
            await away.aclose()

    base = _minutes_ago(3)
    first = make_rows(12, household="again", base_ms=base)
    states = {locate(household)[1] for _, household, *_ in first}
    prefix = next(f"later{n}" for n in range(1000) if not states & {locate(f"later{n}-{i}")[1] for i in range(5)})
    second = make_rows(12, household=prefix, start_id=12, base_ms=base + 60000)
    update = asyncio.run(scenario())
    assert update["power"] == {str(minute): pytest.approx(sum(avg * (we - ws) for _, _, ws, we, avg, _ in rows))
                               for minute, rows in ((base, first), (base + 60000, second))}
    assert update["acked"] == 12 and set(update["states"]) >= states  # the first batch's, read now
    assert sum(sums[2] for sums in update["states"].values()) == 24


def test_it_reads_a_watched_household_once_for_every_socket_watching_it(publishing_cloud, monkeypatch):
    """Anyone may open sockets: each one watching a household read its series on every update. The sockets of one
    process that got the same update share one read, of the newest few windows only."""
    from cloud_app import reader
    from cloud_app.consumers import WATCH_POINTS, WATCH_READ

    reads = []
    household_of = reader.CloudReader.household

    def counted(self, household, points=reader.SERIES_MAX):
        reads.append((household, points))
        return household_of(self, household, points)

    monkeypatch.setattr(reader.CloudReader, "household", counted)
    rows = make_rows(40, household="watched", base_ms=_minutes_ago(5))  # households watched-0 .. watched-4

    async def scenario():
        sockets = [(await open_dashboard())[0] for _ in range(3)]
        for socket in sockets:
            await socket.send_json_to({"watch": "watched-1"})
        await asyncio.sleep(0.2)  # the frames are taken before the update comes
        await asyncio.get_running_loop().run_in_executor(None, store_through_cloud, publishing_cloud, rows)
        views = []
        for socket in sockets:
            message = await socket.receive_json_from(timeout=10)
            while message["type"] != "household":
                message = await socket.receive_json_from(timeout=10)
            views.append(message)
            await socket.disconnect()
        return views

    views = asyncio.run(scenario())
    assert reads == [("watched-1", WATCH_READ)]
    expected = sorted(ws for _, household, ws, _, _, _ in rows if household == "watched-1")[-WATCH_POINTS:]
    assert all([p["window_start"] for p in view["series"]] == expected for view in views)
