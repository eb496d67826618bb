"""The cloud's Redis layout: per batch, an idempotent claim of its new households, then one Lua script.

The same layout runs on one Redis and on a Redis Cluster (cloud_app.engine). A cluster runs a script
only if all its keys hash to one slot, so every key carries a shard's hash tag `{n}` (n = 0..SHARDS-1,
`shard_of(name)` a CRC32 of the edge's or household's name). An edge's keys and the shard of the global
figures its batches write are in the edge's shard, so a batch is still one atomic script there; a read
of a global figure sums over the SHARDS shards. Keys (under a prefix, `fog:` by default, so tests and
several clouds can share one store; `Keys` is the only place that spells them), with {n} the edge's shard:

    {p}t:{n}:{edge}      hash  "household|window start|end" (tuple_field) -> Record: the stored tuple and its
                               dedup record in one (a v1 tuple's field is its id; a cloud before this
                               layout used the id alone, marked by the edge hash's dedup = mixed)
    {p}edge:{n}:{edge}   hash  last_heartbeat_ms, backlog, paused (0/1) and beat_sent_ms (the edge's clock: the
                               newest beat's state wins), further edge state its heartbeats carry, acked,
                               dedup (window, or mixed: its tuple hash has fields of the older layout; such
                               a tuple is recognised when resent under its id, so upgrade with every
                               replica stopped, and not while an edge's database begins again)
    {p}owned:{n}:{edge}  set   the households the edge owns (its quota's count)
    {p}acks:{n}:{edge}:{second}  tuples first stored in that second (expire after 2 min)
    {p}am:{n}:{edge}:{minute}  string  tuples first stored in that minute, expires after ROLLUP_KEEP_S
    {p}eb:{n}:{edge}:{minute}  string  the edge's backlog at its last beat of that minute, likewise
    {p}off:{n}:{edge}    list  "from_ms|to_ms" gaps between heartbeats longer than OFFLINE_AFTER_MS
    {p}beat:{n}:{edge}:{nonce}  string  a heartbeat taken, for twice the heartbeat clock skew (replays)
    {p}store:{n}         string  the shard's store identity, random, made on first use (store_id): told to
                               the shard's edges with each heartbeat reply, so an edge notices a store that
                               was emptied or replaced under the same address, and sends again what it acked
  one shard of each global figure, written by the batches of the edges of shard n:
    {p}states:{n}        hash  "{state}:households" / ":sum" / ":count" running sums,
                               so a summary costs O(states x shards) at any number of tuples
    {p}hh:{n}            hash  household -> state (who has been counted already)
    {p}latest:{n}        hash  household -> Record of its newest window
    {p}recent:{n}        list  Records, newest first, capped at RECENT_MAX
    {p}stats:{n}         hash  batches, tuples, dedup_hits; refused:{reason} in shard_of(reason)
    {p}edges:{n}         set   every edge of the shard that has spoken
    {p}hhidx:{n}         zset  the shard's households (score 0, so ordered by name): paging the API
    {p}hhidx:{n}:{state} zset  the shard's households of one state (the map's "list its households")
    {p}series:{n}:{household}  list  "ws|we|avg" of a v1 household's newest windows, newest first: SERIES_MAX
                               of them, and up to SERIES_CAP between trims. A household's windows of this
                               layout are read from its edge's tuple hash instead, by their fields (the reader
                               works them out back from its newest window), so no batch writes a second copy:
                               a v1 tuple's field is its id, which no reader can work out
    {p}pw:{n}:{minute}   string  sum of avg x the part of (ws, we) in that minute over the shard's windows
                               (W·ms; / 60,000 is the mean total power), expires after ROLLUP_KEEP_S
  in the household's shard h = shard_of(household):
    {p}owner:{h}         hash  household -> the edge that delivered it first (the only one it takes it from)

A tuple whose window the edge's tuple hash holds already is answered with the stored record's postal code if it
has the stored average and count (a resend, under any id), and refused as wire.R_CONFLICT if not (the script
tells the two apart): the first figures stay, and an edge is never acknowledged for figures the cloud does not
hold.

A household is stored by one edge only (its owner), so it lives in one shard, and the per-shard
household counts add up. Every stored value is one `Record` ("ws|we|avg|n|plz|state|acked_ms|edge|id|
household"), encoded and decoded only by that class; the Lua script copies records whole and reads no
field but the leading window start.

Ownership is global by nature, so it is not in the batch's slot: `claim` (cloud_app.ownership) runs
first, idempotent, so if anything fails after it the edge gets no reply and sends the batch again,
which finds its claims and stores the tuples once. The script (`write`) then checks, before it writes anything, that
no running sum would become infinite, so the tuples are all written or none, and Redis (AOF, appendfsync
always) has them on disk before the call returns; the caller replies to the edge only after that. The
series, the state index and the roll-ups are written by the same script, so a batch adds to them
exactly once, like to the sums. The script names every key it touches in KEYS (and takes the time from its
caller, not from Redis), so while a reshard moves its slot key by key a cluster refuses the whole call up
front instead of failing half way: Lua does not roll back.
"""

import logging
import secrets
import time
from dataclasses import dataclass
from typing import NamedTuple

from redis.exceptions import RedisError

from cloud_app.engine import config_of_every_primary
from cloud_app.keys import DEFAULT_PREFIX, SHARDS, Keys, shard_of
from cloud_app.ownership import Claims
from cloud_app.postal import locate
from fogwire import protocol as wire
from fogwire.limits import DEFAULT_HOUSEHOLDS_PER_EDGE

log = logging.getLogger("fog.cloud")

RECENT_MAX = 200
SERIES_MAX = 720  # an hour of 5 s windows per household: a bounded cost per household
# A series is trimmed back to SERIES_MAX once it holds more than this (the reader reads SERIES_MAX): one
# command a tuple fewer than a trim on every push, for an eighth more memory at most.
SERIES_CAP = SERIES_MAX + SERIES_MAX // 8
# A beat's nonce is kept while any replica may still take its `ts`: each takes it within HEARTBEAT_SKEW_MS of its
# own clock, and replicas whose clocks are up to twice that apart both still hear an edge. Kept for twice the
# skew, a beat one replica took could be replayed to another whose clock is behind, once its nonce was gone,
# and count there as a new one.
BEAT_NONCE_KEEP_MS = 4 * wire.HEARTBEAT_SKEW_MS
# A beat's time this far behind the last one's: not replicas' clocks that differ (each within the skew of the
# edge's: twice it apart at most) nor a beat answered late, but a clock set back (an NTP step, a VM resumed);
# the beat is the newest. As long as its nonce is kept, with room to spare over the replicas' differences.
CLOCK_SET_BACK_MS = BEAT_NONCE_KEEP_MS
ROLLUP_KEEP_S = 2 * 3600  # per-minute roll-ups live this long (the page shows the last hour)
OFFLINE_AFTER_MS = 3000  # no heartbeat for this long: the edge was offline (as the reader's "connected")
OFFLINE_MAX = 50  # offline periods kept per edge
STORE_ID_BYTES = 8  # a store identity's random bytes (Keys.store_id), sent as hex
OLD_LAYOUT_KEYS = ("states", "owner")  # under the prefix, without a shard: what an older cloud left

STORE_CHANGED = "store-changed"  # STORE_BATCH's answer when the store is not the one the batch was claimed in
STORE_CHANGED_TRIES = 3  # batches claimed again in a row for a store that changed; then it is answered as down

STORE_BATCH = """
-- Set-wise: a handful of calls per batch, not per tuple (`bench cloud`
-- measures the whole write path). Nothing is written until every check has
-- passed.
local edge, recent_max, R_SUM, known = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
-- The owners this batch was claimed by may come from the cloud's memory of the store it knew (KEYS[12], its
-- identity, is ARGV[4]): a store emptied or replaced since holds no owner record for them, so the batch must
-- claim its households again first (cloud_app.ownership).
if redis.call('GET', KEYS[12]) ~= known then return {'store-changed'} end  -- STORE_CHANGED
local W = 7  -- arguments a tuple: dedup field, id, household, window start, average, state, record
local n = (#ARGV - 8) / W
local now_ms, series_max = tonumber(ARGV[#ARGV - 3]), tonumber(ARGV[#ARGV - 2])
local series_cap, keep = tonumber(ARGV[#ARGV - 1]), tonumber(ARGV[#ARGV])
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

-- Every key the script touches is in KEYS, so a cluster refuses the whole call up front when one of
-- them is elsewhere (a slot migrating) instead of failing half way. KEYS[13..]: a series per v1 household,
-- then an index per state, then a roll-up per minute, each in the order of first appearance in ARGV.
local fields, arg = {}, {}
local series_key, state_key, minute_key = {}, {}, {}
for i = 1, n do
  local b = 4 + (i - 1) * W
  arg[i] = {ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), ARGV[b + 6],
            ARGV[b + 7]}
  fields[i] = arg[i][1]
end
local next_key = 13
local function declare(map, name)
  if not map[name] then
    map[name] = KEYS[next_key]
    next_key = next_key + 1
  end
end
-- A v1 tuple's field is its id (by_id): only its household's windows go into a series list (see the layout).
local function by_id(i) return arg[i][1] == arg[i][2] end
for i = 1, n do if by_id(i) then declare(series_key, arg[i][3]) end end
for i = 1, n do declare(state_key, arg[i][6]) end
local ends = {}  -- each tuple's we, from its record ("ws|we|...")
for i = 1, n do
  ends[i] = tonumber(string.match(arg[i][7], '^[^|]*|([^|]*)'))
  for minute = math.floor(arg[i][4] / 60000), math.floor((ends[i] - 1) / 60000) do declare(minute_key, minute) end
end
local existing = hmget(KEYS[1], fields)
-- A cloud before dedup by window kept a tuple under its id alone (the edge hash says so: 'mixed'). Such a
-- record is this tuple only if it is the same household's same window: an edge whose database began
-- again reuses ids for other windows.
local layout = redis.call('HGET', KEYS[7], 'dedup')
local new_layout = not layout  -- written with the batch, once every check has passed
if new_layout then layout = redis.call('EXISTS', KEYS[1]) == 1 and 'mixed' or 'window' end
if layout == 'mixed' then
  local missing, at = {}, {}
  for i = 1, n do
    if not existing[i] and not by_id(i) then
      missing[#missing + 1] = arg[i][2]
      at[#at + 1] = i
    end
  end
  local old = hmget(KEYS[1], missing)
  for k = 1, #missing do
    local record, i = old[k], at[k]
    local ws, we = string.match(record or '', '^(%d+)|(%d+)|')
    if record and tonumber(ws) == arg[i][4] and we .. '' == string.match(arg[i][1], '|(%d+)$')
        and string.match(record, '|([^|]*)$') == arg[i][3] then
      existing[i] = record
    end
  end
end

-- 1. What would be stored, and whether every running sum stays finite. Every tuple here is of a
-- household this edge owns: the claim step (CLAIM) came before, in the households' own slots.
local outcome, tuples, recent = {}, {}, {}
local sums, counts, state_of, best, households = {}, {}, {}, {}, {}
local new, dups, seen = 0, 0, {}
local series, power = {}, {}
-- A record's "avg|n": a repeat with the stored ones is a resend (under any id; a v1 tuple's window ends when
-- the cloud takes it, so its ws|we differ), with others a conflict ('!'), which is refused and counts as no repeat.
local function figures(record) return string.match(record, '^[^|]*|[^|]*|([^|]*|[^|]*)|') end
for i = 1, n do
  local field, id, hh, ws, avg, st, record = unpack(arg[i])
  if existing[i] or seen[field] then  -- stored before, or earlier in this batch
    seen[field] = existing[i] or seen[field]
    if figures(seen[field]) == figures(record) then
      dups = dups + 1
      outcome[i] = '=' .. seen[field]
    else
      outcome[i] = '!'
    end
  else
    seen[field] = record
    new = new + 1
    outcome[i] = ''
    tuples[#tuples + 1] = field
    tuples[#tuples + 1] = record
    sums[st] = (sums[st] or 0) + avg
    counts[st] = (counts[st] or 0) + 1
    if not state_of[hh] then
      state_of[hh] = st
      households[#households + 1] = hh
    end
    if (not best[hh]) or best[hh][1] <= ws then best[hh] = {ws, record} end
    if by_id(i) then
      if not series[hh] then series[hh] = {} end
      series[hh][#series[hh] + 1] = string.match(record, '^([^|]*|[^|]*|[^|]*)')  -- the record's "ws|we|avg"
    end
    local we = ends[i]
    local minute = math.floor(ws / 60000)
    while minute * 60000 < we do  -- each minute the window spans gets its share: exact for any window length
      power[minute] = (power[minute] or 0) + avg * (math.min(we, (minute + 1) * 60000) - math.max(ws, minute * 60000))
      minute = minute + 1
    end
    if i > n - recent_max then recent[#recent + 1] = record end
  end
end
for st, total in pairs(sums) do
  local kept = tonumber(redis.call('HGET', KEYS[2], st .. ':sum') or '0')
  if not (finite(total) and finite(kept + total)) then return {R_SUM} end
end

-- 2. Write.
if new_layout then redis.call('HSET', KEYS[7], 'dedup', layout) end
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
    for k = 1, #fresh, 2 do redis.call('ZADD', state_key[fresh[k + 1]], 0, fresh[k]) end
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
    local key = series_key[hh]
    if redis.call('LPUSH', key, unpack(points)) > series_cap then  -- trimmed now and then, not every push
      redis.call('LTRIM', key, 0, series_max - 1)
    end
  end
  local now_minute = math.floor(now_ms / 60000)
  for minute, wms in pairs(power) do
    if minute >= now_minute - keep / 60 then  -- a backlog older than the roll-ups' life adds nothing lasting
      local key = minute_key[minute]
      redis.call('INCRBYFLOAT', key, string.format('%.17g', wms))
      redis.call('EXPIRE', key, keep)
    end
  end
  redis.call('INCRBY', KEYS[11], new)
  redis.call('EXPIRE', KEYS[11], keep)
end
redis.call('SADD', KEYS[9], edge)
redis.call('HINCRBY', KEYS[6], 'batches', 1)
if dups > 0 then redis.call('HINCRBY', KEYS[6], 'dedup_hits', dups) end
redis.call('HINCRBY', KEYS[7], 'acked', new)
return {'', outcome, new, dups}
"""


HEARTBEAT = """
-- A nonce seen before, by any replica or before a restart: a replay, which must not refresh the link's state.
if ARGV[8] ~= '' and not redis.call('SET', KEYS[5], '1', 'NX', 'PX', ARGV[8]) then return 1 end
local last = redis.call('HGET', KEYS[1], 'last_heartbeat_ms')
local now, gap = tonumber(ARGV[1]), tonumber(ARGV[3])
if last and now - tonumber(last) > gap then
  redis.call('LPUSH', KEYS[3], last .. '|' .. ARGV[1])
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
end
-- Further back than replicas' clocks may differ (ARGV[10]), a clock was set back: the beat is taken as the
-- newest, or an edge that died since showed connected until the clock caught up again.
local step = tonumber(ARGV[10])
if (not last) or now > tonumber(last) or tonumber(last) - now > step then
  redis.call('HSET', KEYS[1], 'last_heartbeat_ms', ARGV[1])
end
-- The edge's state goes by the edge's own clock: beats that reach replicas whose clocks differ, or come
-- within one millisecond, keep the order the edge sent them in (the later of two equal ones wins).
redis.call('SADD', KEYS[2], ARGV[5])
local sent = tonumber(ARGV[9])
local kept = tonumber(redis.call('HGET', KEYS[1], 'beat_sent_ms') or '-1')
if sent < kept and kept - sent <= step then return 2 end
redis.call('HSET', KEYS[1], 'backlog', ARGV[2], 'paused', ARGV[7], 'beat_sent_ms', ARGV[9])
redis.call('SET', KEYS[4], ARGV[2], 'EX', tonumber(ARGV[4]))
return 0
"""
BEAT_NEW, BEAT_REPLAYED, BEAT_OLDER = "new", "replayed", "older"  # what CloudStore.heartbeat made of a beat


def tuple_field(household, window_start, window_end):
    """A tuple's field in its edge's tuple hash: its household's window, whatever id the edge gave it (and
    with its end: a window of another length from the same start, after FOG_WINDOW_SECONDS changed, is
    another tuple)."""
    return f"{household}|{window_start}|{window_end}"


class StoreChanged(RedisError):
    """The store is not the one a batch's households were claimed in (emptied, or replaced): nothing was written.
    A RedisError, so a batch that meets it on every try is answered as a store that is down, and sent again."""


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
    states: set  # the states whose sums this batch changed (store.update_totals reads them over every shard)
    fresh: list = None  # indices (into the rows given) of the tuples stored for the first time
    acked_ms: int = None  # when the store took them (its records' acked_ms)


def window_minutes(start, end, first=None, last=None):
    """The epoch minutes a window [start, end) ms reaches into, each of which its power roll-ups give a share (as
    STORE_BATCH does); only those from `first` to `last`, when given."""
    low, high = start // 60000, (end - 1) // 60000
    return range(low if first is None else max(low, first), (high if last is None else min(high, last)) + 1)


def mget(pipe, keys):
    """MGET of keys of one slot in a pipeline, sync or asyncio (redis-py's cluster pipeline refuses its `mget`,
    which could span slots; these never do)."""
    return pipe.execute_command("MGET", *keys)


def minute_sums(shards, count):
    """The power roll-ups of `count` minutes summed over the shards' MGET replies (W·ms), None for a minute no
    shard holds."""
    sums = []
    for i in range(count):
        values = [float(reply[i]) for reply in shards if reply[i] is not None]
        sums.append(sum(values) if values else None)
    return sums


def delete_prefix(client, prefix):
    """Remove every key under `prefix` (a test's or a benchmark's), a thousand at a time. On a cluster the
    client scans every primary and splits the UNLINK by slot."""
    batch = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


class CloudStore:
    """Writes batches and heartbeats into the cloud Redis or Redis Cluster (an asyncio client)."""

    def __init__(self, redis, prefix=DEFAULT_PREFIX, households_per_edge=DEFAULT_HOUSEHOLDS_PER_EDGE):
        self.redis = redis
        self.keys = Keys(prefix)
        self.households_per_edge = households_per_edge
        self._script = redis.register_script(STORE_BATCH)
        self._beat = redis.register_script(HEARTBEAT)
        self.claims = Claims(redis, self.keys, households_per_edge)
        self._identities = {}  # shard -> the store identity (store_id) this process's owners of it were claimed in

    async def store(self, edge, rows, now_ms=None, by_id=False):
        """rows: (id, household, ws, we, avg, n) tuples whose values passed the limits. Returns a StoreResult.

        A tuple is the same as one stored before when it is the same household's same window: ids are the
        edge's database's, and begin again with it (`by_id`: the prototype's v1 tuples, whose window is the
        moment they came, are the same when their id is).

        Two steps: claim the households (idempotent), then store the tuples of the households the edge owns
        in one script. Raises StoreRefused, having stored nothing, if the batch would make a running sum
        infinite (its claims stay: they are the edge's, and the same batch sent again finds them).
        """
        households, shard = list(dict.fromkeys(row[1] for row in rows)), shard_of(edge)  # batch order: the quota's
        for _ in range(STORE_CHANGED_TRIES):
            known = self._identities.get(shard)
            if known is None:  # owners remembered for the shard until now were claimed in no store known to be it
                self.claims.forget(shard)
                known = self._identities[shard] = await self.store_id(edge)
            owners = await self.claim(edge, households)
            try:
                return await self.write(edge, rows, owners, now_ms, by_id, known)
            except StoreChanged:
                # Emptied, or another store behind its address: what this process remembers of the old one's
                # owners is not in it. Claimed again, the households get their owner records and quota places.
                log.warning("the cloud store of edge %s's shard is not the one this process knew (identity %s): "
                            "emptied or replaced; its batches claim their households again", edge, known)
                self.claims.forget(shard)
                self._identities.pop(shard, None)  # another batch of the shard may have met it first
        raise StoreChanged(f"the cloud store changed under {STORE_CHANGED_TRIES} tries of one batch")

    async def claim(self, edge, households):
        """Step 1 of a batch: see cloud_app.ownership.Claims.claim (in what this process remembers of the edge's
        shard's owners)."""
        return await self.claims.claim(edge, households)

    async def write(self, edge, rows, reasons, now_ms=None, by_id=False, known=None):
        """Store the rows whose household the edge owns (`reasons`, from claim) in one script in the edge's
        slot; the others get their refusal. Raises StoreChanged, having written nothing, unless the store's
        identity (Keys.store_id) is `known`, the one the claims were made in."""
        now_ms = now_ms or int(time.time() * 1000)
        shard = shard_of(edge)
        args = [edge, RECENT_MAX, wire.R_SUM_NOT_FINITE, known or ""]
        located, admitted, series, indexes, minutes = [], [], {}, {}, {}
        for tid, household, start, end, average, count in rows:
            plz, state = locate(household)
            located.append((plz, state))
            if reasons.get(household) == "":
                average = float(average)
                admitted.append(len(located) - 1)
                # In order of first appearance, as the script maps them; each name made once, not a tuple.
                if by_id and household not in series:  # a v1 household's windows only (STORE_BATCH)
                    series[household] = self.keys.series(shard, household)
                if state not in indexes:
                    indexes[state] = self.keys.state_households(shard, state)
                for minute in window_minutes(start, end):
                    if minute not in minutes:
                        minutes[minute] = self.keys.power_minute(shard, minute)
                args += (tid if by_id else tuple_field(household, start, end), tid, household, start, repr(average), state,
                         Record(start, end, average, count, plz, state, now_ms, edge, tid, household).encode())
        args += (now_ms, SERIES_MAX, SERIES_CAP, ROLLUP_KEEP_S)
        keys = [self.keys.tuples(edge), self.keys.states(shard), self.keys.households(shard),
                self.keys.latest(shard), self.keys.recent(shard), self.keys.stats(shard), self.keys.edge(edge),
                self.keys.household_index(shard), self.keys.edges(shard), self.keys.acks(edge, now_ms // 1000),
                self.keys.acks_minute(edge, now_ms // 60000), self.keys.store_id(edge), *series.values(),
                *indexes.values(), *minutes.values()]
        reply = await self._script(keys=keys, args=args)
        if reply[0] == STORE_CHANGED.encode():
            raise StoreChanged(f"the store's identity is not {known}")
        if reply[0]:
            raise StoreRefused(reply[0].decode(), f"a batch of {len(rows)} from {edge} would make a per-state "
                                                  "running sum infinite; nothing of it was stored")
        _, outcomes, new, dups = reply
        codes, why = [""] * len(rows), [reasons.get(row[1]) or "" for row in rows]
        fresh, touched = [], set()
        for index, outcome in zip(admitted, outcomes):
            if not outcome:
                codes[index] = located[index][0]
                fresh.append(index)
                touched.add(located[index][1])
            elif outcome == b"!":  # the window is stored with other figures (STORE_BATCH)
                why[index] = wire.R_CONFLICT
            else:  # the same figures again: a resend
                codes[index] = Record.decode(outcome[1:]).plz
        return StoreResult(codes, why, new, dups, touched, fresh, now_ms)

    async def update_totals(self, states, minutes):
        """The figures of a dashboard update as totals over every shard, in one round trip: {state: (households,
        sum, count)} for `states`, {minute: W·ms} of the power roll-ups for `minutes` (epoch minutes; one
        expired or never written is left out). An update that carries totals, not what its batches added,
        counts nothing twice on a page whose summary was read after those batches were stored."""
        states, minutes = sorted(states), sorted(minutes)
        fields = [f"{state}:{part}" for state in states for part in ("households", "sum", "count")]
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in range(SHARDS):
                if fields:
                    pipe.hmget(self.keys.states(shard), fields)
                if minutes:
                    mget(pipe, [self.keys.power_minute(shard, m) for m in minutes])
            replies = iter(await pipe.execute())
            shards = [(next(replies) if fields else None, next(replies) if minutes else None) for _ in range(SHARDS)]
        totals = {}
        for i, state in enumerate(states):
            totals[state] = (sum(int(r[3 * i] or 0) for r, _ in shards), sum(float(r[3 * i + 1] or 0) for r, _ in shards),
                             sum(int(r[3 * i + 2] or 0) for r, _ in shards))
        sums = minute_sums([p for _, p in shards], len(minutes)) if minutes else []
        return totals, {minute: wms for minute, wms in zip(minutes, sums) if wms is not None}

    async def add_counts(self, counts):
        """Add {name: amount} to the counters (each in its shard's stats hash), in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, amount in counts.items():
                pipe.hincrby(self.keys.stats(shard_of(name)), name, amount)
            await pipe.execute()

    async def heartbeat(self, edge, state, now_ms=None, nonce=None, sent_ms=None):
        """Record a beat and the edge state it carried (wire.HEARTBEAT_STATE fields, as numbers; `paused`:
        the edge's ingest waits for its disk budget); a gap of more than OFFLINE_AFTER_MS since the last one
        is an offline period. The state of the beat the edge sent last (`sent_ms`, its clock; default now) is
        kept: an older beat that comes late counts as a beat, its state does not (BEAT_OLDER). With its
        `nonce`, a beat any replica took before (within the time its clock is accepted) records nothing
        (BEAT_REPLAYED). Otherwise BEAT_NEW."""
        now_ms = now_ms or int(time.time() * 1000)
        keys = [self.keys.edge(edge), self.keys.edges(shard_of(edge)), self.keys.offline(edge),
                self.keys.backlog_minute(edge, now_ms // 60000),
                self.keys.beat_nonce(edge, nonce) if nonce else self.keys.edge(edge)]  # unused without a nonce
        outcome = await self._beat(keys=keys, args=[
            now_ms, int(state.get("backlog", 0)), OFFLINE_AFTER_MS, ROLLUP_KEEP_S, edge, OFFLINE_MAX,
            int(state.get("paused", 0)), BEAT_NONCE_KEEP_MS if nonce else "", sent_ms or now_ms, CLOCK_SET_BACK_MS])
        if outcome:
            return BEAT_REPLAYED if outcome == 1 else BEAT_OLDER
        extra = {name: value for name, value in state.items() if name not in ("backlog", "paused")}
        if extra:
            await self.redis.hset(self.keys.edge(edge), mapping=extra)
        return BEAT_NEW

    async def store_id(self, edge):
        """The identity of the store `edge`'s tuples are in (Keys.store_id), made now if it has none: a store
        that lost it lost the rest too (emptied, or a new one under the same address)."""
        key = self.keys.store_id(edge)
        kept = await self.redis.get(key)  # one round trip a beat (three on the store's first use)
        if kept is not None:
            return kept.decode()
        made = secrets.token_hex(STORE_ID_BYTES)
        if await self.redis.set(key, made, nx=True):  # not SET NX GET in one: Redis before 7.0 refuses it
            return made
        kept = await self.redis.get(key)  # another replica made it meanwhile
        return None if kept is None else kept.decode()

    async def held(self, edge, probes):
        """Whether the store holds each of `probes`, (id, household, window start, window end) of tuples it
        acknowledged to `edge` (wire.read_probes): the store never deletes one, so a False is a tuple it lost.
        Under the older layout (the edge hash's dedup 'mixed', or unset while tuples exist: the store script's
        rule) a tuple may be kept under its id. One round trip, the same work whatever is found."""
        key = self.keys.tuples(edge)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(key, [tuple_field(*probe[1:]) for probe in probes])
            pipe.hmget(key, [str(probe[0]) for probe in probes])
            pipe.hget(self.keys.edge(edge), "dedup")
            by_window, by_id, layout = await pipe.execute()
        found = [one is not None for one in by_window]
        if layout == b"window":
            return found
        for index, (raw, (_, household, start, end)) in enumerate(zip(by_id, probes)):
            if not found[index] and raw is not None:
                try:
                    record = Record.decode(raw)
                except ValueError:  # not a record of this layout: not this tuple, as the store script sees it
                    continue
                found[index] = (record.household, record.ws, record.we) == (household, start, end)
        return found

    async def check_durable(self):
        """'' when writes are fsynced before Redis answers and no key is ever evicted (on a cluster: on every
        primary); otherwise what is wrong."""
        for config in await config_of_every_primary(self.redis, "append*"):
            if config.get("appendonly") != "yes":
                return "persistence is off (appendonly no): an ACK could cover data a Redis crash loses"
            if config.get("appendfsync") != "always":
                return (f"appendfsync is {config.get('appendfsync')!r}, not 'always': "
                        "an ACK could cover up to a second of writes a crash loses")
        for config in await config_of_every_primary(self.redis, "maxmemory-policy"):
            # An evicting Redis (a cache's policy, the default of some managed offerings) drops acknowledged
            # tuples and their dedup records, owners (a resent batch is then counted twice) and heartbeat nonces
            # (a replayed beat is then taken). noeviction refuses writes when full: the edges keep their
            # backlog and send again.
            if config.get("maxmemory-policy", "noeviction") != "noeviction":
                return (f"maxmemory-policy is {config['maxmemory-policy']!r}, not 'noeviction': once full, "
                        "Redis would drop acknowledged tuples and the records that keep a resent one from "
                        "counting twice")
        return ""

    async def unsharded_keys(self):
        """The keys of an older cloud's unsharded layout ({prefix}states, {prefix}owner) found in a store that
        holds no key of the sharded one: data this cloud would not see (its dedup history, its owners)."""
        old = [self.keys.prefix + name for name in OLD_LAYOUT_KEYS]
        sharded = [key for shard in range(SHARDS) for key in (self.keys.states(shard), self.keys.owners(shard))]
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in old + sharded:
                pipe.exists(key)
            found = await pipe.execute()
        if any(found[len(old):]):
            return []
        return [key for key, there in zip(old, found) if there]
