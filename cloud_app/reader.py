"""What the API, the dashboard and the metrics read from the cloud Redis.

Every read costs O(states), O(page) or O(edges), never a scan of tuples:
the per-state running sums, the household index, the capped recent feed
and the per-second ack counters are kept by the store for exactly this.
"""

import threading
import time

import redis as redis_lib
from django.conf import settings

from cloud_app.postal import STATE_NAMES, STATES
from cloud_app.store import OFFLINE_AFTER_MS, SERIES_MAX, Keys, Record

HOURS_PER_YEAR_KILO = 8.76  # W x 8760 h / 1000 = kWh a year
CONNECTED_WITHIN_MS = OFFLINE_AFTER_MS  # an edge that beat within this is connected
RATE_SECONDS = 10  # acked/s is the mean over the last complete seconds
SOCKET_TIMEOUT_S = 5  # a read that takes longer fails the request instead of holding a worker
HISTORY_MINUTES = 60  # the page's "last hour", minute by minute
MINUTE_MS = 60_000


def _int(value):
    return int(value) if value is not None else 0


def _last_minutes(now_ms=None):
    current = (now_ms or int(time.time() * 1000)) // MINUTE_MS
    return list(range(current - HISTORY_MINUTES + 1, current + 1))


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

    def states(self):
        sums = self.redis.hgetall(self.keys.states)
        rows = []
        for state in STATES:
            rows.append(state_figures(state, _int(sums.get(f"{state}:households".encode())),
                                      float(sums.get(f"{state}:sum".encode(), 0)),
                                      _int(sums.get(f"{state}:count".encode())), self.price))
        return rows

    def households(self, offset, limit, state=None):
        """(total, rows) of one page of households (of one state, when given), in name order."""
        index = self.keys.state_households(state) if state else self.keys.household_index
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(index)
            pipe.zrange(index, offset, offset + limit - 1)
            total, names = pipe.execute()
        if not names:
            return total, []
        latest = self.redis.hmget(self.keys.latest, names)
        return total, [_latest_row(record) for record in latest if record]

    def household(self, household):
        """One household's latest window and its last hour of windows (oldest first), or None.
        Cost: one HGET and one LRANGE of at most SERIES_MAX entries, whatever the number of households."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.latest, household)
            pipe.lrange(self.keys.series(household), 0, SERIES_MAX - 1)
            record, points = pipe.execute()
        if record is None:
            return None
        row = _latest_row(record)
        series = sorted({(int(ws), int(we), float(avg)) for ws, we, avg in
                         (p.decode().split("|") for p in points)})
        newest_end = series[-1][1] if series else row["window_end"]
        row["series"] = [{"window_start": ws, "window_end": we, "power_w": avg}
                         for ws, we, avg in series if we > newest_end - HISTORY_MINUTES * MINUTE_MS]
        return row

    def power(self, now_ms=None):
        """Total power of all households per minute of the last hour, oldest first: the mean over the
        minute of the summed household power, from the per-minute roll-ups (one MGET of 60 keys)."""
        minutes = _last_minutes(now_ms)
        values = self.redis.mget([self.keys.power_minute(m) for m in minutes])
        return [{"minute": m * MINUTE_MS, "power_w": round(float(v) / MINUTE_MS, 3) if v is not None else None}
                for m, v in zip(minutes, values)]

    def edges(self, now_ms=None):
        now_ms = now_ms or int(time.time() * 1000)
        names = sorted(e.decode() for e in self.redis.smembers(self.keys.edges))
        second = now_ms // 1000
        with self.redis.pipeline(transaction=False) as pipe:
            for edge in names:
                pipe.hgetall(self.keys.edge(edge))
                pipe.mget([self.keys.acks(edge, s) for s in range(second - RATE_SECONDS, second)])
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
            pipe.mget([self.keys.backlog_minute(edge, m) for m in minutes])
            pipe.mget([self.keys.acks_minute(edge, m) for m in minutes])
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
        rows = []
        for raw in self.redis.lrange(self.keys.recent, 0, limit - 1):
            r = Record.decode(raw)
            rows.append({"edge": r.edge, "id": r.id, "postal_code": r.plz, "state": r.state, "window_start": r.ws,
                         "window_end": r.we, "power_w": r.avg, "readings": r.n, "household": r.household})
        return rows

    def stats(self):
        return {k.decode(): int(v) for k, v in self.redis.hgetall(self.keys.stats).items()}

    def summary(self, recent=20):
        """Everything the dashboard paints first."""
        return {"price_eur_per_kwh": self.price, "states": self.states(), "edges": self.edges(),
                "recent": self.recent(recent), "ts": int(time.time() * 1000)}


class HouseholdIndex:
    """The household index (of one state, when given) as a sequence Django's Paginator can page: its size
    is one ZCARD, a slice one ZRANGE (the reader never loads the whole index)."""

    def __init__(self, reader, state=None):
        self.reader, self.state = reader, state

    def count(self):
        keys = self.reader.keys
        return self.reader.redis.zcard(keys.state_households(self.state) if self.state else keys.household_index)

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
                client = self._clients[url] = redis_lib.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT_S)
        return CloudReader(client, settings.FOG_CLOUD_KEY_PREFIX, settings.FOG_PRICE_EUR_PER_KWH)
