"""`manage.py reconcile` finds loss, duplicates and sum mismatches between the edge and the cloud."""

import json

import pytest
from django.core.management import CommandError, call_command

from cloud_app.keys import Keys, shard_of
from cloud_app.store import tuple_field
from edge_app.models import Status, WindowAggregate
from fogsite.reconcile import reconcile
from tests.conftest import EDGE_ID, store_through_cloud

T0 = 1_577_142_000_000

pytestmark = pytest.mark.edge_db  # reconcile reads the edge's database, on PostgreSQL too


@pytest.fixture
def delivered(db, cloud_settings, cloud, redis_client):
    """40 windows stored on the edge and delivered through the real cloud, ACKED with their codes."""
    WindowAggregate.objects.bulk_create([
        WindowAggregate(household=f"house-{i % 4}", window_start=T0 + i * 5000, window_end=T0 + i * 5000 + 5000,
                        day="2019-12-24", average_w=100.0 + i, readings=2) for i in range(40)])
    rows = list(WindowAggregate.objects.order_by("id").values_list(
        "id", "household", "window_start", "window_end", "average_w", "readings"))
    codes = store_through_cloud(cloud, rows)
    for (tid, *_), code in zip(rows, codes):
        WindowAggregate.objects.filter(id=tid).update(status=Status.ACKED, postal_code=code)
    return rows


def run(cloud_settings, *args):
    cloud_settings.FOG_EDGE_ID = EDGE_ID
    return call_command("reconcile", *args)


def test_it_passes_when_everything_acked_is_in_the_cloud(delivered, redis_client, cloud_prefix, cloud_settings, capsys):
    report = reconcile(EDGE_ID, redis_client, cloud_prefix)
    assert report.ok(strict=True)
    assert (report.totals.expected, report.totals.acked, report.cloud_tuples) == (40, 40, 40)
    run(cloud_settings)
    assert "per-state sums match" in capsys.readouterr().out


def test_it_fails_on_an_acked_tuple_the_cloud_lacks(delivered, redis_client, cloud_prefix, cloud_settings):
    redis_client.hdel(Keys(cloud_prefix).tuples(EDGE_ID), tuple_field(*delivered[3][1:4]))
    report = reconcile(EDGE_ID, redis_client, cloud_prefix)
    assert report.totals.missing_in_cloud == 1
    assert [r.household for r in report.households if r.missing_in_cloud] == [delivered[3][1]]
    with pytest.raises(CommandError, match="1 missing in cloud"):
        run(cloud_settings)


def test_it_fails_on_a_window_the_cloud_holds_twice(delivered, redis_client, cloud_prefix, cloud_settings):
    key = Keys(cloud_prefix).tuples(EDGE_ID)
    redis_client.hset(key, 999_999, redis_client.hget(key, tuple_field(*delivered[0][1:4])))  # as an older cloud kept it
    report = reconcile(EDGE_ID, redis_client, cloud_prefix)
    assert report.totals.duplicated == 1
    with pytest.raises(CommandError, match="1 duplicated"):
        run(cloud_settings)


def test_it_fails_when_the_running_sums_drift(delivered, redis_client, cloud_prefix, cloud_settings):
    sums = Keys(cloud_prefix).states(shard_of(EDGE_ID))  # the shard this edge's batches write
    state = next(k for k in redis_client.hkeys(sums) if k.endswith(b":sum")).decode()
    redis_client.hincrbyfloat(sums, state, 5.0)
    report = reconcile(EDGE_ID, redis_client, cloud_prefix)
    assert len(report.sum_mismatches) == 1 and report.sum_mismatches[0].startswith(state.split(":")[0])
    with pytest.raises(CommandError, match="1 sum mismatches"):
        run(cloud_settings)


def test_it_counts_pending_as_a_failure_only_when_strict(delivered, cloud_settings, capsys):
    WindowAggregate.objects.filter(id=delivered[0][0]).update(status=Status.PENDING)
    run(cloud_settings, "--json")
    assert json.loads(capsys.readouterr().out)["totals"]["pending"] == 1
    with pytest.raises(CommandError, match="1 pending"):
        run(cloud_settings, "--strict")


def test_it_fails_against_a_store_that_did_not_acknowledge_the_edges_tuples(delivered, redis_client, cloud_prefix,
                                                                            cloud_settings):
    """Another cloud store (another host's, the defaults) or one emptied since: not 'all missing', but why."""
    from edge_app.models import EdgeStatus

    EdgeStatus.objects.update_or_create(edge_id=EDGE_ID, defaults={"cloud_store": "0123456789abcdef"})
    redis_client.set(Keys(cloud_prefix).store_id(EDGE_ID), "fedcba9876543210")
    with pytest.raises(CommandError, match="the cloud store read is not the one that acknowledged edge .* tuples "
                                           r"\(the edge recorded store 0123456789abcdef, this one is fedcba9876543210\)"):
        run(cloud_settings)
    redis_client.set(Keys(cloud_prefix).store_id(EDGE_ID), "0123456789abcdef")
    run(cloud_settings)


def test_it_fails_against_an_edge_database_that_holds_nothing_of_the_edge(delivered, cloud_settings):
    """The cloud host's own, freshly migrated database, say: not 'nothing to check', but why."""
    WindowAggregate.objects.all().delete()
    with pytest.raises(CommandError, match=f"this edge database holds nothing of edge {EDGE_ID}, and the cloud store "
                                           "40 of its tuples"):
        run(cloud_settings, "--strict")


ROUNDS = 20  # batches of 8 the writer stores and acknowledges while reconcile runs again and again


@pytest.mark.django_db(transaction=True)
def test_it_finds_nothing_wrong_while_the_pipeline_delivers(cloud_settings, cloud, redis_client, cloud_prefix):
    """Read in the other order (the cloud, then the edge), a tuple stored and acknowledged in between was
    'missing in cloud'; and the running sums, read once beside tuples read at another moment, 'mismatched'."""
    import threading
    import time
    from functools import partial

    from django.db import connection

    from django.db import OperationalError, transaction

    done, failures = threading.Event(), []

    def retried(write):  # the test database is SQLite's shared-cache memory one: a read in progress locks its table
        while True:
            try:
                with transaction.atomic():
                    return write()
            except OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                time.sleep(0.001)

    def acknowledge(rows, codes):
        for (tid, *_), code in zip(rows, codes):
            WindowAggregate.objects.filter(id=tid).update(status=Status.ACKED, postal_code=code)

    def deliver_on():
        try:
            for n in range(ROUNDS):
                batch = [WindowAggregate(household=f"house-{i}", window_start=T0 + n * 5000,
                                         window_end=T0 + n * 5000 + 5000, day="2019-12-24", average_w=100.0 + i,
                                         readings=2) for i in range(8)]
                retried(partial(WindowAggregate.objects.bulk_create, batch))
                rows = retried(lambda: list(WindowAggregate.objects.filter(status=Status.PENDING).order_by("id")
                                            .values_list("id", "household", "window_start", "window_end", "average_w",
                                                         "readings")))
                codes = store_through_cloud(cloud, rows)
                retried(partial(acknowledge, rows, codes))
        except Exception as exc:  # noqa: BLE001 -- said by the assertion below
            failures.append(exc)
        finally:
            connection.close()
            done.set()

    writer = threading.Thread(target=deliver_on)
    writer.start()
    reports = []
    while not done.is_set():
        reports.append(retried(lambda: reconcile(EDGE_ID, redis_client, cloud_prefix)))
        done.wait(0.02)  # the writer's turn: a read in progress holds back its writes (SQLite's shared cache)
    writer.join()
    assert not failures and len(reports) >= 3
    assert [r.totals.missing_in_cloud for r in reports] == [0] * len(reports)
    assert [r.sum_mismatches for r in reports] == [[]] * len(reports)
    quiet = reconcile(EDGE_ID, redis_client, cloud_prefix)
    assert quiet.ok(strict=True) and not quiet.sums_unchecked and quiet.totals.acked == 8 * ROUNDS
