"""Household ownership: the first edge to deliver a household owns it, within the edge's quota.

Ownership is global by nature, so on a sharded store (cloud_app.store) it can't live in the slot of the
batch script, which holds one edge's keys. A batch therefore claims its households first, in two
idempotent steps, for the households this process has not seen owned yet:

1. RESERVE, in the edge's slot: a place in the edge's quota (a set of its households; a household
   already in it keeps its place), in the batch's order, so the first households take the last places;
2. CLAIM, in each household shard's slot: HSETNX household -> edge; whoever set it first owns it. An
   edge that lost the race gives its reserved place back, and so does an edge that finds, in any later
   batch, a household it holds a place for owned by another edge (a replica died between the two steps).

Then the batch script stores the tuples of the households the edge owns. If anything fails after the
claims, the edge gets no reply and sends the batch again: RESERVE and CLAIM find what they did and
change nothing, and the batch is stored once. An owner never changes while the store lasts, so a process
remembers owners (up to OWNER_CACHE_MAX), apart for the edges of each shard, and a batch of households seen
before costs no claim at all. A batch is written only in the store its owners were claimed in (its identity,
checked by the write script in the edge's slot); in another (emptied, or replaced), the shard's owners are
forgotten and the batch claims its households again (CloudStore.store).
"""

from cloud_app.keys import shard_of
from fogwire import protocol as wire

OWNER_CACHE_MAX = 1_000_000  # households whose owner a process remembers (owners never change)

# Step 1 of a batch with households this cloud has not seen owned yet, in the edge's slot: reserve a
# place in the edge's quota for each (idempotent: a household already reserved keeps its place).
# KEYS[1] the edge's owned set; ARGV quota, households. Returns 1 (within the quota) or 0 per household.
RESERVE = """
local quota, have, out = tonumber(ARGV[1]), redis.call('SCARD', KEYS[1]), {}
for i = 2, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 1 then
    out[#out + 1] = 1
  elseif have < quota then
    redis.call('SADD', KEYS[1], ARGV[i])
    have = have + 1
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""

# Step 2, in one household shard's slot: the first edge to claim a household owns it (HSETNX, so a claim
# sent again changes nothing). KEYS[1] the shard's owner hash; ARGV edge, households. Returns the owners.
CLAIM = """
local out = {}
for i = 2, #ARGV do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[1])
  out[#out + 1] = redis.call('HGET', KEYS[1], ARGV[i])
end
return out
"""


class Claims:
    """The claim step of one store (an asyncio client, its Keys and the households an edge may own)."""

    def __init__(self, redis, keys, quota):
        self.redis, self.keys, self.quota = redis, keys, quota
        self._reserve = redis.register_script(RESERVE)
        self._claim_script = redis.register_script(CLAIM)
        # The edge's shard -> {household: owning edge}, as claimed by the edges of that shard: each shard's part is
        # checked against its store identity as its batches are written (CloudStore.store), and forgotten apart.
        self._owners = {}
        self._remembered = 0

    async def claim(self, edge, households):
        """{household: reason it is refused ('' when the edge owns it)} for `households` (a list: the first
        ones take the quota's last places), claiming each that
        nobody owns yet within the edge's quota: its quota place first (in the edge's slot), then the owner
        (in the household's slot). Both are idempotent, so a batch that failed after them is sent again safely.

        A household found to belong to another edge (cached, looked up or lost in CLAIM) gives back any place
        this edge holds for it: a place reserved by a replica that died before its CLAIM, or by a race lost to
        another replica. A household is refused for the quota only once no place came back, because the edge
        sets such a tuple aside for good."""
        reasons, unknown, others = {}, [], []
        owners = self._owners.setdefault(shard_of(edge), {})
        for household in households:
            owner = owners.get(household)
            if owner is None:
                unknown.append(household)
            else:
                self._decide(reasons, others, household, owner, edge)
        free = await self._look_up(edge, unknown, reasons, others)
        await self._give_back(edge, others)
        while free:
            refused, lost = await self._reserve_and_claim(edge, free, reasons)
            # Always: a place kept for a household lost to another edge is never given back later, since the
            # edge sets its tuples aside for good and never sends that household again.
            returned = await self._give_back(edge, lost)
            if not refused or not returned:
                for household in refused:
                    reasons[household] = wire.R_QUOTA
                break
            free = refused  # places came back: the households refused for the quota in this call try again
        return reasons

    async def _look_up(self, edge, unknown, reasons, others):
        """The owners of households this process has not seen owned; returns the ones nobody owns yet."""
        if not unknown:
            return []
        by_shard = _by_shard(unknown)
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard, names in by_shard.items():
                pipe.hmget(self.keys.owners(shard), names)
            found = await pipe.execute()
        known = {household: owner for names, owners in zip(by_shard.values(), found)
                 for household, owner in zip(names, owners)}
        free = []
        for household in unknown:  # in the batch's order: the first households within the quota are taken
            owner = known[household]
            if owner is None:
                free.append(household)
            else:
                self._remember(edge, household, owner.decode())
                self._decide(reasons, others, household, owner.decode(), edge)
        return free

    async def _reserve_and_claim(self, edge, free, reasons):
        """RESERVE then CLAIM `free`; returns (households refused a place, households lost to another edge)."""
        placed = await self._reserve(keys=[self.keys.owned(edge)], args=[self.quota, *free])
        won = [household for household, ok in zip(free, placed) if ok]
        refused = [household for household, ok in zip(free, placed) if not ok]
        lost = []
        for shard, names in _by_shard(won).items():
            owners = await self._claim_script(keys=[self.keys.owners(shard)], args=[edge, *names])
            for household, owner in zip(names, owners):
                self._remember(edge, household, owner.decode())
                self._decide(reasons, lost, household, owner.decode(), edge)  # lost: claimed between read and claim
        return refused, lost

    async def _give_back(self, edge, others):
        """Free this edge's quota places held for households other edges own; returns how many came back."""
        if not others:
            return 0
        return await self.redis.srem(self.keys.owned(edge), *others)

    @staticmethod
    def _decide(reasons, others, household, owner, edge):
        reasons[household] = "" if owner == edge else wire.R_NOT_OWNER
        if owner != edge:
            others.append(household)

    def forget(self, shard):
        """Forget the owners remembered for the edges of `shard`: the store they were claimed in is gone."""
        self._remembered -= len(self._owners.pop(shard, {}))

    def _remember(self, edge, household, owner):
        if self._remembered >= OWNER_CACHE_MAX:
            self._owners, self._remembered = {}, 0
        owners = self._owners.setdefault(shard_of(edge), {})
        if household not in owners:
            self._remembered += 1
        owners[household] = owner


def _by_shard(households):
    grouped = {}
    for household in households:
        grouped.setdefault(shard_of(household), []).append(household)
    return grouped
