"""One set of limits (fogwire/limits.py): values at each boundary pass the simulation, the edge and the
cloud alike, and values just beyond are refused by each, for the same reason."""

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from edge_app.readings import MalformedReading, parse_reading
from edge_app.windows import WindowBook
from fogwire import limits
from simulation.sources import DataError, read_csv
from tests.conftest import deliver, reading, write_gem_csv

LONGEST_ID = "a-Z.0_9:@" * 14 + "x" * 2  # 128 characters of the whole alphabet


def _edge_windows(readings, now_ms, window_ms):
    """What the edge would send for these readings: parsed, windowed and closed as a burst run does."""
    book = WindowBook(window_ms, 2000, 60)
    for offset, (_household, raw) in enumerate(readings):
        book.add(*parse_reading(raw, now_ms), 0, offset, 0.0)
    book.close_all()
    return book.take_closed()


def _boundary_readings(now_ms):
    return [
        reading(LONGEST_ID, limits.EARLIEST_MS, 0.0),
        reading("a", limits.EARLIEST_MS + 1, limits.MAX_POWER_W),
        reading("edge-of-time", now_ms + limits.FUTURE_SLACK_MS, limits.MAX_POWER_W),
        reading("edge-of-time", now_ms + limits.FUTURE_SLACK_MS - 1, limits.MAX_POWER_W),  # same window: mean of maxima
        reading("odd", limits.EARLIEST_MS + 4999, limits.MAX_POWER_W / 3),
        reading("odd", limits.EARLIEST_MS + 4998, limits.MAX_POWER_W / 7),
    ]


@pytest.mark.parametrize("window_seconds", [5, 7, limits.MAX_WINDOW_MS // 1000])  # 7 s windows do not align with 2000
def test_it_stores_in_the_cloud_every_window_the_edge_accepts_at_the_boundaries(window_seconds, cloud):
    now_ms = int(time.time() * 1000)
    windows = _edge_windows(_boundary_readings(now_ms), now_ms, window_seconds * 1000)
    assert len(windows) >= 3
    rows = [(i, w.household, w.start, w.end, w.average, w.count) for i, w in enumerate(windows)]
    codes, reasons = deliver(cloud, rows)
    assert reasons == [""] * len(rows) and all(codes)


BEYOND = {
    # name: (reading fields, what the edge says, the cloud's reason for the same value in a window)
    "household one too long": ((LONGEST_ID + "x", limits.EARLIEST_MS + 10_000, 1.0), "household id",
                               limits.R_BAD_HOUSEHOLD),
    "household with a bar": (("a|b", limits.EARLIEST_MS + 10_000, 1.0), "household id", limits.R_BAD_HOUSEHOLD),
    "household with a space": (("a b", limits.EARLIEST_MS + 10_000, 1.0), "household id", limits.R_BAD_HOUSEHOLD),
    "power above a house connection": (("h", limits.EARLIEST_MS + 10_000, limits.MAX_POWER_W + 0.001),
                                       "above one household", limits.R_TOO_POWERFUL),
    "power 1e308": (("h", limits.EARLIEST_MS + 10_000, 1e308), "above one household", limits.R_TOO_POWERFUL),
    "power negative": (("h", limits.EARLIEST_MS + 10_000, -0.001), "negative", limits.R_NEGATIVE),
}


@pytest.mark.parametrize("name", BEYOND)
def test_it_refuses_a_value_beyond_a_limit_on_the_edge_and_in_the_cloud(name, cloud):
    (household, ts, power), edge_says, cloud_reason = BEYOND[name]
    with pytest.raises(MalformedReading, match=edge_says):
        parse_reading(reading(household, ts, power)[1], int(time.time() * 1000))
    start = ts - ts % 5000
    rows = [(1, household, start, start + 5000, power, 1)]
    _, reasons = deliver(cloud, rows)
    assert reasons == [cloud_reason]


def test_it_refuses_times_beyond_the_limits_on_the_edge_and_in_the_cloud(cloud):
    now_ms = int(time.time() * 1000)
    for ts in (limits.EARLIEST_MS - 1, now_ms + limits.FUTURE_SLACK_MS + 60_000):
        with pytest.raises(MalformedReading, match="not epoch ms between"):
            parse_reading(reading("h", ts, 1.0)[1], now_ms)
    # A node whose clock is a year behind: the message says what it takes for now, so the operator sees the clock.
    behind = now_ms - 366 * 86_400_000
    shown = datetime.fromtimestamp(behind / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    with pytest.raises(MalformedReading, match=f"now: {shown} UTC by this node's clock"):
        parse_reading(reading("h", now_ms, 1.0)[1], behind)
    too_early = limits.EARLIEST_MS - 5000  # a window that ends where the earliest time begins
    too_late = now_ms + limits.FUTURE_SLACK_MS + limits.CLOCK_SKEW_MS + 5000
    rows = [(1, "h", too_early, too_early + 5000, 1.0, 1), (2, "h", too_late, too_late + 5000, 1.0, 1),
            (3, "h", too_late - 2 * limits.MAX_WINDOW_MS, too_late, 1.0, 1)]
    _, reasons = deliver(cloud, rows)
    assert reasons == [limits.R_BAD_WINDOW, limits.R_FUTURE, limits.R_BAD_WINDOW]


def test_it_lets_the_simulation_send_only_what_the_edge_accepts(tmp_path):
    zone = ZoneInfo("Europe/Berlin")
    most_mw = limits.MAX_POWER_W * 1000
    household, _ = read_csv(write_gem_csv(tmp_path / f"{LONGEST_ID}.csv",
                                          [("2019-12-24 00:00:01", most_mw), ("2019-12-24 00:00:02", 0)]), zone)
    now_ms = int(time.time() * 1000)
    for ts, power in zip(household.timestamps, household.powers):
        assert parse_reading(reading(household.household, ts, power)[1], now_ms)[2] == power
    with pytest.raises(DataError, match=r"too-much.csv:4: .*above one household"):
        read_csv(write_gem_csv(tmp_path / "too-much.csv",
                               [("2019-12-24 00:00:01", 5), ("2019-12-24 00:00:02", most_mw + 1)]), zone)
    with pytest.raises(DataError, match="does not make a usable household id"):
        read_csv(write_gem_csv(tmp_path / "a b.csv", [("2019-12-24 00:00:01", 5)]), zone)
