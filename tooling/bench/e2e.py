"""`bench e2e`: the whole pipeline at real time on this machine, measured where a user sees it.

runsimulation -> Kafka -> runedge (and its RQ workers) -> runcloud -> Redis -> uvicorn -> a websocket
client that reads the dashboard's live feed, all real processes on the local broker and Redis.

- Freshness: for every tuple stored, the time from its window's end to the arrival, at the websocket
  client, of the dashboard update that carries it. The cloud's updates count the window ends of the
  tuples they carry (`ends`), so every tuple is measured, not a sample (up to ENDS_MAX ends an update: the
  run reports the share it timed). Grace, closing, delivery,
  storing, publishing and the page's own rate limit are all inside it.
- Throughput: readings/s the edge read (its own count) and tuples/s acknowledged (the live feed).
- Cost: CPU seconds per wall second and peak memory (PSS: pages shared after a fork counted once) of
  each process (with its children, those that ended during the run too: Redis rewrites its append-only
  file in one), Kafka and Redis included; and the whole machine's CPU, with the share of the time every
  core was busy and the CPU a virtual machine's host took for something else (MachineLoad).
- Where it waits: the busiest threads of those processes and each of the edge's loops, with the cores each
  used and how busy it was, the share of the time running or ready to run (tooling.bench.threads). A loop
  busy near 100% never waited for its input: that stage holds the rest back, whatever its CPU.

A run "holds" when, over the measured span, the p99 freshness stays within HOLD_FRESHNESS_S, the
tuples acknowledged keep pace with the households (at least HOLD_PACE of households / window per
second), and the edge counted no more than HOLD_LATE_SHARE of the readings late (a window closed by the
wall clock before a reading of it came: fresh figures bought by dropping readings do not hold), and the
feed timed at least HOLD_TIMED_SHARE of the tuples acknowledged (the cloud counts a bounded number of
window ends an update: a backlog's tuples beyond them go untimed), and the cloud refused no tuple for good
(a refused household never reaches the page, and its tuples' absence is not the pipeline's pace). Readings
are the edge's own count of what it read (a Kafka message may hold one or a batch), so an edge that
falls behind shows in readings/s too.
`--find-capacity` doubles the households until a run does not hold, then bisects; the size it reports
has held in two trials (search_capacity), since one trial's spread is about a bisection step.

Each run starts from a freshly rewritten append-only file on the cloud's Redis. How often Redis
rewrites it (a fork and a copy of the whole dataset) depends on the file's size at the last rewrite, so
without that a run would inherit the rewrites of the runs before it (a trial after a large one, none).
"""

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from types import SimpleNamespace

from django.conf import settings
from django.utils import timezone

from cloud_app.consumers import WS_MAX_BYTES
from cloud_app.engine import connect, is_cluster
from edge_app import compiled
from edge_app.control import LOOPS
from edge_app.models import HouseholdEntry, HouseholdIndexMark, Status, WindowAggregate
from tooling.bench.common import ROOT, Figure
from tooling.bench.threads import ThreadLoad, describe, listdir, proc_stat
from tooling.chaos.pipeline import Pipeline
from tooling.localservices import REDIS_TUNING
from tooling.localservices import services as local_services
from tooling.net import free_port, port_open, wait_for
from tooling.signals import end_child, start_child

WARMUP_S = 20  # the first windows close, workers and sockets settle, before anything counts
# ... and the measuring waits, after the warm-up, until a first tuple reached the page, at most this long: on a
# machine busy with other work (a test run) the pipeline's start can take longer than a short warm-up.
FIRST_TUPLE_WAIT_S = 60
HOLD_FRESHNESS_S = 5.0
HOLD_PACE = 0.95
HOLD_LATE_SHARE = 0.0001
HOLD_TIMED_SHARE = 0.99  # of the tuples acknowledged, timed by the feed (a p99 of fewer says little)
CAPACITY_SECONDS = 120  # each --find-capacity trial is measured this long
CAPACITY_START = 10_000
CAPACITY_RESOLUTION = 0.1  # bisect until the bounds are this close (relative)
AOF_REWRITE_WAIT_S = 120  # the rewrite that starts each run, at most this long
MACHINE_SAMPLE_S = 0.1  # the whole machine's CPU is sampled this often: a window end's burst lasts seconds
SATURATED = 0.95  # a sample with at least this share of every core busy: all cores busy
# A thread's "busy": the share of the time it was running or ready to run (tooling.bench.threads)
THREADS_FIGURE = "busiest threads, cores and busy"
LOOPS_FIGURE = "edge loops, cores and busy"
INDEX_FIGURE = "tuples not yet in the household index at the end"
REFUSED_FIGURE = "refused tuples, whole run"  # warm-up included: a run with any refused measured the refusal
# --baseline WHAT: the one setting the baseline run changes, and how the figures name it. A name under
# REDIS_SETTING is a setting of the cloud's Redis: every run sets REDIS_TUNING (as `make services` starts
# Redis) and the baseline's, with CONFIG SET, and puts the server's own values back after. Any other name is an
# environment variable of the pipeline's processes, or under SIMULATION_OPTION an option of runsimulation.
REDIS_SETTING = "redis:"
SIMULATION_OPTION = "runsimulation:"
# Under EDGE_SCHEMA a change to the edge database, made before the edge starts: its unique key turned round
# (HOUSEHOLD_FIRST_KEY), or a history of acknowledged windows a household (HISTORY_WINDOWS).
EDGE_SCHEMA = "edge-schema:"
HOUSEHOLD_FIRST_KEY = f"{EDGE_SCHEMA}unique-key"
HISTORY_WINDOWS = f"{EDGE_SCHEMA}history-windows"
# A long-running edge's history: a household's run of an index in household order spans pages of its own once
# it holds more windows than one index page has room for, so from about this many on each window put into it on
# its own lands on a page no other household's does (docs/SCALING.md).
HISTORY_WINDOWS_DEFAULT = 150
HISTORY_GAP_MS = 60_000  # the history ends at least this long before the run starts
HISTORY_PART_HOUSEHOLDS = 10_000  # the history is committed a part of this many households at a time
HISTORY_CACHE_KIB = 1_000_000  # the page cache of the connection that stores it
NEVER_INDEXED = 2**63 - 1  # the household-first-key baseline's mark: past every tuple, so no run is built
SEED = 0  # every run's runsimulation --seed, which names its households: the history's are the same
SIMULATION_SETTING = f"{SIMULATION_OPTION}--readings-per-message"
STAGGERED = {"FOG_WINDOW_STAGGER": "on"}  # --stagger: every run of the bench, the baseline's too unless it changes it
STAGGERED_LABEL = " with staggered windows"  # in the names of its figures
STAGGERED_KIND = "-staggered"  # a kind's run with --stagger, in a section of its own (but aligned-windows: it is one)
BASELINES = {
    "live-windows": ({"FOG_LIVE_WINDOWS": "off"}, "FOG_LIVE_WINDOWS=off (windows close by event time alone)"),
    "aligned-windows": ({"FOG_WINDOW_STAGGER": "off"},
                        "FOG_WINDOW_STAGGER=off (every household's windows start and end at once)"),  # needs --stagger
    "gc": ({"FOG_FULL_GC_SECONDS": "0"}, "FOG_FULL_GC_SECONDS=0 (CPython's own full garbage collections)"),
    "single-readings": ({SIMULATION_SETTING: "1"},
                        "runsimulation --readings-per-message 1 (a Kafka message a reading, keyed by household)"),
    "built-when-due": ({f"{SIMULATION_OPTION}--build-ahead": "off"},
                       "runsimulation --build-ahead off (each step built when due, sent once built)"),
    "spread-readings": ({f"{SIMULATION_OPTION}--spread": "on"},
                        "runsimulation --spread on (each household reads at a moment of its own in the step, "
                        "sent then)"),
    "rdb-compression": ({f"{REDIS_SETTING}rdbcompression": "yes"},
                        "rdbcompression yes (the cloud Redis compresses its AOF rewrites, Redis's default)"),
    # The edge before its household index was built in sorted runs (edge_app/household_index.py): each tuple
    # put into its household's run of the unique key as it is stored, and no sorted runs. Both runs hold a
    # history (BOTH_RUNS), where that costs a page a tuple (bench store: the ingest's store alone).
    "household-first-key": ({HOUSEHOLD_FIRST_KEY: "household,window_start"},
                            "the edge's unique key (household, window_start), each tuple put into its "
                            "household's run as it is stored, and no household index built in sorted runs "
                            "(the edge before it had one)"),
    # Every run starts from an empty edge database, as a new edge does; an edge that has run for a while stores
    # each window into households' runs of its unique index that span pages of their own.
    "history": ({HISTORY_WINDOWS: str(HISTORY_WINDOWS_DEFAULT)},
                f"an edge database that already holds {HISTORY_WINDOWS_DEFAULT} acknowledged windows of each "
                "household, as after a while of running (every run starts from an empty one)"),
}
# What both runs get with a baseline, so the two differ in the baseline's change alone.
BOTH_RUNS = {"household-first-key": ({HISTORY_WINDOWS: str(HISTORY_WINDOWS_DEFAULT)},
                                     f"{HISTORY_WINDOWS_DEFAULT} acknowledged windows of each household in the edge's "
                                     "database before it starts")}


def _timed_ends(updates):
    """(arrival ms, window end ms, tuples) of every window end the feed's updates carry: the tuples the page got
    that are timed (an update's other keys are not window ends)."""
    return ((arrived, int(end), count) for arrived, _, ends in updates for end, count in ends.items()
            if end.isdigit())


def _simulation_runs(pipeline):
    """RuntimeError if the stream ended before the run: what is measured after that is no longer real time."""
    if pipeline.simulation.poll() is not None:
        raise RuntimeError(f"runsimulation ended early (exit {pipeline.simulation.returncode})")


def _wait_for_a_tuple(feed, pipeline):
    """Until a tuple reached the page (FIRST_TUPLE_WAIT_S at most): a run measured before the pipeline delivers
    measures its start. RuntimeError, saying what the feed saw, if none comes."""
    deadline = time.monotonic() + FIRST_TUPLE_WAIT_S
    while not any(_timed_ends(feed.updates)):
        _simulation_runs(pipeline)
        if time.monotonic() >= deadline:
            raise RuntimeError(f"no tuple reached the dashboard's websocket within the warm-up and "
                               f"{FIRST_TUPLE_WAIT_S} s more: {len(feed.updates)} updates without one, "
                               f"{feed.drops} drops of the feed (the last: {feed.error or 'none'})")
        time.sleep(0.25)


class FeedClient:
    """Reads the dashboard's websocket in a thread of its own; records every update's arrival."""

    def __init__(self, url):
        self.url, self.updates, self.error, self.drops = url, [], None, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self):
        import websockets

        while not self.stop.is_set():  # like the page: a dropped feed is reconnected, and counted
            try:
                async with websockets.connect(self.url, origin="http://127.0.0.1", max_size=2**24) as socket:
                    while not self.stop.is_set():
                        try:
                            raw = await asyncio.wait_for(socket.recv(), 0.5)
                        except TimeoutError:
                            continue
                        arrived = time.time() * 1000
                        message = json.loads(raw)
                        if message.get("type") == "update":
                            self.updates.append((arrived, message.get("acked", 0), message.get("ends", {})))
            except (OSError, websockets.ConnectionClosed) as exc:
                self.drops += 1
                self.error = exc
                await asyncio.sleep(0.5)

    def start(self):
        self.thread.start()
        return self

    def close(self):
        self.stop.set()
        self.thread.join(5)


def _tree(pid):
    """pid and every descendant's pid (the edge's workers, uvicorn's workers)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in listdir(f"/proc/{current}/task"):
            try:
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo += [int(c) for c in handle.read().split()]
            except OSError:
                pass
    return found


def _cpu_seconds(pid):
    """User and system CPU seconds of `pid` and of its children that have ended and been waited for: a
    Redis AOF rewrite, say, runs in a child of its own for a second or more and is gone by the next sample."""
    try:
        _, fields = proc_stat(f"/proc/{pid}/stat")
        return sum(int(field) for field in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _pss_mib(pid):
    """The process's proportional set size: a page shared by n processes counts 1/n in each, so the sum over a
    tree is what it holds, where RSS counts the pages a fork shares (the edge's workers, Redis's rewrite) in
    every process again."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Meter:
    """CPU seconds and peak memory (PSS) of named process trees, sampled about once a second."""

    def __init__(self, roots):
        self.roots = roots  # name -> pid
        self.peak = {name: 0.0 for name in roots}
        self.cpu_start = {}

    def _cpu(self):
        return {name: sum(_cpu_seconds(p) for p in _tree(pid)) for name, pid in self.roots.items()}

    def start(self):
        self.cpu_start, self.started = self._cpu(), time.monotonic()

    def sample(self):
        for name, pid in self.roots.items():
            self.peak[name] = max(self.peak[name], sum(_pss_mib(p) for p in _tree(pid)))

    def result(self):
        elapsed = time.monotonic() - self.started
        end = self._cpu()
        return {name: {"cpu": round((end[name] - self.cpu_start[name]) / elapsed, 2),
                       "pss_mib": round(self.peak[name], 1)} for name in self.roots}


class MachineLoad:
    """The whole machine's CPU (/proc/stat), every MACHINE_SAMPLE_S in a thread of its own: the mean in
    cores, and the share of the time every core was busy. While they all are, a stage that is slow is slow
    because the others took the CPU, so making one process parallel cannot help; only CPU saved anywhere can.

    On a virtual machine the host may run something else on a core this machine wanted (steal): the mean
    in cores counts this machine's own work only, and the time stolen is reported beside it, since it
    makes a run on a busy host slower than the same run on a quiet one. A core stolen from is busy for the
    share of the time every core was (it was not free to run the pipeline either)."""

    def __init__(self):
        self.samples, self.done = [], threading.Event()  # (busy, stolen) shares of every core's time
        self.thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _read():
        """(total, idle, steal) jiffies of all cores. Guest time is counted in user time already."""
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:9]]
        fields += [0] * (8 - len(fields))  # a kernel too old to count steal
        return sum(fields), fields[3] + fields[4], fields[7]  # idle and iowait; steal

    def _run(self):
        total, idle, steal = self._read()
        while not self.done.wait(MACHINE_SAMPLE_S):
            now_total, now_idle, now_steal = self._read()
            if now_total > total:
                span = now_total - total
                stolen = (now_steal - steal) / span
                self.samples.append((1 - (now_idle - idle) / span - stolen, stolen))
            total, idle, steal = now_total, now_idle, now_steal

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.done.set()
        self.thread.join(2)

    def result(self):
        self.stop()
        with open("/proc/stat") as handle:  # the lines "cpu0", "cpu1", ... after the total
            cores = sum(1 for line in handle if line.startswith("cpu")) - 1
        samples = self.samples or [(0.0, 0.0)]
        return {"cores": cores, "mean_cores": round(sum(b for b, _ in samples) / len(samples) * cores, 2),
                "stolen_cores": round(sum(s for _, s in samples) / len(samples) * cores, 2),
                "saturated_share": round(sum(1 for b, s in samples if b + s >= SATURATED) / len(samples), 2)}


def _read(pipeline):
    """Readings the edge has counted so far (one a message or batched, as the simulation sent them)."""
    return sum(row[0] for row in pipeline.rows("select readings from edge_app_edgestatus"))


# Each stage of a tuple's way to the page, from the edge's own timestamps (window_end is event time,
# the others the edge's clock, which at real time the simulation's stamps follow).
STAGES = {  # name -> the stage's length from (window_end, created_at, sent_at, acked_at), all epoch ms
    "end -> stored (grace, closing, insert)": lambda end, created, sent, acked: created - end,
    "stored -> sent (queue)": lambda end, created, sent, acked: sent - created,
    "sent -> acked (link, cloud, commit)": lambda end, created, sent, acked: acked - sent,
    "end -> acked": lambda end, created, sent, acked: acked - end,
}


def _stages(pipeline, first_ms, last_ms, after_id):
    """{stage: (p50 s, p99 s)} over the tuples whose window ended in [first_ms, last_ms]: which stage of the
    edge's part of freshness grows with the load (the rest, acked -> page, is the cloud's publishing). Those
    are stored after the measuring began, so past `after_id` (the newest id then): a range of the primary key,
    not a scan of a history (window_end has no index)."""
    ms = "(julianday({}) - 2440587.5) * 86400000.0"
    rows = pipeline.rows(
        f"select window_end, {ms.format('created_at')}, {ms.format('sent_at')}, {ms.format('acked_at')} "
        f"from edge_app_windowaggregate where id > {int(after_id)} and acked_at is not null "
        f"and window_end between {int(first_ms)} and {int(last_ms)}")
    result = {}
    for name, length in STAGES.items():
        values = sorted(length(*row) for row in rows)
        if values:
            result[name] = tuple(round(values[min(len(values) - 1, int(q * len(values)))] / 1000, 2)
                                 for q in (0.5, 0.99))
    return result


# The values each EDGE_SCHEMA change takes.
SCHEMA_VALUES = {HOUSEHOLD_FIRST_KEY: lambda value: value == BASELINES["household-first-key"][0][HOUSEHOLD_FIRST_KEY],
                 HISTORY_WINDOWS: lambda value: value.isascii() and value.isdigit()}


def _change_schema(pipeline, schema, households, out=lambda line: None):
    """The EDGE_SCHEMA changes, in the pipeline's edge database before the edge starts: the unique key turned
    round (HOUSEHOLD_FIRST_KEY, onto the still empty table, the household index's mark put past any tuple so no
    run is built), then a history of `households` (HISTORY_WINDOWS) in the household index too."""
    from tooling.bench.store import key_household_first

    unknown = {name: value for name, value in schema.items() if not SCHEMA_VALUES.get(name, lambda _: False)(value)}
    if unknown:
        raise ValueError(f"no such change to the edge's schema: {unknown}")
    history = int(schema.get(HISTORY_WINDOWS, 0))
    with closing(sqlite3.connect(pipeline.folder / "edge.sqlite3", isolation_level=None)) as db:
        if HOUSEHOLD_FIRST_KEY in schema:
            _in_transaction(db, lambda: key_household_first(db.cursor(), WindowAggregate._meta.db_table))
            _mark_indexed(db, NEVER_INDEXED)
        if history:  # a while at many households: said, with how long
            began = time.monotonic()
            _store_history(db, households, history, household_first=HOUSEHOLD_FIRST_KEY in schema)
            out(f"e2e: the edge's database holds {history:,} acknowledged windows of each household before it "
                f"starts (stored in {time.monotonic() - began:.0f} s)")


def _in_transaction(db, work):
    """`work` in one transaction of our own (autocommit `db`: Python's sqlite3 would commit a DROP and a CREATE
    apart). A failure SQLite already rolled back (a full disk) is raised as it is, not as "no transaction"."""
    db.execute("BEGIN IMMEDIATE")
    try:
        work()
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _store_history(db, households, windows, household_first=False):
    """`windows` acknowledged windows of each of the simulation's `households` (named as runsimulation names them
    at SEED), ending at least HISTORY_GAP_MS before now: the rows a long-running edge keeps, for the ingest to
    store the run's windows among. In the unique key's order within a part of HISTORY_PART_HOUSEHOLDS households,
    each part committed with its household index entries (with the shipped key) so the WAL is checkpointed as
    it goes: minutes, not the hours the ingest's way would take."""
    from simulation.synthetic import SyntheticHousehold

    width = settings.FOG_WINDOW_SECONDS * 1000
    # The newest starts a whole window before the window holding now - gap: none is a live window's, however long.
    last = (int(time.time() * 1000) - HISTORY_GAP_MS) // width * width - width
    acked = timezone.now().strftime("%Y-%m-%d %H:%M:%S.%f")  # as Django keeps an aware time in SQLite: UTC, naive
    starts = [(start, datetime.fromtimestamp(start / 1000, UTC).date().isoformat())
              for start in (last - k * width for k in range(windows - 1, -1, -1))]
    table = WindowAggregate._meta.db_table
    insert = (f"INSERT INTO {table} (household, window_start, window_end, day, average_w, "
              "readings, status, postal_code, refusal, attempts, created_at, sent_at, acked_at) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, '', '', 1, ?, ?, ?)")
    entries = (f"INSERT INTO {HouseholdEntry._meta.db_table} (household, window_start, aggregate_id) "
               f"SELECT household, window_start, id FROM {table} WHERE id > ? ORDER BY household, window_start")
    db.execute(f"PRAGMA cache_size = -{HISTORY_CACHE_KIB}")  # a part's pages of every window's run, written once
    for first in range(0, households, HISTORY_PART_HOUSEHOLDS):
        names = sorted(SyntheticHousehold(SEED, i).household
                       for i in range(first, min(first + HISTORY_PART_HOUSEHOLDS, households)))
        order = (((name, when) for name in names for when in starts) if household_first
                 else ((name, when) for when in starts for name in names))
        rows = ((name, start, start + width, day, 500.0, 3, int(Status.ACKED), acked, acked, acked)
                for name, (start, day) in order)

        def part(rows=rows):
            before = db.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]
            db.executemany(insert, rows)
            if not household_first:
                db.execute(entries, (before,))
        _in_transaction(db, part)
    if not household_first:
        _mark_indexed(db, db.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0])


def _mark_indexed(db, indexed_to):
    """The household index's mark (HouseholdIndexMark): the tuples up to `indexed_to` have their entries."""
    db.execute(f"INSERT INTO {HouseholdIndexMark._meta.db_table} (id, indexed_to, indexed_at) VALUES (?, ?, NULL) "
               "ON CONFLICT (id) DO UPDATE SET indexed_to = excluded.indexed_to",
               (HouseholdIndexMark.PK, indexed_to))


def _refused(pipeline):
    """{reason: tuples} the cloud refused for good so far: never on the page, so a run with any measured the
    refusal (a quota, say), not the pipeline's pace."""
    return dict(pipeline.rows(f"select refusal, count(*) from edge_app_windowaggregate where status = "
                              f"{int(Status.REFUSED)} group by refusal"))


def _index_behind(pipeline):
    """Tuples stored but not yet in the household index at the end (edge_app/household_index.py): at most about
    a run's worth, HOUSEHOLD_INDEX_EVERY_SECONDS of tuples, if its runs keep up. None: no run is built."""
    (newest, indexed_to), = pipeline.rows(
        f"select coalesce(max(id), 0), (select coalesce(max(indexed_to), 0) from "
        f"{HouseholdIndexMark._meta.db_table}) from {WindowAggregate._meta.db_table}")
    return None if indexed_to == NEVER_INDEXED else newest - min(indexed_to, newest)


def _late(pipeline):
    """Readings the edge has counted late so far (closed windows they came too late for)."""
    return sum(row[0] for row in pipeline.rows("select late from edge_app_edgestatus"))


@contextmanager
def _single_redis(redis_url):
    """A blocking client of the cloud's Redis, closed after; None for a cluster (not looked at)."""
    if is_cluster(redis_url):
        yield None
        return
    client = connect(redis_url)
    try:
        yield client
    finally:
        client.close()


def _aof_rewrites(redis_url):
    """How many times the cloud's Redis has rewritten its append-only file (a fork and a copy of the whole
    dataset, while every write still waits for its fsync): one cause of a long tail in freshness."""
    import redis

    with _single_redis(redis_url) as client:
        try:
            return client.info("persistence").get("aof_rewrites") if client else None
        except redis.RedisError:  # a server that does not say: not reported
            return None


def _rewrite_aof(redis_url):
    """Rewrite the cloud Redis's append-only file and wait until it is done (see the module docstring).
    Left as it is: a cluster's URL, a Redis without an append-only file, or one that refuses the command."""
    import redis

    with _single_redis(redis_url) as client:
        try:
            if client is None or not client.info("persistence").get("aof_enabled"):
                return
            try:
                client.bgrewriteaof()  # while a background save runs, Redis schedules the rewrite after it
            except redis.ResponseError as exc:
                if "in progress" not in str(exc):
                    return  # not allowed here (an ACL, a renamed command)
            deadline = time.monotonic() + AOF_REWRITE_WAIT_S
            while True:
                state = client.info("persistence")
                if not (state.get("aof_rewrite_in_progress") or state.get("aof_rewrite_scheduled")):
                    break
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"the cloud Redis did not finish rewriting its append-only file in "
                                       f"{AOF_REWRITE_WAIT_S} s")
                time.sleep(0.2)
            if state.get("aof_last_bgrewrite_status") != "ok":
                raise RuntimeError("the cloud Redis failed to rewrite its append-only file (see its log)")
        except redis.RedisError:
            return  # a server that does not say: the run goes on as it is


def _redis_values(redis_url, names):
    """{name: value} of the cloud Redis's settings `names`; RuntimeError where that Redis cannot say (a cluster,
    a setting it lacks, CONFIG refused), which is also where a baseline could not change them."""
    import redis

    with _single_redis(redis_url) as client:
        if client is None:
            raise RuntimeError(f"the cloud Redis's {', '.join(names)} can be set for a run on a single Redis only, "
                               "not on a cluster")
        try:
            values = {name: client.config_get(name).get(name) for name in names}
        except redis.RedisError as exc:
            raise RuntimeError(f"the cloud Redis refused CONFIG GET: {exc}") from exc
    missing = sorted(name for name, value in values.items() if value is None)
    if missing:
        raise RuntimeError(f"the cloud Redis has no setting named {', '.join(missing)}")
    return values


def _configure_redis(redis_url, changes):
    """CONFIG SET `changes` on the cloud's (single) Redis."""
    import redis

    with _single_redis(redis_url) as client:
        try:
            for name, value in changes.items():
                client.config_set(name, value)
        except redis.RedisError as exc:
            raise RuntimeError(f"the cloud Redis refused CONFIG SET {changes}: {exc}") from exc


def _redis_part(changes):
    """The cloud Redis's settings among a baseline's `changes`, by their CONFIG names."""
    return {name[len(REDIS_SETTING):]: value for name, value in changes.items() if name.startswith(REDIS_SETTING)}


def _weighted_percentile(samples, share):
    total = sum(count for _, count in samples)
    ordered, seen = sorted(samples), 0
    for value, count in ordered:
        seen += count
        if seen >= share * total:
            return value
    return ordered[-1][0]


def measure(households, seconds, step=2, out=print, settings_env=None, warmup=WARMUP_S):
    """One run, with the pipeline's environment (or the cloud Redis's settings, see REDIS_SETTING) changed by
    `settings_env`: returns a dict of the figures (see the module docstring)."""
    changes, url = settings_env or {}, settings.FOG_CLOUD_REDIS_URL
    redis_changes = _redis_part(changes)
    wanted = {**REDIS_TUNING, **redis_changes}  # as `make services` starts Redis, but for the baseline's change
    try:
        restore = _redis_values(url, wanted)
    except RuntimeError as exc:
        if redis_changes:
            raise
        out(f"e2e: the cloud Redis's {', '.join(wanted)} left as it is ({exc})")
        wanted = restore = {}
    try:
        _configure_redis(url, wanted)
        return _measure(households, seconds, step, out,
                        {k: v for k, v in changes.items() if not k.startswith(REDIS_SETTING)}, warmup,
                        described=changes)
    finally:
        try:
            _configure_redis(url, restore)
        except RuntimeError as exc:  # the run's own error, if any, is the one raised
            out(f"e2e: could not put the cloud Redis's settings back to {restore} ({exc}): CONFIG SET them by hand")


def _measure(households, seconds, step, out, settings_env, warmup, described):
    services = SimpleNamespace(bootstrap=settings.FOG_KAFKA_BOOTSTRAP, redis_url=settings.FOG_CLOUD_REDIS_URL)
    edge_redis = settings.FOG_EDGE_REDIS_URL.rsplit("/", 1)[0] + "/13"
    _rewrite_aof(services.redis_url)
    # The stream outlasts the measuring however long the first tuple keeps it waiting (it is ended with the rest).
    until = warmup + FIRST_TUPLE_WAIT_S + seconds + 10
    options = {k: v for k, v in (settings_env or {}).items() if k.startswith(SIMULATION_OPTION)}
    simulation_args = [part for name, value in options.items() for part in (name[len(SIMULATION_OPTION):], value)]
    pipeline = Pipeline(services, edge_redis, households=households, until=until, speed=1.0, proxied=False,
                        simulation_args=["--start", "now", "--step", str(step), "--seed", str(SEED),
                                         *simulation_args],
                        idle_seconds=None)  # the edge as users run it
    for name in {name for changed, _ in BASELINES.values() for name in changed}:
        pipeline.env.pop(name, None)  # the measured run has the defaults, whatever this shell sets
    schema = {k: v for k, v in (settings_env or {}).items() if k.startswith(EDGE_SCHEMA)}
    pipeline.env.update({k: v for k, v in (settings_env or {}).items() if k not in options and k not in schema})
    web = feed = machine = threads = web_log = None
    try:
        if schema:
            _change_schema(pipeline, schema, households, out)
        web_port = free_port()
        web_log = open(pipeline.folder / "web.log", "ab")
        pipeline.start_cloud()
        pipeline.start_edge()
        web = start_child([sys.executable, "-m", "uvicorn", "fogsite.asgi:application", "--host", "127.0.0.1",
                           "--port", str(web_port), "--lifespan", "off", "--ws-max-size", str(WS_MAX_BYTES),
                           "--log-level", "warning"],
                          cwd=ROOT, env=pipeline.env, stdout=web_log, stderr=subprocess.STDOUT,
                          start_new_session=True)
        wait_for(lambda: port_open("127.0.0.1", web_port), 30, "the web server")
        feed = FeedClient(f"ws://127.0.0.1:{web_port}/ws/dashboard/").start()
        time.sleep(3)  # workers up and the link reported before the first window closes
        pipeline.start_simulation()
        out(f"e2e: {households:,} households, a reading every {step:g} s, at real time, "
            f"{', '.join(f'{k}={v}' for k, v in described.items()) or 'the default settings'}: "
            f"{warmup} s warm-up, then {seconds} s measured")
        time.sleep(warmup)
        _wait_for_a_tuple(feed, pipeline)
        roots = {"simulation": pipeline.simulation.pid, "edge": pipeline.edge.pid, "cloud": pipeline.cloud.pid,
                 "web": web.pid}
        roots.update({s.name: s.our_pid() for s in local_services(settings, settings.BASE_DIR, settings.VAR_DIR)
                      if s.our_pid()})
        meter = Meter(roots)
        meter.start()
        machine = MachineLoad().start()
        labels = {pid: f"{loop} loop" for loop in LOOPS if (pid := pipeline.loop_pid(loop))}
        threads = ThreadLoad(roots, _tree, {pipeline.edge.pid: "supervisor", **labels}).start()
        late_before = _late(pipeline)
        rewrites_before = _aof_rewrites(services.redis_url)
        read_before = _read(pipeline)
        first_id = pipeline.rows("select coalesce(max(id), 0) from edge_app_windowaggregate")[0][0]
        started_ms, first = time.time() * 1000, len(feed.updates)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            meter.sample()
            _simulation_runs(pipeline)
            time.sleep(1.0)
        elapsed_s = (time.time() * 1000 - started_ms) / 1000
        read = _read(pipeline) - read_before
        updates = feed.updates[first:]
        costs, load, busiest = meter.result(), machine.result(), threads.result()
        drops = feed.drops
        late = _late(pipeline) - late_before
        refused = _refused(pipeline)
        stages = _stages(pipeline, started_ms, started_ms + elapsed_s * 1000, first_id)
        behind = _index_behind(pipeline)
        rewrites = _aof_rewrites(services.redis_url)
        rewrites = None if rewrites is None or rewrites_before is None else rewrites - rewrites_before
    finally:  # nested, so a second Ctrl-C during one step of the cleanup still runs the others
        try:
            if machine:
                machine.stop()
            if threads:
                threads.stop()
            if web:  # first: in a session of its own, nothing else would end it
                end_child(web)
        finally:
            try:
                if feed:
                    feed.close()
            finally:
                try:
                    pipeline.close(keep_logs=bool(os.environ.get("FOG_BENCH_KEEP_LOGS")))
                finally:  # the topic and the cloud keys (gigabytes at capacity) go even if a process would not
                    pipeline.forget()
                    if web_log:
                        web_log.close()
    samples = [(arrived - end, count) for arrived, end, count in _timed_ends(updates)]
    if not samples:
        raise RuntimeError("no tuple reached the dashboard's websocket")
    acked = sum(acked for _, acked, _ in updates)
    window_s = settings.FOG_WINDOW_SECONDS
    result = {"households": households, "step_s": step, "seconds": round(elapsed_s, 1),
              "readings_per_s": round(read / elapsed_s), "tuples_per_s": round(acked / elapsed_s),
              "needed_tuples_per_s": round(households / window_s),
              "freshness_p50_s": round(_weighted_percentile(samples, 0.5) / 1000, 2),
              "freshness_p99_s": round(_weighted_percentile(samples, 0.99) / 1000, 2),
              "freshness_max_s": round(max(v for v, _ in samples) / 1000, 2), "feed_drops": drops, "late": late,
              "refused": sum(refused.values()),
              "redis_aof_rewrites": rewrites, "machine": load, "window_book": compiled.state()[0],
              "processes": costs, "stages": stages, "threads": busiest, "index_behind": behind,
              # the cloud counts at most ENDS_MAX window ends an update: tuples beyond them are not timed
              "timed_share": round(sum(count for _, count in samples) / max(acked, 1), 4)}
    out("e2e: where the time goes (p50 / p99 s): " + ", ".join(f"{name} {p50} / {p99}"
                                                             for name, (p50, p99) in stages.items()))
    if refused:
        out("e2e: the cloud refused tuples for good, so this run does not hold whatever its pace: " +
            ", ".join(f"{reason} x{count:,}" for reason, count in sorted(refused.items())))
    result["holds"] = holds(result, read)
    return result


def holds(result, read):
    """Whether a run's figures hold (the module docstring); `read`, the readings the edge read meanwhile."""
    return (not result["refused"] and result["freshness_p99_s"] <= HOLD_FRESHNESS_S
            and result["timed_share"] >= HOLD_TIMED_SHARE
            and result["tuples_per_s"] >= HOLD_PACE * result["needed_tuples_per_s"]
            and result["late"] <= HOLD_LATE_SHARE * max(read, 1))


def _cpu_total(result):
    return sum(cost["cpu"] for cost in result["processes"].values())


def _baseline_extra(result):
    """The baseline run's own figures, named "baseline ...", beside the run's: a setting that saves CPU shows in
    them even when the freshness of the two differs by less than a run's spread."""
    return {f"baseline {name}": value for name, value in _figures(result).extra.items() if name != "households"}


def _figures(result, label=""):
    extra = {"p50 s": result["freshness_p50_s"], "max s": result["freshness_max_s"],
             "households": f"{result['households']:,}", "readings/s": f"{result['readings_per_s']:,}",
             "tuples/s": f"{result['tuples_per_s']:,} of {result['needed_tuples_per_s']:,} needed",
             "late readings": f"{result['late']:,}", "holds": result["holds"], "feed drops": result["feed_drops"]}
    if "refused" in result:  # runs written before it was counted lack it
        extra[REFUSED_FIGURE] = f"{result['refused']:,}"
    extra["tuples timed"] = f"{result['timed_share']:.1%}"
    if "index_behind" in result:  # runs written before it was reported lack it
        behind = result["index_behind"]
        extra[INDEX_FIGURE] = "none built" if behind is None else f"{behind:,}"
    if "window_book" in result:  # edge_app/compiled.py: whether the edge ran its window book compiled
        extra["window book"] = result["window_book"]
    if result.get("redis_aof_rewrites") is not None:
        extra["redis AOF rewrites during it"] = result["redis_aof_rewrites"]
    machine = result["machine"]
    extra["cpu, all processes"] = f"{_cpu_total(result):.2f}"
    extra["machine cpu"] = f"{machine['mean_cores']:.2f} of {machine['cores']} cores"
    extra["all cores busy"] = f"{machine['saturated_share']:.0%} of the time"
    extra["cpu the host took (steal)"] = f"{machine['stolen_cores']:.2f} cores"
    extra.update({f"{name} cpu/pss": f"{c['cpu']:.2f} / {c['pss_mib']:.0f} MiB" for name, c in result["processes"].items()})
    if result.get("threads"):  # a thread busy near 100% never waited for its input: the stage that holds the rest back
        extra[THREADS_FIGURE] = describe(result["threads"])
        extra[LOOPS_FIGURE] = describe(result["threads"], [f"edge {loop} loop" for loop in LOOPS])
    extra.update({f"{name} p50/p99 s": f"{p50} / {p99}" for name, (p50, p99) in result["stages"].items()})
    return Figure(f"e2e freshness p99{label} (window end -> page)", result["freshness_p99_s"], "s", None,
                  "p99 <= 3 s at real time", extra)


def search_capacity(trial, start):
    """(the largest size that held twice, the smallest above it that did not, every trial's result) of
    trials `trial(size)` (a result with "households" and "holds"): double from `start` until a trial does
    not hold, then bisect until the bounds are CAPACITY_RESOLUTION apart. The answer is then tried again,
    since one trial's spread is about a bisection step: a size that held once and not twice does not hold,
    and the search goes on below it. (None, ...) when even the smallest size did not hold."""
    results, good, bad = [], None, None
    size, confirming = start, False
    while True:
        result = trial(size)
        results.append(result)
        if confirming and result["holds"]:
            return result, bad, results
        if result["holds"]:
            good = result
        else:
            bad = result
            if confirming:  # the best candidate now: the largest size below it that held
                held = [r for r in results if r["holds"] and r["households"] < size]
                good = max(held, key=lambda r: r["households"]) if held else None
        confirming = False
        if bad is None:
            size *= 2
        elif good is None:
            size = bad["households"] // 2
            if size < 100:
                return None, bad, results
        elif (bad["households"] - good["households"]) / good["households"] <= CAPACITY_RESOLUTION:
            size, confirming = good["households"], True
        else:
            size = (good["households"] + bad["households"]) // 2


def run(households=1000, seconds=60, step=2, find_capacity=False, baseline=None, warmup=WARMUP_S, stagger=False,
        out=print):
    """`baseline`: None, or a key of BASELINES (True, as `bench all` passes it: live-windows). `stagger`: every
    run with FOG_WINDOW_STAGGER=on, the baseline's too unless it is the setting the baseline changes."""
    common, label = (STAGGERED, STAGGERED_LABEL) if stagger else ({}, "")
    if baseline == "aligned-windows" and not stagger:
        raise RuntimeError("--baseline aligned-windows is the baseline of --stagger: without it both runs are aligned")
    changed, described = BASELINES["live-windows" if baseline is True else baseline] if baseline else ({}, None)
    both, both_described = BOTH_RUNS.get(baseline, ({}, None))
    common = {**common, **both}
    if _redis_part(changed):  # a cluster, or a Redis that refuses CONFIG, is said before the first run
        _redis_values(settings.FOG_CLOUD_REDIS_URL, _redis_part(changed))
    if not find_capacity:
        figure = _figures(measure(households, seconds, step, out, settings_env=common, warmup=warmup), label)
        if baseline:  # the same run with one setting changed
            other = measure(households, seconds, step, out, settings_env={**common, **changed}, warmup=warmup)
            figure.baseline = other["freshness_p99_s"]
            figure.extra["baseline"] = described
            if both_described:
                figure.extra["both runs"] = both_described
            figure.extra.update(_baseline_extra(other))
        return [figure]

    def search(env, who=""):
        def trial(size):
            result = measure(size, CAPACITY_SECONDS, step, out, settings_env=env, warmup=warmup)
            out(f"e2e{who}: {size:,} households {'hold' if result['holds'] else 'do not hold'} (p99 "
                f"{result['freshness_p99_s']} s, {result['tuples_per_s']:,}/{result['needed_tuples_per_s']:,} tuples/s)")
            return result

        return search_capacity(trial, households if households > 1000 else CAPACITY_START)

    def trials(results):
        return ", ".join(f"{r['households']:,}{'' if r['holds'] else ' (no)'}" for r in results)

    good, bad, results = search(common)
    if good is None:
        raise RuntimeError("not even the smallest trial held")
    figure = Figure(f"e2e capacity{label} (households at real time, p99 freshness <= 5 s, keeping pace)",
                    good["households"], "households", None, ">= 100,000 at a reading every 2 s",
                    {"first that did not hold": f"{bad['households']:,}" if bad else "none tried",
                     "trials": trials(results)})
    if baseline:  # the same search with one setting changed
        other, _, other_results = search({**common, **changed}, " baseline")
        figure.baseline = other["households"] if other else None
        figure.extra.update({"baseline": described, "baseline trials": trials(other_results)})
        if both_described:
            figure.extra["both runs"] = both_described
    return [figure, _figures(good, f"{label} at capacity")]


# --- the generated section of docs/BENCHMARKS.md ---------------------------------------------------

KINDS = {"size": "at one size, beside live windows off", "capacity": "the capacity search",
         "gc": "at one size, beside CPython's own full garbage collections",
         "rdb-compression": "at one size, beside the cloud Redis compressing its AOF rewrites",
         "single-readings": "at one size, beside the simulation sending a Kafka message a reading",
         "built-when-due": "at one size, beside the simulation building each step when it is due",
         "spread-readings": "at one size, beside each household reading at a moment of its own in the step",
         "aligned-windows": "at one size, staggered windows beside aligned ones",
         "household-first-key": "at one size, both with a history, beside the edge's unique key household-first "
                                "(before the household index)",
         "history": "at one size, beside an edge database with a history"}


def markers(kind):
    """The generated section of one kind of run: a fixed size (`size`) or `--find-capacity` (`capacity`)."""
    return f"<!-- begin generated: bench e2e {kind} -->", f"<!-- end generated: bench e2e {kind} -->"


def all_kinds():
    return [*KINDS, *(kind + STAGGERED_KIND for kind in KINDS if kind != "aligned-windows")]


def title(kind, figures=()):
    """The heading of a kind's section; a capacity search's names its baseline, if it had one."""
    base = kind.removesuffix(STAGGERED_KIND)
    text = KINDS[base] + (", with staggered windows" if base != kind else "")
    baseline = next((f.extra["baseline"] for f in figures if f.extra.get("baseline")), None)
    if base == "capacity" and baseline:
        text += f", beside the same search with {baseline}"
    return text


def kind_of(figures):
    if any(f.name.startswith("e2e capacity") for f in figures):
        kind = "capacity"
    else:
        own = {described: kind for kind, (_, described) in BASELINES.items() if kind in KINDS}
        kind = next((own[f.extra["baseline"]] for f in figures if f.extra.get("baseline") in own), "size")
    staggered = any(STAGGERED_LABEL in f.name for f in figures)
    return kind + STAGGERED_KIND if staggered and kind != "aligned-windows" else kind


def section(figures, command):
    """Markdown of one `bench e2e` run, in the section of its kind (runs take long, so each kind keeps a section
    of its own that `bench all --write` carries over)."""
    from tooling.bench.common import ran

    kind = kind_of(figures)
    begin, end = markers(kind)
    lines = [begin, f"## The whole pipeline at real time (`bench e2e`): {title(kind, figures)}", "",
             ran(command, "simulation, Kafka, the edge and its workers, the cloud, Redis and the web server all on "
                 "this machine"), "",
             "| figure | value | baseline (same run) | target | details |", "|---|---|---|---|---|"]
    for figure in figures:
        baseline = f"{figure.baseline:,.2f} {figure.unit}" if figure.baseline else "-"
        details = figure.details()
        lines.append(f"| {figure.name} | {figure.value:,.2f} {figure.unit} | {baseline} | {figure.target} | {details} |")
    return "\n".join(lines + ["", end])


def write_section(path, figures, command):
    """Put this run's section into `path`, replacing the one of its kind."""
    from tooling.bench.common import write_generated

    write_generated(path, section(figures, command), *markers(kind_of(figures)))
