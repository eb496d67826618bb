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
    {p}edges       set   every edge that has spoken
    {p}hhidx       zset  every household (score 0, so ordered by name): paging the API
    {p}acks:{edge}:{second}  tuples first stored in that second (expire after 2 min)

The script runs atomically, so a batch is all written or not at all, and
Redis (AOF, appendfsync always) has it on disk before the call returns; the
caller replies to the edge only after that.
"""

import time
from dataclasses import dataclass

from cloud_app.postal import locate

RECENT_MAX = 200
DEFAULT_PREFIX = "fog:"

STORE_BATCH = """
-- Set-wise: a handful of calls per batch, not per tuple (`bench cloud`
-- measures the whole write path).
local edge, now, recent_max = ARGV[1], ARGV[2], tonumber(ARGV[3])
local n = (#ARGV - 3) / 8
local CHUNK = 1000  -- unpack() has a stack limit

local function hmget(key, fields)
  local out = {}
  for i = 1, #fields, CHUNK do
    local got = redis.call('HMGET', key, unpack(fields, i, math.min(i + CHUNK - 1, #fields)))
    for k = 1, #got do out[i + k - 1] = got[k] end
  end
  return out
end

local function hset(key, pairs)
  for i = 1, #pairs, 2 * CHUNK do
    redis.call('HSET', key, unpack(pairs, i, math.min(i + 2 * CHUNK - 1, #pairs)))
  end
end

local ids = {}
for i = 0, n - 1 do ids[i + 1] = ARGV[4 + i * 8] end
local existing = hmget(KEYS[1], ids)

local codes, tuples, recent = {}, {}, {}
local sums, counts, state_of, best, households = {}, {}, {}, {}, {}
local new, dups = 0, 0
for i = 0, n - 1 do
  local b = 3 + i * 8
  local id, hh, ws, we, avg = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  local cnt, plz, st = ARGV[b + 6], ARGV[b + 7], ARGV[b + 8]
  if existing[i + 1] then
    dups = dups + 1
    codes[i + 1] = string.sub(existing[i + 1], 1, 5)
  else
    new = new + 1
    codes[i + 1] = plz
    tuples[#tuples + 1] = id
    tuples[#tuples + 1] = plz .. '|' .. st .. '|' .. ws .. '|' .. we .. '|' .. avg .. '|' .. cnt .. '|' .. now .. '|' .. hh
    sums[st] = (sums[st] or 0) + tonumber(avg)
    counts[st] = (counts[st] or 0) + 1
    if not state_of[hh] then
      state_of[hh] = st
      households[#households + 1] = hh
    end
    local wsn = tonumber(ws)
    if (not best[hh]) or best[hh][1] <= wsn then
      best[hh] = {wsn, ws .. '|' .. we .. '|' .. avg .. '|' .. plz .. '|' .. st .. '|' .. edge .. '|' .. now}
    end
    if i >= n - recent_max then
      recent[#recent + 1] = edge .. '|' .. id .. '|' .. plz .. '|' .. st .. '|' .. ws .. '|' .. we .. '|' .. avg .. '|' .. cnt .. '|' .. hh
    end
  end
end

if new > 0 then
  hset(KEYS[1], tuples)
  for st, total in pairs(sums) do
    redis.call('HINCRBYFLOAT', KEYS[2], st .. ':sum', string.format('%.17g', total))
    redis.call('HINCRBY', KEYS[2], st .. ':count', counts[st])
  end
  local known = hmget(KEYS[3], households)
  local fresh, per_state = {}, {}
  local latest = hmget(KEYS[4], households)
  local newer = {}
  for k, hh in ipairs(households) do
    if not known[k] then
      fresh[#fresh + 1] = hh
      fresh[#fresh + 1] = state_of[hh]
      per_state[state_of[hh]] = (per_state[state_of[hh]] or 0) + 1
    end
    if (not latest[k]) or tonumber(string.match(latest[k], '^(%d+)')) <= best[hh][1] then
      newer[#newer + 1] = hh
      newer[#newer + 1] = best[hh][2]
    end
  end
  if #fresh > 0 then
    hset(KEYS[3], fresh)
    local scored = {}
    for k = 1, #fresh, 2 do
      scored[#scored + 1] = 0
      scored[#scored + 1] = fresh[k]
    end
    for i = 1, #scored, 2 * CHUNK do
      redis.call('ZADD', KEYS[8], unpack(scored, i, math.min(i + 2 * CHUNK - 1, #scored)))
    end
  end
  for st, added in pairs(per_state) do redis.call('HINCRBY', KEYS[2], st .. ':households', added) end
  if #newer > 0 then hset(KEYS[4], newer) end
  if #recent > 0 then redis.call('LPUSH', KEYS[5], unpack(recent)) end  -- newest ends up first
  redis.call('LTRIM', KEYS[5], 0, recent_max - 1)
  redis.call('HINCRBY', KEYS[6], 'tuples', new)
  redis.call('INCRBY', KEYS[10], new)
  redis.call('EXPIRE', KEYS[10], 120)
end
redis.call('SADD', KEYS[9], edge)
redis.call('HINCRBY', KEYS[6], 'batches', 1)
if dups > 0 then redis.call('HINCRBY', KEYS[6], 'dedup_hits', dups) end
redis.call('HINCRBY', KEYS[7], 'acked', new)
local states = {}
for st, _ in pairs(counts) do
  states[#states + 1] = st
  states[#states + 1] = redis.call('HMGET', KEYS[2], st .. ':households', st .. ':sum', st .. ':count')
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
        self.edges = f"{prefix}edges"
        self.household_index = f"{prefix}hhidx"

    def tuples(self, edge):
        return f"{self.prefix}t:{edge}"

    def edge(self, edge):
        return f"{self.prefix}edge:{edge}"

    def acks(self, edge, second):
        return f"{self.prefix}acks:{edge}:{second}"


def delete_prefix(client, prefix):
    """Remove every key under `prefix` (a test's or a benchmark's), a thousand at a time."""
    batch = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


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
                self.keys.recent, self.keys.stats, self.keys.edge(edge), self.keys.household_index,
                self.keys.edges, self.keys.acks(edge, now_ms // 1000)]
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
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self.keys.edge(edge), mapping={"last_heartbeat_ms": now_ms, "backlog": backlog})
            pipe.sadd(self.keys.edges, edge)
            await pipe.execute()

    async def check_durable(self):
        """'' when writes are fsynced before Redis answers; otherwise what is wrong."""
        config = await self.redis.config_get("append*")
        if config.get("appendonly") != "yes":
            return "persistence is off (appendonly no): an ACK could cover data a Redis crash loses"
        if config.get("appendfsync") != "always":
            return (f"appendfsync is {config.get('appendfsync')!r}, not 'always': "
                    "an ACK could cover up to a second of writes a crash loses")
        return ""

