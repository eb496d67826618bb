"""What the API, the dashboard and the metrics read from the cloud store (one Redis or a Redis Cluster).

Every read costs O(states x shards), O(page x shards) (and, for a page past the first, O(shards^2 x log(offset))
cheap commands to find where it starts: `_split`) or O(edges), never a scan of tuples: the per-state
running sums, the household index, the capped recent feed and the per-second ack counters are kept by
the store for exactly this, one of each per shard (cloud_app.store), and summed or merged here. Each read
sends its commands for every shard in one pipeline (on a cluster, one round trip per node).
"""

import heapq
import threading
import time

from django.conf import settings

from cloud_app.engine import connect
from cloud_app.postal import STATE_NAMES, STATES
from cloud_app.keys import SHARDS, Keys, shard_of
from cloud_app.store import OFFLINE_AFTER_MS, RECENT_MAX, SERIES_MAX, Record, mget, minute_sums, tuple_field

HOURS_PER_YEAR_KILO = 8.76  # W x 8760 h / 1000 = kWh a year
CONNECTED_WITHIN_MS = OFFLINE_AFTER_MS  # an edge that beat within this is connected
RATE_SECONDS = 10  # acked/s is the mean over the last complete seconds
SOCKET_TIMEOUT_S = 5  # a read that takes longer fails the request instead of holding a worker
HISTORY_MINUTES = 60  # the page's "last hour", minute by minute
MINUTE_MS = 60_000
# A minute's power roll-up is complete this long after the minute's end plus a window and its grace: the last
# window reaching into the minute ends up to a window later, and then waits out its grace and the trip to the
# cloud. An edge catching up fills a minute later still.
POWER_DELIVERY_MS = 8_000


def power_settled_ms():
    """How long after a minute's end its power roll-up is complete (15 s with the default 5 s windows)."""
    return int((settings.FOG_WINDOW_SECONDS + settings.FOG_GRACE_SECONDS) * 1000) + POWER_DELIVERY_MS


def _int(value):
    return int(value) if value is not None else 0


def page_minutes(now_ms=None):
    """(first, last): the epoch minutes of the page's last hour, this one's included."""
    current = (now_ms or int(time.time() * 1000)) // MINUTE_MS
    return current - HISTORY_MINUTES + 1, current


def _last_minutes(now_ms=None):
    first, last = page_minutes(now_ms)
    return list(range(first, last + 1))


def _latest_row(raw):
    r = Record.decode(raw)
    return {"household": r.household, "state": r.state, "postal_code": r.plz, "power_w": r.avg,
            "window_start": r.ws, "window_end": r.we, "edge": r.edge, "last_seen": r.acked_ms}


def state_figures(state, households, total, count, price):
    mean = total / count if count else 0.0
    annual_kwh = mean * HOURS_PER_YEAR_KILO
    return {"state": state, "name": STATE_NAMES[state], "households": households, "tuples": count,
            "mean_power_w": round(mean, 3), "annual_kwh": round(annual_kwh, 3),
            "annual_cost_eur": round(annual_kwh * price, 2)}


class CloudReader:
    def __init__(self, redis, prefix, price_eur_per_kwh):
        self.redis, self.keys, self.price = redis, Keys(prefix), price_eur_per_kwh

    def _each_shard(self, command):
        """One command per shard, in one pipeline: `command(pipe, shard)` queues it; returns the replies."""
        with self.redis.pipeline(transaction=False) as pipe:
            for shard in range(SHARDS):
                command(pipe, shard)
            return pipe.execute()

    def state_sums(self):
        """{state: (households, sum, count)} summed over the shards."""
        totals = {}
        for sums in self._each_shard(lambda pipe, n: pipe.hgetall(self.keys.states(n))):
            for field, value in sums.items():
                state, _, part = field.decode().partition(":")
                households, total, count = totals.get(state, (0, 0.0, 0))
                if part == "households":
                    households += int(value)
                elif part == "sum":
                    total += float(value)
                elif part == "count":
                    count += int(value)
                totals[state] = (households, total, count)
        return totals

    def states(self):
        sums = self.state_sums()
        return [state_figures(state, *sums.get(state, (0, 0.0, 0)), self.price) for state in STATES]

    def _indexes(self, state):
        return [self.keys.state_households(n, state) if state else self.keys.household_index(n)
                for n in range(SHARDS)]

    def household_count(self, state=None):
        indexes = self._indexes(state)
        return sum(self._each_shard(lambda pipe, n: pipe.zcard(indexes[n])))

    def households(self, offset, limit, state=None):
        """(total, rows) of one page of households (of one state, when given), in name order across the shards."""
        indexes = self._indexes(state)
        counts = self._each_shard(lambda pipe, n: pipe.zcard(indexes[n]))
        starts = _split(self.redis, indexes, counts, offset)
        with self.redis.pipeline(transaction=False) as pipe:
            for key, start in zip(indexes, starts):
                pipe.zrange(key, start, start + limit - 1)
            pages = pipe.execute()
        page = list(heapq.merge(*([(name, n) for name in names] for n, names in enumerate(pages))))[:limit]
        if not page:
            return sum(counts), []
        by_shard = {}
        for name, n in page:
            by_shard.setdefault(n, []).append(name)
        with self.redis.pipeline(transaction=False) as pipe:
            for n, names in by_shard.items():
                pipe.hmget(self.keys.latest(n), names)
            found = dict(zip(by_shard, pipe.execute()))
        records = {name: record for n, names in by_shard.items() for name, record in zip(names, found[n])}
        return sum(counts), [_latest_row(records[name]) for name, _ in page if records[name]]

    def household(self, household, points=SERIES_MAX):
        """One household's latest window and its last hour of windows (oldest first), or None; of the series at
        most its newest `points` windows.

        Its windows are read from its edge's tuple hash, by their fields: a household's windows follow one
        another at its window length (and phase), so from its newest one the reader knows the fields of those
        before it. Windows of another length or phase (FOG_WINDOW_SECONDS or FOG_WINDOW_STAGGER changed
        within the hour) are not among them. A v1 household's windows, whose fields are ids, are in a series
        list (cloud_app.store's layout), newest first in the order batches came: ask for some more than shown.
        Cost: its owner (one HGET), then one HGET and one LRANGE of at most `points` entries, and one HMGET of
        at most `points` fields, in the owning edge's shard, whatever the number of households or tuples."""
        owner = self.redis.hget(self.keys.owners(shard_of(household)), household)
        if owner is None:
            return None
        shard = shard_of(owner.decode())
        points = min(points, SERIES_MAX)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.latest(shard), household)
            pipe.lrange(self.keys.series(shard, household), 0, points - 1)
            record, listed = pipe.execute()
        if record is None:
            return None
        row = _latest_row(record)
        series = {(int(ws), int(we), float(avg)) for ws, we, avg in (p.decode().split("|") for p in listed)}
        start, end = row["window_start"], row["window_end"]
        if end > start:
            count = max(1, min(points, HISTORY_MINUTES * MINUTE_MS // (end - start)))
            fields = [tuple_field(household, start - k * (end - start), end - k * (end - start)) for k in range(count)]
            stored = self.redis.hmget(self.keys.tuples(row["edge"]), fields)
            series.update((r.ws, r.we, r.avg) for r in map(Record.decode, filter(None, stored)))
        series = sorted(series)
        newest_end = series[-1][1] if series else row["window_end"]
        row["series"] = [{"window_start": ws, "window_end": we, "power_w": avg}
                         for ws, we, avg in series if we > newest_end - HISTORY_MINUTES * MINUTE_MS]
        return row

    def power(self, now_ms=None):
        """Total power of all households per minute of the last hour, oldest first: the mean over the
        minute of the summed household power, from the per-minute roll-ups (one MGET of 60 keys a shard).
        A minute is `complete` once power_settled_ms() have passed since its end; before, its later windows
        are still to come and its power is only what has been stored so far."""
        now_ms = now_ms or int(time.time() * 1000)
        settled_ms = power_settled_ms()
        minutes = _last_minutes(now_ms)
        shards = self._each_shard(lambda pipe, n: mget(pipe, [self.keys.power_minute(n, m) for m in minutes]))
        return [{"minute": m * MINUTE_MS, "power_w": None if wms is None else round(wms / MINUTE_MS, 3),
                 "complete": (m + 1) * MINUTE_MS + settled_ms <= now_ms}
                for m, wms in zip(minutes, minute_sums(shards, len(minutes)))]

    def edges(self, now_ms=None):
        now_ms = now_ms or int(time.time() * 1000)
        names = sorted(e.decode() for members in self._each_shard(lambda pipe, n: pipe.smembers(self.keys.edges(n)))
                       for e in members)
        second = now_ms // 1000
        with self.redis.pipeline(transaction=False) as pipe:
            for edge in names:
                pipe.hgetall(self.keys.edge(edge))
                mget(pipe, [self.keys.acks(edge, s) for s in range(second - RATE_SECONDS, second)])
            replies = pipe.execute()
        rows = []
        for i, edge in enumerate(names):
            status, recent = replies[2 * i], replies[2 * i + 1]
            beat = _int(status.get(b"last_heartbeat_ms"))
            rows.append({"edge": edge, "connected": bool(beat) and now_ms - beat <= CONNECTED_WITHIN_MS,
                         "last_heartbeat": beat or None, "backlog": _int(status.get(b"backlog")),
                         "paused": bool(_int(status.get(b"paused"))),
                         "acked": _int(status.get(b"acked")),
                         "acked_per_second": round(sum(_int(v) for v in recent) / RATE_SECONDS, 1)})
        return rows

    def edge_history(self, edge, now_ms=None):
        """One edge's last hour: backlog and acknowledged tuples per minute, and its offline periods
        (gaps between heartbeats) that overlap the hour, the current one open-ended."""
        now_ms = now_ms or int(time.time() * 1000)
        minutes = _last_minutes(now_ms)
        with self.redis.pipeline(transaction=False) as pipe:
            mget(pipe, [self.keys.backlog_minute(edge, m) for m in minutes])
            mget(pipe, [self.keys.acks_minute(edge, m) for m in minutes])
            pipe.lrange(self.keys.offline(edge), 0, -1)
            pipe.hget(self.keys.edge(edge), "last_heartbeat_ms")
            backlog, acked, gaps, beat = pipe.execute()
        since = minutes[0] * MINUTE_MS
        offline = [{"start": int(a), "end": int(b)} for a, b in (g.decode().split("|") for g in gaps) if int(b) > since]
        if beat is not None and now_ms - int(beat) > CONNECTED_WITHIN_MS:
            offline.insert(0, {"start": int(beat), "end": None})
        return {"edge": edge, "minutes": [m * MINUTE_MS for m in minutes],
                "backlog": [_int(v) if v is not None else None for v in backlog],
                "acked": [_int(v) for v in acked], "offline": offline[::-1]}

    def recent(self, limit):
        """The newest tuples over every shard (each shard keeps its newest RECENT_MAX), newest first."""
        limit = min(limit, RECENT_MAX)
        feeds = self._each_shard(lambda pipe, n: pipe.lrange(self.keys.recent(n), 0, limit - 1))
        records = [Record.decode(raw) for feed in feeds for raw in feed]
        records.sort(key=lambda r: -r.acked_ms)  # stable: a shard's own order stays within one moment
        return [{"edge": r.edge, "id": r.id, "postal_code": r.plz, "state": r.state, "window_start": r.ws,
                 "window_end": r.we, "power_w": r.avg, "readings": r.n, "household": r.household,
                 "acked_ms": r.acked_ms} for r in records[:limit]]

    def stats(self):
        totals = {}
        for stats in self._each_shard(lambda pipe, n: pipe.hgetall(self.keys.stats(n))):
            for name, value in stats.items():
                totals[name.decode()] = totals.get(name.decode(), 0) + int(value)
        return totals

    def summary(self, recent=20):
        """Everything the dashboard paints on (re)connecting: with each edge's last hour and the power per minute
        (as /api/edges/<id>/history/ and /api/power/), which its updates only bring forward, so a page that
        was away misses nothing."""
        edges = self.edges()
        for edge in edges:
            edge["history"] = self.edge_history(edge["edge"])
        return {"price_eur_per_kwh": self.price, "states": self.states(), "edges": edges, "power": self.power(),
                "recent": self.recent(recent), "ts": int(time.time() * 1000)}


class HouseholdIndex:
    """The household index (of one state, when given) as a sequence Django's Paginator can page: its size
    is a ZCARD a shard, a slice a merge of the shards' ZRANGEs (the reader never loads the whole index)."""

    def __init__(self, reader, state=None):
        self.reader, self.state = reader, state

    def count(self):
        return self.reader.household_count(self.state)

    def __getitem__(self, window):
        return self.reader.households(window.start, window.stop - window.start, state=self.state)[1]


class ReaderSource:
    """Gives each request the CloudReader of the current settings (URL, key prefix, price), with one
    Redis connection pool per URL. Views and consumers hold one as an attribute, so a test hands them
    another or changes the settings; nothing is cached behind their back."""

    def __init__(self):
        self._clients, self._lock = {}, threading.Lock()

    def __call__(self):
        url = settings.FOG_CLOUD_REDIS_URL
        with self._lock:
            client = self._clients.get(url)
            if client is None:
                client = self._clients[url] = connect(url, socket_timeout=SOCKET_TIMEOUT_S)
        return CloudReader(client, settings.FOG_CLOUD_KEY_PREFIX, settings.FOG_PRICE_EUR_PER_KWH)


def _split(redis, indexes, counts, offset):
    """Per index (sorted sets of distinct names), how many of its names come before the `offset`-th name of
    them all: where a page starting at `offset` begins in each. A binary search on every index at once,
    each step one pipeline: a probe name per index, then its rank among all (ZLEXCOUNT a shard): O(shards^2
    x log(offset)) cheap commands, never a read of the names before the page."""
    low, high = [0] * len(indexes), [min(count, offset) for count in counts]
    while True:
        active = [i for i in range(len(indexes)) if low[i] < high[i]]
        if not active:
            return low
        middle = {i: (low[i] + high[i]) // 2 for i in active}
        with redis.pipeline(transaction=False) as pipe:
            for i in active:
                pipe.zrange(indexes[i], middle[i], middle[i])
            probes = dict(zip(active, (names[0] for names in pipe.execute())))
        with redis.pipeline(transaction=False) as pipe:
            for i in active:
                for key in indexes:
                    pipe.zlexcount(key, "-", b"(" + probes[i])
            below = pipe.execute()
        for k, i in enumerate(active):
            if sum(below[k * len(indexes):(k + 1) * len(indexes)]) < offset:
                low[i] = middle[i] + 1  # the probe comes before the offset-th name: so do the names up to it
            else:
                high[i] = middle[i]
