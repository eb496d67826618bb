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
from cloud_app.store import Keys, Record

HOURS_PER_YEAR_KILO = 8.76  # W x 8760 h / 1000 = kWh a year
CONNECTED_WITHIN_MS = 3000  # an edge that beat within this is connected
RATE_SECONDS = 10  # acked/s is the mean over the last complete seconds
SOCKET_TIMEOUT_S = 5  # a read that takes longer fails the request instead of holding a worker


def _int(value):
    return int(value) if value is not None else 0


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

    def households(self, offset, limit):
        """(total, rows) of one page of households, in name order."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.keys.household_index)
            pipe.zrange(self.keys.household_index, offset, offset + limit - 1)
            total, names = pipe.execute()
        if not names:
            return total, []
        latest = self.redis.hmget(self.keys.latest, names)
        rows = []
        for raw in latest:
            if raw is None:
                continue
            r = Record.decode(raw)
            rows.append({"household": r.household, "state": r.state, "postal_code": r.plz, "power_w": r.avg,
                         "window_start": r.ws, "window_end": r.we, "edge": r.edge, "last_seen": r.acked_ms})
        return total, rows

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
                         "acked": _int(status.get(b"acked")),
                         "acked_per_second": round(sum(_int(v) for v in recent) / RATE_SECONDS, 1)})
        return rows

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
    """The household index as a sequence Django's Paginator can page: its size is one ZCARD, a slice
    one ZRANGE (the reader never loads the whole index)."""

    def __init__(self, reader):
        self.reader = reader

    def count(self):
        return self.reader.redis.zcard(self.reader.keys.household_index)

    def __getitem__(self, window):
        return self.reader.households(window.start, window.stop - window.start)[1]


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
