"""One file of a folder that gives no household does not keep the folder's good files from being sent
when --skip-bad-lines asks to go on past what is bad: it is named, counted and set aside. Without the
option it stops the run before anything is sent, and says how to go on."""

import re
from zoneinfo import ZoneInfo

import pytest

from simulation.sources import DataError, read_folder
from tests.conftest import consume_readings, run_manage, write_gem_csv

BERLIN = ZoneInfo("Europe/Berlin")

# A file's name, what it holds, what the warning that sets it aside names, and what the error of a run without
# the option says (the same, and how to set the file aside, unless its first bad line stops the run).
SET_ASIDE = r".*--skip-bad-lines sets such a file aside"
BAD_FILES = {
    "no headers": ("b.csv", "2019-12-24 00:00:01,0,1,2,3,4,5\n", r"b\.csv:1: expected the two header lines", None),
    "headers only": ("b.csv", "household\ndate,timestamp,energy,power,power1,power2,power3\n",
                     r"b\.csv: no readings after the two header lines", None),
    "every line bad": ("b.csv", "household\ndate,timestamp,energy,power,power1,power2,power3\ngarbage\n",
                       r"b\.csv: no readings after the two header lines \(1 bad lines skipped\)",
                       r"b\.csv:3: expected 7 fields, found 1 .*--skip-bad-lines counts and skips such lines"),
    "not UTF-8 headers": ("b.csv", "\udcff", r"b\.csv:1: not UTF-8 text", None),
    "an id that is no household's": ("b c.csv", None, r"b c\.csv: the file name does not make a usable household id",
                                     None),
}


def _folder(tmp_path, bad):
    write_gem_csv(tmp_path / "a.csv", [("2019-12-24 00:00:01", 1000), ("2019-12-24 00:00:03", 2000)])
    write_gem_csv(tmp_path / "c.csv", [("2019-12-24 00:00:01", 3000)])
    name, content, message, _ = BAD_FILES[bad]
    if content is None:
        write_gem_csv(tmp_path / name, [("2019-12-24 00:00:01", 5000)])
    else:
        (tmp_path / name).write_bytes(content.encode("utf-8", "surrogateescape"))
    return message


@pytest.mark.parametrize("bad", BAD_FILES)
def test_it_sets_aside_a_file_that_gives_no_household_and_reads_the_others(tmp_path, bad, caplog):
    message = _folder(tmp_path, bad)
    households, skipped, set_aside = read_folder(tmp_path, BERLIN, skip_bad_lines=True)
    assert [h.household for h in households] == ["a", "c"] and set_aside == 1
    assert [list(h.powers) for h in households] == [[1.0, 2.0], [3.0]]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [w for w in warnings if re.search(message, w)], warnings
    assert warnings[-1].endswith("(file set aside: --skip-bad-lines)")


@pytest.mark.parametrize("bad", BAD_FILES)
def test_it_stops_at_a_bad_file_without_the_option_and_says_how_to_go_on(tmp_path, bad):
    message = _folder(tmp_path, bad)
    with pytest.raises(DataError, match=BAD_FILES[bad][3] or message + SET_ASIDE):
        read_folder(tmp_path, BERLIN)


def test_it_sets_aside_what_is_no_file_and_a_household_read_already(tmp_path, caplog):
    write_gem_csv(tmp_path / "h.csv", [("2019-12-24 00:00:01", 1000)])
    write_gem_csv(tmp_path / "h.CSV", [("2019-12-24 00:00:01", 9000)])  # sorted first: the one read
    write_gem_csv(tmp_path / "k.csv", [("2019-12-24 00:00:01", 2000)])
    (tmp_path / "gone.csv").symlink_to(tmp_path / "nowhere.csv")
    (tmp_path / "folder.csv").mkdir()
    households, _, set_aside = read_folder(tmp_path, BERLIN, skip_bad_lines=True)
    assert [(h.household, list(h.powers)) for h in households] == [("h", [9.0]), ("k", [2.0])] and set_aside == 3
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "gone.csv: not a file" in warnings and "folder.csv: not a file" in warnings
    assert f"h.csv: household 'h' is {tmp_path / 'h.CSV'} too" in warnings


def test_it_stops_when_no_file_of_the_folder_gives_a_household(tmp_path):
    (tmp_path / "x.csv").write_text("not a household\n")
    (tmp_path / "y.csv").write_text("")
    with pytest.raises(DataError, match=r"none of its 2 \.csv files gives a household, all set aside \(the first: "
                                        r".*x\.csv:1: expected the two header lines"):
        read_folder(tmp_path, BERLIN, skip_bad_lines=True)


def test_it_sends_the_good_files_and_counts_the_one_set_aside(tmp_path, kafka_bootstrap, topic):
    _folder(tmp_path, "no headers")
    result = run_manage("runsimulation", "--no-progress", "--data", str(tmp_path), "--topic", topic,
                        "--bootstrap", kafka_bootstrap, "--skip-bad-lines", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "sent=" in result.stdout and "failed=0" in result.stdout and "skipped_files=1" in result.stdout
    assert "b.csv:1: expected the two header lines" in result.stderr and "file set aside" in result.stderr
    readings = consume_readings(kafka_bootstrap, topic, 3)
    assert sorted((household, power) for household, _, power, _ in readings) == [("a", 1.0), ("a", 2.0), ("c", 3.0)]
