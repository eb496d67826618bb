"""Where household readings come from: Gem House CSV files or synthetic profiles.

CSV files are read completely and checked before anything is sent, so a bad
file stops the run with its name and line number and nothing half-sent.
Power is converted from milliwatts to watts here, once. Event time is the
`date` column read in the given time zone (the files' `timestamp` column is
not used: in the sample it is an hour off local time).

Synthetic households are stateless functions of (seed, household, time):
the same seed gives the same values in any process, whatever the number of
households, and no per-household state grows with the run.
"""

import math
from array import array
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fogwire import limits

HEADER_MODEL = "household"
HEADER_COLUMNS = ["date", "timestamp", "energy", "power", "power1", "power2", "power3"]
POWER_COLUMN = HEADER_COLUMNS.index("power")

# A typical German household's day (standard load profile H0, hourly, as
# multiples of the day's mean): low at night, a morning and an evening peak.
DAY_SHAPE = [0.55, 0.48, 0.45, 0.44, 0.45, 0.52, 0.75, 1.05, 1.10, 1.00, 0.95, 1.00,
             1.15, 1.10, 0.98, 0.92, 0.95, 1.10, 1.40, 1.65, 1.60, 1.45, 1.10, 0.75]
MEAN_POWER_W = 350.0  # about 3,100 kWh a year
NOISE = 0.12  # relative, per reading
SPIKE_CHANCE = 0.01  # an appliance switching on (kettle, oven) in a given reading
SPIKE_W = 1800.0


class DataError(ValueError):
    """Input that can't be used; the message names the file and line."""


@dataclass
class CsvHousehold:
    household: str
    timestamps: array  # epoch ms ('q')
    powers: array  # watts ('d')
    path: Path


def _epoch_ms(text, zone, previous):
    """Local `YYYY-MM-DD HH:MM:SS` in `zone` to epoch ms, following the clock back over a DST change."""
    naive = datetime.fromisoformat(text)
    ms = int(naive.replace(tzinfo=zone).timestamp() * 1000)
    if previous is not None and ms <= previous:
        later = int(naive.replace(tzinfo=zone, fold=1).timestamp() * 1000)
        if later > previous:  # the repeated hour when clocks go back: the second pass
            ms = later
    return ms


def read_csv(path, zone, skip_bad_lines=False):
    """Parse one Gem House file. Returns (CsvHousehold, number of skipped bad lines)."""
    path = Path(path)
    household = path.stem
    problem = limits.household_problem(household)
    if problem:
        raise DataError(f"{path}: the file name does not make a usable household id ({problem})")
    timestamps, powers = array("q"), array("d")
    skipped = 0
    previous = None
    with open(path, encoding="utf-8", errors="strict", newline="") as handle:
        try:
            first = handle.readline().strip()
            second = handle.readline().strip()
        except UnicodeDecodeError:
            raise DataError(f"{path}:1: not UTF-8 text") from None
        if first != HEADER_MODEL or second.split(",") != HEADER_COLUMNS:
            raise DataError(f"{path}:1: expected the two header lines {HEADER_MODEL!r} and "
                            f"{','.join(HEADER_COLUMNS)!r}, found {first[:40]!r} and {second[:80]!r}")
        for number, line in enumerate(handle, start=3):
            try:
                fields = line.rstrip("\r\n").split(",")
                if len(fields) != len(HEADER_COLUMNS):
                    raise DataError(f"expected {len(HEADER_COLUMNS)} fields, found {len(fields)}")
                try:
                    ts = _epoch_ms(fields[0], zone, previous)
                except ValueError:
                    raise DataError(f"bad date {fields[0][:30]!r} (expected YYYY-MM-DD HH:MM:SS)") from None
                try:
                    milliwatts = float(fields[POWER_COLUMN])
                except ValueError:
                    raise DataError(f"bad power {fields[POWER_COLUMN][:30]!r}") from None
                if not math.isfinite(milliwatts) or milliwatts < 0:
                    raise DataError(f"power {fields[POWER_COLUMN]!r} is not a non-negative number")
                if milliwatts / 1000.0 > limits.MAX_POWER_W:
                    raise DataError(f"power {fields[POWER_COLUMN]!r} mW is above one household's "
                                    f"{limits.MAX_POWER_W} W")
                if previous is not None and ts <= previous:
                    raise DataError(f"time {fields[0]} does not come after the line before")
            except DataError as exc:
                if not skip_bad_lines:
                    raise DataError(f"{path}:{number}: {exc}") from None
                skipped += 1
                continue
            except UnicodeDecodeError:
                raise DataError(f"{path}:{number}: not UTF-8 text") from None
            timestamps.append(ts)
            powers.append(milliwatts / 1000.0)
            previous = ts
    if not timestamps:
        raise DataError(f"{path}: no readings after the two header lines")
    return CsvHousehold(household, timestamps, powers, path), skipped


def read_folder(folder, zone, skip_bad_lines=False):
    """Every *.csv file of a folder, parsed and checked. Returns (households, skipped lines)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--data {folder}: no such directory")
    files = sorted(folder.glob("*.csv"))
    if not files:
        raise DataError(f"--data {folder}: no .csv files in it")
    households, skipped = [], 0
    for path in files:
        household, bad = read_csv(path, zone, skip_bad_lines)
        households.append(household)
        skipped += bad
    return households, skipped


# --- synthetic ------------------------------------------------------------

MASK = (1 << 64) - 1


def _mix(x):
    """splitmix64's finaliser: a fast, well-spread hash of a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def _unit(x):
    return (x >> 11) * (1.0 / (1 << 53))


# Minute-by-minute shape, linearly interpolated from the hourly profile.
_MINUTE_SHAPE = [DAY_SHAPE[m // 60] + (DAY_SHAPE[(m // 60 + 1) % 24] - DAY_SHAPE[m // 60]) * (m % 60) / 60
                 for m in range(1440)]


_TWO_26_INV = 1.0 / (1 << 26)
_SPIKE_BELOW = int(SPIKE_CHANCE * 4096)


class SyntheticHousehold:
    __slots__ = ("household", "key", "scale", "shift_minutes")

    def __init__(self, seed, index):
        self.household = f"syn{seed}-{index:06d}"
        self.key = _mix((seed & MASK) * 1_000_003 + index)
        # Households differ in size (a log-normal-ish spread, 0.4x..2.5x) and in rhythm (+-60 min).
        spread = _unit(_mix(self.key ^ 1)) + _unit(_mix(self.key ^ 2)) - 1.0
        self.scale = MEAN_POWER_W * math.exp(0.45 * spread * 2)
        self.shift_minutes = int((_unit(_mix(self.key ^ 3)) - 0.5) * 120)

    def power(self, ts_ms, local_minute):
        """Watts at event time `ts_ms`; `local_minute` is the minute of the local day.

        One splitmix64 hash a reading: its high bits make the noise (two
        uniforms summed, a triangular spread), its low 12 bits the spike.
        """
        x = ((self.key ^ ts_ms) + 0x9E3779B97F4A7C15) & MASK
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
        r = x ^ (x >> 31)
        noise = (((r >> 38) + ((r >> 12) & 0x3FFFFFF)) * _TWO_26_INV - 1.0) * NOISE
        value = self.scale * _MINUTE_SHAPE[(local_minute + self.shift_minutes) % 1440] * (1.0 + noise)
        if (r & 0xFFF) < _SPIKE_BELOW:
            value += SPIKE_W
        return value
