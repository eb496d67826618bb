from datetime import timedelta

import pytest
from django.utils import timezone

from edge_app.household_index import HouseholdIndexer
from edge_app.models import EdgeStatus, Status, WindowAggregate
from edge_app.retention import delete_expired

T0 = 1_577_142_000_000


@pytest.fixture
def tuples(db):
    now = timezone.now()
    rows = []
    for i, status in enumerate([Status.PENDING] * 3 + [Status.SENT] * 2 + [Status.ACKED] * 4):
        rows.append(WindowAggregate(household=f"house-{i % 2}", window_start=T0 + i * 5000,
                                    window_end=T0 + i * 5000 + 5000, day="2019-12-24", average_w=10.0 + i, readings=2,
                                    status=status, postal_code="80331" if status == Status.ACKED else "",
                                    acked_at=now - timedelta(days=10 if i % 2 else 1) if status == Status.ACKED else None))
    WindowAggregate.objects.bulk_create(rows)
    HouseholdIndexer().index_all()
    EdgeStatus.for_edge("edge-1")
    return WindowAggregate.objects.order_by("id")


def test_it_asks_for_a_login(client):
    response = client.get("/admin/edge_app/windowaggregate/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.edge_db
def test_it_lists_tuples_with_counts_per_status_in_the_header(admin_client, tuples):
    page = admin_client.get("/admin/edge_app/windowaggregate/").content.decode()
    assert "3 pending, 2 sent, 4 acknowledged" in page
    assert "house-0" in page


@pytest.mark.edge_db
def test_it_filters_by_status_household_and_day(admin_client, tuples):
    by_status = admin_client.get(f"/admin/edge_app/windowaggregate/?status__exact={int(Status.ACKED)}")
    assert len(by_status.context["cl"].result_list) == 4
    by_household = admin_client.get("/admin/edge_app/windowaggregate/?q=house-1")
    assert {t.household for t in by_household.context["cl"].result_list} == {"house-1"}
    by_day = admin_client.get("/admin/edge_app/windowaggregate/?day=2019-12-24")
    assert len(by_day.context["cl"].result_list) == 9


@pytest.mark.edge_db
def test_it_shows_every_field_read_only(admin_client, tuples):
    first = tuples.first()
    page = admin_client.get(f"/admin/edge_app/windowaggregate/{first.id}/change/").content.decode()
    assert 'name="average_w"' not in page  # no input: read-only
    assert admin_client.get("/admin/edge_app/windowaggregate/add/").status_code == 403


@pytest.mark.edge_db
def test_it_sets_selected_tuples_to_be_sent_again(admin_client, tuples):
    """Acknowledged ones to RESEND, as the sender puts back one it acknowledged before: PENDING would put a
    selection of millions into the backlog the disk budget bounds."""
    acked = list(tuples.filter(status=Status.ACKED).values_list("id", flat=True)[:2])
    admin_client.post("/admin/edge_app/windowaggregate/", {"action": "send_again", "_selected_action": acked})
    assert set(WindowAggregate.objects.filter(id__in=acked).values_list("status", flat=True)) == {Status.RESEND}


@pytest.mark.edge_db
def test_it_leaves_a_tuple_in_flight_alone_when_sent_again(admin_client, tuples):
    """Set back to PENDING while its batch is out, a SENT tuple went in the next batch too, and the first
    batch's reply applied to the second copy."""
    in_flight = tuples.filter(status=Status.PENDING).first()
    WindowAggregate.objects.filter(id=in_flight.id).update(status=Status.SENT)
    everything = list(tuples.values_list("id", flat=True))
    admin_client.post("/admin/edge_app/windowaggregate/", {"action": "send_again", "_selected_action": everything})
    assert WindowAggregate.objects.get(id=in_flight.id).status == Status.SENT


@pytest.mark.edge_db
def test_it_lets_nobody_save_or_delete_a_tuple_or_the_edge_status(admin_client, tuples):
    """Every field is read-only, yet a Save wrote back the whole row as it was read: an acknowledgement (or a
    counter's increment) committed in between was undone. Retention is the only thing that deletes tuples."""
    first = tuples.first()
    page = admin_client.get(f"/admin/edge_app/windowaggregate/{first.id}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert admin_client.post(f"/admin/edge_app/windowaggregate/{first.id}/change/", {}).status_code == 403
    assert admin_client.post(f"/admin/edge_app/windowaggregate/{first.id}/delete/", {"post": "yes"}).status_code == 403
    listing = admin_client.get("/admin/edge_app/windowaggregate/").content.decode()
    assert "delete_selected" not in listing
    admin_client.post("/admin/edge_app/windowaggregate/", {"action": "delete_selected", "post": "yes",
                                                           "_selected_action": [first.id]})
    assert WindowAggregate.objects.filter(id=first.id).exists()
    status = EdgeStatus.objects.get()
    page = admin_client.get(f"/admin/edge_app/edgestatus/{status.pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert admin_client.post(f"/admin/edge_app/edgestatus/{status.pk}/change/", {}).status_code == 403
    assert admin_client.post(f"/admin/edge_app/edgestatus/{status.pk}/delete/", {"post": "yes"}).status_code == 403


@pytest.mark.edge_db
def test_it_lets_a_user_who_may_only_view_tuples_change_none(client, tuples):
    from django.contrib.auth.models import Permission, User

    viewer = User.objects.create_user("viewer", password="pw-viewer-1", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_windowaggregate"))
    client.force_login(viewer)
    page = client.get("/admin/edge_app/windowaggregate/")
    assert page.status_code == 200 and "send_again" not in page.content.decode()
    acked = list(tuples.filter(status=Status.ACKED).values_list("id", flat=True))
    client.post("/admin/edge_app/windowaggregate/", {"action": "send_again", "_selected_action": acked})
    assert set(WindowAggregate.objects.filter(id__in=acked).values_list("status", flat=True)) == {Status.ACKED}


@pytest.mark.edge_db
def test_it_shows_the_edge_status(admin_client, tuples):
    page = admin_client.get("/admin/edge_app/edgestatus/").content.decode()
    assert "edge-1" in page


@pytest.mark.edge_db
def test_it_deletes_only_acknowledged_tuples_past_retention(tuples):
    assert delete_expired(days=7) == 2
    remaining = WindowAggregate.objects.all()
    assert remaining.filter(status=Status.ACKED).count() == 2
    assert remaining.exclude(status=Status.ACKED).count() == 5


@pytest.mark.edge_db
def test_it_keeps_an_old_tuple_sent_again_from_the_admin_until_it_is_acknowledged_again(admin_client, tuples):
    old = tuples.filter(status=Status.ACKED, acked_at__lt=timezone.now() - timedelta(days=7)).first()
    admin_client.post("/admin/edge_app/windowaggregate/", {"action": "send_again", "_selected_action": [old.id]})
    assert delete_expired(days=7) == 1  # the other old one; this one waits to be sent again
    assert WindowAggregate.objects.get(id=old.id).status == Status.RESEND


def test_it_finds_expired_tuples_in_one_range_of_the_retention_index(db):
    """SQLite keeps no statistics on an edge's database: the retention must still read the partial index of
    acknowledged tuples by acked_at, not every acknowledged tuple (the millions a week of them make)."""
    from django.db import connection

    sql, params = WindowAggregate.objects.expired(timezone.now()).query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        plan = " ".join(str(row[-1]) for row in cursor.fetchall())
    assert "USING INDEX retention_acked (acked_at<?)" in plan, plan
