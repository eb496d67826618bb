"""Each bad input to `runsimulation` gives one clear line and a non-zero exit, and sends nothing."""

import os
import subprocess
import sys
import time

import pytest

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


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Europe"])  # Europe: a folder of zones, not one
def test_it_names_an_unknown_timezone(zone):
    assert f"--tz '{zone}' is not a known time zone" in _run("--tz", zone)


@pytest.mark.parametrize("until", ["0", "-5", "0.5", "nan", "inf", "1e300"])
def test_it_refuses_a_duration_it_cannot_run(until):
    assert "--until takes simulated seconds from 1 to" in _run("--until", until)


def test_it_refuses_an_empty_data_folder_name_instead_of_running_synthetic_households(tmp_path):
    assert "--data is empty" in _run("--data", "")


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
