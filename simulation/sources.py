"""Where household readings come from: Gem House CSV files (synthetic profiles: simulation.synthetic).

CSV files are read completely and checked before anything is sent, so a bad
file stops the run with its name and line number and nothing half-sent
(with skip_bad_lines, a bad line costs that line only: each line is decoded
on its own, and each skipped line is named in a warning, the first
SKIPPED_SHOWN of a file; with skip_bad_files, a file that can't be read
whole is named and set aside, and the folder's other files are read). A
folder's files are its *.csv (any case) that are not hidden. Power is
converted from milliwatts to watts here, once.

Event time is the `date` column read in the given time zone, to the
millisecond of the `timestamp` column (`_instant`). A `timestamp` that is the
date's own instant (epoch ms, as the format describes it) is taken as it is:
it also tells the two passes of the hour the clocks go back apart (except in
a zone at UTC+0 on one side of the change, where such a timestamp is also
the date read as UTC: there the order of the lines decides, as for dates
alone). The sample's `timestamp` is its date read as UTC instead (an hour
off local time in winter), so there only its milliseconds are used: a meter
can read twice within one second of `date`. A `timestamp` that is neither is passed over.
"""

import codecs
import logging
import re
import stat
import time
from array import array
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fogwire import limits

HEADER_MODEL = "household"
HEADER_COLUMNS = ["date", "timestamp", "energy", "power", "power1", "power2", "power3"]
POWER_COLUMN = HEADER_COLUMNS.index("power")
HEADER_AGAIN = "the header lines again (two files joined into one?)"  # a line of them met among the readings
DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")  # local, no offset: `zone` says which
REPORT_LINES = 1 << 16  # lines between two progress reports while a file is read (a few MB)
MAX_LINE_BYTES = 4096  # a Gem House line is about 70 bytes; a longer one is not a reading, and is not read whole
STAMP_RE = re.compile(r"[0-9]{1,15}")  # the `timestamp` column: epoch ms
OFFSET_STEP_S = 900  # every time zone's offset from UTC is a multiple of 15 minutes,
MAX_OFFSET_MS = 15 * 3_600_000  # and at most 14 hours
SKIPPED_SHOWN = 20  # skipped lines named one by one in a file's warnings; the rest are counted
# A line this far ahead of the one before it, when the next line comes back to nearer that one than to it, is
# the line out of place, most likely a typo in its date: it is the line blamed, or skipped. (A next line that
# comes back only a little, after a meter's genuine silence, is itself the one out of place.)
STRAY_JUMP_MS = 3_600_000
# With skip_bad_lines, when lines in a row come back before the last lines taken, in order among themselves
# and after the line before those, and outnumber them by CONFIRM_LINES, the lines they come back from are out of
# place (a typo ahead by less than STRAY_JUMP_MS, on a file's first line, or on two lines in a row), as long as
# there are at most STRAY_LINES of them. Else the lines that came back are out of place (a typo behind, a
# meter's clock set back), and each is skipped.
CONFIRM_LINES = 2
# Lines looked at before they come (_Lookahead) for CONFIRM_LINES readings among them, bad and blank ones included.
LOOKAHEAD_LINES = 1000
MIN_SHIFT_MS = 1_800_000  # the smallest change of any zone's clocks (Lord Howe's half hour)
STRAY_LINES = 2
# A block of lines that jumped more than STRAY_JUMP_MS ahead of the line before it (or began the file), and that
# the lines after it come back from, is out of place up to this many lines (a meter's clock wrong for a while,
# a day or a year mistyped on many lines): lines that go on from the one before them are out of place only up
# to STRAY_LINES, and beyond, the lines that came back are (a meter's clock set back). A day of the format's
# 2 s readings: a longer block is taken for the file's own time, and the lines after it that come back before
# it are skipped (the first SKIPPED_SHOWN named, the rest counted).
STRAY_BLOCK_LINES = 43_200
# A file's last line this far after the one before it is taken, and said: a meter silent for days, or a typo
# in its date, which would stretch the whole run (a line in the middle that far ahead is blamed as above).
GAP_SAID_MS = 7 * 86_400_000
# A household's median power below this is no household's (a fridge alone draws more): a file whose power column is
# in watts or kilowatts, read as the format's milliwatts (249.05 W read as 0.249 W). Said, not changed: the
# file's unit is its maker's to say. Judged on a sample of at most MEDIAN_SAMPLE readings.
MIN_MEDIAN_POWER_W = 1.0
MEDIAN_SAMPLE = 10_001
PACKED = {".gz", ".bz2", ".xz", ".zst", ".zip", ".7z", ".tar", ".tgz"}  # what a household's file may come packed in
# The first bytes of a packed file that was given a .csv name: said as such, not as a line that is not UTF-8.
PACKED_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd",
                b"PK\x03\x04": "zip", b"7z\xbc\xaf\x27\x1c": "7z"}
CR_ALONE = "its lines end in a carriage return alone, as an old Mac's: convert them to new lines"
NUL_BYTES = "NUL bytes, not text (a binary file, UTF-16 without its byte order mark, or one preallocated or a crash left?)"
# ... and of what else a spreadsheet or a crash leaves under a .csv name: said for what it is, and how to mend it.
OTHER_MAGIC = {
    b"\xff\xfe": "UTF-16 or UTF-32 text (as a spreadsheet saves \"Unicode text\"), not UTF-8: save it as UTF-8 CSV",
    b"\xfe\xff": "UTF-16 text, not UTF-8: save it as UTF-8 CSV",
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1": "an Excel 97-2003 workbook (.xls), not CSV: save it as CSV (UTF-8)",
    b"\x00\x00\xfe\xff": "UTF-32 text, not UTF-8: save it as UTF-8 CSV",  # before b"\x00": a dict keeps this order
    b"\x00": NUL_BYTES,
}

log = logging.getLogger("fog.simulation")

class DataError(ValueError):
    """Input that can't be used; the message names the file and line."""


class BadLine(DataError):
    """A data line that can't be used, when bad lines are not skipped."""


@dataclass
class CsvHousehold:
    household: str
    timestamps: array  # epoch ms ('q')
    powers: array  # watts ('d')
    path: Path
    gaps: list  # indices of the readings more than GAP_SAID_MS after the one before (_read_lines)


_hours = {}  # (zone, "YYYY-MM-DD HH") -> epoch ms of that local hour's start, None if a DST change falls in it


def _hour_start_ms(hour, zone):
    """Epoch ms at which local `hour` ("YYYY-MM-DD HH") began in `zone`, or None if the clocks changed within
    it (one offset throughout, or the caller works the line out on its own). A file's lines share their hours,
    so each hour is worked out once (zoneinfo's offsets are the larger part of reading a line)."""
    key = (zone, hour)
    if key not in _hours:
        if len(_hours) > 200_000:
            _hours.clear()
        start = datetime.fromisoformat(hour + ":00:00")  # ValueError: no such date or hour
        ends = (start.replace(tzinfo=zone), (start + timedelta(seconds=3599)).replace(tzinfo=zone))
        offsets = {moment.replace(fold=fold).utcoffset() for moment in ends for fold in (0, 1)}
        _hours[key] = int(ends[0].timestamp() * 1000) if len(offsets) == 1 else None
    return _hours[key]


class NotAfter(DataError):
    """A line whose time does not come after the line before it (`ts`, `watts`: its reading)."""

    def __init__(self, message, ts, watts):
        super().__init__(message)
        self.ts, self.watts = ts, watts


class OutOfPlace(DataError):
    """A line taken already (`line`: its number) turned out to be out of place."""

    def __init__(self, message, line):
        super().__init__(message)
        self.line = line


def _stamps(stamp, moment_ms):
    """Whether the timestamp column is this instant (to the second the date gives)."""
    return 0 <= stamp - moment_ms < 1000


def _instant(local_ms, stamp):
    """A line's epoch ms from its date (`local_ms`, whole seconds) and its `timestamp` column (None if it is
    not a number): the timestamp itself when it is the date's instant; the date with the timestamp's
    milliseconds when the two differ by whole quarter hours, as a date read in another zone does (the
    sample's is read as UTC); else the date alone."""
    if stamp is None or abs(stamp - local_ms) > MAX_OFFSET_MS:  # e.g. a column of seconds: not this line's
        return local_ms
    if _stamps(stamp, local_ms):
        return stamp
    if (stamp // 1000 - local_ms // 1000) % OFFSET_STEP_S == 0:
        return local_ms + stamp % 1000
    return local_ms


def _epoch_ms(text, zone, previous, stamp=None):
    """Local `YYYY-MM-DD HH:MM:SS` in `zone` to epoch ms (to the millisecond of `stamp`, the timestamp column
    if it is a number: `_instant`), following the clock back over a DST change."""
    if not DATE_RE.fullmatch(text):
        raise DataError(f"bad date {text[:30]!r} (expected YYYY-MM-DD HH:MM:SS)")
    minute, second = int(text[14:16]), int(text[17:19])
    try:
        if minute > 59 or second > 59:
            raise ValueError
        start = _hour_start_ms(text[:13], zone)
    except ValueError:
        raise DataError(f"bad date {text!r} (expected YYYY-MM-DD HH:MM:SS)") from None
    if start is not None:
        return _instant(start + minute * 60_000 + second * 1000, stamp)
    naive = datetime.fromisoformat(text)
    ms, later, as_utc, told = _passes(naive, zone, stamp)
    if datetime.fromtimestamp(ms / 1000, zone).replace(tzinfo=None) != naive:
        # A whole hour of such lines (a year of readings crosses one) says the dates are not this zone's clock.
        hint = (" (its timestamp is this date read as UTC: are the file's dates in UTC? then read it with --tz UTC)"
                if stamp is not None and _stamps(stamp, as_utc) else "")
        raise DataError(f"{text} never happened in {zone}: the clocks went forward over it{hint}")
    if told is not None:
        return told
    if previous is not None and ms <= previous:
        # The repeated hour when clocks go back: the second pass, if that puts this line closer after the
        # line before than half the shift. Further is likelier a line out of order (a duplicate line would
        # be a whole shift later): read as the second pass, it would move the rest of the first pass on too.
        if previous < later <= previous + (later - ms) // 2:
            ms = later
    return _instant(ms, stamp)


def _passes(naive, zone, stamp):
    """(epoch ms of the first pass, of the second, of the date read as UTC, and the instant the timestamp says, or
    None) of a naive date in a zone whose clocks changed within its hour.

    The timestamp says which pass of the repeated hour, however long the meter was silent: unless it is also the
    date read as UTC (as the sample's are), which in a zone at UTC+0 on one side of the change (London, Lisbon) is
    one pass's instant for the lines of both."""
    first, later = (int(naive.replace(tzinfo=zone, fold=fold).timestamp() * 1000) for fold in (0, 1))
    as_utc = int(naive.replace(tzinfo=UTC).timestamp() * 1000)
    told = (stamp if stamp is not None and not _stamps(stamp, as_utc) and (_stamps(stamp, first) or _stamps(stamp, later))
            else None)
    return first, later, as_utc, told


def _stamp(fields):
    """A data line's timestamp column as epoch ms, or None if it is not a number (spaces around it, as float()
    reads the power: " 1577145601100" keeps its milliseconds)."""
    stamp = fields[1].strip()
    return int(stamp) if STAMP_RE.fullmatch(stamp) else None


def _lines(handle, report=None):
    """(line number, text) for each line of a file opened in binary mode; text is a DataError for a line that
    is not UTF-8 or is longer than MAX_LINE_BYTES. Each line is decoded on its own, so a bad byte is reported at
    its line, and skipping costs only that line.
    `report(bytes read)` every REPORT_LINES lines."""
    number = 0
    while raw := handle.readline(MAX_LINE_BYTES + 1):
        number += 1
        if report is not None and number % REPORT_LINES == 0:
            report(handle.tell())
        if number == 1:
            packed = next((name for magic, name in PACKED_MAGIC.items() if raw.startswith(magic)), None)
            other = next((said for magic, said in OTHER_MAGIC.items() if raw.startswith(magic)), None)
            if not other and b"\x00" in raw:  # an executable's or an image's bytes, whatever their first
                other = NUL_BYTES
            elif not other and b"\r" in raw.rstrip(b"\r\n") and _is_text(raw):  # lines that end in a carriage return
                other = CR_ALONE  # alone: an old Mac's (UTF-16's CRLF is \r\0\n\0: said as UTF-16, above; bytes
                # that are not UTF-8, with a \r among them, as what they are, below)
            if packed or other:  # the file as a whole is unusable: its first line says why, and nothing more is read
                yield number, DataError(f"a {packed} file, not text: decompress it first" if packed else other)
                return
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            if number <= 2:  # a header line: the file is unusable, and the rest (a disk image's GBs) is not read
                yield number, DataError(f"longer than {MAX_LINE_BYTES} bytes")
                return
            # Carriage returns alone in a line after the first: an old Mac's text pasted in; NUL bytes: a crash's.
            why = NUL_BYTES if b"\x00" in raw else CR_ALONE if b"\r" in raw[:-1] else None
            while raw and not raw.endswith(b"\n"):  # the rest of the line, a piece at a time
                raw = handle.readline(MAX_LINE_BYTES + 1)
            yield number, DataError(f"longer than {MAX_LINE_BYTES} bytes" + (f" ({why})" if why else ""))
            continue
        if number == 1 and raw.startswith(codecs.BOM_UTF8):  # as spreadsheet programs save "UTF-8 CSV"
            raw = raw[len(codecs.BOM_UTF8):]
        try:
            yield number, raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            yield number, DataError(f"not UTF-8 text (byte {exc.start + 1} of the line)")


def _is_text(raw):
    """Whether a line's bytes are UTF-8 text."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _second_pass(fields, zone):
    """Epoch ms of a data line's date as the second pass of the hour the clocks went back (to the millisecond of its
    timestamp column, as `_instant`), or None: a date in no such hour, or a timestamp that tells the pass itself."""
    text = fields[0]
    if _hour_start_ms(text[:13], zone) is not None:  # the line was read already: its date is one
        return None
    stamp = _stamp(fields)
    first, later, _, told = _passes(datetime.fromisoformat(text), zone, stamp)
    return None if later <= first or told is not None else _instant(later, stamp)


def _goes_on_from(upcoming, zone, previous, back, second, now_ms):
    """Whether the lines after one that came back in the hour the clocks went back (`upcoming`, as _lines gives
    them) go on from it read as the second pass (`second`), each of them as far back as it (before `back`) by the
    first: then the meter was silent from the line before it (`previous`) to this one, longer than _epoch_ms can
    tell from a line out of order by the two dates alone. A line out of order in the first pass is followed by
    lines that go on from the one before (or repeat it); bad lines among them are passed over."""
    confirmed = 0
    for _, text in upcoming:
        if isinstance(text, DataError) or not text.strip():
            continue
        fields = text.split(",")
        try:
            _reading(fields, zone, previous, now_ms)
            return False  # it goes on from the line before
        except NotAfter as exc:
            if exc.ts >= back:  # it repeats the line before, or one of those just before
                return False
        except DataError:
            continue
        try:
            second = _reading(fields, zone, second, now_ms)[0]
        except DataError:
            return False
        confirmed += 1
    return confirmed > 0


class _Lookahead:
    """The lines of _lines, with the next few of them to be seen before they come (`peek`)."""

    def __init__(self, lines):
        self.lines, self.ahead = lines, deque()

    def __iter__(self):
        return self

    def __next__(self):
        return self.ahead.popleft() if self.ahead else next(self.lines)

    def peek(self, count):
        """The next lines, up to `count` of them that are text and not blank (at most LOOKAHEAD_LINES in all)."""
        found = sum(1 for _, text in self.ahead if not isinstance(text, DataError) and text.strip())
        while found < count and len(self.ahead) < LOOKAHEAD_LINES:
            line = next(self.lines, None)
            if line is None:
                break
            self.ahead.append(line)
            found += not isinstance(line[1], DataError) and bool(line[1].strip())
        return list(self.ahead)


def _not_a_line(fields):
    """What is wrong with a line of too many or too few fields: NUL bytes or carriage returns alone in it say more
    than its count of fields (a NUL or a \\r in a line whose fields are read is passed over with them)."""
    line = ",".join(fields)
    if "\x00" in line:  # the tail a crash leaves (a file's blocks allocated, its bytes never written)
        return NUL_BYTES
    joined = line.count("\r") + 1
    if joined > 1:  # lines of an old Mac's text pasted in: several readings in one line
        return (f"carriage returns alone in the line, as an old Mac's line ends: {joined} lines in one? convert "
                "them to new lines")
    return f"expected {len(HEADER_COLUMNS)} fields, found {len(fields)}"


def _header(fields):
    """Whether a line's fields are one of the two header lines' (asked only of a line that is no reading)."""
    return fields[0].strip().lstrip("\ufeff") in (HEADER_MODEL, HEADER_COLUMNS[0])  # a file appended with its BOM


def _reading(fields, zone, previous, now_ms):
    """(epoch ms, watts) of one data line's fields, or DataError saying what is wrong with it."""
    if len(fields) != len(HEADER_COLUMNS):
        raise DataError(HEADER_AGAIN if _header(fields) else _not_a_line(fields))
    try:
        ts = _epoch_ms(fields[0], zone, previous, _stamp(fields))
    except DataError:  # no date: a header line, padded by a spreadsheet or not, is said as such
        if _header(fields):
            raise DataError(HEADER_AGAIN) from None
        raise
    if limits.time_problem(ts, now_ms):
        raise DataError(f"date {fields[0]} is before 2000-01-01 00:00 UTC or more than "
                        f"{limits.FUTURE_SLACK_MS // 3_600_000} h from now")
    try:
        if "_" in fields[POWER_COLUMN]:  # float() reads "249_050" as 249050: a typo, not a meter's digits
            raise ValueError
        if not fields[POWER_COLUMN].isascii():  # float() reads other scripts' digits too: "٢٤٩" is 249
            raise ValueError
        milliwatts = float(fields[POWER_COLUMN]) + 0.0  # + 0.0: "-0" is 0 W, not -0.0
    except ValueError:
        raise DataError(f"bad power {fields[POWER_COLUMN][:30]!r}") from None
    _, problem = limits.power_problem(milliwatts / 1000.0)
    if problem:
        raise DataError(f"power {fields[POWER_COLUMN][:30]!r} mW is not a household's: {problem}")
    if previous is not None and ts <= previous:
        # Within one second of it, the timestamps' milliseconds decided: the dates alone would not say why.
        within = (f" (by the timestamps, {ts % 1000} ms into that second, the line before {previous % 1000} ms)"
                  if ts != previous and ts // 1000 == previous // 1000 else "")
        raise NotAfter(f"time {fields[0]} does not come after the line before{within}", ts, milliwatts / 1000.0)
    return ts, milliwatts / 1000.0


def read_csv(path, zone, skip_bad_lines=False, report=None):
    """Parse one Gem House file. Returns (CsvHousehold, number of skipped bad lines). Blank lines are
    no readings and are passed over. `report(bytes read so far)`, if given, now and then."""
    path = Path(path)
    household = path.stem
    problem = limits.household_problem(household)
    if problem:
        raise DataError(f"{path}: the file name does not make a usable household id ({problem})")
    timestamps, powers = array("q"), array("d")
    try:
        with open(path, "rb") as handle:
            skipped, gaps = _read_lines(_lines(handle, report), path, zone, skip_bad_lines, timestamps, powers)
    except OSError as exc:  # can't be opened, or a disk, share or USB stick failing part-way through
        raise DataError(f"{path}: can't be read ({exc.strerror or exc})") from None
    if not timestamps:
        raise DataError(f"{path}: no readings after the two header lines"
                        + (f" ({skipped} bad lines skipped)" if skipped else ""))
    return CsvHousehold(household, timestamps, powers, path, gaps), skipped


def _read_lines(lines, path, zone, skip_bad_lines, timestamps, powers):
    """Check the two header lines, then append each data line's reading; returns the bad lines skipped and the
    indices of the readings more than GAP_SAID_MS after the one before."""
    header = []  # the first two lines that are not blank (blank lines are passed over, before the header too)
    for number, text in lines:
        if isinstance(text, DataError):
            raise DataError(f"{path}:{number}: {text}")
        if text.strip():
            header.append((number, text))
            if len(header) == 2:
                break
    if not header:
        raise DataError(f"{path}: an empty file: no header lines, no readings")
    if len(header) == 1:
        header.append((header[0][0] + 1, ""))
    # A spreadsheet pads the one-field first line with empty fields to the width of the rest.
    first, second = header[0][1].strip().rstrip(",").strip(), header[1][1].strip()
    if first != HEADER_MODEL or second.split(",") != HEADER_COLUMNS:
        raise DataError(f"{path}:{header[0 if first != HEADER_MODEL else 1][0]}: expected the two header lines "
                        f"{HEADER_MODEL!r} and {','.join(HEADER_COLUMNS)!r}, found {first[:40]!r} and {second[:80]!r}")
    skipped, previous, now_ms = 0, None, int(time.time() * 1000)
    last = None  # (number, date text, time of the line before it) of the last line taken
    first = None  # (number, date text, time) of the first line taken
    recent = deque(maxlen=STRAY_BLOCK_LINES)  # (number, date text) of the last lines taken
    # (number, date text, ts, watts, problem) of lines in a row that came back before the last taken: not the
    # NotAfter itself, whose traceback keeps the frame of the line's parse alive (a day of lines may be held).
    held = []

    def skip(number, problem):
        nonlocal skipped
        skipped += 1
        if skipped <= SKIPPED_SHOWN:
            log.warning("%s:%d: %s (skipped: --skip-bad-lines)", path, number, problem)

    def take(number, date, ts, watts):
        nonlocal last, previous, first
        if not timestamps:
            first = (number, date, ts)
        timestamps.append(ts)
        powers.append(watts)
        recent.append((number, date))
        last, previous = (number, date, previous), ts

    def skip_held():
        for number, _, _, _, problem in held:
            skip(number, problem)
        held.clear()

    def hold(number, date, exc):
        """A line that came back before the last taken (skip_bad_lines): held until the next lines say whether it
        or the lines it came back from are out of place."""
        if held and exc.ts <= held[-1][2]:
            skip_held()
        held.append((number, date, exc.ts, exc.watts, str(exc)))
        settle(CONFIRM_LINES)

    def settle(margin, after_one=False):
        """The held lines taken in place of the lines they came back from, if they outnumber those by `margin`
        (and, `after_one`, come after a line taken before those)."""
        nonlocal previous
        # The lines taken are in time order: those at or after the first held one are the last `ahead` of them.
        ahead = min(len(timestamps) - bisect_left(timestamps, held[0][2]), STRAY_BLOCK_LINES + 1)
        first = len(timestamps) - ahead  # the index of the first line the held ones came back from
        # Jumped ahead of the line before it, or begun the file that far ahead of the lines that come back (a
        # meter's clock set back a little within its first lines is not a block out of place).
        jumped = (timestamps[first] - timestamps[first - 1] if first else timestamps[0] - held[0][2]) > STRAY_JUMP_MS
        if ahead > min(len(recent), STRAY_BLOCK_LINES if jumped else STRAY_LINES):
            skip_held()
            return
        if len(held) < ahead + margin or (after_one and ahead == len(timestamps)):
            return
        strays = [recent.pop() for _ in range(ahead)][::-1]
        lines = f"lines {held[0][0]} to {held[-1][0]}"
        for stray, stray_date in strays:
            timestamps.pop()
            powers.pop()
            skip(stray, f"time {stray_date} is ahead of {lines} after it, which come back in order: a date "
                        "out of place")
        previous = timestamps[-1] if timestamps else None
        for number, date, ts, watts, _ in held:
            take(number, date, ts, watts)
        held.clear()

    def out_of_place(number, fields, exc):
        """The reading of a line that came back before the one taken last when that one jumped ahead and this one
        comes back in sequence (that one is out of place: skipped, or blamed), else NotAfter for this one."""
        nonlocal previous, last
        stray = last is not None and last[2] is not None and previous - last[2] > STRAY_JUMP_MS
        if not (stray and last[2] < exc.ts < last[2] + (previous - last[2]) // 2):
            if last is None:
                raise exc
            # Which line it does not come after: the one out of place may be that one, or a block before it.
            raise NotAfter(f"{exc} (line {last[0]}, {last[1]})", exc.ts, exc.watts) from None
        problem = (f"time {last[1]} jumps {_span(previous - last[2])} ahead of the line before it, and "
                   f"line {number} ({fields[0]}) comes back: a date out of place")
        if not skip_bad_lines:
            raise OutOfPlace(problem, last[0]) from None
        timestamps.pop()
        powers.pop()
        recent.pop()
        skip(last[0], problem)
        previous, last = last[2], None
        return _reading(fields, zone, previous, now_ms)

    lines = _Lookahead(lines)
    for number, text in lines:
        try:
            if isinstance(text, DataError):
                raise text
            if not text.strip():
                continue
            fields = text.split(",")
            try:
                ts, watts = _reading(fields, zone, previous, now_ms)
            except NotAfter as exc:
                second = _second_pass(fields, zone)
                # Back further than the last STRAY_LINES lines taken: a line that comes back to nearer the lines before
                # them (a typo ahead on those) is no second pass.
                back = timestamps[max(0, len(timestamps) - 1 - STRAY_LINES)]
                if (second is not None and previous < second and exc.ts < back
                        and _goes_on_from(lines.peek(CONFIRM_LINES), zone, previous, back, second, now_ms)):
                    ts, watts = second, exc.watts  # the hour the clocks went back, again, after a silence
                else:
                    ts, watts = out_of_place(number, fields, exc)
        except DataError as exc:
            if not skip_bad_lines:
                raise BadLine(f"{path}:{getattr(exc, 'line', number)}: {exc}") from None
            if isinstance(exc, NotAfter):
                hold(number, fields[0], exc)
            else:
                skip(number, exc)
            continue
        skip_held()  # this line follows the last taken: the lines that came back before it were out of place
        take(number, fields[0], ts, watts)
    if held:  # no line is left to confirm them: those that came back are taken if they are the more
        settle(1, after_one=True)
    skip_held()
    if last is not None and last[2] is not None and previous - last[2] > GAP_SAID_MS:
        log.warning("%s:%d: %s, the last line, is %s after the line before it: a meter silent that long, or a "
                    "typo in the date? (taken: it lengthens the run)", path, last[0], last[1],
                    _span(previous - last[2]))
    # (With two lines, the one gap is the last line's, said above.)
    if len(timestamps) > 2 and first[2] == timestamps[0] and timestamps[1] - timestamps[0] > GAP_SAID_MS:
        # The run starts at the earliest reading: a typo in the first line's year adds a year of silence to it.
        log.warning("%s:%d: %s, the first line, is %s before the line after it: a meter silent that long, or a "
                    "typo in the date? (taken: the run starts there)", path, first[0], first[1],
                    _span(timestamps[1] - timestamps[0]))
    gaps = [i for i, (a, b) in enumerate(zip(timestamps, timestamps[1:]), 1) if b - a > GAP_SAID_MS]
    _say_far_blocks(path, zone, timestamps, gaps)
    _say_one_pass(path, zone, timestamps)
    if powers:
        sample = sorted(powers[::max(1, len(powers) // MEDIAN_SAMPLE)])
        median = sample[len(sample) // 2]
        if median < MIN_MEDIAN_POWER_W:
            log.warning("%s: its median power is %.4g W (the power column read as milliwatts, as the format has it): "
                        "no household's; is the column in watts or kilowatts? (taken as milliwatts)", path, median)
    if skipped > SKIPPED_SHOWN:
        log.warning("%s: %d bad lines skipped in all, the first %d named above", path, skipped, SKIPPED_SHOWN)
    return skipped, gaps


def _say_far_blocks(path, zone, timestamps, gaps):
    """Warn of the first or last readings of a file, 2 to STRAY_BLOCK_LINES of them and fewer than the rest, that
    are more than GAP_SAID_MS from the rest: a meter's clock wrong for its first readings stretches the run (at
    --speed max a year is hours of steps with nothing in them). One line apart is said above, with its number."""
    count = len(timestamps)
    lead = gaps[0] if gaps and gaps[0] <= STRAY_BLOCK_LINES else 0
    tail = count - gaps[-1] if gaps and gaps[-1] >= count - STRAY_BLOCK_LINES else 0
    if 2 <= lead < count - lead:
        log.warning("%s: its first %d readings, %s to %s, are %s before the next (%s): a meter silent that long, "
                    "or a clock wrong at its start? (taken: the run starts there)", path, lead,
                    _date(timestamps[0], zone), _date(timestamps[lead - 1], zone),
                    _span(timestamps[lead] - timestamps[lead - 1]), _date(timestamps[lead], zone))
    if 2 <= tail < count - tail:
        first = count - tail
        log.warning("%s: its last %d readings, %s to %s, are %s after the one before (%s): a meter silent that long, "
                    "or a clock gone wrong? (taken: they lengthen the run)", path, tail, _date(timestamps[first], zone),
                    _date(timestamps[-1], zone), _span(timestamps[first] - timestamps[first - 1]),
                    _date(timestamps[first - 1], zone))


def _say_one_pass(path, zone, timestamps):
    """Warn of the hours the clocks went back in which the file has readings in the first pass and none after
    them in the second: by their dates alone they may as well be of the second pass (the meter silent in the first),
    and were taken as the first. (A reading after them that soon enough would have come back to the second pass.)"""
    # Nearly every pair is nearer: no zone's clocks shift by less.
    for before, after in [(a, b) for a, b in zip(timestamps, timestamps[1:]) if b - a > MIN_SHIFT_MS]:
        moment = datetime.fromtimestamp(before / 1000, zone)
        shift = (moment.utcoffset() - moment.replace(fold=1).utcoffset()) // timedelta(milliseconds=1)
        if moment.fold == 0 and shift > 0 and after - before > shift:
            log.warning("%s: its readings of the hour the clocks went back on %s, to %s, are all in its first pass, "
                        "none in its second: taken as the first; if the meter was silent in the first pass instead, "
                        "they are %s early (a timestamp column in epoch ms tells the passes apart)", path,
                        f"{moment:%Y-%m-%d}", f"{moment:%H:%M:%S}", _span(shift))


def _span(ms):
    if ms >= 2 * 86_400_000:
        return f"{ms / 86_400_000:.0f} days"
    return f"{ms / 3_600_000:.1f} h" if ms >= 3_600_000 else f"{ms / 60_000:.0f} min"


def _what_is(path):
    """What a path that is not a regular file is, as a warning names it: a pipe or a device is read for ever."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "a link to nothing"
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))
    return next((what for test, what in kinds if test(mode)), "something else")


def _folder(path):
    """Whether `path` is a folder; False where that can't be told (Path.is_dir raises on a denied stat)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def read_folder(folder, zone, skip_bad_lines=False, progress=None, skip_bad_files=False):
    """Every *.csv file of a folder (any case, not hidden: `._x.csv` is a macOS note about x.csv), parsed
    and checked. Returns (households, skipped lines, files set aside). With skip_bad_files a file that
    can't be read whole as asked (no headers, no reading, unreadable, not a file, a name that is no household
    id, a bad line when bad lines are not skipped) is named in a warning and set aside, and the others are
    read: one bad file does not keep a folder's good ones from being sent. Two files of one household stop
    the read either way: which of them holds its readings is the user's to say. `progress(bytes read, bytes
    in all files, files)`, if given, is called as the files are read (a year of one household is most of a GB)."""
    if not str(folder).strip():  # an unset $DIR in a script: not the current folder
        raise DataError("--data is empty: name a folder of Gem House CSV files")
    folder = Path(folder)
    try:
        if not folder.is_dir():
            raise DataError(f"--data {folder}: " + ("a file, not a folder: name the folder of Gem House CSV files it "
                                                    "is in" if folder.exists() else "no such directory"))
    except OSError as exc:  # a folder on the way that may not be entered
        raise DataError(f"--data {folder}: can't be reached ({exc.strerror or exc})") from None
    try:
        everything = sorted(folder.iterdir())
    except OSError as exc:
        raise DataError(f"--data {folder}: can't be read ({exc.strerror or exc})") from None
    entries = [p for p in everything if not p.name.startswith(".")]
    files = [p for p in entries if p.suffix.lower() == ".csv"]
    # What may hold a household and is not read: said, or a household in `h.csv.gz`, a subfolder or a hidden
    # `.h.csv` would be missing without a word. A README or a licence beside the files is not, nor `._h.csv`.
    passed_over = [p.name for p in everything if p.name.startswith(".") and p.suffix.lower() == ".csv" and not
                   p.name.startswith("._")] + [p.name for p in entries if p.suffix.lower() != ".csv" and (
                       ".csv" in p.name.lower() or p.suffix.lower() in PACKED or (_folder(p) and p.name != "__MACOSX"))]
    if passed_over:
        said = (f"{'1 entry is' if len(passed_over) == 1 else f'{len(passed_over)} entries are'} hidden or not .csv "
                f"and not read: {', '.join(map(repr, passed_over[:SKIPPED_SHOWN]))}"
                f"{', ...' if len(passed_over) > SKIPPED_SHOWN else ''} (compressed files are read once decompressed, "
                "folders by naming them, hidden files once renamed)")
        if not files:
            raise DataError(f"--data {folder}: no .csv files in it; {said}")
        log.warning("--data %s: %s", folder, said)
    if not files:
        raise DataError(f"--data {folder}: no .csv files in it")
    set_aside = []

    def bad_file(exc):
        if not skip_bad_files:
            raise DataError(f"{exc} (nothing was sent; " + ("--skip-bad-lines counts and skips such lines, " if
                            isinstance(exc, BadLine) else "") + "--skip-bad-files sets such a file aside and sends "
                            "the others)") from None
        set_aside.append(str(exc))
        if len(set_aside) <= SKIPPED_SHOWN:
            log.warning("%s (file set aside: --skip-bad-files)", exc)

    seen = {}
    for path in files:  # before anything is read or set aside: the one set aside may be the one meant
        if path.stem in seen:
            raise DataError(f"{path}: household {path.stem!r} is {seen[path.stem]} too (nothing was sent: remove "
                            "or rename one of the two files)")
        seen[path.stem] = path
    sizes, unreachable, inodes = {}, [], {}
    for path in files:
        try:
            if not path.is_file():
                raise DataError(f"{path}: not a file but {_what_is(path)}")
            info = path.stat()
        except OSError as exc:
            unreachable.append((path, exc))
            continue
        except DataError as exc:
            bad_file(exc)
            continue
        # An inode of 0 names no file (some network and FUSE file systems give every file that one).
        same = inodes.setdefault((info.st_dev, info.st_ino), path) if info.st_ino else path
        if same != path:  # as two files of one household: which name is the household's is the user's to say
            raise DataError(f"{path} is the same file as {same} (a link): its readings would be sent twice, as two "
                            "households (nothing was sent: remove the link or one of the names)")
        sizes[path] = info.st_size
    if unreachable and len(unreachable) == len(files):  # a folder that can be listed and not entered (chmod -R 644)
        raise DataError(f"--data {folder}: its files can't be reached ({unreachable[0][1].strerror or unreachable[0][1]})")
    for path, exc in unreachable:
        bad_file(DataError(f"{path}: can't be reached ({exc.strerror or exc})"))
    total, done = sum(sizes.values()), 0
    households, skipped = [], 0
    for path, size in sizes.items():
        report = None if progress is None else (lambda read, before=done: progress(before + read, total, len(sizes)))
        try:
            household, bad = read_csv(path, zone, skip_bad_lines, report)
        except DataError as exc:
            bad_file(exc)
        else:
            households.append(household)
            skipped += bad
        done += size
        if progress is not None:
            progress(done, total, len(sizes))
    if len(set_aside) > SKIPPED_SHOWN:
        log.warning("--data %s: %d files set aside in all, the first %d named above", folder, len(set_aside),
                    SKIPPED_SHOWN)
    if not households:
        raise DataError(f"--data {folder}: none of its {len(files)} .csv files gives a household, all set aside "
                        f"(the first: {set_aside[0]})")
    _say_time_between_files(folder, zone, households)
    return households, skipped, len(set_aside)


def _say_time_between_files(folder, zone, households):
    """Warn of the longest stretch, if over GAP_SAID_MS, in which no file of the folder has a reading: files of
    different days or years (the Gem House data spans several), or files each silent for the same months, make
    one run from the earliest reading to the latest, which steps through that time with nothing to send (at
    --speed max, hours for a year)."""
    spans = sorted(span for h in households for span in _stretches(h))
    gap, covered, before = 0, spans[0][1], spans[0][2]  # the longest gap, and the file whose reading bounds it
    for first, last, name in spans[1:]:
        if first - covered > gap:
            gap, after, gap_from, gap_to, ended = first - covered, name, covered, first, before
        if last > covered:
            covered, before = last, name
    if gap > GAP_SAID_MS:
        log.warning("--data %s: no file has a reading for %s, from %s (in %s) to %s (in %s): the run steps through "
                    "that time with nothing to send, from %s to %s in all (--until ends it sooner; the files of each "
                    "period may run on their own)", folder, _span(gap), _date(gap_from, zone), ended,
                    _date(gap_to, zone), after, _date(spans[0][0], zone), _date(covered, zone))


def _stretches(household):
    """(first, last, file name) of each run of a household's readings with no gap over GAP_SAID_MS in it."""
    ts, bounds = household.timestamps, [0, *household.gaps, len(household.timestamps)]
    return [(ts[a], ts[b - 1], household.path.name) for a, b in zip(bounds, bounds[1:])]


def _date(ms, zone):
    return datetime.fromtimestamp(ms / 1000, zone).strftime("%Y-%m-%d %H:%M:%S")
