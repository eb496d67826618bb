"""Each bad input to `runsimulation` gives one clear line and a non-zero exit, and sends nothing."""

import math
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from simulation.scenario import MAX_UNTIL_S, Options, prepare
from simulation.sources import DataError
from tests.conftest import ROOT, consume_all, free_port, make_topic, run_manage, write_gem_csv


def _run(*args):
    result = run_manage("runsimulation", "--no-progress", *args, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    return result.stderr.strip()


def test_it_names_a_missing_data_directory(tmp_path):
    assert "no such directory" in _run("--data", str(tmp_path / "absent"))


def test_it_names_an_empty_data_directory(tmp_path):
    assert "no .csv files" in _run("--data", str(tmp_path))


def test_it_names_a_file_without_its_header_lines(tmp_path):
    (tmp_path / "h.csv").write_text("2019-12-24 00:00:01,0,1,2,3,4,5\n")
    assert "h.csv:1: expected the two header lines" in _run("--data", str(tmp_path))


def test_it_names_file_and_line_of_a_malformed_line_and_sends_nothing(tmp_path, kafka_bootstrap, topic):
    write_gem_csv(tmp_path / "good.csv", [("2019-12-24 00:00:01", 100)])
    path = write_gem_csv(tmp_path / "h.csv", [("2019-12-24 00:00:01", 100)])
    path.write_text(path.read_text() + "2019-12-24 00:00:03,0,1,oops,1,1,1\n")
    error = _run("--data", str(tmp_path), "--topic", topic)
    assert "h.csv:4: bad power 'oops'" in error and "--skip-bad-lines" in error  # and how to go on past it
    assert consume_all(kafka_bootstrap, topic, 1, timeout_ms=2000) == []  # nothing half-sent


def test_it_counts_and_skips_bad_lines_when_asked(tmp_path, kafka_bootstrap, topic):
    path = write_gem_csv(tmp_path / "h.csv", [("2019-12-24 00:00:01", 100), ("2019-12-24 00:00:03", 200)])
    path.write_text(path.read_text() + "garbage\n")
    result = run_manage("runsimulation", "--data", str(tmp_path), "--topic", topic, "--skip-bad-lines")
    assert result.returncode == 0, result.stderr
    assert "sent=2 failed=0" in result.stdout and "skipped_lines=1" in result.stdout


def test_it_names_an_unknown_timezone():
    assert "--tz 'Mars/Olympus' is not a known time zone" in _run("--tz", "Mars/Olympus")


def test_it_refuses_a_duration_it_cannot_run():
    assert "--until takes simulated seconds from 1 to" in _run("--until", "nan")


# The same checks, before a byte is sent, without a process each.
@pytest.mark.parametrize("option, message", [
    ({"tz": "Europe"}, "--tz 'Europe' is not a known time zone"),  # a folder of zones, not one
    *(({"until": until}, "--until takes simulated seconds from 1 to") for until in (0, -5, 0.5, math.inf, 1e300)),
    ({"data": ""}, "--data is empty"),  # an unset $DIR: not synthetic households instead
    # Readings an edge would refuse, and dates past what a date can hold (an OverflowError deep in a run before).
    *(({"start": start, "tz": "UTC"}, f"--start '{start}' is before 2000-01-01 00:00 UTC or more than 24 h from now")
      for start in ("9999-12-31 23:59:59", "1999-12-31 23:59:59", "2999-01-01 00:00:00")),
    ({"start": "2000-01-01 00:30:00", "tz": "Europe/Berlin"}, "is before 2000-01-01 00:00 UTC"),  # 23:30 UTC
    ({"start": "2020-03-29 02:30:00", "tz": "Europe/Berlin"}, "never happened in Europe/Berlin"),  # clocks forward
    *(({"speed": speed}, "--speed must be a positive number or 'max'") for speed in (0, -1, math.nan, math.inf)),
    ({"households": 10**8}, "--households takes 1 to 1,000,000"),  # held in memory: a MemoryError deep in a run
    ({"seed": 10**30}, "--seed takes 0 to"),  # the seed is in every household's id, which has a length limit
    # The last readings would go out days ahead of the clock, which an edge refuses: checked for the run's end too.
    ({"start": "now", "until": 259_200, "step": 3600}, "the run's last readings would go out 7"),
])
def test_it_checks_its_options_before_sending(option, message):
    with pytest.raises(DataError, match=re.escape(message)):
        prepare(Options(**{"until": 10, **option}))


def test_it_takes_a_start_from_2000_to_a_day_ahead():
    assert prepare(Options(until=10, start="2000-01-01 00:00:00", tz="UTC"))[1] == 946_684_800_000
    # An offset of its own counts, not --tz's: 2019-12-24 00:00 UTC, not Berlin's midnight.
    assert prepare(Options(until=10, start="2019-12-24T00:00:00+00:00", tz="Europe/Berlin"))[1] == 1_577_145_600_000
    ahead = datetime.now(UTC) + timedelta(hours=23)
    assert prepare(Options(until=MAX_UNTIL_S, start=f"{ahead:%Y-%m-%d %H:%M:%S}", tz="UTC", speed=1))[2] == MAX_UNTIL_S


def test_it_says_a_data_file_is_not_a_folder(tmp_path):
    path = write_gem_csv(tmp_path / "h.csv", [("2019-12-24 00:00:01", 100)])
    with pytest.raises(DataError, match=re.escape(f"--data {path}: a file, not a folder")):
        prepare(Options(until=10, data=str(path)))


def test_it_names_a_data_folder_it_cannot_list(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0)
    command = [sys.executable, str(ROOT / "manage.py"), "runsimulation", "--no-progress", "--data", str(folder)]
    if os.geteuid() == 0:  # root reads any folder: run without that right, the way a user runs
        command = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                   "--bounding-set=-dac_override,-dac_read_search", *command]
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    finally:
        folder.chmod(0o700)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"--data {folder}: can't be read (Permission denied)" in result.stderr


@pytest.mark.serial  # a wall-clock bound
def test_it_says_within_fifteen_seconds_that_kafka_is_unreachable():
    port = free_port()
    started = time.monotonic()
    message = _run("--bootstrap", f"127.0.0.1:{port}", "--until", "10")
    assert time.monotonic() - started < 15
    assert f"Kafka at 127.0.0.1:{port} is unreachable" in message


def test_it_refuses_households_with_data_instead_of_ignoring_it(tmp_path):
    write_gem_csv(tmp_path / "h.csv", [("2019-12-24 00:00:01", 100)])
    assert "argument --households: not allowed with argument --data" in _run("--data", str(tmp_path),
                                                                             "--households", "3")


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_it_counts_batches_a_topic_refuses_as_too_large_and_ends_with_its_summary(kafka_bootstrap, topic, client):
    """A topic whose messages may hold less than a batch: the run goes on, counts what Kafka did not confirm,
    and ends with its summary and one error, not a traceback (kafka-python's flush raised one)."""
    small = f"{topic}-small"
    make_topic(kafka_bootstrap, small, 1, max_message_bytes=2000)
    result = run_manage("runsimulation", "--bootstrap", kafka_bootstrap, "--topic", small, "--client", client,
                        "--households", "200", "--until", "20", "--speed", "max", "--no-progress", timeout=240)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    summary = re.search(r"sent=(\d+) failed=(\d+)", result.stdout + result.stderr)
    assert summary and int(summary[1]) + int(summary[2]) == 200 * 10, result.stdout + result.stderr[-2000:]
    assert int(summary[2]) > 0 and "readings were not confirmed by Kafka" in result.stderr
