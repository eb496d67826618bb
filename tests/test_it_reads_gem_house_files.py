"""The Gem House format, read from fixtures written in it: watts, local time, and clear errors."""

import os
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from simulation.sources import SKIPPED_SHOWN, DataError, read_csv, read_folder
from tests.conftest import GEM_HEADER, sample_data_dir, write_gem_csv
from tests.corpus import CSV_FILES, CSV_LINES

BERLIN = ZoneInfo("Europe/Berlin")


def test_it_converts_milliwatts_to_watts_and_local_time_to_epoch_ms(tmp_path):
    household, skipped = read_csv(write_gem_csv(tmp_path / "house-a.csv", [
        ("2019-12-24 00:00:01", 249050), ("2019-12-24 00:00:03", 248820)]), BERLIN)
    assert household.household == "house-a" and skipped == 0
    assert list(household.powers) == [249.05, 248.82]
    assert list(household.timestamps) == [1_577_142_001_000, 1_577_142_003_000]  # 23:00:01 UTC the day before


def test_it_follows_the_clock_back_through_the_repeated_hour(tmp_path):
    # 2019-10-27: at 03:00 CEST clocks go back to 02:00 CET; 02:xx happens twice.
    rows = [("2019-10-27 01:59:58", 1000), ("2019-10-27 02:30:00", 2000), ("2019-10-27 02:59:58", 3000),
            ("2019-10-27 02:00:00", 4000), ("2019-10-27 02:30:00", 5000), ("2019-10-27 03:00:00", 6000)]
    stamps = list(read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN)[0].timestamps)
    assert stamps == [1_572_134_398_000, 1_572_136_200_000, 1_572_137_998_000,
                      1_572_138_000_000, 1_572_139_800_000, 1_572_141_600_000]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))


def test_it_blames_a_repeated_line_in_the_repeated_hour_not_the_clock_going_back(tmp_path):
    rows = [("2019-10-27 02:10:00", 1000), ("2019-10-27 02:10:00", 2000), ("2019-10-27 02:10:02", 3000),
            ("2019-10-27 02:59:58", 4000), ("2019-10-27 02:00:00", 5000)]
    with pytest.raises(DataError, match=r"h\.csv:4: time 2019-10-27 02:10:00 does not come after"):
        read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN)
    household, skipped = read_csv(tmp_path / "h.csv", BERLIN, skip_bad_lines=True)
    # The rest of the first pass stays in it (CEST, UTC+2), and the second pass is read as one (CET, UTC+1).
    assert skipped == 1 and list(household.timestamps) == [
        1_572_135_000_000, 1_572_135_002_000, 1_572_137_998_000, 1_572_138_000_000]


def repeated_hour(count, silent=None):
    """Readings every 2 s from 2019-10-27 01:30 CEST through the hour Berlin's clocks go back (03:00 CEST is 02:00
    CET): (rows, their true epoch ms), the meter silent over the `silent` (first, last) indices."""
    start = 1_572_132_600_000  # 01:30 CEST
    rows, instants = [], []
    for i in range(count):
        if silent and silent[0] <= i <= silent[1]:
            continue
        ms = start + 2000 * i
        rows.append((datetime.fromtimestamp(ms / 1000, BERLIN).strftime("%Y-%m-%d %H:%M:%S"), 1000 + i))
        instants.append(ms)
    return rows, instants


@pytest.mark.parametrize("skip_bad_lines", [False, True])
def test_it_reads_the_second_pass_of_the_repeated_hour_after_a_meters_long_silence(tmp_path, skip_bad_lines):
    """Silent from 02:30 CEST to 02:10 CET, 40 minutes: by the dates alone, 02:10 after 02:29:58 is as much a line
    20 minutes out of order. The lines after it going on from it say which: they were read as the first pass,
    an hour early, or refused."""
    rows, instants = repeated_hour(3 * 1800, silent=(1800, 2999))
    household, skipped = read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN, skip_bad_lines=skip_bad_lines)
    assert skipped == 0 and list(household.timestamps) == instants


def test_it_blames_a_line_out_of_order_in_the_first_pass_not_the_lines_after_it(tmp_path):
    """A line 8 s behind the one before, in the first pass of the repeated hour, would be 59:52 after it as the
    second pass: the lines after it go on from the line before, so it is the line out of order."""
    rows, instants = repeated_hour(1200)
    rows[1000] = (rows[999][0][:-2] + f"{int(rows[999][0][-2:]) - 8:02d}", rows[1000][1])  # 02:03:10 after :18
    with pytest.raises(DataError, match=r"h\.csv:1003: time 2019-10-27 02:03:10 does not come after"):
        read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN)
    household, skipped = read_csv(tmp_path / "h.csv", BERLIN, skip_bad_lines=True)
    assert skipped == 1 and list(household.timestamps) == instants[:1000] + instants[1001:]


@pytest.mark.parametrize("typos", [1, 2], ids=["one line", "two lines"])
def test_it_blames_lines_mistyped_ahead_in_the_first_pass_not_the_second_pass(tmp_path, typos):
    """Lines mistyped ten minutes ahead in the first pass of the repeated hour: the lines after them come back to
    just after the line before them, so those are out of place; read as the second pass, the rest of the first pass
    would be an hour late, and the real second pass refused."""
    rows, instants = repeated_hour(3 * 1800)
    for i in range(1000, 1000 + typos):
        rows[i] = (rows[i + 300][0], rows[i][1])  # ten minutes ahead
    with pytest.raises(DataError, match=r"h\.csv:100[3-5]: .*does not come after"):
        read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN)
    household, skipped = read_csv(tmp_path / "h.csv", BERLIN, skip_bad_lines=True)
    assert skipped == typos and list(household.timestamps) == instants[:1000] + instants[1000 + typos:]


def test_it_takes_no_line_for_the_second_pass_that_repeats_the_line_before(tmp_path):
    """A line out of order, then a copy of the line before it: the copy goes on from no line, and confirms nothing."""
    rows, instants = repeated_hour(2101)  # to 02:40:00 CEST
    rows += [("2019-10-27 02:20:00", 7000), rows[-1]]
    household, skipped = read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN, skip_bad_lines=True)
    assert skipped == 2 and list(household.timestamps) == instants


def test_it_reads_the_second_pass_after_a_silence_past_a_bad_line(tmp_path):
    rows, instants = repeated_hour(3 * 1800, silent=(1800, 2999))
    rows.insert(1801, ("2019-10-27 02:10:0x", 1))  # the line after the first of the second pass
    household, skipped = read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN, skip_bad_lines=True)
    assert skipped == 1 and list(household.timestamps) == instants


def test_it_says_readings_of_the_repeated_hour_with_none_in_its_second_pass_may_be_of_either(tmp_path, caplog):
    """The meter silent in the second pass, or in the first: by the dates alone the file is the same. Taken as the
    first, and said; a file with readings in both passes, or a silence elsewhere, says nothing of it."""
    rows, instants = repeated_hour(3 * 1800, silent=(2700, 4499))  # none from 03:00 CEST (02:00 CET) to 03:00 CET
    household, _ = read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN)
    assert list(household.timestamps) == instants
    (said,) = [r.getMessage() for r in caplog.records if "clocks went back" in r.getMessage()]
    assert "on 2019-10-27, to 02:59:58, are all in its first pass" in said and "1.0 h early" in said
    caplog.clear()
    for silent in (None, (100, 2000)):  # both passes; silent from 01:33 to 02:36 CEST, then on
        read_csv(write_gem_csv(tmp_path / "h.csv", repeated_hour(3 * 1800, silent=silent)[0]), BERLIN)
    assert not [r for r in caplog.records if "clocks went back" in r.getMessage()]


def test_it_skips_the_missing_hour_when_clocks_go_forward(tmp_path):
    # 2019-03-31: at 02:00 CET clocks jump to 03:00 CEST; one real second separates these two lines.
    rows = [("2019-03-31 01:59:59", 1000), ("2019-03-31 03:00:00", 2000)]
    stamps = list(read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN)[0].timestamps)
    assert stamps[1] - stamps[0] == 1000


def test_it_says_to_read_a_file_whose_dates_fall_in_the_missing_hour_as_utc_when_its_timestamps_say_so(tmp_path):
    """A date in the hour the clocks skip is no Berlin clock's; when the timestamp column is that date read as UTC
    (as the sample's is), the file's dates are most likely in UTC, and the error says how to read them."""
    utc = int(datetime(2019, 3, 31, 2, 30).replace(tzinfo=ZoneInfo("UTC")).timestamp() * 1000)
    rows = [("2019-03-31 01:59:58", 1000, utc - 1802_000), ("2019-03-31 02:30:00", 2000, utc)]
    with pytest.raises(DataError, match=r"h\.csv:4: 2019-03-31 02:30:00 never happened in Europe/Berlin: .* read as "
                                        r"UTC: .* --tz UTC"):
        read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN)
    read = read_csv(write_gem_csv(tmp_path / "h.csv", rows), ZoneInfo("UTC"))[0]
    assert list(read.timestamps) == [utc - 1802_000, utc]


def test_it_takes_the_milliseconds_of_the_timestamp_column_so_two_readings_may_share_a_second(tmp_path):
    # As in the sample, the timestamp is the date read as UTC (an hour off Berlin in winter), to the ms.
    day = 1_577_145_600_000  # 2019-12-24 00:00 UTC
    rows = [("2019-12-24 00:00:01", 1000, day + 1_982), ("2019-12-24 00:00:02", 2000, day + 2_099),
            ("2019-12-24 00:00:02", 3000, day + 2_801), ("2019-12-24 00:00:04", 4000, "junk")]
    household, skipped = read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN)
    local = day - 3_600_000  # midnight in Berlin
    assert skipped == 0 and list(household.timestamps) == [local + 1_982, local + 2_099, local + 2_801, local + 4_000]
    # Spaces around the timestamp, as around a power, which float() reads: its milliseconds still count.
    spaced = write_gem_csv(tmp_path / "spaced.csv", [(date, mw, f" {stamp} ") for date, mw, stamp in rows])
    assert list(read_csv(spaced, BERLIN)[0].timestamps) == list(household.timestamps)
    # Out of order within its second: still refused, by its line.
    rows[2] = ("2019-12-24 00:00:02", 3000, day + 2_050)
    with pytest.raises(DataError, match=r"h\.csv:5: time 2019-12-24 00:00:02 does not come after"):
        read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN)


def test_it_tells_the_two_passes_of_the_repeated_hour_apart_by_a_timestamp_in_epoch_ms(tmp_path):
    # 2019-10-27: a meter silent from 01:49:58 CEST (23:49:58 UTC) to 02:30:00 CET (01:30 UTC), its timestamps
    # the true instants: the silence is longer than the rule for dates alone can tell from a line out of order.
    rows = [("2019-10-27 01:49:58", 1000, 1_572_133_798_250), ("2019-10-27 02:30:00", 2000, 1_572_139_800_250),
            ("2019-10-27 02:30:02", 3000, 1_572_139_802_250)]
    stamps = list(read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN)[0].timestamps)
    assert stamps == [1_572_133_798_250, 1_572_139_800_250, 1_572_139_802_250]
    # Back 45 minutes after 02:39:58 CEST, at 02:25:00 CET: the second pass, not a line out of order.
    rows = [("2019-10-27 02:39:58", 1000, 1_572_136_798_000), ("2019-10-27 02:25:00", 2000, 1_572_139_500_000)]
    assert list(read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN)[0].timestamps) == [
        1_572_136_798_000, 1_572_139_500_000]


def test_it_reads_the_repeated_hour_of_a_zone_at_utc_on_one_side_of_it_by_the_dates(tmp_path):
    # Europe/London, 2019-10-27: 01:xx happens in BST, then again in GMT (UTC+0), where the sample's kind of
    # timestamp (the date read as UTC) is the true instant of the second pass for the lines of both passes.
    london, utc = ZoneInfo("Europe/London"), ZoneInfo("UTC")
    first = datetime(2019, 10, 26, 23, 50, tzinfo=utc)  # 00:50 BST
    instants = [first + timedelta(seconds=60 * i) for i in range(130)]  # through both passes of 01:xx
    rows = []
    for moment in instants:
        date = moment.astimezone(london).strftime("%Y-%m-%d %H:%M:%S")
        rows.append((date, 1000, int(datetime.fromisoformat(date).replace(tzinfo=utc).timestamp() * 1000) + 250))
    household, skipped = read_csv(write_gem_csv(tmp_path / "h.csv", rows), london)
    assert skipped == 0 and list(household.timestamps) == [int(m.timestamp() * 1000) + 250 for m in instants]


def test_it_takes_no_milliseconds_from_a_timestamp_column_that_is_not_this_lines(tmp_path):
    # Twenty days off its date (a copy's column, another unit...): a whole number of quarter hours all the same.
    rows = [(f"2019-12-24 00:00:{s:02d}", 1000, 1_577_142_000_000 + s * 1000 - 20 * 86_400_000 + 123)
            for s in range(0, 60, 2)]
    household, _ = read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN)
    assert list(household.timestamps) == [1_577_142_000_000 + s * 1000 for s in range(0, 60, 2)]


def test_it_blames_the_line_that_goes_back_after_a_meters_genuine_silence(tmp_path):
    # Silent three hours, back 8 s fast, then set right: the reading after the silence is genuine.
    rows = [("2019-12-24 10:00:00", 1000), ("2019-12-24 10:00:02", 1000), ("2019-12-24 13:00:05", 1000),
            ("2019-12-24 12:59:59", 1000)]
    with pytest.raises(DataError, match=r"h\.csv:6: time 2019-12-24 12:59:59 does not come after the line before"):
        read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN)


def test_it_blames_and_skips_a_date_out_of_place_not_the_lines_after_it(tmp_path, caplog):
    rows = [(f"2019-12-24 00:{i // 30:02d}:{i % 30 * 2:02d}", 1000 + i) for i in range(90)]
    rows[40] = ("2019-12-24 09:01:20", 5000)  # a typo in the hour, on file line 43
    path = write_gem_csv(tmp_path / "h.csv", rows)
    with pytest.raises(DataError, match=r"h\.csv:43: time 2019-12-24 09:01:20 jumps 9\.0 h ahead of the line "
                                        r"before it, and line 44 \(2019-12-24 00:01:22\) comes back"):
        read_csv(path, BERLIN)
    household, skipped = read_csv(path, BERLIN, skip_bad_lines=True)
    assert skipped == 1 and len(household.timestamps) == 89 and 5000 / 1000 not in household.powers
    assert [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()] == [
        f"{path}:43: time 2019-12-24 09:01:20 jumps 9.0 h ahead of the line before it, and line 44 "
        "(2019-12-24 00:01:22) comes back: a date out of place (skipped: --skip-bad-lines)"]


def test_it_blames_a_date_out_of_place_in_a_meter_that_reads_every_ninety_seconds(tmp_path):
    start = datetime(2019, 12, 24, 0, 0)
    rows = [((start + timedelta(seconds=90 * i)).strftime("%Y-%m-%d %H:%M:%S"), 1000) for i in range(6)]
    rows[2] = ("2019-12-24 19:03:00", 5000)  # file line 5
    household, skipped = read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN, skip_bad_lines=True)
    assert skipped == 1 and len(household.timestamps) == 5 and 5.0 not in household.powers


def every_two_seconds(count):
    start = datetime(2019, 12, 24, 0, 0)
    return [((start + timedelta(seconds=2 * i)).strftime("%Y-%m-%d %H:%M:%S"), 1000 + i) for i in range(count)]


@pytest.mark.parametrize("typos", [
    {0: "2020-12-24 00:00:00"},  # the first reading a year ahead: no line before it to compare with
    {40: "2019-12-24 00:31:20"},  # half an hour ahead: less than the jump blamed at once
    {40: "2019-12-25 00:01:20", 41: "2019-12-25 00:01:22"},  # two lines in a row a day ahead
], ids=["first line", "less than an hour", "two in a row"])
def test_it_skips_a_date_typo_ahead_not_the_good_lines_after_it(tmp_path, caplog, typos):
    rows = every_two_seconds(90)
    for index, date in typos.items():
        rows[index] = (date, 5000)
    household, skipped = read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN, skip_bad_lines=True)
    assert skipped == len(typos) and len(household.timestamps) == 90 - len(typos) and 5.0 not in household.powers
    after = max(typos) + 3  # file lines: two header lines, and counted from 1; the next lines outnumber them by 2
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records if r.levelname == "WARNING"] == [
        f"time {date} is ahead of lines {after + 1} to {after + len(typos) + 2} after it, which come back in "
        "order: a date out of place (skipped: --skip-bad-lines)" for date in typos.values()]


@pytest.mark.parametrize("first, count, ahead, lines", [
    (0, 3, timedelta(days=7), 200),  # a meter's clock a week ahead for its first three readings
    (40, 3, timedelta(days=1), 200),  # a day mistyped on three lines in a row
    (40, 30, timedelta(days=1), 200),  # and on thirty
    (1000, 70, timedelta(days=366), 3000),  # a year on seventy: the rest of the file was skipped, the block kept
    (1000, 2000, timedelta(days=1), 6000),  # a day on two thousand, outnumbered by the lines that come back
], ids=["three first", "three", "thirty", "seventy a year", "two thousand"])
def test_it_skips_a_block_of_lines_ahead_not_the_good_lines_after_it(tmp_path, first, count, ahead, lines):
    """More than STRAY_LINES in a row: a block that jumped ahead of the line before it (or began the file) is
    out of place up to STRAY_BLOCK_LINES; without --skip-bad-lines the error names the block's last line."""
    rows = every_two_seconds(lines)
    start = datetime(2019, 12, 24)
    for index in range(first, first + count):  # at 42 kW, which no good line reads
        rows[index] = ((start + ahead + timedelta(seconds=2 * index)).strftime("%Y-%m-%d %H:%M:%S"), 42_000_000)
    path = write_gem_csv(tmp_path / "h.csv", rows)
    household, skipped = read_csv(path, BERLIN, skip_bad_lines=True)
    assert skipped == count and len(household.timestamps) == lines - count and 42_000.0 not in household.powers
    last = first + count + 2  # its file line: two header lines, counted from 1
    with pytest.raises(DataError, match=rf"h\.csv:{last + 1}: time .* does not come after the line before "
                                        rf"\(line {last}, {rows[first + count - 1][0]}\)"):
        read_csv(path, BERLIN)


def test_it_takes_a_block_ahead_longer_than_the_bound_for_the_files_own_time(tmp_path, monkeypatch):
    """Past STRAY_BLOCK_LINES the block is no typo but the meter's time, and the lines that come back before it
    are the ones skipped: the bound, made small here, is where one rule gives way to the other."""
    import simulation.sources as sources

    monkeypatch.setattr(sources, "STRAY_BLOCK_LINES", 64)
    rows, start = every_two_seconds(300), datetime(2019, 12, 24)
    for count, kept in ((64, 300 - 64), (65, 100 + 65)):
        for index in range(100, 100 + count):
            rows[index] = ((start + timedelta(days=1, seconds=2 * index)).strftime("%Y-%m-%d %H:%M:%S"), 5000)
        household, skipped = read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN, skip_bad_lines=True)
        assert (len(household.timestamps), skipped) == (kept, 300 - kept), count


@pytest.mark.parametrize("typos", [
    {2: "2018-12-24 00:00:04", 3: "2018-12-24 00:00:06"},  # two lines a year back after two good ones
    {1: "2018-12-24 00:00:02", 2: "2018-12-24 00:00:04"},  # and after one good one
    {40: "2019-12-24 00:01:14", 41: "2019-12-24 00:01:16"},  # two lines a few seconds back
], ids=["a year back after two", "a year back after one", "seconds back"])
def test_it_skips_two_date_typos_behind_not_the_good_lines_before_them(tmp_path, typos):
    rows = every_two_seconds(90)
    for index, date in typos.items():
        rows[index] = (date, 5000)
    household, skipped = read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN, skip_bad_lines=True)
    assert skipped == 2 and len(household.timestamps) == 88 and 5.0 not in household.powers


def test_it_skips_a_date_typo_ahead_near_the_end_when_the_lines_after_it_outnumber_it(tmp_path, caplog):
    """No more lines will come to confirm the two that came back: they outnumber the one they came back from,
    and come after the line before it, so that one is out of place, not they."""
    rows = every_two_seconds(30)
    rows[27] = ("2019-12-24 00:10:03", 5000)  # ten minutes ahead: less than the jump blamed at once
    household, skipped = read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN, skip_bad_lines=True)
    assert skipped == 1 and len(household.timestamps) == 29 and 5.0 not in household.powers
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records if r.levelname == "WARNING"] == [
        "time 2019-12-24 00:10:03 is ahead of lines 31 to 32 after it, which come back in order: a date out of "
        "place (skipped: --skip-bad-lines)"]
    rows = every_two_seconds(30)
    rows[28] = ("2019-12-24 00:10:03", 5000)  # one line after it: which of the two is out of place, none can say
    household, skipped = read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN, skip_bad_lines=True)
    assert skipped == 1 and household.powers[-1] == 5.0  # the line that came back, as before


def test_it_skips_the_lines_of_a_meter_clock_set_back_not_the_lines_before(tmp_path):
    """Set back 10 s: five readings come back before the last one taken. They are the lines skipped, until the
    clock passes the last reading taken (not the readings before the clock was set back, more than STRAY_LINES)."""
    rows = every_two_seconds(30)
    rows[20:] = [((datetime(2019, 12, 24) + timedelta(seconds=30 + 2 * i)).strftime("%Y-%m-%d %H:%M:%S"), 1)
                 for i in range(10)]  # 00:00:30 after 00:00:38
    household, skipped = read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN, skip_bad_lines=True)
    assert skipped == 5 and list(household.powers[:20]) == [(1000 + i) / 1000 for i in range(20)]
    assert all(b > a for a, b in zip(household.timestamps, household.timestamps[1:]))


def test_it_skips_the_lines_of_a_meter_clock_set_back_within_its_first_lines(tmp_path):
    """Set back 40 s after its first 15 readings: every line before comes back, as a block at a file's start
    that jumped would; but it did not jump, so the lines that came back are the ones skipped, as later on."""
    rows = every_two_seconds(15) + [((datetime(2019, 12, 24) + timedelta(seconds=2 * i - 12)).strftime(
        "%Y-%m-%d %H:%M:%S"), 1) for i in range(40)]  # 23:59:48 after 00:00:28
    household, skipped = read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN, skip_bad_lines=True)
    assert list(household.powers[:15]) == [(1000 + i) / 1000 for i in range(15)] and skipped == 21


def test_it_says_a_gap_of_days_that_lengthens_the_run(tmp_path, caplog):
    rows = [(f"2019-12-24 00:00:{i * 2:02d}", 1000) for i in range(10)] + [("2024-12-24 00:00:20", 1000)]
    household, skipped = read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN)
    assert len(household.timestamps) == 11 and skipped == 0  # taken: a meter may be silent that long
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"{tmp_path / 'h.csv'}:13: 2024-12-24 00:00:20, the last line, is 1827 days after the line before it: a "
        "meter silent that long, or a typo in the date? (taken: it lengthens the run)"]


def test_it_says_a_first_line_days_before_the_rest_where_the_run_starts(tmp_path, caplog):
    rows = [("2018-12-24 00:00:00", 1000)] + [(f"2019-12-24 00:00:{i * 2:02d}", 1000) for i in range(1, 10)]
    household, skipped = read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN)
    assert len(household.timestamps) == 10 and skipped == 0
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"{tmp_path / 'h.csv'}:3: 2018-12-24 00:00:00, the first line, is 365 days before the line after it: a "
        "meter silent that long, or a typo in the date? (taken: the run starts there)"]


def test_it_says_first_and_last_readings_days_from_the_rest_where_the_run_starts_and_ends(tmp_path, caplog):
    rows = ([(f"2019-01-01 00:00:{i * 2:02d}", 1000) for i in range(5)] + every_two_seconds(300)
            + [(f"2020-01-02 00:00:{i * 2:02d}", 1000) for i in range(3)])
    household, skipped = read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN)
    assert len(household.timestamps) == 308 and skipped == 0  # taken: a meter may be silent that long
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"{tmp_path / 'h.csv'}: its first 5 readings, 2019-01-01 00:00:00 to 2019-01-01 00:00:08, are 357 days before "
        "the next (2019-12-24 00:00:00): a meter silent that long, or a clock wrong at its start? (taken: the run "
        "starts there)",
        f"{tmp_path / 'h.csv'}: its last 3 readings, 2020-01-02 00:00:00 to 2020-01-02 00:00:04, are 9 days after the "
        "one before (2019-12-24 00:09:58): a meter silent that long, or a clock gone wrong? (taken: they lengthen "
        "the run)"]


def test_it_says_the_time_in_which_no_file_of_the_folder_has_a_reading(tmp_path, caplog):
    """Files of different days make one run from the earliest reading to the latest: a year between them was
    hours of empty steps at --speed max, with no word of why."""
    for name, day in (("a", "2019-12-24"), ("b", "2019-12-25"), ("c", "2020-12-24")):
        write_gem_csv(tmp_path / f"{name}.csv", [(f"{day} 00:00:{i * 2:02d}", 1000) for i in range(10)])
    households, skipped, set_aside = read_folder(tmp_path, BERLIN)
    assert len(households) == 3 and skipped == set_aside == 0  # taken: a user may mean that timeline
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"--data {tmp_path}: no file has a reading for 365 days, from 2019-12-25 00:00:18 (in b.csv) to "
        "2020-12-24 00:00:00 (in c.csv): the run steps through that time with nothing to send, from "
        "2019-12-24 00:00:00 to 2020-12-24 00:00:18 in all (--until ends it sooner; the files of each period may "
        "run on their own)"]
    caplog.clear()
    # A file with a reading every six days between the others leaves no week without one.
    start = datetime(2019, 12, 25, 12)
    write_gem_csv(tmp_path / "d.csv", [((start + timedelta(days=6 * i)).strftime("%Y-%m-%d %H:%M:%S"), 1000)
                                       for i in range(62)])
    assert len(read_folder(tmp_path, BERLIN)[0]) == 4
    assert not [r for r in caplog.records if "no file has a reading" in r.getMessage()]


def test_it_says_the_time_in_which_every_file_of_the_folder_is_silent(tmp_path, caplog):
    """Within their first and last readings too: two files that each skip the same months."""
    for name in ("a", "b"):
        write_gem_csv(tmp_path / f"{name}.csv", [(f"2019-01-01 00:00:{i * 2:02d}", 1000) for i in range(10)] + [
            (f"2019-{month:02d}-01 00:00:00", 1000) for month in ((2, 3) if name == "a" else (3, 9))])
    read_folder(tmp_path, BERLIN)
    assert [r.getMessage() for r in caplog.records if "no file has a reading" in r.getMessage()] == [
        f"--data {tmp_path}: no file has a reading for 184 days, from 2019-03-01 00:00:00 (in a.csv) to "
        "2019-09-01 00:00:00 (in b.csv): the run steps through that time with nothing to send, from "
        "2019-01-01 00:00:00 to 2019-09-01 00:00:00 in all (--until ends it sooner; the files of each period may "
        "run on their own)"]


def test_it_says_a_power_column_that_looks_like_watts_not_milliwatts(tmp_path, caplog):
    path = tmp_path / "h.csv"
    path.write_text(GEM_HEADER + "".join(f"2019-12-24 00:00:{2 * i:02d},0,1,{249.05 + i},1,1,1\n" for i in range(20)))
    household, _ = read_csv(path, BERLIN)
    assert household.powers[0] == pytest.approx(0.24905)  # read as the format says, and said
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"{path}: its median power is 0.2591 W (the power column read as milliwatts, as the format has it): no "
        "household's; is the column in watts or kilowatts? (taken as milliwatts)"]
    caplog.clear()
    read_csv(write_gem_csv(path, every_two_seconds(20)), BERLIN)  # 1 W and more: nothing said
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_it_names_a_folder_whose_files_cannot_be_reached(tmp_path, monkeypatch):
    write_gem_csv(tmp_path / "h.csv", [("2019-12-24 00:00:00", 1000)])

    def refused(path):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(tmp_path), "is_file", refused)  # as in a folder that can be listed, not entered
    for skip in (False, True):  # not a file to set aside: the folder
        with pytest.raises(DataError, match=rf"--data {tmp_path}: its files can't be reached \(Permission denied\)$"):
            read_folder(tmp_path, BERLIN, skip_bad_files=skip)


def test_it_names_each_skipped_line_up_to_a_bound_and_counts_the_rest(tmp_path, caplog):
    rows = [(f"2019-12-24 00:{i // 30:02d}:{i % 30 * 2:02d}", -1 if i % 2 else 1000) for i in range(2 * SKIPPED_SHOWN + 10)]
    household, skipped = read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN, skip_bad_lines=True)
    assert skipped == SKIPPED_SHOWN + 5 and len(household.timestamps) == SKIPPED_SHOWN + 5
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == SKIPPED_SHOWN + 1
    assert warnings[0].startswith(f"{tmp_path / 'h.csv'}:4: power '-1' mW is not a household's")
    assert warnings[-1] == f"{tmp_path / 'h.csv'}: {SKIPPED_SHOWN + 5} bad lines skipped in all, the first " \
                           f"{SKIPPED_SHOWN} named above"


def test_it_reads_the_real_sample_files(caplog):
    households, skipped, set_aside = read_folder(sample_data_dir(), BERLIN)
    assert skipped == 0 and set_aside == 0 and len(households) >= 2
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # one day, every file
    first = households[0]
    assert len(first.timestamps) >= 43_000
    # 2019-12-24 00:00:01 in Berlin, to the millisecond of the timestamp column (the date read as UTC)
    assert first.timestamps[0] == 1_577_142_001_982
    assert 0 < min(first.powers) and max(first.powers) < 50_000  # watts, not milliwatts


@pytest.mark.parametrize("content, message", CSV_FILES.values(), ids=CSV_FILES.keys())
def test_it_refuses_a_file_without_its_headers_or_readings(tmp_path, content, message):
    (tmp_path / "h.csv").write_text(content)
    with pytest.raises(DataError, match=message):
        read_csv(tmp_path / "h.csv", BERLIN)


def test_it_says_what_a_file_that_is_no_text_or_has_other_line_ends_is(tmp_path):
    import bz2
    import gzip

    text = write_gem_csv(tmp_path / "h.csv", every_two_seconds(200)).read_bytes()
    for name, packed in (("gzip", gzip.compress(text)), ("bzip2", bz2.compress(text))):
        (tmp_path / "h.csv").write_bytes(packed)
        with pytest.raises(DataError, match=rf"h\.csv:1: a {name} file, not text: decompress it first"):
            read_csv(tmp_path / "h.csv", BERLIN, skip_bad_lines=True)
    mac = "its lines end in a carriage return alone"
    for content, message in (
        (text.replace(b"\n", b"\r"), mac),  # an old Mac's line ends
        (text[:300].replace(b"\n", b"\r"), mac),  # ... in a file with no line of over 4096 bytes
        (text[:300].decode().encode("utf-16"), "UTF-16 or UTF-32 text"),  # a spreadsheet's "Unicode text"
        (text[:300].replace(b"\n", b"\r\n").decode().encode("utf-16"), "UTF-16 or UTF-32 text"),  # ... on Windows
        (b"\x00\x00\xfe\xff" + text[:300].decode().encode("utf-32-be"), "UTF-32 text"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(5000), "an Excel 97-2003 workbook (.xls), not CSV"),
        (bytes(10_000), "NUL bytes, not text"),  # a file preallocated, or left by a crash
    ):
        (tmp_path / "h.csv").write_bytes(content)
        with pytest.raises(DataError, match=rf"h\.csv:1: {re.escape(message)}"):
            read_csv(tmp_path / "h.csv", BERLIN, skip_bad_lines=True)
    (tmp_path / "h.csv").write_bytes(text.replace(b"household\n", b"household,,,,,,\n", 1))  # a spreadsheet's padding
    assert len(read_csv(tmp_path / "h.csv", BERLIN)[0].timestamps) == 200
    # An executable's bytes, a \r among them, are no old Mac's text.
    (tmp_path / "h.csv").write_bytes(b"\x7fELF\x02\x01\x01\x00\r\x00\x00\x03\x00>\x00\n" + bytes(range(256)))
    with pytest.raises(DataError, match=r"h\.csv:1: NUL bytes, not text"):
        read_csv(tmp_path / "h.csv", BERLIN, skip_bad_lines=True)
    (tmp_path / "h.csv").write_bytes(b"\x89\xe1\r\xfe\x10\n")
    with pytest.raises(DataError, match=r"h\.csv:1: not UTF-8 text \(byte 1 of the line\)"):
        read_csv(tmp_path / "h.csv", BERLIN)


@pytest.mark.parametrize("tail, message", [
    (bytes(1000), "NUL bytes, not text"),  # the tail a crash leaves
    (bytes(10_000), r"longer than 4096 bytes \(NUL bytes, not text"),
    (b"2019-12-24 00:06:40,0,1,1,1,1,1\r2019-12-24 00:06:42,0,1,1,1,1,1\r2019-12-24 00:06:44,0,1,1,1,1,1\n",
     "carriage returns alone in the line, as an old Mac's line ends: 3 lines in one"),
], ids=["NUL tail", "NUL tail longer than a line", "old Mac's lines pasted in"])
def test_it_says_what_is_wrong_with_a_line_that_is_no_reading_after_the_first(tmp_path, tail, message):
    path = write_gem_csv(tmp_path / "h.csv", every_two_seconds(200))
    path.write_bytes(path.read_bytes() + tail)
    with pytest.raises(DataError, match=rf"h\.csv:203: {message}"):
        read_csv(path, BERLIN)
    household, skipped = read_csv(path, BERLIN, skip_bad_lines=True)
    assert skipped == 1 and len(household.timestamps) == 200


def test_it_reads_a_line_with_a_nul_byte_or_a_carriage_return_where_no_field_it_reads_is(tmp_path):
    path = write_gem_csv(tmp_path / "h.csv", every_two_seconds(3))
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b",", b",\x00", 2)  # in the timestamp and energy columns, which are not read
    lines[3] += b"\r "  # a carriage return before a blank at the end
    path.write_bytes(b"\n".join(lines))
    assert list(read_csv(path, BERLIN)[0].powers) == [1.0, 1.001, 1.002]


def test_it_passes_over_blank_lines_before_and_between_the_header_lines(tmp_path):
    path = write_gem_csv(tmp_path / "h.csv", every_two_seconds(3), header="\n\nhousehold\n \ndate,timestamp,energy,"
                                                                          "power,power1,power2,power3\n")
    assert len(read_csv(path, BERLIN)[0].timestamps) == 3


def test_it_names_the_milliseconds_that_put_two_readings_of_one_second_out_of_order(tmp_path):
    day = 1_577_145_600_000  # 2019-12-24 00:00 UTC: the sample's timestamp, the date read as UTC
    rows = [("2019-12-24 00:00:21", 1000, day + 21_801), ("2019-12-24 00:00:21", 2000, day + 21_050)]
    with pytest.raises(DataError, match=r"h\.csv:4: time 2019-12-24 00:00:21 does not come after the line before "
                                        r"\(by the timestamps, 50 ms into that second, the line before 801 ms\)"):
        read_csv(write_gem_csv(tmp_path / "h.csv", rows), BERLIN)


def test_it_reads_no_further_than_a_header_line_too_long_to_be_one():
    """Gigabytes with no new line under a .csv name (a disk image) were read through before line 1 was refused."""
    import io

    from simulation.sources import MAX_LINE_BYTES, _lines

    handle = io.BytesIO(b"x" * (100 * MAX_LINE_BYTES) + b"\n" + GEM_HEADER.encode())
    ((number, problem),) = list(_lines(handle))
    assert number == 1 and str(problem) == f"longer than {MAX_LINE_BYTES} bytes"
    assert handle.tell() <= MAX_LINE_BYTES + 1
    handle = io.BytesIO(b"household\n" + b"y" * (100 * MAX_LINE_BYTES))  # the second header line
    assert [n for n, _ in _lines(handle)] == [1, 2] and handle.tell() <= 2 * MAX_LINE_BYTES


@pytest.mark.parametrize("line, message", CSV_LINES.values(), ids=CSV_LINES.keys())
def test_it_names_file_and_line_of_a_malformed_line(tmp_path, line, message):
    path = write_gem_csv(tmp_path / "h.csv", [("2019-12-24 00:00:01", 100), ("2019-12-24 00:00:03", 100)])
    path.write_text(path.read_text() + line + "\n" + "2019-12-24 00:00:07,0,1,300,1,1,1\n")
    with pytest.raises(DataError, match=rf"h\.csv:5: .*{message}"):
        read_csv(path, BERLIN)
    household, skipped = read_csv(path, BERLIN, skip_bad_lines=True)
    assert skipped == 1 and list(household.powers) == [0.1, 0.1, 0.3]


def test_it_names_the_line_of_a_byte_that_is_not_utf8_however_far_into_the_file(tmp_path):
    rows = [(f"2019-12-24 {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}", 1000) for s in range(0, 600, 2)]
    path = write_gem_csv(tmp_path / "h.csv", rows)  # 300 readings: the bad byte lies past the first 8 KiB
    lines = path.read_bytes().split(b"\n")
    lines[250] = lines[250].replace(b",1000,", b",\xff1000,")
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=r"h\.csv:251: not UTF-8 text"):
        read_csv(path, BERLIN)
    household, skipped = read_csv(path, BERLIN, skip_bad_lines=True)
    assert skipped == 1 and len(household.timestamps) == 299


def test_it_reads_a_file_saved_with_a_byte_order_mark_and_blank_lines(tmp_path):
    path = write_gem_csv(tmp_path / "h.csv", [("2019-12-24 00:00:01", 1000), ("2019-12-24 00:00:03", 2000)])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n2019-12-24 00:00:03", b"\n\r\n2019-12-24 00:00:03")
                     + b"\n\n")
    household, skipped = read_csv(path, BERLIN)
    assert skipped == 0 and list(household.powers) == [1.0, 2.0]


def test_it_reads_only_the_csv_files_of_a_folder_and_names_what_it_cannot_read(tmp_path, caplog):
    write_gem_csv(tmp_path / "upper.CSV", [("2019-12-24 00:00:01", 1000)])
    (tmp_path / "._upper.csv").write_bytes(b"\x00\x05\x16\x07 a macOS note")
    (tmp_path / "notes.txt").write_text("not a household")
    (tmp_path / "h2.csv.gz").write_bytes(b"\x1f\x8b a household, compressed")
    (tmp_path / "more").mkdir()
    write_gem_csv(tmp_path / ".hidden.csv", [("2019-12-24 00:00:01", 1000)])
    assert [h.household for h in read_folder(tmp_path, BERLIN)[0]] == ["upper"]
    # What may hold a household and is not read is said, so none is missing in silence; a note beside them is not.
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"--data {tmp_path}: 3 entries are hidden or not .csv and not read: '.hidden.csv', 'h2.csv.gz', 'more' "
        "(compressed files are read once decompressed, folders by naming them, hidden files once renamed)"]
    (tmp_path / "gone.csv").symlink_to(tmp_path / "nowhere.csv")
    with pytest.raises(DataError, match=r"gone\.csv: not a file but a link to nothing"):
        read_folder(tmp_path, BERLIN)
    (tmp_path / "gone.csv").unlink()
    os.mkfifo(tmp_path / "pipe.csv")  # read, it would never end
    with pytest.raises(DataError, match=r"pipe\.csv: not a file but a named pipe"):
        read_folder(tmp_path, BERLIN)
    (tmp_path / "pipe.csv").unlink()
    write_gem_csv(tmp_path / "upper.csv", [("2019-12-24 00:00:01", 1000)])
    with pytest.raises(DataError, match="household 'upper' is .*upper.CSV too"):
        read_folder(tmp_path, BERLIN)


def test_it_refuses_a_missing_or_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        read_folder(tmp_path / "nowhere", BERLIN)
    with pytest.raises(DataError, match="no .csv files in it$"):
        read_folder(tmp_path, BERLIN)
    (tmp_path / "h.csv.gz").write_bytes(b"\x1f\x8b a household, compressed")
    with pytest.raises(DataError, match=r"no \.csv files in it; 1 entry is hidden or not \.csv and not read: "
                                        r"'h\.csv\.gz' \(compressed files are read once decompressed"):
        read_folder(tmp_path, BERLIN)


def test_it_names_a_data_folder_it_may_not_enter(tmp_path, monkeypatch):
    def refused(path):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(tmp_path), "is_dir", refused)  # as a folder on the way that may not be entered
    with pytest.raises(DataError, match=rf"--data {tmp_path}: can't be reached \(Permission denied\)$"):
        read_folder(tmp_path, BERLIN)


def test_it_names_a_file_that_fails_part_way_through_reading(tmp_path):
    # /proc/self/mem opens, then fails on the first read (EIO), as a failing disk or share would.
    (tmp_path / "failing.csv").symlink_to("/proc/self/mem")
    with pytest.raises(DataError, match=r"failing\.csv: can't be read \(Input/output error\)"):
        read_csv(tmp_path / "failing.csv", BERLIN)


def test_it_reports_progress_through_a_long_file_and_to_the_end_of_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr("simulation.sources.REPORT_LINES", 100)
    write_gem_csv(tmp_path / "a.csv", [(f"2019-12-24 00:{i // 30:02d}:{i % 30 * 2:02d}", 1000) for i in range(450)])
    write_gem_csv(tmp_path / "b.csv", [("2019-12-24 00:00:01", 1000)])
    seen = []
    read_folder(tmp_path, BERLIN, progress=lambda done, total, files: seen.append((done, total, files)))
    total = sum(path.stat().st_size for path in tmp_path.iterdir())
    assert len(seen) >= 6 and seen[-1] == (total, total, 2)  # within a.csv, after it, after b.csv
    assert [done for done, _, _ in seen] == sorted(done for done, _, _ in seen)
