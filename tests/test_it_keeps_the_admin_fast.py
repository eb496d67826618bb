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
from edge_app.household_index import HouseholdIndexer
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
    HouseholdIndexer().index_all()
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


OPEN = "|".join(str(int(s)) for s in edge_models.OPEN_STATUSES)


def _explain(sql):
    with connection.cursor() as cursor:
        cursor.execute(("EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN ") + sql)
        return "\n".join(str(row[-1]) for row in cursor.fetchall())


def test_it_reads_the_counts_for_metrics_health_and_the_run_summary_from_index_ranges(client, tuples, settings):
    """/metrics, /edge/health/ and runedge's summary count no more than the tuples not yet acknowledged:
    each read of the tuples pins an open status (one index range) or is bounded by a LIMIT, none groups or
    counts the whole table; the acknowledged ones come from the edge's own counters."""
    from edge_app.supervisor import Counts

    settings.FOG_SERVES_CLOUD = False  # the edge's half of /metrics; the cloud's reads Redis
    settings.FOG_EDGE_ID = "edge-1"
    EdgeStatus.objects.filter(edge_id="edge-1").update(windows=60)
    tuples.filter(id__in=tuples.filter(status=Status.PENDING).values("id")[:2]).update(
        status=Status.REFUSED, refusal="negative-power")
    readers = {"/metrics": lambda: client.get("/metrics"), "/edge/health/": lambda: client.get("/edge/health/"),
               "runedge's summary": Counts.now}
    answers = {}
    for name, read in readers.items():
        with CaptureQueriesContext(connection) as queries:
            answers[name] = read()
        on_tuples = [q["sql"] for q in queries.captured_queries if TABLE in q["sql"]]
        assert on_tuples, name
        for sql in on_tuples:
            pinned = re.search(rf'"{TABLE}"\."status" = ({OPEN})\b', sql)
            assert "LIMIT" in sql or pinned, (name, sql)
            assert "GROUP BY" not in sql or pinned, (name, sql)
            plan = _explain(sql)
            if connection.vendor == "sqlite":
                assert "SEARCH" in plan and "SCAN " + TABLE not in plan, (name, sql, plan)
            else:
                assert "Index" in plan, (name, sql, plan)
    metrics = answers["/metrics"].content.decode()
    assert 'fog_edge_tuples{status="pending"} 18.0' in metrics and 'fog_edge_tuples{status="refused"} 2.0' in metrics
    assert 'status="acknowledged"' not in metrics and 'fog_edge_acked_total{edge="edge-1"} 40.0' in metrics
    assert 'fog_edge_windows_total{edge="edge-1"} 60.0' in metrics
    assert "18 pending, 0 sent, 2 refused" in answers["/edge/health/"].content.decode()
    summary = answers["runedge's summary"]
    assert (summary.windows, summary.acked, summary.pending, summary.refused) == (60, 40, 18, 2)


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


# The index each filter's page must read (None: any, as long as nothing is sorted). With the wrong one a
# page skips rows: ordered by id alone, "acknowledged" walked the primary key over the whole backlog first.
HOUSEHOLDS = {"postgresql": "household_index", "sqlite": "sqlite_autoindex_edge_app_householdentry_1"}


@pytest.mark.parametrize("query, index", [("", None), ("status__exact=2", "sender_next"),
                                          ("status__exact=0", "sender_next"), ("day=2019-12-24", "admin_day_id"),
                                          ("q=house-1", HOUSEHOLDS), ("household=house-2", HOUSEHOLDS),
                                          ("refusal=negative-power", "sender_next"),
                                          ("status__exact=2&day=2019-12-24", None)])
def test_it_serves_each_filter_in_index_order(admin_client, tuples, query, index):
    """No plan reads all matching rows to sort them: the list comes in the order of the index that serves its
    filter, and LIMIT 100 stops it early."""
    changelist = admin_client.get(f"{TUPLES}?{query}").context["cl"]
    plan = _plan(changelist.queryset[:100])
    if connection.vendor == "postgresql":
        assert "Sort" not in plan and "Seq Scan" not in plan, plan
    else:
        assert "TEMP B-TREE" not in plan and ("SEARCH" in plan or not query), plan
    if index:
        assert (index[connection.vendor] if isinstance(index, dict) else index) in plan, plan
    if index == "sender_next":
        # As an equality PostgreSQL takes the status for a constant and, at millions of rows, walks the primary
        # key over the whole backlog instead (a plan these few rows cannot show): it must stay a range.
        assert re.search(r'"status" >= \d+ AND "[a-z_]+"\."status" <= \d+', str(changelist.queryset.query))


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
