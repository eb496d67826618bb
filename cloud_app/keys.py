"""The names of the cloud store's keys, and their shards (the layout is in cloud_app.store's docstring).

Every key carries a shard's hash tag `{n}`, so the keys one script touches share one Redis Cluster slot;
`Keys` is the only place that spells them.
"""

import re
import zlib

DEFAULT_PREFIX = "fog:"
# A prefix may hold no brace (a `{` or `}` would move the hash tag, so one script's keys span slots on a
# cluster), no SCAN glob character (a SCAN for one prefix would match others) and no blank.
PREFIX_RE = re.compile(r"^[^{}*?\[\]\\\s]{1,64}\Z")
PREFIX_EXPECTED = "1..64 characters without { } * ? [ ] \\ or blanks"
# Shards of the global figures (and of household ownership). A read of a global figure sums over them, so
# /api/states/ costs O(states x SHARDS); more shards spread writes over more cluster slots. Changing it
# re-homes every key: it is part of the layout, not a tuning knob.
SHARDS = 16


def shard_of(name):
    """The shard (0..SHARDS-1) of an edge or a household: a stable hash, the same in every process."""
    return zlib.crc32(name.encode()) % SHARDS


class Keys:
    """Every key name. Keys of one shard carry its hash tag `{n}`, so they share one cluster slot: an edge's
    keys and the shard of the global figures its batches write live in the edge's shard (one script, one
    slot); a household's owner lives in the household's shard."""

    def __init__(self, prefix=DEFAULT_PREFIX):
        self.prefix = prefix

    def _in(self, name, shard):
        return f"{self.prefix}{name}:{{{shard}}}"

    # One of each per shard: the shards of the global figures (summed by the reader).
    def states(self, shard):
        return self._in("states", shard)

    def households(self, shard):
        return self._in("hh", shard)

    def latest(self, shard):
        return self._in("latest", shard)

    def recent(self, shard):
        return self._in("recent", shard)

    def stats(self, shard):
        return self._in("stats", shard)

    def edges(self, shard):
        return self._in("edges", shard)

    def household_index(self, shard):
        return self._in("hhidx", shard)

    def state_households(self, shard, state):
        return f"{self._in('hhidx', shard)}:{state}"

    def series(self, shard, household):
        return f"{self._in('series', shard)}:{household}"

    def power_minute(self, shard, minute):
        return f"{self._in('pw', shard)}:{minute}"

    def owners(self, shard):
        """household -> its owning edge, for the households of this shard (shard_of(household))."""
        return self._in("owner", shard)

    # Per edge, in the edge's shard.
    def tuples(self, edge):
        return f"{self._in('t', shard_of(edge))}:{edge}"

    def all_tuples(self):
        """A SCAN pattern matching every edge's tuple hash."""
        return f"{self.prefix}t:*"

    def owned(self, edge):
        """The households the edge owns (its quota's count)."""
        return f"{self._in('owned', shard_of(edge))}:{edge}"

    def edge(self, edge):
        return f"{self._in('edge', shard_of(edge))}:{edge}"

    def acks(self, edge, second):
        return f"{self._in('acks', shard_of(edge))}:{edge}:{second}"

    def acks_minute(self, edge, minute):
        return f"{self._in('am', shard_of(edge))}:{edge}:{minute}"

    def backlog_minute(self, edge, minute):
        return f"{self._in('eb', shard_of(edge))}:{edge}:{minute}"

    def offline(self, edge):
        return f"{self._in('off', shard_of(edge))}:{edge}"

    def store_id(self, edge):
        """The identity of the store an edge's tuples are in (its shard's), made on first use: a store emptied
        or replaced gets a new one, which the edge hears in the heartbeat's reply."""
        return self._in("store", shard_of(edge))

    def beat_nonce(self, edge, nonce):
        """A heartbeat's nonce (bytes), kept a while so no replica takes the same heartbeat twice."""
        return f"{self._in('beat', shard_of(edge))}:{edge}:{nonce.hex()}"
