"""The household index (edge_app/household_index.py): built in sorted runs away from the ingest, it finds every
household's tuples for the admin, trails the newest by one run at most and says so, survives a run cut off, and
loses the entries of tuples retention deleted. On SQLite and, in the PostgreSQL pass, on PostgreSQL."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from edge_app import household_index
from edge_app.household_index import HouseholdIndexer
from edge_app.models import HouseholdEntry, HouseholdIndexMark, Status, WindowAggregate
from edge_app.retention import Retention

T0 = 1_577_142_000_000
TUPLES = "/admin/edge_app/windowaggregate/"

pytestmark = pytest.mark.edge_db


def store(households, windows, first_window=0, **fields):
    WindowAggregate.objects.bulk_create(
        WindowAggregate(household=f"house-{h:03d}", window_start=T0 + w * 5000, window_end=T0 + w * 5000 + 5000,
                        day="2019-12-24", average_w=100.0 + h, readings=3, **fields)
        for w in range(first_window, first_window + windows) for h in range(households))


def entries():
    """{(household, window_start): the tuple's own (household, window_start)} of every entry, through the join."""
    return {(e.household, e.window_start): (e.aggregate.household, e.aggregate.window_start)
            for e in HouseholdEntry.objects.select_related("aggregate")}


def every_tuple():
    return {(t.household, t.window_start): (t.household, t.window_start) for t in WindowAggregate.objects.all()}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_it_finds_a_households_tuples_once_a_run_took_them_in_and_says_how_far_it_reaches(admin_client):
    store(households=5, windows=4)
    page = admin_client.get(f"{TUPLES}?household=house-002")
    assert page.context["cl"].result_list.count() == 0
    assert "no tuple indexed yet" in page.content.decode()
    clock = Clock()
    indexer = HouseholdIndexer(every_seconds=60, clock=clock)
    while indexer.handle_one_slice():
        pass
    found = admin_client.get(f"{TUPLES}?household=house-002")
    assert [t.window_start for t in found.context["cl"].result_list] == [T0 + w * 5000 for w in (3, 2, 1, 0)]
    newest = WindowAggregate.objects.order_by("-id").first().id
    assert f"up to tuple {newest:,}" in found.content.decode()

    store(households=5, windows=2, first_window=4)  # stored after the run: not in the index before the next
    assert not indexer.handle_one_slice()
    assert admin_client.get(f"{TUPLES}?household=house-002").context["cl"].result_list.count() == 4
    clock.now += 60
    while indexer.handle_one_slice():
        pass
    assert admin_client.get(f"{TUPLES}?household=house-002").context["cl"].result_list.count() == 6
    assert entries() == every_tuple()
    searched = admin_client.get(f"{TUPLES}?q=house-00").context["cl"].result_list
    assert [(t.household, t.window_start) for t in searched[:3]] == [
        ("house-004", T0 + 5 * 5000), ("house-004", T0 + 4 * 5000), ("house-004", T0 + 3 * 5000)]


def test_it_merges_a_run_in_short_slices_and_begins_it_again_on_a_new_connection(db, monkeypatch):
    monkeypatch.setattr(household_index, "COPY_ROWS", 7)
    monkeypatch.setattr(household_index, "MERGE_ROWS", 5)
    store(households=6, windows=8)
    indexer = HouseholdIndexer()
    for _ in range(10):  # the begin, 7 copy slices and 2 merge slices, then the connection is lost
        assert indexer.handle_one_slice()
    assert 0 < HouseholdEntry.objects.count() < 48 and HouseholdIndexMark.get().indexed_to == 0
    indexer.run.dbapi = None  # as if made anew (a test's database lives in its connection, or its transaction)
    slices = 0
    while indexer.handle_one_slice():
        slices += 1
    assert entries() == every_tuple()
    assert HouseholdIndexMark.get().indexed_to == WindowAggregate.objects.order_by("-id").first().id
    assert slices >= 48 // 7 + 48 // 5  # begun again from the mark: every slice again, none larger than its size


def test_it_sweeps_the_entries_of_tuples_retention_deleted_and_points_a_stored_again_window_at_its_new_tuple(
        db, monkeypatch):
    monkeypatch.setattr(household_index, "SWEEP_ROWS", 4)
    old = timezone.now() - timedelta(days=30)
    store(households=3, windows=5, status=Status.ACKED, acked_at=old)
    store(households=3, windows=5, first_window=5, status=Status.ACKED, acked_at=timezone.now())
    indexer = HouseholdIndexer()
    indexer.index_all()
    assert len(entries()) == 30
    retention = Retention(days=7, on_deleted=indexer.sweep_soon)
    while retention.handle_one_slice():
        pass
    assert WindowAggregate.objects.count() == 15 and indexer.sweeping
    while indexer.handle_one_slice():
        pass
    assert entries() == every_tuple() and HouseholdEntry.objects.count() == 15

    # A Kafka replay stores a window retention deleted: a tuple of its own, which its entry now points at.
    store(households=1, windows=1)
    indexer.index_all()
    replayed = WindowAggregate.objects.get(household="house-000", window_start=T0)
    assert HouseholdEntry.objects.get(household="house-000", window_start=T0).aggregate_id == replayed.id
    assert entries() == every_tuple()


class Control:
    """What the heartbeat loop asks its control: the sender is done (a finite run), and whether to stop."""

    stopping = False

    def stop_requested(self):
        return self.stopping

    def done(self, loop):
        return loop == "sender"


def heartbeat_upkeep():
    from edge_app.loops import HeartbeatStep

    step = HeartbeatStep.__new__(HeartbeatStep)  # its upkeep alone: no socket to a cloud
    step.index, step.retention, step.control = HouseholdIndexer(), Retention(days=7), Control()
    return step


def test_it_keeps_each_beat_of_the_heartbeat_loop_to_its_share_of_the_second(db, monkeypatch):
    monkeypatch.setattr(household_index, "COPY_ROWS", 10)
    monkeypatch.setattr(household_index, "MERGE_ROWS", 10)
    store(households=100, windows=60)
    step = heartbeat_upkeep()
    began = time.monotonic()
    step.handle_upkeep(until=began + 0.05)
    assert time.monotonic() - began < 0.5  # the share, and one slice begun within it
    assert HouseholdIndexMark.get().indexed_to == 0  # 6,000 tuples are more than a share's slices of 10
    while HouseholdIndexMark.get().indexed_to == 0:
        step.handle_upkeep(until=time.monotonic() + 0.05)
    assert entries() == every_tuple()


def test_it_ends_a_finite_run_only_once_every_tuple_it_stored_is_in_the_index(db):
    store(households=5, windows=4)
    step = heartbeat_upkeep()
    assert not step.finished(step.control)  # a run begun, for the upkeep to take them in
    step.handle_upkeep(until=time.monotonic() + 30)
    step.control.stopping = True  # no final beats: there is no cloud here
    assert step.finished(step.control)
    assert entries() == every_tuple()
