"""How a loop lives through a failing edge database, free of I/O like WindowBook.

PostgreSQL restarting, a full disk, or a lock held longer than SQLite's busy
timeout fails a loop's step. The loop then drops what it holds in memory
(what matters is in the database already, or still in Kafka), waits, and
starts again within the same job, keeping its lock: the supervisor sees a
running loop, counts no failure, and the edge outlives an outage of any
length. `DatabaseOutage` says how long to wait and what to say, once an
outage and not once a try.
"""

from django.db import InterfaceError, OperationalError

# What a database that is away, full or locked raises through Django (psycopg's AdminShutdown, SQLite's "database
# or disk is full" and "database is locked", a connection closed under us). Other database errors are bugs.
DATABASE_AWAY = (OperationalError, InterfaceError)
RETRY_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)  # waits between tries while it fails; the last repeats
STEADY_SECONDS = 10.0  # a loop that ran this long without a database error has its outage behind it
LINE_SECONDS = 60.0  # while an outage lasts, a line about it at most this often


def reason(exc):
    """The first line of a driver's message: psycopg's run over several."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class DatabaseOutage:
    def __init__(self, what):
        self.what = what  # "ingest loop of edge edge-1"
        self.since = None  # monotonic time the outage began; None: no outage
        self.failures = 0
        self.said = 0.0
        self.ok_since = None  # first step without an error since the last failure

    def failed(self, now, exc):
        """A step failed with a DATABASE_AWAY error: (seconds to wait before the next try, line or None)."""
        self.ok_since = None
        self.failures += 1
        wait = RETRY_SECONDS[min(self.failures, len(RETRY_SECONDS)) - 1]
        if self.since is None:
            self.since, self.said = now, now
            return wait, (f"{self.what}: the edge database fails ({reason(exc)}); the loop waits for it and starts "
                          "again, its data safe in the database or still in Kafka")
        if now - self.said >= LINE_SECONDS:
            self.said = now
            return wait, f"{self.what}: the edge database still fails after {now - self.since:.0f} s ({reason(exc)})"
        return wait, None

    def step_done(self, now):
        """A step went through: the line that ends the outage once the loop has run STEADY_SECONDS, else None."""
        if self.since is None:
            return None
        if self.ok_since is None:
            self.ok_since = now
            return None
        if now - self.ok_since < STEADY_SECONDS:
            return None
        line = f"{self.what}: the edge database works again after {self.ok_since - self.since:.0f} s"
        self.since, self.failures, self.ok_since = None, 0, None
        return line
