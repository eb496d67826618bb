"""Each heartbeat asks the cloud's store about a few acknowledged tuples (edge_app/store_probes.py), among those
acknowledged since the store was recorded. Those grow by the cloud's whole rate, for as long as the edge runs
(20,000 a second at 100,000 households), and a beat is due every second: picking its probes must cost the same
after an hour as after a minute.

SQLite only: the cost came from its planner, which given two lower bounds on acked_at walked the index from the
first and filtered by the second. SQLite's virtual-machine steps count the work a query does, whatever the
machine's speed."""

import random
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import connection
from django.utils import timezone

from edge_app import store_probes
from edge_app.models import Status, WindowAggregate
from edge_app.store_probes import StoreProbes

pytestmark = pytest.mark.django_db

STEPS_A_CALL = 100  # the progress handler runs every this many virtual-machine steps
SPREAD = 100  # store_probes.SPREAD here: the same reads, in a tenth of the tuples


def acknowledge(count, first):
    """`count` ACKED tuples, acknowledged a millisecond apart from `first` on, in id order, each its household's
    next window."""
    before = WindowAggregate.objects.count()
    WindowAggregate.objects.bulk_create([
        WindowAggregate(household=f"house-{i % 500}", window_start=i * 5000, window_end=i * 5000 + 5000,
                        day="2019-12-24", average_w=100.0, readings=3, status=Status.ACKED,
                        acked_at=first + timedelta(milliseconds=i - before), sent_at=first)
        for i in range(before, before + count)], batch_size=2000)
    return first + timedelta(milliseconds=count)


def steps_to_pick(since):
    """SQLite's virtual-machine steps (in STEPS_A_CALL) for one beat's probes, and the probes."""
    calls = [0]

    def count():
        calls[0] += 1
        return 0  # go on

    connection.ensure_connection()
    connection.connection.set_progress_handler(count, STEPS_A_CALL)
    try:
        probes = StoreProbes().pick(since)
    finally:
        connection.connection.set_progress_handler(None, STEPS_A_CALL)
    return calls[0], probes


def random_probe(probes, since):
    """The probe picked at random (the other is the newest), and the ids it may be: the SPREAD acknowledged from
    half way between `since` and the newest acknowledgement on."""
    newest = WindowAggregate.objects.order_by("-acked_at").first()
    halfway = since + (newest.acked_at - since) * 0.5
    allowed = WindowAggregate.objects.filter(acked_at__gte=halfway).order_by("acked_at").values_list("id", flat=True)
    [probe] = [probe for probe in probes if probe[0] != newest.id]
    return probe[0], set(allowed[:SPREAD])


def test_it_picks_a_beats_probes_at_a_cost_that_does_not_grow_with_the_tuples_acknowledged(monkeypatch):
    assert connection.vendor == "sqlite"
    # The random probe's time: half way. (random.choice, among the SPREAD after it, stays random.)
    monkeypatch.setattr(store_probes, "random", SimpleNamespace(random=lambda: 0.5, choice=random.choice))
    monkeypatch.setattr(store_probes, "SPREAD", SPREAD)
    since = timezone.now() - timedelta(hours=1)
    # Half of them after the random time: the probe's range reads SPREAD of them, as it does at any size.
    after = acknowledge(4 * SPREAD, since)
    few, probes = steps_to_pick(since)
    picked, allowed = random_probe(probes, since)  # and the newest
    assert picked in allowed
    acknowledge(36 * SPREAD, after)  # ten times as many acknowledged since the store was recorded
    many, probes = steps_to_pick(since)
    picked, allowed = random_probe(probes, since)
    assert picked in allowed
    assert many < 1.5 * few, f"{many} against {few} (x{STEPS_A_CALL} steps) for ten times the tuples"
