"""With --skip-bad-files, one file of a folder that can't be read whole does not keep the folder's good files
from being sent: it is named, counted and set aside. Without it the run stops before anything is sent and
says how to go on. Two files of one household stop the run either way."""

import os
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from simulation.sources import SKIPPED_SHOWN, DataError, read_folder
from tests.conftest import consume_readings, run_manage, write_gem_csv

BERLIN = ZoneInfo("Europe/Berlin")
HEADERS = "household\ndate,timestamp,energy,power,power1,power2,power3\n"
SET_ASIDE = "(file set aside: --skip-bad-files)"

# A file's name, what it holds (None: one good reading), and what names it, set aside or stopping the run.
BAD_FILES = {
    "no headers": ("b.csv", "2019-12-24 00:00:01,0,1,2,3,4,5\n", r"b\.csv:1: expected the two header lines"),
    "headers only": ("b.csv", HEADERS, r"b\.csv: no readings after the two header lines"),
    "not UTF-8 headers": ("b.csv", "\udcff", r"b\.csv:1: not UTF-8 text"),
    "a name that is no household id": ("b c.csv", None, r"b c\.csv: the file name does not make a usable household"),
    "a folder": ("b.csv", "folder", r"b\.csv: not a file but a folder"),
}


def _folder(tmp_path, bad):
    write_gem_csv(tmp_path / "a.csv", [("2019-12-24 00:00:01", 1000), ("2019-12-24 00:00:03", 2000)])
    write_gem_csv(tmp_path / "c.csv", [("2019-12-24 00:00:01", 3000)])
    name, content, message = BAD_FILES[bad]
    if content is None:
        write_gem_csv(tmp_path / name, [("2019-12-24 00:00:01", 5000)])
    elif content == "folder":
        (tmp_path / name).mkdir()
    else:
        (tmp_path / name).write_bytes(content.encode("utf-8", "surrogateescape"))
    return message


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


@pytest.mark.parametrize("skip_bad_lines", [False, True], ids=["lines strict", "lines skipped"])
@pytest.mark.parametrize("bad", BAD_FILES)
def test_it_sets_aside_a_file_it_cannot_read_and_reads_the_others(tmp_path, bad, skip_bad_lines, caplog):
    message = _folder(tmp_path, bad)
    households, skipped, set_aside = read_folder(tmp_path, BERLIN, skip_bad_lines, skip_bad_files=True)
    assert [(h.household, list(h.powers)) for h in households] == [("a", [1.0, 2.0]), ("c", [3.0])]
    assert (skipped, set_aside) == (0, 1)
    assert [w for w in _warnings(caplog) if re.match(message, w.rsplit("/", 1)[-1]) and w.endswith(SET_ASIDE)]


@pytest.mark.parametrize("bad", BAD_FILES)
def test_it_stops_at_a_bad_file_without_the_option_and_says_how_to_go_on(tmp_path, bad):
    message = _folder(tmp_path, bad)
    with pytest.raises(DataError, match=message + r".*\(nothing was sent; --skip-bad-files sets such a file aside "
                                                  r"and sends the others\)$"):
        read_folder(tmp_path, BERLIN, skip_bad_lines=True)


def test_it_sets_aside_a_file_with_a_bad_line_unless_bad_lines_are_skipped(tmp_path, caplog):
    path = write_gem_csv(tmp_path / "b.csv", [("2019-12-24 00:00:01", 100), ("2019-12-24 00:00:03", 200)])
    path.write_text(path.read_text() + "garbage\n")
    write_gem_csv(tmp_path / "c.csv", [("2019-12-24 00:00:01", 3000)])
    with pytest.raises(DataError, match=r"b\.csv:5: expected 7 fields, found 1 \(nothing was sent; --skip-bad-lines "
                                        r"counts and skips such lines, --skip-bad-files sets such a file aside"):
        read_folder(tmp_path, BERLIN)
    households, skipped, set_aside = read_folder(tmp_path, BERLIN, skip_bad_files=True)
    assert [h.household for h in households] == ["c"] and (skipped, set_aside) == (0, 1)
    assert _warnings(caplog)[-1].endswith(f"b.csv:5: expected 7 fields, found 1 {SET_ASIDE}")
    households, skipped, set_aside = read_folder(tmp_path, BERLIN, skip_bad_lines=True, skip_bad_files=True)
    assert [(h.household, list(h.powers)) for h in households] == [("b", [0.1, 0.2]), ("c", [3.0])]
    assert (skipped, set_aside) == (1, 0)


def test_it_names_the_one_file_it_cannot_reach(tmp_path, monkeypatch):
    write_gem_csv(tmp_path / "a.csv", [("2019-12-24 00:00:01", 1000)])
    write_gem_csv(tmp_path / "b.csv", [("2019-12-24 00:00:01", 2000)])
    is_file = type(tmp_path).is_file

    def stale(path):
        if path.name == "b.csv":
            raise OSError(116, "Stale file handle")
        return is_file(path)

    monkeypatch.setattr(type(tmp_path), "is_file", stale)
    with pytest.raises(DataError, match=r"b\.csv: can't be reached \(Stale file handle\) \(nothing was sent; "):
        read_folder(tmp_path, BERLIN)
    households, _, set_aside = read_folder(tmp_path, BERLIN, skip_bad_files=True)
    assert [h.household for h in households] == ["a"] and set_aside == 1


def test_it_stops_at_two_files_of_one_household_whatever_it_skips(tmp_path):
    (tmp_path / "h.CSV").write_text("not a household\n")  # set aside, it might still be the one meant
    write_gem_csv(tmp_path / "h.csv", [("2019-12-24 00:00:01", 1000)])
    for skip in (False, True):
        with pytest.raises(DataError, match=rf"h\.csv: household 'h' is {re.escape(str(tmp_path / 'h.CSV'))} too "
                                            r"\(nothing was sent: remove or rename one of the two files\)"):
            read_folder(tmp_path, BERLIN, skip_bad_lines=skip, skip_bad_files=skip)


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_it_stops_at_one_file_under_two_names_whatever_it_skips(tmp_path, link):
    """Read under both names, each reading would be sent twice, as two households."""
    write_gem_csv(tmp_path / "a.csv", [("2019-12-24 00:00:01", 1000)])
    (tmp_path / "b.csv").symlink_to(tmp_path / "a.csv") if link == "symbolic" else (tmp_path / "b.csv").hardlink_to(
        tmp_path / "a.csv")
    for skip in (False, True):
        with pytest.raises(DataError, match=rf"b\.csv is the same file as {re.escape(str(tmp_path / 'a.csv'))} \(a "
                                            r"link\): its readings would be sent twice"):
            read_folder(tmp_path, BERLIN, skip_bad_lines=skip, skip_bad_files=skip)


def test_it_reads_two_files_on_a_file_system_that_numbers_no_inode(tmp_path, monkeypatch):
    """Some network and FUSE file systems give every file the inode 0, which names none: not one file twice."""
    for name in ("a", "b"):
        write_gem_csv(tmp_path / f"{name}.csv", [("2019-12-24 00:00:01", 1000)])
    stat = Path.stat
    monkeypatch.setattr(Path, "stat", lambda path, **kw: os.stat_result((*stat(path, **kw)[:1], 0,
                                                                         *stat(path, **kw)[2:])))
    assert [h.household for h in read_folder(tmp_path, BERLIN)[0]] == ["a", "b"]



def test_it_names_the_first_files_set_aside_and_counts_the_rest(tmp_path, caplog):
    write_gem_csv(tmp_path / "good.csv", [("2019-12-24 00:00:01", 1000)])
    for number in range(SKIPPED_SHOWN + 5):
        (tmp_path / f"bad{number:03d}.csv").write_text("not a household\n")
    households, _, set_aside = read_folder(tmp_path, BERLIN, skip_bad_files=True)
    assert [h.household for h in households] == ["good"] and set_aside == SKIPPED_SHOWN + 5
    warnings = _warnings(caplog)
    assert len(warnings) == SKIPPED_SHOWN + 1 and all(w.endswith(SET_ASIDE) for w in warnings[:-1])
    assert warnings[-1] == f"--data {tmp_path}: {SKIPPED_SHOWN + 5} files set aside in all, the first " \
                           f"{SKIPPED_SHOWN} named above"


def test_it_stops_when_no_file_of_the_folder_gives_a_household(tmp_path):
    (tmp_path / "x.csv").write_text("not a household\n")
    (tmp_path / "y.csv").write_text("")
    with pytest.raises(DataError, match=r"none of its 2 \.csv files gives a household, all set aside \(the first: "
                                        r".*x\.csv:1: expected the two header lines"):
        read_folder(tmp_path, BERLIN, skip_bad_files=True)


def test_it_sends_the_good_files_and_counts_the_one_set_aside(tmp_path, kafka_bootstrap, topic):
    _folder(tmp_path, "no headers")
    result = run_manage("runsimulation", "--no-progress", "--data", str(tmp_path), "--topic", topic,
                        "--bootstrap", kafka_bootstrap, "--skip-bad-files", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "sent=3 failed=0" in result.stdout and "skipped_files=1" in result.stdout
    assert "b.csv:1: expected the two header lines" in result.stderr and SET_ASIDE in result.stderr
    readings = consume_readings(kafka_bootstrap, topic, 3)
    assert sorted((household, power) for household, _, power, _ in readings) == [("a", 1.0), ("a", 2.0), ("c", 3.0)]
