"""The cloud's Redis layout, written one Lua script per batch.

Keys (all under a prefix, `fog:` by default, so tests and several clouds can
share one Redis):

    {p}t:{edge}    hash  tuple id -> "plz|state|ws|we|avg|n|acked_ms|household"
                         the stored tuple and its dedup record in one (HSETNX)
    {p}states      hash  "{state}:households" / ":sum" / ":count" running sums,
                         so a summary costs O(states) at any number of tuples
    {p}hh          hash  household -> state (who has been counted already)
    {p}latest      hash  household -> "ws|we|avg|plz|state|edge|acked_ms"
    {p}recent      list  "edge|id|plz|state|ws|we|avg|n|household", newest first, capped
    {p}stats       hash  batches, tuples, dedup_hits, refused:{reason}, ...
    {p}edge:{edge} hash  last_heartbeat_ms, backlog, acked

The script runs atomically, so a batch is all written or not at all, and
Redis (AOF, appendfsync always) has it on disk before the call returns; the
caller replies to the edge only after that.
"""

import time
from dataclasses import dataclass

from cloud_app.postal import STATES, locate

RECENT_MAX = 200
DEFAULT_PREFIX = "fog:"

STORE_BATCH = """
local edge, now, recent_max = ARGV[1], ARGV[2], tonumber(ARGV[3])
local n = (#ARGV - 3) / 8
local codes, touched = {}, {}
local new, dups = 0, 0
for i = 0, n - 1 do
  local b = 3 + i * 8
  local id, hh, ws, we, avg = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  local cnt, plz, st = ARGV[b + 6], ARGV[b + 7], ARGV[b + 8]
  local record = plz .. '|' .. st .. '|' .. ws .. '|' .. we .. '|' .. avg .. '|' .. cnt .. '|' .. now .. '|' .. hh
  if redis.call('HSETNX', KEYS[1], id, record) == 1 then
    new = new + 1
    codes[i + 1] = plz
    touched[st] = true
    redis.call('HINCRBYFLOAT', KEYS[2], st .. ':sum', avg)
    redis.call('HINCRBY', KEYS[2], st .. ':count', 1)
    if redis.call('HSETNX', KEYS[3], hh, st) == 1 then
      redis.call('HINCRBY', KEYS[2], st .. ':households', 1)
    end
    local prev = redis.call('HGET', KEYS[4], hh)
    if (not prev) or tonumber(string.match(prev, '^(%d+)')) <= tonumber(ws) then
      redis.call('HSET', KEYS[4], hh, ws .. '|' .. we .. '|' .. avg .. '|' .. plz .. '|' .. st .. '|' .. edge .. '|' .. now)
    end
    if i >= n - recent_max then
      redis.call('LPUSH', KEYS[5], edge .. '|' .. id .. '|' .. plz .. '|' .. st .. '|' .. ws .. '|' .. we .. '|' .. avg .. '|' .. cnt .. '|' .. hh)
    end
  else
    dups = dups + 1
    codes[i + 1] = string.sub(redis.call('HGET', KEYS[1], id), 1, 5)
  end
end
if new > 0 then redis.call('LTRIM', KEYS[5], 0, recent_max - 1) end
redis.call('HINCRBY', KEYS[6], 'batches', 1)
if new > 0 then redis.call('HINCRBY', KEYS[6], 'tuples', new) end
if dups > 0 then redis.call('HINCRBY', KEYS[6], 'dedup_hits', dups) end
redis.call('HINCRBY', KEYS[7], 'acked', new)
local states = {}
for st, _ in pairs(touched) do
  table.insert(states, st)
  table.insert(states, redis.call('HMGET', KEYS[2], st .. ':households', st .. ':sum', st .. ':count'))
end
return {codes, new, dups, states}
"""


@dataclass
class StoreResult:
    postal_codes: list  # per accepted tuple, in order
    new: int
    duplicates: int
    states: dict  # state -> (households, sum, count), for the states this batch touched


class Keys:
    def __init__(self, prefix=DEFAULT_PREFIX):
        self.prefix = prefix
        self.states = f"{prefix}states"
        self.households = f"{prefix}hh"
        self.latest = f"{prefix}latest"
        self.recent = f"{prefix}recent"
        self.stats = f"{prefix}stats"

    def tuples(self, edge):
        return f"{self.prefix}t:{edge}"

    def edge(self, edge):
        return f"{self.prefix}edge:{edge}"

    def edges_pattern(self):
        return f"{self.prefix}edge:*"


class CloudStore:
    """Writes batches and heartbeats into the cloud Redis (an asyncio client)."""

    def __init__(self, redis, prefix=DEFAULT_PREFIX):
        self.redis = redis
        self.keys = Keys(prefix)
        self._script = redis.register_script(STORE_BATCH)

    async def store(self, edge, rows, now_ms=None):
        """rows: (id, household, ws, we, avg, n) tuples already validated. Returns a StoreResult."""
        now_ms = now_ms or int(time.time() * 1000)
        args = [edge, now_ms, RECENT_MAX]
        for tid, household, start, end, average, count in rows:
            plz, state = locate(household)
            args += (tid, household, start, end, repr(float(average)), count, plz, state)
        keys = [self.keys.tuples(edge), self.keys.states, self.keys.households, self.keys.latest,
                self.keys.recent, self.keys.stats, self.keys.edge(edge)]
        codes, new, dups, flat = await self._script(keys=keys, args=args)
        states = {}
        for i in range(0, len(flat), 2):
            households, total, count = flat[i + 1]
            states[flat[i].decode()] = (int(households or 0), float(total or 0), int(count or 0))
        return StoreResult([c.decode() for c in codes], new, dups, states)

    async def count(self, name, amount=1):
        await self.redis.hincrby(self.keys.stats, name, amount)

    async def heartbeat(self, edge, backlog, now_ms=None):
        now_ms = now_ms or int(time.time() * 1000)
        await self.redis.hset(self.keys.edge(edge), mapping={"last_heartbeat_ms": now_ms, "backlog": backlog})

    async def check_durable(self):
        """'' when writes are fsynced before Redis answers; otherwise what is wrong."""
        config = await self.redis.config_get("append*")
        if config.get("appendonly") != "yes":
            return "persistence is off (appendonly no): an ACK could cover data a Redis crash loses"
        if config.get("appendfsync") != "always":
            return (f"appendfsync is {config.get('appendfsync')!r}, not 'always': "
                    "an ACK could cover up to a second of writes a crash loses")
        return ""


def summary_from_sums(states_hash):
    """Per-state figures from the running sums hash ({b'BY:sum': b'..', ...})."""
    result = {}
    for state in STATES:
        households = int(states_hash.get(f"{state}:households".encode(), 0))
        total = float(states_hash.get(f"{state}:sum".encode(), 0))
        count = int(states_hash.get(f"{state}:count".encode(), 0))
        result[state] = (households, total, count)
    return result
