"""Long outages: the backlog stops at the edge's budget, the readings wait in Kafka, nothing is lost or doubled."""

import pytest

from cloud_app.keys import Keys
from edge_app.budget import BYTES_PER_TUPLE, MIN_DERIVED_TUPLES, BudgetGate, derived_budget, low_water
from edge_app.ingest import Ingestor
from edge_app.link import Heartbeat
from edge_app.models import EdgeStatus, Status, WindowAggregate
from edge_app.sender import Sender
from tests.conftest import EDGE_ID, EDGE_SECRET, CloudThread, cloud_stats, free_port, produce, reading, run_manage, wait_for

T0 = 1_577_142_000_000  # a multiple of 5 s
HOUSEHOLDS = 20
SECONDS = 300  # one reading a second: 60 windows of 5 readings per household
WINDOWS = HOUSEHOLDS * SECONDS // 5
BUDGET = 200


# --- the decisions, without I/O ----------------------------------------------


def test_it_pauses_at_the_budget_and_resumes_only_below_the_low_water_mark():
    gate = BudgetGate(100, 80)
    assert gate.allowed(backlog=50, open_windows=10) == 40  # room for what one poll may close
    assert gate.allowed(backlog=90, open_windows=10) == 0 and gate.paused
    assert gate.allowed(backlog=85, open_windows=0) == 0 and gate.paused  # the sender drains, not yet enough
    assert gate.allowed(backlog=79, open_windows=10) == 11 and not gate.paused


def test_it_keeps_reading_one_at_a_time_when_open_windows_alone_fill_the_budget():
    gate = BudgetGate(100, 80)
    assert gate.allowed(backlog=10, open_windows=300) == 1 and not gate.paused


def test_it_derives_a_default_budget_from_free_disk_space():
    assert derived_budget(0) == MIN_DERIVED_TUPLES
    assert derived_budget(100 * 2**30) > derived_budget(10 * 2**30) > MIN_DERIVED_TUPLES
    assert low_water(1000, 80) == 800
    with pytest.raises(ValueError):
        BudgetGate(100, 100)


def test_it_counts_the_backlogs_own_bytes_as_free_when_it_derives_the_budget_again():
    """Worked out again as the backlog fills the disk, the budget is the one it began with, not ever smaller."""
    free = 10 * 2**30
    assert derived_budget(free - 1_000_000 * BYTES_PER_TUPLE, backlog=1_000_000) == derived_budget(free)


def test_it_warns_of_a_budget_the_disk_cannot_hold():
    result = run_manage("check", env={"FOG_EDGE_BUDGET_TUPLES": str(10**15)})
    assert "fog.W003" in result.stderr and "FOG_EDGE_BUDGET_TUPLES=" in result.stderr


# --- the real ingest, Kafka, database and cloud --------------------------------


@pytest.fixture
def readings(kafka_bootstrap, topic):
    produce(kafka_bootstrap, topic, [reading(f"house-{h}", T0 + s * 1000, 100.0 + h + s % 7)
                                     for s in range(SECONDS) for h in range(HOUSEHOLDS)])
    return topic


@pytest.fixture
def edge(kafka_bootstrap, readings):
    hb, data = free_port(), free_port()
    ingest = Ingestor(edge_id=EDGE_ID, topic=readings, bootstrap=kafka_bootstrap, window_seconds=5,
                      grace_seconds=2, idle_seconds=600)
    ingest.connect()
    ingest.set_budget(BUDGET, low_water(BUDGET, 80))
    beat = Heartbeat(edge_id=EDGE_ID, secret=EDGE_SECRET, address=f"tcp://127.0.0.1:{hb}", timeout_ms=300)
    # A reply that a busy machine held up past the ack timeout sent its batch again (the cloud's dedup took it, but
    # the test asserts the pause made no resend): no reply takes this long unless it is lost.
    sender = Sender(edge_id=EDGE_ID, secret=EDGE_SECRET, address=f"tcp://127.0.0.1:{data}", batch=50,
                    in_flight=2, ack_timeout_ms=20_000)
    yield ingest, beat, sender, (hb, data)
    ingest.close()
    beat.close()
    sender.close()


def backlog():
    return WindowAggregate.objects.backlog().count()


@pytest.mark.edge_db
@pytest.mark.django_db(transaction=True)
def test_it_stops_reading_kafka_at_the_budget_and_delivers_every_window_once_when_the_cloud_returns(
        kafka_client, edge, redis_url, cloud_prefix, redis_client):
    ingest, beat, sender, ports = edge
    beat.handle_one_beat()
    beat.handle_one_beat()  # two missed beats: the link is down, the sender holds everything
    assert not EdgeStatus.objects.get(edge_id=EDGE_ID).connected

    peak = 0

    def poll_until_paused():
        nonlocal peak
        ingest.handle_one_poll()
        peak = max(peak, backlog())
        return ingest.gate.paused

    assert wait_for(poll_until_paused, timeout=120, interval=0)
    status = EdgeStatus.objects.get(edge_id=EDGE_ID)
    assert status.paused and status.budget == BUDGET
    stored = WindowAggregate.objects.count()
    assert low_water(BUDGET, 80) <= stored <= BUDGET
    for _ in range(15):  # paused: the database stops growing, the readings stay in Kafka
        assert not ingest.handle_one_poll()
    assert WindowAggregate.objects.count() == stored
    assert not ingest.at_end(ingest.end_offsets())

    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}, ports=ports).start()
    try:
        assert wait_for(beat.handle_one_beat, timeout=10, interval=0.1)
        # The cloud heard that this edge waits for its budget (the dashboard's badge says so).
        assert redis_client.hget(Keys(cloud_prefix).edge(EDGE_ID), "paused") == b"1"
        end = ingest.end_offsets()
        finished = False

        def step():
            nonlocal peak, finished
            sender._link_checked = -1e9
            sender.handle_one_round()
            if ingest.at_end(end):
                ingest.finish()  # the end of the stream closes the last open windows
                finished = True
            else:
                ingest.handle_one_poll()
            peak = max(peak, backlog())
            return finished and not WindowAggregate.objects.backlog().exists()

        assert wait_for(step, timeout=240, interval=0)
        assert EdgeStatus.objects.get(edge_id=EDGE_ID).paused is False
        beat.handle_one_beat()
        assert redis_client.hget(Keys(cloud_prefix).edge(EDGE_ID), "paused") == b"0"
    finally:
        cloud.stop()

    assert peak <= BUDGET
    assert WindowAggregate.objects.filter(status=Status.ACKED).count() == WINDOWS
    assert set(WindowAggregate.objects.values_list("readings", flat=True)) == {5}  # no window split by the pause
    assert redis_client.hlen(Keys(cloud_prefix).tuples(EDGE_ID)) == WINDOWS
    stats = cloud_stats(redis_client, cloud_prefix)
    assert stats["tuples"] == WINDOWS and "dedup_hits" not in stats
    counters = EdgeStatus.objects.get(edge_id=EDGE_ID)
    assert (counters.readings, counters.late, counters.lost_to_retention) == (HOUSEHOLDS * SECONDS, 0, 0)


@pytest.mark.django_db(transaction=True)
def test_it_keeps_to_a_budget_worked_out_again_while_it_waits(edge):
    """Worked out once as the ingest started, a budget taken on a full disk (the minimum, during a disk-full
    outage) stayed after the space came back: the ingest keeps to the one worked out again, paused or not."""
    ingest, beat, _, _ = edge
    beat.handle_one_beat()
    beat.handle_one_beat()  # the link is down: nothing leaves the backlog
    assert wait_for(lambda: (ingest.handle_one_poll(), ingest.gate.paused)[1], timeout=120, interval=0)
    paused_at = backlog()
    ingest.resize_budget(2 * BUDGET, low_water(2 * BUDGET, 80))
    assert EdgeStatus.objects.get(edge_id=EDGE_ID).budget == 2 * BUDGET
    assert wait_for(lambda: (ingest.handle_one_poll(), backlog() > paused_at and ingest.gate.paused)[1],
                    timeout=120, interval=0)
    assert BUDGET < backlog() <= 2 * BUDGET
