"""The admin stays fast at millions of tuples: bounded SQL on every page, index-served filters, readable figures.

Runs on SQLite and, in `make test`'s second pass (marker edge_db, tests/edge_database.py), on PostgreSQL 15,
where the plans are checked for sorts and sequential scans.
"""

import re
from datetime import datetime, timedelta, UTC

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from edge_app import admin as edge_admin
from edge_app import models as edge_models
from edge_app.models import EdgeStatus, LinkChange, Status, WindowAggregate

T0 = 1_577_142_000_000  # 2019-12-23 23:00 UTC, midnight in Berlin
TUPLES = "/admin/edge_app/windowaggregate/"
TABLE = WindowAggregate._meta.db_table

pytestmark = pytest.mark.edge_db


@pytest.fixture
def tuples(db):
    created = datetime(2019, 12, 24, 0, 0, 7, tzinfo=UTC)
    rows = [WindowAggregate(household=name, window_start=T0 + i * 5000, window_end=T0 + i * 5000 + 5000,
                            day="2019-12-24" if i < 30 else "2019-12-25", average_w=985.4214999999999 + i,
                            readings=3, status=Status.ACKED if i % 3 else Status.PENDING, created_at=created,
                            acked_at=created + timedelta(milliseconds=85) if i % 3 else None)
            for i, name in enumerate(["house-1", "house-10", "house-2", "House-1", "xhouse-1"] * 12)]
    WindowAggregate.objects.bulk_create(rows)
    EdgeStatus.objects.create(edge_id="edge-1", connected=True, backlog=20, readings=180, acked=40, refused=2,
                              last_error="no answer from tcp://127.0.0.1:63270 within 800 ms")
    return WindowAggregate.objects.order_by("id")


def pages(first_id):
    return {
        "list": TUPLES,
        "status": f"{TUPLES}?status__exact={Status.ACKED}",
        "day": f"{TUPLES}?day=2019-12-24",
        "search": f"{TUPLES}?q=house-1",
        "household": f"{TUPLES}?household=house-2",
        "refusal": f"{TUPLES}?refusal=negative-power",
        "status and search": f"{TUPLES}?status__exact={Status.PENDING}&q=house-1",
        "change": f"{TUPLES}{first_id}/change/",
        "edge status": "/admin/edge_app/edgestatus/",
        "edge status page": f"/admin/edge_app/edgestatus/{EdgeStatus.objects.get().pk}/change/",
    }


def test_it_runs_only_bounded_queries_on_every_admin_page(admin_client, tuples):
    for name, url in pages(tuples.first().id).items():
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(url).status_code == 200, name
        on_tuples = [q["sql"] for q in queries.captured_queries if TABLE in q["sql"]]
        assert bool(on_tuples) == url.startswith(TUPLES), name  # the edge status pages read counters only
        for sql in on_tuples:
            assert "GROUP BY" not in sql and "DISTINCT" not in sql, (name, sql)
            # Every read of the tuples is a page, a capped count or one row by primary key.
            assert "LIMIT" in sql or re.search(rf'"{TABLE}"\."id" = ', sql), (name, sql)
        assert len(queries) <= 12, (name, [q["sql"] for q in queries.captured_queries])


def _plan(queryset):
    """The database's plan for `queryset`, with PostgreSQL told to avoid scans and sorts wherever an index can."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET enable_seqscan = off; SET enable_sort = off")
        try:
            return queryset.explain()
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET enable_seqscan; RESET enable_sort")
    return queryset.explain()


@pytest.mark.parametrize("query", ["", "status__exact=2", "day=2019-12-24", "q=house-1", "household=house-2",
                                   "refusal=negative-power"])
def test_it_serves_each_filter_in_index_order(admin_client, tuples, query):
    """No plan reads all matching rows to sort them: the list comes in index order, LIMIT 100 stops it early."""
    changelist = admin_client.get(f"{TUPLES}?{query}").context["cl"]
    plan = _plan(changelist.queryset[:100])
    if connection.vendor == "postgresql":
        assert "Sort" not in plan and "Seq Scan" not in plan, plan
    else:
        assert "TEMP B-TREE" not in plan and ("SEARCH" in plan or not query), plan


def test_it_caps_the_counts_and_says_so(admin_client, tuples, monkeypatch):
    monkeypatch.setattr(edge_admin, "COUNT_CAP", 25)
    page = admin_client.get(TUPLES).content.decode()
    assert "Tuples: 20 pending, 0 sent, at least 25 acknowledged" in page
    assert "at least 25 tuples (counted no further" in page
    monkeypatch.setattr(edge_admin, "COUNT_CAP", 1000)
    assert "Tuples: 20 pending, 0 sent, 40 acknowledged" in admin_client.get(TUPLES).content.decode()


def test_it_finds_households_by_case_sensitive_prefix(admin_client, tuples):
    found = admin_client.get(f"{TUPLES}?q=house-1").context["cl"].result_list
    assert {t.household for t in found} == {"house-1", "house-10"}
    assert [t.window_start for t in found if t.household == "house-10"] == sorted(
        (t.window_start for t in found if t.household == "house-10"), reverse=True)  # newest first
    one = admin_client.get(f"{TUPLES}?household=house-1").context["cl"].result_list
    assert {t.household for t in one} == {"house-1"} and len(one) == 12


def test_it_offers_the_days_that_hold_tuples(admin_client, tuples):
    page = admin_client.get(TUPLES).content.decode()
    assert "?day=2019-12-25" in page and "?day=2019-12-24" in page and "?day=2019-12-23" not in page
    assert len(admin_client.get(f"{TUPLES}?day=2019-12-25").context["cl"].result_list) == 30
    bad = admin_client.get(f"{TUPLES}?day=24.12.2019")  # the admin's "invalid lookup" page, not a 500
    assert bad.status_code == 302 and bad["Location"].endswith("?e=1")


def test_it_shows_figures_readably_in_the_operators_time_zone(admin_client, tuples, settings):
    settings.TIME_ZONE = "Europe/Berlin"
    page = admin_client.get(f"{TUPLES}?household=house-10").content.decode()
    assert "986.4 W" in page and "985.4214999999999" not in page
    assert "2019-12-24 00:00:05 CET" in page and 'title="2019-12-23 23:00:05 UTC"' in page
    assert "85 ms" in page  # delivery latency, acked_at - created_at
    acked = tuples.filter(status=Status.ACKED).first()
    change = admin_client.get(f"{TUPLES}{acked.id}/change/").content.decode()
    assert "2019-12-24 01:00:07.085 CET (2019-12-24 00:00:07.085 UTC)" in change
    assert 'name="average_w"' not in change and "W</div>" in change


def test_it_keeps_a_short_link_history_and_shows_it(admin_client, tuples, monkeypatch):
    monkeypatch.setattr(edge_models, "LINK_HISTORY_KEEP", 5)
    began = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    for n in range(12):
        LinkChange.record("edge-1", n % 2 == 1, began + timedelta(minutes=10 * n), "" if n % 2 else "no answer")
    history = list(LinkChange.objects.filter(edge_id="edge-1").order_by("at"))
    assert len(history) == 5 and history[-1].at == began + timedelta(minutes=110)
    page = admin_client.get(f"/admin/edge_app/edgestatus/{EdgeStatus.objects.get().pk}/change/").content.decode()
    assert "DOWN" in page and "10 min 00 s" in page and "no answer" in page and "so far" in page
    listing = admin_client.get("/admin/edge_app/edgestatus/").content.decode()
    assert "within 800 ms" in listing and ">20<" in listing  # last error and backlog at a glance


def test_it_records_link_changes_from_the_heartbeat(db, cloud):
    from edge_app.link import Heartbeat
    from tests.conftest import wait_for
    from tests.corpus import EDGE_ID, EDGE_SECRET

    beat = Heartbeat(edge_id=EDGE_ID, secret=EDGE_SECRET, address=cloud.hb_addr, timeout_ms=500)
    try:
        assert wait_for(beat.handle_one_beat, timeout=20, interval=0.1)
        cloud.stop()
        assert wait_for(lambda: not beat.handle_one_beat() and not EdgeStatus.objects.get(edge_id=EDGE_ID).connected,
                        timeout=30, interval=0.1)
    finally:
        beat.close()
    changes = list(LinkChange.objects.filter(edge_id=EDGE_ID).order_by("at"))
    assert [c.connected for c in changes] == [True, False]
    assert "no answer" in changes[1].error
