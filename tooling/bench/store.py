"""`bench store`: the ingest's store of each window end's burst into an edge database with a history.

At real time every household's window closes within a second of the
others, and the ingest stores the burst in parts (edge_app/ingest.py). The
figure stores `--ends` window ends of `--households` households, each burst
handed to `Ingestor.store_closed` as the shipped ingest does, in the unique
key's order (window_start, household); the baseline is the same bursts in the order they closed, here at
random as to household (as when many producers' delays mix). The two differ
in that order only, each in a fresh database of its own (a child process, as
`bench ingest`), so neither inherits the other's pages.

How fast a burst is stored depends on the history behind it: the figure is
over the last quarter of the ends, and the first and last ends' seconds are
reported beside it. It times the store only (the sort included): closing the
windows, which the ingest does before it stores them, is the same for both.

With `--household-first` a third figure is the baseline of the unique key
itself: the shipped run beside the same bursts, in household order, into a
database keyed (household, window_start), as the edge was before its
household index was built in sorted runs (edge_app/household_index.py). With
that key a window end's rows go into every household's run of the index, each
on a page of its own once households have a history, and SQLite's WAL writes
every page a commit touches in full; with the shipped (window_start, household)
they go in at the index's end. The household index's own runs are not in
either figure: they come later, in the heartbeat loop, in sorted runs.

With `--checkpoint` each order is stored again with SQLite's default WAL
checkpoint (every 1000 pages) instead of the edge's SQLITE_CHECKPOINT_PAGES
(fogsite/settings.py), beside its shipped run: the two differ in that
setting only. In the order they closed, a commit's rows are spread over the
whole index, as a part of staggered windows is (edge_app/windows.py).
"""

import random
import time
from operator import attrgetter

from tooling.bench.common import Figure
from tooling.bench.edge import EDGE, T0, _child

ORDERS = ("key", "closed")  # the ingest's (the unique key's), and the order they closed
HOUSEHOLD_FIRST = "household-first"  # household order, into a database keyed (household, window_start)
SEED = 20261129  # the same closing order for both runs
UNIQUE_KEY = "one_tuple_per_window_household"  # edge_app.models.WindowAggregate's unique constraint
SQLITE_DEFAULT_CHECKPOINT_PAGES = 1000  # SQLite's own wal_autocheckpoint: --checkpoint's baseline


def run(households=100_000, ends=24, household_first=False, checkpoint=False, out=print):
    if households < 1 or ends < 1:
        raise RuntimeError(f"--households and --ends must be at least 1, not {households} and {ends}")
    out(f"store: {ends} window ends of {households:,} households each, stored as the ingest stores a burst; "
        "in the unique key's order, then in the order they closed (at random as to household), "
        + ("then in household order with the unique key (household, window_start), " if household_first else "")
        + (f"then both orders with SQLite's default WAL checkpoint ({SQLITE_DEFAULT_CHECKPOINT_PAGES} pages), "
           if checkpoint else "")
        + "each into a fresh database")
    runs = {order: _child("store", {"households": households, "ends": ends, "order": order})
            for order in ORDERS + ((HOUSEHOLD_FIRST,) if household_first else ())}
    if checkpoint:
        for order in ORDERS:
            runs[order, "default"] = _child("store", {"households": households, "ends": ends, "order": order,
                                                      "checkpoint_pages": SQLITE_DEFAULT_CHECKPOINT_PAGES})
    shipped, baseline = runs["key"], runs["closed"]
    timed = f"the last {_timed(ends)} of {ends} ends"
    figures = [Figure(f"store bursts of {households:,} windows, {timed}", shipped["rate"], "windows/s",
                      baseline["rate"], "", {**_ends(shipped), **_ends(baseline, "baseline "),
                      "against": "the same bursts in the order they closed, at random as to household"})]
    if household_first:
        keyed = runs[HOUSEHOLD_FIRST]
        figures.append(Figure(f"store bursts of {households:,} windows, unique key (window_start, household), {timed}",
                              shipped["rate"], "windows/s", keyed["rate"], "",
                              {**_ends(shipped), **_ends(keyed, "baseline "),
                               "against": "the same bursts in household order into the unique key (household, "
                                          "window_start), as before the household index was built in sorted runs"}))
    if checkpoint:
        from django.conf import settings

        for order, said in (("key", "in the key's order"), ("closed", "in the order they closed")):
            shipped, default = runs[order], runs[order, "default"]
            figures.append(Figure(
                f"store bursts of {households:,} windows {said}, WAL checkpoint every "
                f"{settings.SQLITE_CHECKPOINT_PAGES} pages, {timed}", shipped["rate"], "windows/s", default["rate"], "",
                {**_ends(shipped), **_ends(default, "baseline "),
                 "against": f"the same bursts with SQLite's default checkpoint, every {SQLITE_DEFAULT_CHECKPOINT_PAGES} "
                            "pages"}))
    return figures


def _ends(result, label=""):
    return {f"{label}first end s": result["first_s"], f"{label}last end s": result["last_s"]}


def _timed(ends):
    return max(1, ends // 4)


# --- the child's side -------------------------------------------------------


def child_store(households, ends, order, checkpoint_pages=None):
    from django.db import connection, transaction

    from edge_app.ingest import Ingestor
    from edge_app.models import EdgeStatus, WindowAggregate
    from edge_app.windows import ClosedWindow

    class ClosedOrder(Ingestor):
        def order_closed(self, closed):  # as they closed: the baseline
            pass

    class HouseholdOrder(Ingestor):
        def order_closed(self, closed):  # the order of the household-first key
            closed.sort(key=attrgetter("household"))

    ingestor = {"closed": ClosedOrder, HOUSEHOLD_FIRST: HouseholdOrder}.get(order, Ingestor)(
        edge_id=EDGE, topic="bench-store", bootstrap="", window_seconds=5, grace_seconds=1, idle_seconds=60)
    if order == HOUSEHOLD_FIRST:
        with transaction.atomic(), connection.cursor() as cursor:
            key_household_first(cursor, WindowAggregate._meta.db_table)
    if checkpoint_pages is not None:  # this connection's, the one that stores (SQLite checkpoints in the committer)
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA wal_autocheckpoint = {int(checkpoint_pages)}")
    EdgeStatus.for_edge(EDGE)
    names = [f"house-{i:06d}" for i in range(households)]
    rng = random.Random(SEED)
    seconds = []
    for end in range(ends):
        start = T0 + end * 5000
        rng.shuffle(names)
        ingestor.book.closed.extend(ClosedWindow(name, start, start + 5000, 100.0 + i % 97, 3)
                                    for i, name in enumerate(names))
        began = time.perf_counter()
        ingestor.store_closed()
        seconds.append(time.perf_counter() - began)
    stored = WindowAggregate.objects.count()
    if stored != households * ends:
        raise RuntimeError(f"stored {stored} windows of {households * ends}")
    timed = seconds[-_timed(ends):]
    return {"rate": households * len(timed) / sum(timed), "first_s": round(seconds[0], 2),
            "last_s": round(seconds[-1], 2)}


def key_household_first(cursor, table):
    """The unique key as (household, window_start), as before the household index: the same columns, so the
    ingest's ON CONFLICT still names it. SQLite keeps it in the table's definition, so the (still empty) table is
    made again with it. `cursor`: of an edge's SQLite database, Django's or sqlite3's (bench e2e's
    household-first-key baseline)."""
    cursor.execute(f'SELECT count(*) FROM "{table}"')
    if cursor.fetchone()[0]:
        raise RuntimeError(f"{table} is not empty: its key is turned round only before the edge stores anything")
    cursor.execute(f"SELECT type, sql FROM sqlite_master WHERE tbl_name = '{table}' AND sql IS NOT NULL")
    made = cursor.fetchall()
    shipped = f'CONSTRAINT "{UNIQUE_KEY}" UNIQUE ("window_start", "household")'
    (create,) = [sql for kind, sql in made if kind == "table"]
    if shipped not in create:
        raise RuntimeError(f"the edge's table no longer has the key this benchmark turns round: {create}")
    cursor.execute(f'DROP TABLE "{table}"')
    cursor.execute(create.replace(shipped, f'CONSTRAINT "{UNIQUE_KEY}" UNIQUE ("household", "window_start")'))
    for kind, sql in made:
        if kind == "index":
            cursor.execute(sql)
