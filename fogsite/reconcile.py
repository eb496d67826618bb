"""Compare what the edge stored with what the cloud holds.

Per household: the windows the edge stored (expected), how many it has as
ACKED, as pending (PENDING, SENT, or RESEND: to send again to a store that
lost it) and as refused (REFUSED: the cloud
refused them for good, each with its reason), which ACKED ones the cloud lacks
(missing), and windows the cloud holds more than once (duplicated). A tuple is
its household's window on both sides: the edge's ids begin again with its
database, the cloud knows a window by its household and start. Then the cloud's running per-state sums against the same
sums recomputed from every tuple it stores. Loss, duplicates and mismatches
are failures; pending and refused tuples are a failure only when asked
(`strict`), after the pipeline has gone quiet.

It may run while the pipeline does: the edge is read first, in one query, and the cloud after, so every
tuple the edge holds as ACKED was stored before the cloud is read (the other order counted one stored and
acknowledged between the two reads as missing). The running sums are read before and after the tuples; if
they moved, the store took tuples meanwhile, and the check is tried again, then left undone, and said so.
"""

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

from cloud_app.reader import CloudReader
from cloud_app.keys import Keys
from cloud_app.store import Record
from edge_app.models import EdgeStatus, Status, WindowAggregate

SUM_TOLERANCE = 1e-6  # relative: the Lua sums add in another order
SUM_TRIES = 3  # reads of every stored tuple while the running sums moved under them; then the check is left undone


@dataclass
class HouseholdRow:
    household: str
    expected: int = 0
    acked: int = 0
    pending: int = 0
    refused: int = 0
    missing_in_cloud: int = 0
    duplicated: int = 0

    @property
    def bad(self):
        return self.missing_in_cloud or self.duplicated or self.refused


@dataclass
class Report:
    edge: str
    households: list
    cloud_tuples: int
    unknown_to_edge: int  # cloud tuples of this edge the edge no longer has (retention) or never had
    sum_mismatches: list = field(default_factory=list)
    refusals: dict = field(default_factory=dict)  # reason -> REFUSED tuples
    sums_unchecked: str = ""  # why the per-state sums were not checked ('' when they were)
    # Why this edge database and this cloud store are not the two to compare ('' when they may be): what a
    # comparison of the wrong two reports (everything missing, or nothing to check) would say wrongly.
    not_a_pair: str = ""

    @property
    def totals(self):
        total = HouseholdRow("TOTAL")
        for row in self.households:
            for name in ("expected", "acked", "pending", "refused", "missing_in_cloud", "duplicated"):
                setattr(total, name, getattr(total, name) + getattr(row, name))
        return total

    def ok(self, strict=False):
        totals = self.totals
        return not (totals.missing_in_cloud or totals.duplicated or self.sum_mismatches or self.not_a_pair
                    or (strict and (totals.pending or totals.refused or self.sums_unchecked)))

    def as_dict(self):
        return {"edge": self.edge, "ok": self.ok(), "totals": asdict(self.totals), "cloud_tuples": self.cloud_tuples,
                "unknown_to_edge": self.unknown_to_edge, "sum_mismatches": self.sum_mismatches,
                "refusals": self.refusals, "not_a_pair": self.not_a_pair, "sums_unchecked": self.sums_unchecked,
                "households": [asdict(row) for row in self.households]}


def reconcile(edge_id, redis, prefix):
    keys = Keys(prefix)
    rows = defaultdict(lambda: None)
    edge_windows = {}  # (household, window start) -> whether the edge holds it as ACKED
    refusals = Counter()
    for household, start, status, refusal in WindowAggregate.objects.values_list(
            "household", "window_start", "status", "refusal").iterator(chunk_size=20_000):
        row = rows[household] or HouseholdRow(household)
        rows[household] = row
        row.expected += 1
        edge_windows[household, start] = status == Status.ACKED
        if status == Status.ACKED:
            row.acked += 1
        elif status == Status.REFUSED:
            row.refused += 1
            refusals[refusal] += 1
        else:
            row.pending += 1

    windows = Counter()  # (household, window start) -> copies the cloud holds: read after the edge
    for _, raw in redis.hscan_iter(keys.tuples(edge_id), count=10_000):
        record = Record.decode(raw)
        windows[record.household, record.ws] += 1
    for window, acked in edge_windows.items():
        if acked and window not in windows:
            rows[window[0]].missing_in_cloud += 1

    for (household, _), copies in windows.items():
        if copies > 1:
            row = rows[household] or HouseholdRow(household)
            rows[household] = row
            row.duplicated += copies - 1
    report = Report(edge_id, sorted((r for r in rows.values() if r), key=lambda r: r.household),
                    sum(windows.values()), len(windows.keys() - edge_windows))
    report.sum_mismatches, report.sums_unchecked = check_sums(redis, keys)
    report.refusals = dict(refusals)
    report.not_a_pair = not_a_pair(edge_id, redis, keys, report)
    return report


def not_a_pair(edge_id, redis, keys, report):
    """Why the edge database and the cloud store read are not the edge's and the store that acknowledged its
    tuples, or ''. reconcile runs where both can be read: on the edge's host, with the cloud store's
    FOG_CLOUD_REDIS_URL and FOG_CLOUD_KEY_PREFIX."""
    status = EdgeStatus.objects.filter(edge_id=edge_id).first()
    if status is None and not report.households and report.cloud_tuples:
        return (f"this edge database holds nothing of edge {edge_id}, and the cloud store {report.cloud_tuples} of its "
                "tuples: run reconcile against the edge's own database (on its host, FOG_DATABASE_URL)")
    recorded = status.cloud_store if status is not None else ""
    if not recorded or recorded.startswith("lost-"):  # none yet, or a lost store's tuples are being put back
        return ""
    named = redis.get(keys.store_id(edge_id))
    named = named.decode() if named is not None else None
    if named != recorded:
        return (f"the cloud store read is not the one that acknowledged edge {edge_id}'s tuples (the edge recorded "
                f"store {recorded}, this one is {named or 'unnamed'}): another store, then point FOG_CLOUD_REDIS_URL "
                "and FOG_CLOUD_KEY_PREFIX at the cloud's; or one emptied since, then the edge is sending everything "
                "again and records this store once it has: run reconcile again then")
    return ""


def check_sums(redis, keys):
    """The running per-state sums against the sums of every stored tuple (all edges): (problems, why unchecked)."""
    reader = CloudReader(redis, keys.prefix, 0)
    for _ in range(SUM_TRIES):
        before = reader.state_sums()  # over every shard
        recomputed, households = _stored_sums(redis, keys)
        stored = reader.state_sums()
        if stored == before:
            break
    else:
        return [], (f"the store took tuples while it was read, {SUM_TRIES} times: the per-state sums were not checked "
                    "(run reconcile again once the pipeline is quiet)")
    problems = []
    for state in sorted(set(recomputed) | set(stored)):
        total, count = recomputed[state]
        kept_households, kept_total, kept_count = stored.get(state, (0, 0.0, 0))
        if kept_count != count or abs(kept_total - total) > SUM_TOLERANCE * max(1.0, abs(total)):
            problems.append(f"{state}: running sum {kept_total:.3f} over {kept_count} tuples, "
                            f"stored tuples give {total:.3f} over {count}")
        if kept_households != len(households[state]):
            problems.append(f"{state}: counts {kept_households} households, stored tuples have {len(households[state])}")
    return problems, ""


def _stored_sums(redis, keys):
    recomputed = defaultdict(lambda: [0.0, 0])
    households = defaultdict(set)
    for key in redis.scan_iter(match=keys.all_tuples(), count=1000):
        for _, raw in redis.hscan_iter(key, count=10_000):
            record = Record.decode(raw)
            recomputed[record.state][0] += record.avg
            recomputed[record.state][1] += 1
            households[record.state].add(record.household)
    return recomputed, households
