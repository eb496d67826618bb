"""`bench store`: the ingest's store of each window end's burst into an edge database with a history.

At real time every household's window closes within a second of the
others, and the ingest stores the burst in parts (edge_app/ingest.py). The
figure stores `--ends` window ends of `--households` households, each burst
handed to `Ingestor.store_closed` as the shipped ingest does, in household
order; the baseline is the same bursts in the order they closed, here at
random as to household (as when many producers' delays mix). The two differ
in that order only, each in a fresh database of its own (a child process, as
`bench ingest`), so neither inherits the other's pages.

How fast a burst is stored depends on the history behind it: the figure is
over the last quarter of the ends, and the first and last ends' seconds are
reported beside it. It times the store only (the sort included): closing the
windows, which the ingest does before it stores them, is the same for both.
"""

import random
import time

from tooling.bench.common import Figure
from tooling.bench.edge import EDGE, T0, _child

ORDERS = ("household", "closed")
SEED = 20261129  # the same closing order for both runs


def run(households=100_000, ends=24, out=print):
    if households < 1 or ends < 1:
        raise RuntimeError(f"--households and --ends must be at least 1, not {households} and {ends}")
    out(f"store: {ends} window ends of {households:,} households each, stored as the ingest stores a burst; "
        "in household order, then in the order they closed (at random as to household), each into a fresh database")
    runs = {order: _child("store", {"households": households, "ends": ends, "order": order}) for order in ORDERS}
    shipped, baseline = runs["household"], runs["closed"]
    return [Figure(f"store bursts of {households:,} windows, the last {_timed(ends)} of {ends} ends", shipped["rate"],
                   "windows/s", baseline["rate"], "",
                   {"first end s": shipped["first_s"], "last end s": shipped["last_s"],
                    "baseline first end s": baseline["first_s"], "baseline last end s": baseline["last_s"],
                    "against": "the same bursts in the order they closed, at random as to household"})]


def _timed(ends):
    return max(1, ends // 4)


# --- the child's side -------------------------------------------------------


def child_store(households, ends, order):
    from edge_app.ingest import Ingestor
    from edge_app.models import EdgeStatus, WindowAggregate
    from edge_app.windows import ClosedWindow

    class ClosedOrder(Ingestor):
        def order_closed(self, closed):  # as they closed: the baseline
            pass

    ingestor = (Ingestor if order == "household" else ClosedOrder)(
        edge_id=EDGE, topic="bench-store", bootstrap="", window_seconds=5, grace_seconds=1, idle_seconds=60)
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
