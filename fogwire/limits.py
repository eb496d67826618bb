"""Every value limit of the pipeline, in one place: the simulation, the edge's ingest and the cloud all check here.

One rule, three callers, so a value the edge accepts is never refused by the
cloud for the same reason (the edge's windows are built from readings that
passed `reading_problem`, and such a window always passes `tuple_problem`).

- Household id: 1..128 characters of A-Z a-z 0-9 . _ - : @. Ids become
  Redis hash fields and parts of the cloud's `|`-separated records, and are
  shown in the admin and the dashboard: a plain alphabet keeps all of that
  unambiguous (the Gem House files are named by 64 hex digits, synthetic
  households `syn<seed>-<n>`).
- Power of one household: 0 .. MAX_POWER_W. A German house connection is
  fused at most 3 x 63 A on 230 V for an ordinary home (TAB/VDE-AR-N 4100;
  the NH fuse in the connection box), so no household can draw more than
  3 x 63 x 230 W = 43,470 W for longer than a fuse allows. A reading above it
  is a meter or unit fault, and it keeps every per-state sum finite.
- Time: epoch milliseconds from 2000-01-01 (older is a clock or unit
  mistake) up to FUTURE_SLACK_MS ahead of now (the simulation may run ahead
  of the wall clock at `--speed max`). The cloud adds CLOCK_SKEW_MS for the
  edge's clock being ahead of its own.
- Window: start < end, at most MAX_WINDOW_MS long, at least one reading.
- A Kafka message is one reading as a JSON object, at most MAX_READING_BYTES,
  or a batch `{"readings": [[household, ts, power_w], ...]}` of at most
  MAX_READINGS_PER_MESSAGE readings in at most MAX_MESSAGE_BYTES (under
  Kafka's default message.max.bytes, so a broker left at its defaults takes
  every batch the simulation sends). The ingest refuses a longer message before
  parsing it, and checks each reading of a batch on its own.

This module imports nothing of the project, nor Django.
"""

import math
import re
from datetime import UTC, datetime

MAX_HOUSEHOLD_ID = 128
HOUSEHOLD_ALPHABET = "A-Z a-z 0-9 . _ - : @, not dots alone"
# Dots alone would be a path's "." or "..": the page's URL of such a household names another resource.
# Written as JSON Schema (ECMA-262) reads it too, for the API's schema: with fullmatch, '$' can't end at a newline
# (no id character is one).
HOUSEHOLD_ID_PATTERN = rf"^(?!\.+$)[A-Za-z0-9._:@-]{{1,{MAX_HOUSEHOLD_ID}}}$"
HOUSEHOLD_ID_RE = re.compile(HOUSEHOLD_ID_PATTERN)
MAX_POWER_W = 3 * 63 * 230  # three phases of 63 A at 230 V: see above
EARLIEST_MS = 946_684_800_000  # 2000-01-01 UTC
FUTURE_SLACK_MS = 24 * 3600 * 1000
CLOCK_SKEW_MS = 5 * 60 * 1000  # how far an edge's clock may run ahead of the cloud's
MAX_WINDOW_MS = 3600 * 1000  # FOG_WINDOW_SECONDS is bounded by this too
MAX_READING_BYTES = 4096  # a reading is about 80 bytes; the household id at most 128
READINGS_FIELD = "readings"  # a Kafka message with this field is a batch of readings
MAX_READINGS_PER_MESSAGE = 1000  # a batch of the longest ids (128 characters) is still under MAX_MESSAGE_BYTES
MAX_MESSAGE_BYTES = 1_000_000  # Kafka's default message.max.bytes is 1,048,588
DEFAULT_HOUSEHOLDS_PER_EDGE = 100_000  # FOG_CLOUD_HOUSEHOLDS_PER_EDGE's default

# Refusal reasons are stable words: logged, counted, labelled in metrics, stored on the edge.
R_NOT_FINITE = "not-finite"
R_NEGATIVE = "negative-power"
R_TOO_POWERFUL = "implausible-power"
R_BAD_WINDOW = "bad-window"
R_FUTURE = "future-window"
R_BAD_COUNT = "bad-count"
R_BAD_HOUSEHOLD = "bad-household"


def household_problem(household):
    """'' if `household` is a usable household id, else what is wrong with it."""
    if not isinstance(household, str) or not HOUSEHOLD_ID_RE.fullmatch(household):
        return f"household id must be 1..{MAX_HOUSEHOLD_ID} characters of {HOUSEHOLD_ALPHABET}"
    return ""


def power_problem(power_w):
    """(reason, text) for a power value in watts that can't be a household's, else ('', ''). Total over ints too:
    a JSON literal of hundreds of digits is past any float, and isfinite() raises on it."""
    if type(power_w) is int and power_w.bit_length() > 64:  # before isfinite(), and never repr'd at length
        return ((R_NEGATIVE, f"power, an integer of {power_w.bit_length()} bits, is negative") if power_w < 0 else
                (R_TOO_POWERFUL, f"power, an integer of {power_w.bit_length()} bits, is above one household's "
                                 f"{MAX_POWER_W} W"))
    if not math.isfinite(power_w):
        return R_NOT_FINITE, f"power {power_w!r} is not finite"
    if power_w < 0:
        return R_NEGATIVE, f"power {power_w!r} is negative"
    if power_w > MAX_POWER_W:
        return R_TOO_POWERFUL, f"power {power_w!r} W is above one household's {MAX_POWER_W} W"
    return "", ""


def time_problem(ts_ms, now_ms):
    """'' if `ts_ms` is a plausible event time (epoch ms) at wall-clock `now_ms`, else what is wrong."""
    if not EARLIEST_MS <= ts_ms <= now_ms + FUTURE_SLACK_MS:
        # "now" is this node's clock: one that boots far behind (no RTC, NTP not there yet) refuses good readings,
        # and the operator must see which side is wrong.
        now = datetime.fromtimestamp(now_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        return (f"time {ts_ms} is not epoch ms between 2000-01-01 and now + {FUTURE_SLACK_MS // 3_600_000} h "
                f"(now: {now} UTC by this node's clock)")
    return ""


def reading_problem(household, ts_ms, power_w, now_ms):
    """'' for a reading the edge may window, else what is wrong (types are the caller's to check)."""
    return household_problem(household) or time_problem(ts_ms, now_ms) or power_problem(power_w)[1]


def tuple_problem(household, start_ms, end_ms, average_w, count, now_ms):
    """The refusal reason for one window tuple at the cloud ('' = acceptable)."""
    if household_problem(household):
        return R_BAD_HOUSEHOLD
    reason, _ = power_problem(average_w)
    if reason:
        return reason
    # end > EARLIEST_MS, not start: a window holding a reading from 2000-01-01 may begin a little before it.
    if not (start_ms < end_ms and end_ms > EARLIEST_MS and end_ms - start_ms <= MAX_WINDOW_MS):
        return R_BAD_WINDOW
    if start_ms > now_ms + FUTURE_SLACK_MS + CLOCK_SKEW_MS:
        return R_FUTURE
    if not 1 <= count <= end_ms - start_ms:  # event times are in ms: a reading a millisecond at most
        return R_BAD_COUNT
    return ""
