"""Long outages: the edge's disk budget and Kafka's retention, as decisions with no I/O.

While the cloud is away the backlog (PENDING + SENT tuples) grows with every
closed window. The budget bounds it: when the backlog reaches the budget, the
ingest stops reading Kafka (the readings wait there, nothing is dropped) and
keeps its positions and its open windows; it reads again once the backlog is
below the low-water mark. Each poll may apply at most as many readings as
there is room for windows (one reading closes at most one window of its own,
and every open window may close), so the backlog stays within the budget
whenever the budget exceeds the open windows (about one per household). A
batch of readings (one Kafka message) is applied whole, so by up to
fogwire.limits.MAX_READINGS_PER_MESSAGE - 1 more; what a poll brought beyond
its room waits in the ingest for the next one.

The budget is FOG_EDGE_BUDGET_TUPLES; 0 (the default) derives it from the
free disk space of the database's folder, with the backlog's own bytes
counted as free (the backlog is what the budget is for): a share DISK_SHARE
of those bytes, divided by BYTES_PER_TUPLE, at least MIN_DERIVED_TUPLES. It
is worked out again every BUDGET_CHECK_SECONDS: taken once, when the ingest
started, a budget worked out on a disk that something else had filled (or
during a disk-full outage, as the minimum) stayed after the space came back,
and one worked out on an empty disk stayed as something else filled it.

Waiting in Kafka is safe only within the topic's retention. Per partition
the edge compares the oldest offset it still needs with the broker's
retention: by time (the needed record's timestamp + retention.ms) and by
size (retention.bytes against the unread bytes and the inflow); the time
left is the smaller. Below a margin it warns, once per crossing.
"""

import math
from pathlib import Path

# Every limit of the outage logic lives here or in settings (FOG_EDGE_BUDGET_*).
BYTES_PER_TUPLE = 512  # a generous bound for one tuple row with its three indexes
DISK_SHARE = 0.5  # the derived budget leaves half the free disk to everything else
MIN_DERIVED_TUPLES = 10_000
RECOUNT_SECONDS = 0.5  # how stale the counted backlog may get before the database is asked again
RETENTION_CHECK_SECONDS = 30.0  # how often the retention watch asks the broker
BUDGET_CHECK_SECONDS = 60.0  # how often a derived budget is worked out again from the free disk space


def derived_budget(free_bytes, backlog=0):
    """The default budget in tuples for a disk with `free_bytes` free beside a backlog of `backlog` tuples."""
    return max(MIN_DERIVED_TUPLES, int((free_bytes + backlog * BYTES_PER_TUPLE) * DISK_SHARE) // BYTES_PER_TUPLE)


def budget_folder(database, var_dir):
    """The folder whose free disk space the backlog uses: a SQLite file's, else (a server database) var/."""
    return Path(database["NAME"]).parent if database["ENGINE"].endswith("sqlite3") else Path(var_dir)


def low_water(budget, percent):
    return budget * percent // 100


class BudgetGate:
    """Whether the ingest may read, and how much, given the backlog and its open windows."""

    def __init__(self, budget, low_water_mark):
        self.paused = False
        self.resize(budget, low_water_mark)

    def resize(self, budget, low_water_mark):
        """New marks (a budget worked out again); paused or not, it stays so until allowed() says otherwise."""
        if not 0 <= low_water_mark < budget:
            raise ValueError(f"low-water mark {low_water_mark} must be below the budget {budget}")
        self.budget, self.low_water = budget, low_water_mark

    def allowed(self, backlog, open_windows):
        """Readings the next poll may take; 0 while paused. Flips `paused` at the marks."""
        if self.paused:
            if backlog >= self.low_water:
                return 0
            self.paused = False
        room = self.budget - backlog - open_windows
        if room > 0:
            return room
        if backlog >= self.low_water:
            self.paused = True
            return 0
        # Open windows alone fill the budget (more households than it holds): read one
        # message at a time rather than stall; the overshoot is at most the open windows and a batch.
        return 1


def unread_lost(needed, earliest):
    """Records the broker deleted before the edge read them (0 if none)."""
    return max(0, earliest - needed)


def retention_seconds_left(*, now_ms, needed, earliest, end, needed_ts_ms, retention_ms, retention_bytes,
                           bytes_per_record, records_per_second):
    """Seconds until the broker may delete the oldest record the edge still needs; None if never.

    0 when it already did. Kafka deletes whole segments, so this is the earliest it may.
    """
    if earliest > needed:
        return 0.0
    if needed >= end:
        return None  # nothing unread: the edge needs no record yet
    left = math.inf
    if retention_ms is not None and retention_ms >= 0 and needed_ts_ms is not None:
        left = min(left, (needed_ts_ms + retention_ms - now_ms) / 1000)
    if retention_bytes is not None and retention_bytes >= 0 and records_per_second > 0:
        unread_bytes = (end - needed) * bytes_per_record
        left = min(left, (retention_bytes - unread_bytes) / (records_per_second * bytes_per_record))
    return None if left == math.inf else max(0.0, left)


class RetentionAlarm:
    """A WARNING once per crossing below the margin; re-armed when the time left is back above it."""

    def __init__(self, margin_seconds):
        self.margin = margin_seconds
        self.warned = False

    def observe(self, seconds_left):
        """True when this observation should raise the warning."""
        if seconds_left is None or seconds_left >= self.margin:
            self.warned = False
            return False
        if self.warned:
            return False
        self.warned = True
        return True
