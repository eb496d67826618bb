"""The cloud's Redis layout, written one Lua script per batch.

Keys (all under a prefix, `fog:` by default, so tests and several clouds can
share one Redis; `Keys` is the only place that spells them):

    {p}t:{edge}    hash  tuple id -> Record: the stored tuple and its dedup record in one
    {p}states      hash  "{state}:households" / ":sum" / ":count" running sums,
                         so a summary costs O(states) at any number of tuples
    {p}hh          hash  household -> state (who has been counted already)
    {p}owner       hash  household -> the edge that delivered it first (the only one it takes it from)
    {p}owned       hash  edge -> how many households it owns (its quota's count)
    {p}latest      hash  household -> Record of its newest window
    {p}recent      list  Records, newest first, capped
    {p}stats       hash  batches, tuples, dedup_hits, refused:{reason}, ...
    {p}edge:{edge} hash  last_heartbeat_ms, backlog, paused (0/1), further edge state its heartbeats carry, acked
    {p}edges       set   every edge that has spoken
    {p}hhidx       zset  every household (score 0, so ordered by name): paging the API
    {p}acks:{edge}:{second}  tuples first stored in that second (expire after 2 min)
    {p}hhidx:{state}  zset  the households of one state (the map's "list its households")
    {p}series:{household}  list  "ws|we|avg" of its newest SERIES_MAX windows, newest first
    {p}pw:{minute}  string  sum of avg x (we - ws) over the windows that start in that minute
                         (W·ms; / 60,000 is the mean total power), expires after ROLLUP_KEEP_S
    {p}am:{edge}:{minute}  string  tuples first stored in that minute, expires likewise
    {p}eb:{edge}:{minute}  string  the edge's backlog at its last beat of that minute, likewise
    {p}off:{edge}  list  "from_ms|to_ms" gaps between heartbeats longer than OFFLINE_AFTER_MS

Every stored value is one `Record` ("ws|we|avg|n|plz|state|acked_ms|edge|id|household"),
encoded and decoded only by that class; the Lua script copies records whole
and reads no field but the leading window start.

The script checks everything before it writes anything: per tuple, that the
household is this edge's or nobody's yet and within the edge's quota; per
batch, that no running sum would become infinite. So a batch is all written
or not at all, and Redis (AOF, appendfsync always) has it on disk before the
call returns; the caller replies to the edge only after that. The series,
the state index and the roll-ups are written by the same script, so a batch
adds to them exactly once, like to the sums.
"""

import time
from dataclasses import dataclass
from typing import NamedTuple

from cloud_app.postal import locate
from fogwire import protocol as wire
from fogwire.limits import DEFAULT_HOUSEHOLDS_PER_EDGE

RECENT_MAX = 200
DEFAULT_PREFIX = "fog:"
SERIES_MAX = 720  # an hour of 5 s windows per household: a bounded cost per household
ROLLUP_KEEP_S = 2 * 3600  # per-minute roll-ups live this long (the page shows the last hour)
OFFLINE_AFTER_MS = 3000  # no heartbeat for this long: the edge was offline (as the reader's "connected")
OFFLINE_MAX = 50  # offline periods kept per edge

STORE_BATCH = """
-- Set-wise: a handful of calls per batch, not per tuple (`bench cloud`
-- measures the whole write path). Nothing is written until every check has
-- passed.
local edge, recent_max, quota = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local R_NOT_OWNER, R_QUOTA, R_SUM = ARGV[4], ARGV[5], ARGV[6]
local W = 6  -- arguments a tuple: id, household, window start, average, state, record
local n = (#ARGV - 9) / W
local prefix, series_max, keep = ARGV[#ARGV - 2], tonumber(ARGV[#ARGV - 1]), tonumber(ARGV[#ARGV])
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

local function finite(x) return x == x and x ~= math.huge and x ~= -math.huge end

local ids, arg = {}, {}
for i = 1, n do
  local b = 6 + (i - 1) * W
  arg[i] = {ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]), ARGV[b + 5], ARGV[b + 6]}
  ids[i] = arg[i][1]
end
local existing = hmget(KEYS[1], ids)

-- 1. Ownership and quota, per household this batch brings new.
local asked, asked_list = {}, {}
for i = 1, n do
  local hh = arg[i][2]
  if not existing[i] and not asked[hh] then
    asked[hh] = true
    asked_list[#asked_list + 1] = hh
  end
end
local owners = hmget(KEYS[11], asked_list)
local owned = tonumber(redis.call('HGET', KEYS[12], edge) or '0')
local refusal, claimed = {}, {}
for k, hh in ipairs(asked_list) do
  local owner = owners[k]
  if owner and owner ~= edge then
    refusal[hh] = R_NOT_OWNER
  elseif not owner then
    if owned + #claimed < quota then claimed[#claimed + 1] = hh else refusal[hh] = R_QUOTA end
  end
end

-- 2. What would be stored, and whether every running sum stays finite.
local outcome, tuples, recent = {}, {}, {}
local sums, counts, state_of, best, households = {}, {}, {}, {}, {}
local new, dups = 0, 0
local series, power = {}, {}
for i = 1, n do
  local id, hh, ws, avg, st, record = unpack(arg[i])
  if existing[i] then
    dups = dups + 1
    outcome[i] = '=' .. existing[i]
  elseif refusal[hh] then
    outcome[i] = refusal[hh]
  else
    new = new + 1
    outcome[i] = ''
    tuples[#tuples + 1] = id
    tuples[#tuples + 1] = record
    sums[st] = (sums[st] or 0) + avg
    counts[st] = (counts[st] or 0) + 1
    if not state_of[hh] then
      state_of[hh] = st
      households[#households + 1] = hh
    end
    if (not best[hh]) or best[hh][1] <= ws then best[hh] = {ws, record} end
    local point = string.match(record, '^([^|]*|[^|]*|[^|]*)')  -- the record's "ws|we|avg"
    if not series[hh] then series[hh] = {} end
    series[hh][#series[hh] + 1] = point
    local minute = math.floor(ws / 60000)
    power[minute] = (power[minute] or 0) + avg * (tonumber(string.match(point, '^[^|]*|([^|]*)')) - ws)
    if i > n - recent_max then recent[#recent + 1] = record end
  end
end
for st, total in pairs(sums) do
  local kept = tonumber(redis.call('HGET', KEYS[2], st .. ':sum') or '0')
  if not (finite(total) and finite(kept + total)) then return {R_SUM} end
end

-- 3. Write.
if #claimed > 0 then
  local pairs_ = {}
  for _, hh in ipairs(claimed) do
    pairs_[#pairs_ + 1] = hh
    pairs_[#pairs_ + 1] = edge
  end
  hset(KEYS[11], pairs_)
  redis.call('HINCRBY', KEYS[12], edge, #claimed)
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
    for k = 1, #fresh, 2 do redis.call('ZADD', prefix .. 'hhidx:' .. fresh[k + 1], 0, fresh[k]) end
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
  for hh, points in pairs(series) do  -- points in batch order; the reader sorts by window start
    local key = prefix .. 'series:' .. hh
    redis.call('LPUSH', key, unpack(points))
    redis.call('LTRIM', key, 0, series_max - 1)
  end
  local now_minute = math.floor(tonumber(redis.call('TIME')[1]) / 60)
  for minute, wms in pairs(power) do
    if minute >= now_minute - keep / 60 then  -- a backlog older than the roll-ups' life adds nothing lasting
      local key = prefix .. 'pw:' .. string.format('%d', minute)
      redis.call('INCRBYFLOAT', key, string.format('%.17g', wms))
      redis.call('EXPIRE', key, keep)
    end
  end
  local acks = prefix .. 'am:' .. edge .. ':' .. string.format('%d', now_minute)
  redis.call('INCRBY', acks, new)
  redis.call('EXPIRE', acks, keep)
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
return {'', outcome, new, dups, states}
"""


HEARTBEAT = """
local last = redis.call('HGET', KEYS[1], 'last_heartbeat_ms')
local now, gap = tonumber(ARGV[1]), tonumber(ARGV[3])
if last and now - tonumber(last) > gap then
  redis.call('LPUSH', KEYS[3], last .. '|' .. ARGV[1])
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
end
if (not last) or now > tonumber(last) then
  redis.call('HSET', KEYS[1], 'last_heartbeat_ms', ARGV[1], 'backlog', ARGV[2], 'paused', ARGV[7])
end
redis.call('SADD', KEYS[2], ARGV[5])
redis.call('SET', KEYS[4], ARGV[2], 'EX', tonumber(ARGV[4]))
"""


class StoreRefused(Exception):
    """The store refused a whole batch and wrote nothing of it; `reason` is a wire R_* word."""

    def __init__(self, reason, detail):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class Record(NamedTuple):
    """One stored tuple, as the cloud keeps it in its tuple hash, `latest` and `recent`."""

    ws: int
    we: int
    avg: float
    n: int
    plz: str
    state: str
    acked_ms: int
    edge: str
    id: int
    household: str  # last: split at most len(_fields) - 1 times

    def encode(self):
        return "|".join((str(self.ws), str(self.we), repr(float(self.avg)), str(self.n), self.plz, self.state,
                         str(self.acked_ms), self.edge, str(self.id), self.household))

    @classmethod
    def decode(cls, raw):
        text = raw.decode() if isinstance(raw, bytes) else raw
        ws, we, avg, n, plz, state, acked, edge, tid, household = text.split("|", len(cls._fields) - 1)
        return cls(int(ws), int(we), float(avg), int(n), plz, state, int(acked), edge, int(tid), household)


@dataclass
class StoreResult:
    postal_codes: list  # per tuple, in order ('' where refused)
    reasons: list  # per tuple: '' or the store's refusal reason (wire.R_NOT_OWNER, wire.R_QUOTA)
    new: int
    duplicates: int
    states: dict  # state -> (households, sum, count), for the states this batch touched
    fresh: list = None  # indices (into the rows given) of the tuples stored for the first time


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
        self.owners = f"{prefix}owner"
        self.owned = f"{prefix}owned"

    def tuples(self, edge):
        return f"{self.prefix}t:{edge}"

    def all_tuples(self):
        """A SCAN pattern matching every edge's tuple hash."""
        return f"{self.prefix}t:*"

    def edge(self, edge):
        return f"{self.prefix}edge:{edge}"

    def acks(self, edge, second):
        return f"{self.prefix}acks:{edge}:{second}"

    def state_households(self, state):
        return f"{self.prefix}hhidx:{state}"

    def series(self, household):
        return f"{self.prefix}series:{household}"

    def power_minute(self, minute):
        return f"{self.prefix}pw:{minute}"

    def acks_minute(self, edge, minute):
        return f"{self.prefix}am:{edge}:{minute}"

    def backlog_minute(self, edge, minute):
        return f"{self.prefix}eb:{edge}:{minute}"

    def offline(self, edge):
        return f"{self.prefix}off:{edge}"


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

    def __init__(self, redis, prefix=DEFAULT_PREFIX, households_per_edge=DEFAULT_HOUSEHOLDS_PER_EDGE):
        self.redis = redis
        self.keys = Keys(prefix)
        self.households_per_edge = households_per_edge
        self._script = redis.register_script(STORE_BATCH)
        self._beat = redis.register_script(HEARTBEAT)

    async def store(self, edge, rows, now_ms=None):
        """rows: (id, household, ws, we, avg, n) tuples whose values passed the limits. Returns a StoreResult.

        Raises StoreRefused, having written nothing, if the batch would make a running sum infinite.
        """
        now_ms = now_ms or int(time.time() * 1000)
        args = [edge, RECENT_MAX, self.households_per_edge, wire.R_NOT_OWNER, wire.R_QUOTA, wire.R_SUM_NOT_FINITE]
        located = []
        for tid, household, start, end, average, count in rows:
            plz, state = locate(household)
            located.append(plz)
            average = float(average)
            args += (tid, household, start, repr(average), state,
                     Record(start, end, average, count, plz, state, now_ms, edge, tid, household).encode())
        args += (self.keys.prefix, SERIES_MAX, ROLLUP_KEEP_S)
        keys = [self.keys.tuples(edge), self.keys.states, self.keys.households, self.keys.latest,
                self.keys.recent, self.keys.stats, self.keys.edge(edge), self.keys.household_index,
                self.keys.edges, self.keys.acks(edge, now_ms // 1000), self.keys.owners, self.keys.owned]
        reply = await self._script(keys=keys, args=args)
        if reply[0]:
            raise StoreRefused(reply[0].decode(), f"a batch of {len(rows)} from {edge} would make a per-state "
                                                  "running sum infinite; nothing of it was stored")
        _, outcomes, new, dups, flat = reply
        codes, reasons, fresh = [], [], []
        for index, (plz, outcome) in enumerate(zip(located, outcomes)):
            if not outcome:
                codes.append(plz)
                reasons.append("")
                fresh.append(index)
            elif outcome.startswith(b"="):
                codes.append(Record.decode(outcome[1:]).plz)
                reasons.append("")
            else:
                codes.append("")
                reasons.append(outcome.decode())
        states = {}
        for i in range(0, len(flat), 2):
            households, total, count = flat[i + 1]
            states[flat[i].decode()] = (int(households or 0), float(total or 0), int(count or 0))
        return StoreResult(codes, reasons, new, dups, states, fresh)

    async def count(self, name, amount=1):
        await self.redis.hincrby(self.keys.stats, name, amount)

    async def heartbeat(self, edge, state, now_ms=None):
        """Record a beat and the edge state it carried (wire.HEARTBEAT_STATE fields, as numbers; `paused`:
        the edge's ingest waits for its disk budget); a gap of more than OFFLINE_AFTER_MS since the last one
        is an offline period."""
        now_ms = now_ms or int(time.time() * 1000)
        keys = [self.keys.edge(edge), self.keys.edges, self.keys.offline(edge),
                self.keys.backlog_minute(edge, now_ms // 60000)]
        await self._beat(keys=keys, args=[now_ms, int(state.get("backlog", 0)), OFFLINE_AFTER_MS, ROLLUP_KEEP_S,
                                          edge, OFFLINE_MAX, int(state.get("paused", 0))])
        extra = {name: value for name, value in state.items() if name not in ("backlog", "paused")}
        if extra:
            await self.redis.hset(self.keys.edge(edge), mapping=extra)

    async def check_durable(self):
        """'' when writes are fsynced before Redis answers; otherwise what is wrong."""
        config = await self.redis.config_get("append*")
        if config.get("appendonly") != "yes":
            return "persistence is off (appendonly no): an ACK could cover data a Redis crash loses"
        if config.get("appendfsync") != "always":
            return (f"appendfsync is {config.get('appendfsync')!r}, not 'always': "
                    "an ACK could cover up to a second of writes a crash loses")
        return ""

