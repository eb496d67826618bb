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
from tests.conftest import ROOT, consume_all, free_port, run_manage, write_gem_csv


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
])
def test_it_checks_its_options_before_sending(option, message):
    with pytest.raises(DataError, match=re.escape(message)):
        prepare(Options(**{"until": 10, **option}))


def test_it_takes_a_start_from_2000_to_a_day_ahead():
    assert prepare(Options(until=10, start="2000-01-01 00:00:00", tz="UTC"))[1] == 946_684_800_000
    ahead = datetime.now(UTC) + timedelta(hours=23)
    assert prepare(Options(until=MAX_UNTIL_S, start=f"{ahead:%Y-%m-%d %H:%M:%S}", tz="UTC"))[2] == MAX_UNTIL_S


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
