"""What an operator sees during a long outage: health page, metrics, admin, and the cloud's view of a paused edge."""

import pytest
from django.utils import timezone

from edge_app.models import EdgeStatus
from fogwire import protocol as wire
from tests.conftest import EDGE_ID, EDGE_SECRET


@pytest.fixture
def paused_edge(db):
    EdgeStatus.for_edge("edge-far")
    EdgeStatus.objects.filter(edge_id="edge-far").update(
        connected=True, backlog=9000, budget=10000, paused=True, retention_left_seconds=2 * 3600 + 5 * 60,
        retention_checked_at=timezone.now(), lost_to_retention=0)
    EdgeStatus.for_edge("edge-lost")
    EdgeStatus.objects.filter(edge_id="edge-lost").update(budget=500, lost_to_retention=42)


@pytest.mark.edge_db
def test_it_shows_backlog_budget_pause_and_retention_on_the_health_page(client, paused_edge):
    page = client.get("/edge/health/").content.decode()
    far = page[page.index("edge-far"):page.index("edge-lost")]
    assert "ingest paused for its disk budget" in far
    assert ">9000<" in far and ">10000<" in far
    assert "2 h 5 min" in far and "less than the 6 h 0 min margin" in far
    lost = page[page.index("edge-lost"):]
    assert "<strong>42</strong>" in lost and "no limit in sight" in lost and "not yet" in lost


@pytest.mark.edge_db
def test_it_serves_the_health_page_read_only(client, paused_edge):
    assert client.post("/edge/health/").status_code == 405


@pytest.mark.edge_db
def test_it_exports_backlog_budget_pause_retention_and_loss_as_metrics(client, paused_edge):
    lines = set(client.get("/metrics").content.decode().splitlines())
    assert {'fog_edge_backlog_tuples{edge="edge-far"} 9000.0', 'fog_edge_budget_tuples{edge="edge-far"} 10000.0',
            'fog_edge_ingest_paused{edge="edge-far"} 1.0', 'fog_edge_ingest_paused{edge="edge-lost"} 0.0',
            'fog_edge_retention_seconds_left{edge="edge-far"} 7500.0',
            'fog_edge_lost_to_retention_total{edge="edge-lost"} 42.0'} <= lines
    assert not any(line.startswith('fog_edge_retention_seconds_left{edge="edge-lost"}') for line in lines)  # unknown


@pytest.mark.edge_db
def test_it_lists_the_outage_fields_in_the_admin(admin_client, paused_edge):
    page = admin_client.get("/admin/edge_app/edgestatus/").content.decode()
    for column in ("Budget", "Paused", "Retention left seconds", "Lost to retention"):
        assert column in page
    assert "7500.0" in page


def test_it_tells_the_clouds_api_that_an_edge_is_paused(client, cloud_settings, cloud):
    cloud.request(wire.heartbeat(EDGE_ID, EDGE_SECRET, backlog=17, paused=True), data=False)
    (edge,) = client.get("/api/edges/").json()
    assert (edge["edge"], edge["backlog"], edge["paused"]) == (EDGE_ID, 17, True)
    cloud.request(wire.heartbeat(EDGE_ID, EDGE_SECRET, backlog=3), data=False)  # an edge that does not say
    (edge,) = client.get("/api/edges/").json()
    assert edge["paused"] is False


@pytest.mark.django_db(transaction=True)
def test_it_tells_the_cloud_the_backlog_a_burst_ends_with(client, cloud_settings, cloud, redis_url):
    import uuid

    import redis as redis_lib

    from edge_app.control import EdgeControl
    from edge_app.loops import HeartbeatStep

    port = {name: int(getattr(cloud, name).rsplit(":", 1)[1]) for name in ("hb_addr", "data_addr")}
    cloud_settings.FOG_CLOUD_ENDPOINTS = [("127.0.0.1", port["hb_addr"], port["data_addr"])]
    cloud_settings.FOG_EDGE_ID, cloud_settings.FOG_EDGE_SECRET, cloud_settings.FOG_TLS_CA = EDGE_ID, EDGE_SECRET, ""
    # The heartbeat loop's last beat counted 360 tuples; the sender emptied the backlog right after it.
    cloud.request(wire.heartbeat(EDGE_ID, EDGE_SECRET, backlog=360), data=False)
    control = EdgeControl(f"edge-{uuid.uuid4().hex[:8]}", connection=redis_lib.Redis.from_url(redis_url))
    step = HeartbeatStep({}, control)
    try:
        assert not step.finished(control)  # the sender is still at work: the loop goes on
        assert client.get("/api/edges/").json()[0]["backlog"] == 360
        control.mark_done("sender")
        assert step.finished(control)
        (edge,) = client.get("/api/edges/").json()
        assert edge["backlog"] == 0
    finally:
        step.close()


def test_it_keeps_the_backlog_of_the_beat_the_edge_sent_last(client, cloud_settings, redis_url, cloud_prefix):
    """Replicas' clocks differ, and two beats can reach the cloud within one millisecond: the edge's own
    clock orders them."""
    import asyncio
    import time

    from cloud_app.engine import connect_async
    from cloud_app.store import BEAT_NEW, BEAT_OLDER, CloudStore

    now = int(time.time() * 1000)

    async def beats():
        connection = connect_async(redis_url)
        store = CloudStore(connection, cloud_prefix)
        taken = [await store.heartbeat(EDGE_ID, {"backlog": 360}, now_ms=now, sent_ms=now - 5),
                 await store.heartbeat(EDGE_ID, {"backlog": 0}, now_ms=now, sent_ms=now - 4)]  # the same ms here
        # An older beat, answered late by a replica whose clock is ahead: it changes nothing.
        taken.append(await store.heartbeat(EDGE_ID, {"backlog": 200, "paused": 1}, now_ms=now + 700,
                                           sent_ms=now - 900))
        await connection.aclose()
        return taken

    assert asyncio.run(beats()) == [BEAT_NEW, BEAT_NEW, BEAT_OLDER]  # the server shows the live page only new ones
    (edge,) = client.get("/api/edges/").json()
    assert (edge["backlog"], edge["paused"]) == (0, False)
    history = client.get(f"/api/edges/{EDGE_ID}/history/").json()
    assert [value for value in history["backlog"] if value is not None][-1] == 0


def test_it_follows_a_clock_set_back(client, cloud_settings, redis_url, cloud_prefix):
    """A clock set back (an NTP step, a VM resumed) further than replicas' clocks may differ: the cloud's, and
    an edge that died since showed connected until the clock caught up again; the edge's, and every beat was
    'older', its backlog frozen as long."""
    import asyncio
    import time

    from cloud_app.engine import connect_async
    from cloud_app.store import BEAT_NEW, CLOCK_SET_BACK_MS, CloudStore

    now = int(time.time() * 1000)
    back = CLOCK_SET_BACK_MS + 60_000

    async def beats():
        connection = connect_async(redis_url)
        store = CloudStore(connection, cloud_prefix)
        taken = [await store.heartbeat(EDGE_ID, {"backlog": 360}, now_ms=now + back, sent_ms=now + back),
                 # Both clocks set back; the edge's last beat came 5 s ago, and it has said nothing since.
                 await store.heartbeat(EDGE_ID, {"backlog": 7}, now_ms=now - 5000, sent_ms=now - 5000)]
        await connection.aclose()
        return taken

    assert asyncio.run(beats()) == [BEAT_NEW, BEAT_NEW]
    (edge,) = client.get("/api/edges/").json()
    assert (edge["backlog"], edge["connected"]) == (7, False)
