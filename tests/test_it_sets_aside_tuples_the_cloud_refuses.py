"""A tuple the cloud refuses for a permanent reason becomes REFUSED with that reason and is not sent again;
the admin, the metrics and reconcile show it, and the admin's action sends it again after a fix."""

import pytest

from edge_app.link import Heartbeat
from edge_app.models import EdgeStatus, Status, WindowAggregate
from edge_app.sender import Sender
from fogsite.reconcile import reconcile
from fogwire import protocol as wire
from tests.conftest import EDGE_ID, EDGE_SECRET, CloudThread, cloud_stats, counted, deliver, wait_for

T0 = 1_577_142_000_000

pytestmark = pytest.mark.edge_db  # REFUSED transitions, the admin's action, the metrics' counts, on PostgreSQL too


def _add(count):
    WindowAggregate.objects.bulk_create([
        WindowAggregate(household=f"house-{i % 4}", window_start=T0 + i * 5000, window_end=T0 + i * 5000 + 5000,
                        day="2019-12-24", average_w=100.0 + i, readings=3) for i in range(count)])


def _drain(sender):
    sender._link_checked = -1e9
    while sender.handle_one_round():
        pass
    return sender.totals["sent"]


@pytest.fixture
def delivery(redis_url, cloud_prefix):
    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}).start()
    beat = Heartbeat(edge_id=EDGE_ID, secret=EDGE_SECRET, address=cloud.hb_addr, timeout_ms=300)
    sender = Sender(edge_id=EDGE_ID, secret=EDGE_SECRET, address=cloud.data_addr, batch=100)
    try:
        assert wait_for(beat.handle_one_beat, timeout=5, interval=0.1)
        yield cloud, sender
    finally:
        beat.close()
        sender.close()
        cloud.stop()


@pytest.mark.django_db(transaction=True)
def test_it_keeps_a_refused_tuple_with_its_reason_and_sends_it_no_more(delivery, redis_client, cloud_prefix,
                                                                       admin_client, cloud_settings):
    cloud, sender = delivery
    _add(10)
    bad = WindowAggregate.objects.order_by("id")[3]
    WindowAggregate.objects.filter(id=bad.id).update(average_w=-5.0)
    assert _drain(sender) == 10
    bad.refresh_from_db()
    assert (bad.status, bad.refusal, bad.next_attempt_at) == (Status.REFUSED, wire.R_NEGATIVE, None)
    assert WindowAggregate.objects.filter(status=Status.ACKED).count() == 9
    assert _drain(sender) == 10  # nothing sent again
    assert counted(lambda: cloud_stats(redis_client, cloud_prefix), f"refused:{wire.R_NEGATIVE}", 1)

    page = admin_client.get(f"/admin/edge_app/windowaggregate/?status__exact={int(Status.REFUSED)}").content.decode()
    assert "9 acknowledged, 1 refused" in page and wire.R_NEGATIVE in page
    metrics = admin_client.get("/metrics").content.decode()
    assert f'fog_edge_refused_tuples{{reason="{wire.R_NEGATIVE}"}} 1.0' in metrics
    assert 'fog_edge_tuples{status="refused"} 1.0' in metrics

    report = reconcile(EDGE_ID, redis_client, cloud_prefix)
    assert (report.totals.refused, report.refusals) == (1, {wire.R_NEGATIVE: 1})
    assert report.ok() and not report.ok(strict=True)

    # The fix (here: the value corrected), then the admin's action sends it again.
    WindowAggregate.objects.filter(id=bad.id).update(average_w=5.0)
    response = admin_client.post("/admin/edge_app/windowaggregate/",
                                 {"action": "send_again", "_selected_action": [bad.id]})
    assert response.status_code == 302
    assert _drain(sender) == 11
    bad.refresh_from_db()
    assert (bad.status, bad.refusal) == (Status.ACKED, "")
    assert reconcile(EDGE_ID, redis_client, cloud_prefix).ok(strict=True)
    assert EdgeStatus.objects.get(edge_id=EDGE_ID).refused == 1


@pytest.mark.django_db(transaction=True)
def test_it_sets_aside_tuples_of_a_household_another_edge_owns(delivery, redis_client, cloud_prefix):
    cloud, sender = delivery
    cloud.server.secrets["edge-first"] = "first-secret"
    rows = [(1, "house-2", T0 - 5000, T0, 1.0, 1)]
    deliver(cloud, rows, "edge-first", "first-secret")
    _add(8)
    assert _drain(sender) == 8
    refused = WindowAggregate.objects.filter(status=Status.REFUSED)
    assert set(refused.values_list("household", "refusal")) == {("house-2", wire.R_NOT_OWNER)}
    assert refused.count() == 2 and WindowAggregate.objects.filter(status=Status.ACKED).count() == 6
    assert not WindowAggregate.objects.backlog().exists()  # so a burst run ends


@pytest.mark.django_db(transaction=True)
def test_it_counts_an_acknowledged_tuple_sent_again_once(delivery, admin_client):
    # The admin sends acknowledged tuples again after a cloud lost them: acknowledged again, but the edge's
    # counter (fog_edge_acked_total, a Prometheus counter: it never goes down) counts tuples, each once.
    cloud, sender = delivery
    _add(10)
    assert _drain(sender) == 10
    again = list(WindowAggregate.objects.order_by("id").values_list("id", flat=True)[:3])
    admin_client.post("/admin/edge_app/windowaggregate/", {"action": "send_again", "_selected_action": again})
    assert _drain(sender) == 13
    assert WindowAggregate.objects.filter(status=Status.ACKED).count() == 10
    assert EdgeStatus.objects.get(edge_id=EDGE_ID).acked == 10


@pytest.mark.django_db(transaction=True)
def test_it_sends_again_later_a_window_the_clouds_clock_puts_in_its_future(delivery):
    """A window over a day ahead of the cloud's clock, which the edge's clock found fine: one of the two
    clocks is wrong (a cloud host before its first time sync), not the tuple, so it waits out a backoff and
    is sent again, never set aside for good as a tuple the cloud would refuse whenever it came."""
    import time

    cloud, sender = delivery
    ahead = (int(time.time() * 1000) + 25 * 3600 * 1000) // 5000 * 5000
    WindowAggregate.objects.create(household="house-9", window_start=ahead, window_end=ahead + 5000,
                                   day="2030-01-01", average_w=1.0, readings=2)
    _drain(sender)
    waiting = WindowAggregate.objects.get(household="house-9")
    assert (waiting.status, waiting.refusal) == (Status.PENDING, wire.R_FUTURE)
    assert waiting.next_attempt_at is not None
    assert WindowAggregate.objects.backlog().exists()
