"""The household index (HouseholdEntry): a household's tuples in window order, for the admin's household filter
and search, built in sorted runs away from the ingest.

The tuples' unique key is (window_start, household), so the ingest's inserts go in at the index's end. An index
in household order kept per tuple has a place to write for every household: once households have a history,
each tuple of a commit lands on an index page of its own, and SQLite's WAL writes every page a commit touches
in full (`bench store --household-first`, `bench e2e --baseline household-first-key`). Here the tuples stored
since the last run are copied, every HOUSEHOLD_INDEX_EVERY_SECONDS, into a temporary table kept in household
order, then merged into the index a slice at a time: each index page is written once for all its household's
new windows, and each slice is a short transaction between the loops' own. So the index trails the newest
tuples by up to that interval plus a run (HouseholdIndexMark says how far it reaches; the admin says so on
the page).

Retention deletes tuples without touching the index; `sweep_soon` starts a walk of the index in its own order
that deletes the entries whose tuple is gone (a join skips them until then).

The heartbeat loop runs `handle_one_slice` in the time its beats leave (edge_app/loops.py), and a finite run
ends once `caught_up`; `index_all` does a whole run at once (the tests, the benchmarks). Every step is
idempotent: a run cut off (a crash, a database connection made anew) is begun again from the mark, and
merging an entry twice changes nothing.
"""

import time

from django.db import connection, transaction
from django.utils import timezone

from edge_app.models import HouseholdEntry, HouseholdIndexMark, WindowAggregate

HOUSEHOLD_INDEX_EVERY_SECONDS = 60.0  # a run begins this long after the last began: how far the index may trail
COPY_ROWS = 20_000  # tuples copied into the sorted table a slice (a read of the tuples, no lock on them)
MERGE_ROWS = 10_000  # entries merged into the index a slice: one short write transaction
SWEEP_ROWS = 20_000  # index entries a sweep slice checks for a deleted tuple

PENDING = "fog_household_pending"  # the temporary table a run is sorted in (the connection's own)
TUPLES = WindowAggregate._meta.db_table
ENTRIES = HouseholdEntry._meta.db_table
KEY = "(household, window_start)"
ORDER = "household, window_start"
# A tuple deleted and stored again (a Kafka replay after retention) has a new id: the newest wins. An entry
# merged again as it was (a run begun again) is not written again.
UPSERT = (f"ON CONFLICT {KEY} DO UPDATE SET aggregate_id = excluded.aggregate_id "
          f"WHERE {ENTRIES}.aggregate_id <> excluded.aggregate_id")


class Run:
    """One sorted run: the tuples with ids in (first, target], on the connection whose temporary table holds them."""

    def __init__(self, first, target, dbapi):
        self.first, self.target, self.dbapi = first, target, dbapi
        self.copied_to = first
        self.merged_to = None  # the last (household, window_start) merged, None before the first slice


class HouseholdIndexer:
    def __init__(self, every_seconds=HOUSEHOLD_INDEX_EVERY_SECONDS, clock=time.monotonic):
        self.every_seconds = every_seconds
        self.clock = clock
        self.next_run = 0.0
        self.run = None
        self.sweeping = False
        self.swept_to = None  # the last (household, window_start) the sweep underway checked

    def sweep_soon(self):
        """Tuples were deleted: walk the index for their entries (from its start, if a walk is underway)."""
        self.sweeping, self.swept_to = True, None

    def handle_one_slice(self):
        """One short step: begin a run when one is due, or copy, merge or sweep a slice. True if it did any."""
        if self.run is None and self.clock() >= self.next_run:
            self.next_run = self.clock() + self.every_seconds
            if self._begin():
                return True
        if self.run is not None:
            self._run_one_slice()
            return True
        if self.sweeping:
            self._sweep_one_slice()
            return True
        return False

    def caught_up(self):
        """True if every tuple stored by now is in the index and no run or sweep is underway; else a run is
        begun now, if none is, for the next slices to take them in."""
        return self.run is None and not self.sweeping and not self._begin()

    def index_all(self):
        """Index every tuple stored by now (a whole run, from the mark) and finish a sweep underway."""
        self.run = None
        self._begin()
        while self.run is not None:
            self._run_one_slice()
        while self.sweeping:
            self._sweep_one_slice()

    def _run_one_slice(self):
        if self.run.dbapi is not connection.connection:  # the connection was made anew: its table is gone
            self.run = None
            self._begin()
        elif self.run.copied_to < self.run.target:
            self._copy_one_slice()
        else:
            self._merge_one_slice()

    def _begin(self):
        indexed_to = HouseholdIndexMark.get().indexed_to
        newest = WindowAggregate.objects.order_by("-id").values_list("id", flat=True).first() or 0
        if newest <= indexed_to:
            return False
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {PENDING}")
            cursor.execute(f"CREATE TEMPORARY TABLE {PENDING} (household VARCHAR(128) NOT NULL, window_start BIGINT "
                           f"NOT NULL, aggregate_id BIGINT NOT NULL, PRIMARY KEY {KEY})"
                           + (" WITHOUT ROWID" if connection.vendor == "sqlite" else ""))
        self.run = Run(indexed_to, newest, connection.connection)
        return True

    def _copy_one_slice(self):
        run = self.run
        with connection.cursor() as cursor:
            # COPY_ROWS tuples, not ids: ids have gaps (PostgreSQL's ON CONFLICT takes one, retention deletes).
            cursor.execute(f"SELECT id FROM {TUPLES} WHERE id > %s AND id <= %s ORDER BY id "
                           f"LIMIT 1 OFFSET {COPY_ROWS - 1}", [run.copied_to, run.target])
            bound = cursor.fetchone()
            upto = run.target if bound is None else bound[0]
            # Copied in id order: the newest id of a key wins here too.
            cursor.execute(f"INSERT INTO {PENDING} (household, window_start, aggregate_id) "
                           f"SELECT household, window_start, id FROM {TUPLES} WHERE id > %s AND id <= %s "
                           f"ON CONFLICT {KEY} DO UPDATE SET aggregate_id = excluded.aggregate_id",
                           [run.copied_to, upto])
        run.copied_to = upto

    def _merge_one_slice(self):
        run = self.run
        with connection.cursor() as cursor:
            where, params, bound = _slice(cursor, PENDING, run.merged_to, MERGE_ROWS)
            with transaction.atomic():
                cursor.execute(f"INSERT INTO {ENTRIES} (household, window_start, aggregate_id) "
                               f"SELECT household, window_start, aggregate_id FROM {PENDING} WHERE {where} "
                               f"ORDER BY {ORDER} {UPSERT}", params)
                if bound is None:
                    HouseholdIndexMark.objects.update_or_create(pk=HouseholdIndexMark.PK, defaults={
                        "indexed_to": run.target, "indexed_at": timezone.now()})
            if bound is None:
                cursor.execute(f"DROP TABLE IF EXISTS {PENDING}")
        run.merged_to = bound
        if bound is None:
            self.run = None

    def _sweep_one_slice(self):
        with connection.cursor() as cursor:
            where, params, bound = _slice(cursor, ENTRIES, self.swept_to, SWEEP_ROWS)
            cursor.execute(f"DELETE FROM {ENTRIES} WHERE {where} AND NOT EXISTS "
                           f"(SELECT 1 FROM {TUPLES} WHERE {TUPLES}.id = {ENTRIES}.aggregate_id)", params)
        self.swept_to = bound
        self.sweeping = bound is not None


def _slice(cursor, table, start, rows):
    """The next `rows` rows of `table` in (household, window_start) order after the key `start` (None: from the
    first): (the condition that selects them, its parameters, their last key, None if they run to the end)."""
    after, params = ("1 = 1", []) if start is None else (f"{KEY} > (%s, %s)", list(start))
    cursor.execute(f"SELECT household, window_start FROM {table} WHERE {after} ORDER BY {ORDER} "
                   f"LIMIT 1 OFFSET {rows - 1}", params)
    bound = cursor.fetchone()
    if bound is None:
        return after, params, None
    return f"{after} AND {KEY} <= (%s, %s)", params + list(bound), tuple(bound)
