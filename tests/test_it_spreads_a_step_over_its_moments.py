"""`runsimulation --spread`: at real time each household reads at a moment of its own in every step, and its
reading goes out at that moment, so the edge gets a steady stream instead of one burst a step."""

import threading
import time
from collections import Counter, defaultdict

import pytest

from simulation.scenario import Options, prepare
from simulation.sources import DataError
from simulation.spread import MAX_PENDING_STEPS, SLICE_MS, SpreadSender, slices
from tests.conftest import consume_readings, run_manage

STEP_MS = 2000


def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_it_sends_each_slice_at_its_moment_and_the_rest_at_once_on_a_stop():
    sent, stop = [], []
    sender = SpreadSender(lambda: None, lambda: stop[0] if stop else None)
    start = time.monotonic()

    def send(name):
        sent.append((name, time.monotonic() - start))

    sender.hand([(start + 0.2, [(send, ("a",))]), (start + 0.4, [(send, ("b",)), (send, ("c",))]),
                 (start + 30, [(send, ("later",))])])
    assert wait_until(lambda: len(sent) == 3)
    assert [name for name, _ in sent] == ["a", "b", "c"]
    assert 0.2 <= sent[0][1] < 3 and 0.4 <= sent[1][1] < 3, sent  # at its moment, never before (a busy machine)
    stopped_at = time.monotonic() - start
    stop.append("SIGTERM")  # a step handed over goes out whole: the rest at once
    sender.close()
    assert [name for name, _ in sent] == ["a", "b", "c", "later"] and sent[-1][1] - stopped_at < 5, sent


def _held_up_sender(stop):
    """A sender whose send waits for the Event it returns (Kafka away), with MAX_PENDING_STEPS steps queued
    behind it, and the run's next hand-over started in a thread: (sender, kafka_back, sent, next_step)."""
    kafka_back, sent = threading.Event(), []
    sender = SpreadSender(lambda: None, lambda: stop[0] if stop else None)
    sender.hand([(time.monotonic(), [(kafka_back.wait, (30,))])])  # taken at once, and its send waits
    for step in range(MAX_PENDING_STEPS):
        sender.hand([(time.monotonic(), [(sent.append, (step,))])])
    next_step = threading.Thread(target=sender.hand, args=([(time.monotonic(), [(sent.append, ("next",))])],),
                                 daemon=True)
    next_step.start()
    return sender, kafka_back, sent, next_step


@pytest.mark.parametrize("freed_by", ["kafka", "stop"])
def test_it_holds_up_the_run_while_its_sender_is_held_up(freed_by):
    """Kafka away: the producer's send waits, and so does the run's next step, instead of steps piling up; until
    Kafka is back, or a stop is asked for."""
    stop = []
    sender, kafka_back, sent, next_step = _held_up_sender(stop)
    try:
        time.sleep(0.5)
        assert next_step.is_alive() and not sent, "a step was handed over while the sender was held up"
        if freed_by == "kafka":
            kafka_back.set()
        else:
            stop.append("SIGTERM")
        next_step.join(5)
        assert not next_step.is_alive()
    finally:
        kafka_back.set()
        sender.close()
    assert sent == [*range(MAX_PENDING_STEPS), "next"]


def test_it_waits_for_the_last_moment_when_the_run_ends_and_raises_what_a_send_met():
    sent = []
    sender = SpreadSender(lambda: None)
    due = time.monotonic() + 0.3
    sender.hand([(due, [(sent.append, ("last",))])])
    sender.close()
    assert sent == ["last"] and time.monotonic() >= due

    def refuse(_):
        raise OSError("the producer is gone")

    failing = SpreadSender(lambda: None)
    failing.hand([(time.monotonic(), [(refuse, ("x",))]), (time.monotonic(), [(sent.append, ("after",))])])
    assert wait_until(lambda: failing.error is not None)
    with pytest.raises(RuntimeError, match="sender stopped"):  # the run's next step fails with it
        failing.hand([(time.monotonic(), [(sent.append, ("next step",))])])
    with pytest.raises(OSError, match="the producer is gone"):
        failing.close(hurry=True)
    assert sent == ["last"]  # a sender that failed sends nothing more
    assert not any(t.name == "fog-spread-sender" and t.is_alive() for t in threading.enumerate())


def test_it_refuses_to_spread_a_run_that_is_not_paced():
    with pytest.raises(DataError, match="--spread on .* takes a --speed"):
        prepare(Options(spread=True, speed=None, until=10))


@pytest.mark.serial  # wall-clock bounds: each reading within 250 ms after the moment it carries
def test_it_stamps_each_household_with_its_own_moment_and_sends_it_then(kafka_bootstrap, topic):
    households, steps = 1000, 2
    moments = slices(STEP_MS)
    result = run_manage("runsimulation", "--households", str(households), "--until", str(2 * steps), "--step", "2",
                        "--speed", "1", "--start", "now", "--spread", "on", "--topic", topic,
                        "--bootstrap", kafka_bootstrap)
    assert result.returncode == 0, result.stderr
    readings = consume_readings(kafka_bootstrap, topic, households * steps)
    assert len(readings) == households * steps

    for household, ts, _, _ in readings:  # household n reads at moment n % moments of every step
        assert ts % STEP_MS == int(household.rsplit("-", 1)[1]) % moments * SLICE_MS, (household, ts)
    per_moment = Counter(ts % STEP_MS for _, ts, _, _ in readings)
    assert len(per_moment) == moments and max(per_moment.values()) - min(per_moment.values()) <= steps
    delays = [record.timestamp - ts for _, ts, _, record in readings]  # produce time - event time
    assert min(delays) >= 0, "a reading went out before the moment it carries"
    first_step = min(ts for _, ts, _, _ in readings)
    later = [d for (_, ts, _, _), d in zip(readings, delays, strict=True) if ts >= first_step + STEP_MS]
    assert max(later) < 250, f"readings went out up to {max(later)} ms after the moment they carry"
    sent_at = defaultdict(list)  # a step's records go out over the whole step, not in one burst
    for _, ts, _, record in readings:
        sent_at[ts - ts % STEP_MS].append(record.timestamp)
    assert all(max(times) - min(times) >= STEP_MS - 2 * SLICE_MS - 250 for times in sent_at.values())
