"""`runsimulation`: synthetic households are deterministic, and a run sends exactly its source rows."""

import json
import statistics
import time
from collections import Counter, defaultdict
from zoneinfo import ZoneInfo

import pytest

from simulation.sources import read_folder
from simulation.synthetic import SyntheticHousehold
from fogwire.limits import READINGS_FIELD
from tests.conftest import consume_all, consume_readings, make_topic, run_manage, write_gem_csv

T0 = 1_577_142_000_000


def test_it_gives_the_same_values_for_the_same_seed_and_others_for_another():
    def series(seed):
        return [SyntheticHousehold(seed, i).power(T0 + s * 2000, (s * 2) // 60) for i in range(5) for s in range(300)]

    assert series(7) == series(7)
    assert series(7) != series(8)
    assert 50 < sum(series(7)) / 1500 < 1500  # household-sized watts


def test_it_makes_households_differ_and_follow_the_day():
    households = [SyntheticHousehold(1, i) for i in range(50)]
    assert len({round(h.scale) for h in households}) > 40
    night = sum(h.power(T0 + i, 3 * 60) for h in households for i in range(0, 600_000, 2000))
    evening = sum(h.power(T0 + i, 19 * 60) for h in households for i in range(0, 600_000, 2000))
    assert evening > 2 * night


def test_it_sends_exactly_the_source_rows_keyed_by_household(kafka_bootstrap, topic, tmp_path):
    expected = {}
    for h in range(3):
        rows = [(f"2019-12-24 00:{s * 2 // 60:02d}:{s * 2 % 60:02d}", 100_000 + h * 1000 + s) for s in range(60)]
        write_gem_csv(tmp_path / f"site-{h}.house.csv", rows)  # ids may hold dots: three households, not one
    for household in read_folder(tmp_path, ZoneInfo("Europe/Berlin"))[0]:
        expected[household.household] = list(zip(household.timestamps, household.powers))

    result = run_manage("runsimulation", "--data", str(tmp_path), "--until", "120", "--topic", topic,
                        "--bootstrap", kafka_bootstrap, "--readings-per-message", "1")
    assert result.returncode == 0, result.stderr
    assert "sent=180 failed=0" in result.stdout

    received = defaultdict(list)
    for message in consume_all(kafka_bootstrap, topic, 180):
        value = json.loads(message.value)
        assert message.key.decode() == value["household"]
        received[value["household"]].append((value["ts"], value["power_w"]))
    assert {k: sorted(v) for k, v in received.items()} == expected
    assert expected["site-0.house"][0] == (1_577_142_000_000, 100.0)  # 00:00:00 Berlin, 100,000 mW


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_it_sends_the_same_rows_in_batches_a_household_in_the_partition_its_key_chooses(kafka_bootstrap, topic,
                                                                                         tmp_path, client):
    for h in range(5):
        write_gem_csv(tmp_path / f"site-{h}.csv", [(f"2019-12-24 00:00:{s * 2:02d}", 1000 * h + s) for s in range(30)])
    expected = {household.household: list(zip(household.timestamps, household.powers))
                for household in read_folder(tmp_path, ZoneInfo("Europe/Berlin"))[0]}

    def run(name, per_message):
        make_topic(kafka_bootstrap, name, partitions=4)
        result = run_manage("runsimulation", "--data", str(tmp_path), "--until", "60", "--topic", name,
                            "--bootstrap", kafka_bootstrap, "--client", client, "--readings-per-message", per_message)
        assert result.returncode == 0, result.stderr
        assert "sent=150 failed=0" in result.stdout
        readings = consume_readings(kafka_bootstrap, name, 150)
        received, partitions = defaultdict(list), defaultdict(set)
        for household, ts, power, record in readings:
            received[household].append((ts, power))
            partitions[household].add(record.partition)
        assert {k: sorted(v) for k, v in received.items()} == expected
        return readings, partitions

    _, keyed = run(f"{topic}-keyed", "1")
    readings, batched = run(f"{topic}-batched", "2")
    assert batched == keyed and all(len(found) == 1 for found in batched.values())
    assert len({partition for [partition] in batched.values()}) > 1  # the five are spread, not all in one
    per_partition = Counter(partition for [partition] in batched.values())
    steps = 30  # 5 households a step, in batches of at most 2 a partition
    assert len({id(record) for *_, record in readings}) == steps * sum(-(-n // 2) for n in per_partition.values())


def test_it_sends_one_reading_per_household_per_step(kafka_bootstrap, topic):
    result = run_manage("runsimulation", "--households", "3", "--until", "120", "--topic", topic, "--seed", "4",
                        "--bootstrap", kafka_bootstrap, "--collect")
    assert result.returncode == 0, result.stderr
    assert "sent=180 failed=0" in result.stdout
    assert result.stdout.count("syn4-") == 3  # the collector's summary, a line per household
    readings = consume_readings(kafka_bootstrap, topic, 180)
    assert len(readings) == 180
    assert all(READINGS_FIELD in json.loads(record.value) for *_, record in readings)  # batches by default
    stamps = defaultdict(list)
    for household, ts, _, _ in readings:
        stamps[household].append(ts)
    assert all(sorted(v) == [T0 + s * 2000 for s in range(60)] for v in stamps.values())


def test_it_paces_a_speed_run_against_the_clock_and_reports_its_lag(kafka_bootstrap, topic):
    started = time.monotonic()
    result = run_manage("runsimulation", "--households", "5", "--until", "8", "--speed", "4", "--topic", topic,
                        "--bootstrap", kafka_bootstrap)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "sent=20 failed=0" in result.stdout and "max_lag_s=" in result.stdout
    assert elapsed >= 1.5  # the last step (6 s simulated) is due 1.5 s after the first at 4x


@pytest.mark.serial  # a wall-clock bound: within 500 ms of the moment it carries
def test_it_sends_a_real_time_reading_at_the_moment_it_carries(kafka_bootstrap, topic):
    """With --start now at real time, each step goes out when the wall clock reaches its event time, not
    start-up time and a step's rounding later: the edge's live windows wait for exactly that delay."""
    launched_ms = time.time() * 1000
    result = run_manage("runsimulation", "--households", "200", "--until", "8", "--step", "4", "--speed", "1",
                        "--start", "now", "--topic", topic, "--bootstrap", kafka_bootstrap)
    assert result.returncode == 0, result.stderr
    readings = consume_readings(kafka_bootstrap, topic, 400)
    assert len(readings) == 400
    assert min(ts for _, ts, _, _ in readings) >= launched_ms, "the first step carries a moment before the run began"
    delays = [record.timestamp - ts for _, ts, _, record in readings]  # produce time - event time
    assert min(delays) >= 0, "a reading went out before the moment it carries"
    assert max(delays) < 500, f"readings went out up to {max(delays)} ms after the moment they carry"


def step_delays(bootstrap, topic, readings):
    """{event time of a step: produce time - event time of each of its messages (ms)}, the first step left out
    (it has no build to learn its lead from)."""
    delays = defaultdict(dict)  # a step's readings all carry its moment: its ts
    for _, ts, _, record in consume_readings(bootstrap, topic, readings):
        delays[ts][record.partition, record.offset] = record.timestamp - ts
    return {ts: list(delays[ts].values()) for ts in sorted(delays)[1:]}


@pytest.mark.serial  # wall-clock delays, each against those of a run beside it
def test_it_builds_each_step_ahead_and_sends_it_at_the_moment_it_carries(kafka_bootstrap, topic):
    """Building a step's readings and passing them through mosaik takes long at many households: built when
    due, a step went out that long after the moment its readings carry, and the edge's live windows waited
    for it. Built ahead, it goes out at that moment, never before it."""
    households, steps = 20_000, 4
    runs = {}
    for build_ahead in ("on", "off"):
        name = f"{topic}-{build_ahead}"
        make_topic(kafka_bootstrap, name, 3)
        result = run_manage("runsimulation", "--households", str(households), "--until", str(2 * steps), "--step",
                            "2", "--speed", "1", "--start", "now", "--build-ahead", build_ahead, "--topic", name,
                            "--bootstrap", kafka_bootstrap)
        assert result.returncode == 0, result.stderr
        runs[build_ahead] = step_delays(kafka_bootstrap, name, households * steps)
    assert min(min(delays) for delays in runs["on"].values()) >= 0, "a step went out before the moment it carries"
    for delays in runs["on"].values():
        assert len(delays) >= 3, delays  # each step whole, a batch a partition at least
    median = {run: statistics.median(d for delays in runs[run].values() for d in delays) for run in runs}
    assert median["on"] * 2 < median["off"], median


@pytest.mark.serial  # a wall-clock bound: within 300 ms
def test_it_starts_a_real_time_run_at_the_next_step_when_setting_up_outlasted_its_boundary():
    """Many households take long to set up: if the step boundary --start now chose has passed, the run starts at
    the next one and stamps its readings with it, instead of sending its first steps late."""
    from simulation.scenario import RunStats

    anchor = int(time.time() * 1000) - 2500  # setting up took 2.5 s past the boundary
    stats = RunStats(until=10, anchor_ms=anchor, step_ms=2000, speed=1.0)
    stats.pace(0)
    sent_ms = time.time() * 1000
    assert stats.shift_ms == 4000  # the next whole step after now
    # 1 ms below: the simulation sleeps on the monotonic clock, this reads the wall clock (a CI run saw 4 µs)
    assert anchor + stats.shift_ms - 1 <= sent_ms < anchor + stats.shift_ms + 300
