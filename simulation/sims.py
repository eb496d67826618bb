"""The mosaik simulators: many households in one simulator, a Kafka adapter, a collector.

One Household simulator holds every household entity (the original
prototype ran one simulator per household and slowed down as they grew).
Each step, every household entity outputs `readings`: the (ts ms, watts)
pairs whose event time falls into that step. The adapter sends them to Kafka
and the collector, if asked for, keeps a compact summary.
"""

import json
from datetime import datetime

import mosaik_api_v3
import orjson

from fogwire.limits import READINGS_FIELD
from simulation.synthetic import SyntheticHousehold
from simulation.spread import SLICE_MS, slices

# A next step past any `until`: mosaik schedules no further step of a simulator that returns it,
# so once a stop is requested each simulator ends at its next step and `world.run` returns.
END_OF_TIME = 2**62

HOUSEHOLD_META = {
    "type": "time-based",
    "models": {"Household": {"public": True, "params": [], "attrs": ["readings"]}},
}
SINK_META = {
    "type": "time-based",
    "models": {"Sink": {"public": True, "params": [], "attrs": ["readings"]}},
}


class HouseholdSim(mosaik_api_v3.Simulator):
    """`source` is a list of CsvHousehold, or ('synthetic', seed, count, start_ms, zone)."""

    def __init__(self):
        super().__init__(HOUSEHOLD_META)
        self.entities = {}

    def init(self, sid, time_resolution=1.0, *, source, step, start_ms, zone=None, pacer=None, stats=None,
             spread=False):
        self.step_s, self.start_ms = step, start_ms
        # Spread (simulation/spread.py): household n reads at moment n % moments of each step, SLICE_MS apart.
        self.moments = slices(int(step * 1000)) if spread else 1
        self.pacer, self.stats = pacer, stats  # pacer: the RunStats of a paced run, which knows its speed
        self.synthetic = isinstance(source, tuple)
        if self.synthetic:
            _, seed, count, _, self.zone = source
            self.households = [SyntheticHousehold(seed, i) for i in range(count)]
        else:
            self.households = source
            self.cursor = [0] * len(source)
        self.current = {}
        return self.meta

    def create(self, num, model):
        first = len(self.entities)
        created = []
        for index in range(first, first + num):
            household = self.households[index]
            eid = household.household
            self.entities[eid] = index
            created.append({"eid": eid, "type": model})
        return created

    def step(self, time_s, inputs, max_advance):
        if self.pacer is not None:
            self.pacer.begin_build(time_s)  # real time (or a multiple): see RunStats
        if _stopping(self.stats):
            self.current = {}  # a step that was not due yet sends nothing
            return END_OF_TIME
        lo = self.start_ms + time_s * 1000 + (self.pacer.shift_ms if self.pacer is not None else 0)
        hi = lo + self.step_s * 1000
        current = {}
        if self.synthetic:
            # One reading per household per step, at the step's start, or spread at the household's own moment.
            moments = self.moments
            stamps = [lo + k * SLICE_MS for k in range(moments)]
            minutes = [_local_minute(ts, self.zone) for ts in stamps]
            for eid, index in self.entities.items():
                k = index % moments
                current[eid] = {"readings": [(stamps[k], self.households[index].power(stamps[k], minutes[k]))]}
        else:
            for eid, index in self.entities.items():
                household, i = self.households[index], self.cursor[index]
                stamps, powers = household.timestamps, household.powers
                out = []
                while i < len(stamps) and stamps[i] < hi:
                    if stamps[i] >= lo:
                        out.append((stamps[i], powers[i]))
                    i += 1
                self.cursor[index] = i
                current[eid] = {"readings": out}
        self.current = current
        return time_s + self.step_s

    def get_data(self, outputs):
        if len(outputs) == len(self.current):  # the usual case: everything, as built by step()
            return self.current
        return {eid: self.current.get(eid, {"readings": []}) for eid in outputs}


_minute_cache = {}


def _local_minute(ts_ms, zone):
    """Minute of the local day, cached per minute (the offset only changes at DST)."""
    key = ts_ms // 60000
    minute = _minute_cache.get(key)
    if minute is None:
        local = datetime.fromtimestamp(ts_ms / 1000, tz=zone)
        minute = _minute_cache[key] = local.hour * 60 + local.minute
        if len(_minute_cache) > 100_000:
            _minute_cache.clear()
    return minute


class KafkaAdapter(mosaik_api_v3.Simulator):
    """Sends every reading to Kafka as JSON; tracks throughput and real-time lag.

    With `per_message` 1, a message a reading keyed by household; else each step's readings go in batches
    of up to `per_message` (fogwire.limits), one a partition, a household always in the partition its key
    would choose, so its readings stay in order whichever way they are sent. With a `sender`
    (simulation/spread.py) the adapter encodes each step's readings by the moment of the step they carry and
    hands them to it, to go out at those moments; without, the step goes out at once."""

    def __init__(self):
        super().__init__(SINK_META)

    def init(self, sid, time_resolution=1.0, *, producer, stats, step, per_message=1, sender=None, start_ms=0):
        self.producer, self.stats, self.step_s = producer, stats, step
        self.per_message, self.sender, self.start_ms = per_message, sender, start_ms
        self.prefixes = {}
        self.partitions = {}  # household -> its partition (batches)
        return self.meta

    def create(self, num, model):
        return [{"eid": f"kafka-{i}", "type": model} for i in range(num)]

    def step(self, time_s, inputs, max_advance):
        if not self.stats.release(time_s):  # built ahead, and a stop came before its moment
            return END_OF_TIME
        if self.sender is None:
            count = 0
            for _, send, args, readings in self._messages(inputs):  # each sent as soon as it is complete
                send(*args)
                count += readings
            self.producer.poll()
        else:
            count = self._hand_spread(time_s, inputs)
        self.stats.step_done(time_s, count)
        return END_OF_TIME if _stopping(self.stats) else time_s + self.step_s

    def _messages(self, inputs, slot_of=None):
        """(slot, send, args, readings) of each Kafka message of a step's readings, as soon as it is complete: a
        batch of up to per_message readings of one partition and one slot, or a reading keyed by household.
        `slot_of(ts)`: the moment of the step a reading goes out at (spread); without it, every reading's is 0."""
        if self.per_message == 1:
            send, prefixes = self.producer.send, self.prefixes
            for household, readings in _by_household(inputs):
                prefix = prefixes.get(household)
                if prefix is None:
                    prefix = prefixes[household] = (
                        f'{{"household":{json.dumps(household)},"ts":'.encode(), household.encode())
                head, key = prefix
                for ts, watts in readings:
                    yield slot_of(ts) if slot_of else 0, send, (key, b'%s%d,"power_w":%r}' % (head, ts, round(watts, 3))), 1
            return
        send, per_message, known = self.producer.send_batch, self.per_message, self.partitions
        batches = {}  # (slot, partition) -> readings not yet in a message
        for household, readings in _by_household(inputs):
            partition = known.get(household)
            if partition is None:
                partition = known[household] = self.producer.partition_of(household)
            for ts, watts in readings:
                key = (slot_of(ts) if slot_of else 0, partition)
                batch = batches.get(key)
                if batch is None:
                    batch = batches[key] = []
                batch.append((household, ts, round(watts, 3)))
                if len(batch) == per_message:
                    yield key[0], send, (partition, orjson.dumps({READINGS_FIELD: batch}), per_message), per_message
                    batch.clear()  # dumped already
        for (slot, partition), batch in batches.items():
            if batch:
                yield slot, send, (partition, orjson.dumps({READINGS_FIELD: batch}), len(batch)), len(batch)

    def _hand_spread(self, time_s, inputs):
        """Encode the step's readings by the moment they carry (its first SLICE_MS, second, ...; a file's reading
        at the last moment not after its time) and hand them to the sender, each moment's to go out at it."""
        lo, last = self.start_ms + time_s * 1000 + self.stats.shift_ms, slices(int(self.step_s * 1000)) - 1
        slots, count = {}, 0  # slot -> [(send, args), ...]
        for slot, send, args, readings in self._messages(inputs, lambda ts: min(max((ts - lo) // SLICE_MS, 0), last)):
            slots.setdefault(slot, []).append((send, args))
            count += readings
        due, scale = self.stats.due(time_s), SLICE_MS / 1000 / self.stats.speed
        self.sender.hand([(due + slot * scale, slots[slot]) for slot in sorted(slots)])
        return count


class Collector(mosaik_api_v3.Simulator):
    """Keeps count, min, sum and max per household, not the series."""

    def __init__(self):
        super().__init__(SINK_META)

    def init(self, sid, time_resolution=1.0, *, summary, step, stats=None):
        self.summary, self.step_s, self.stats = summary, step, stats
        return self.meta

    def create(self, num, model):
        return [{"eid": f"collector-{i}", "type": model} for i in range(num)]

    def step(self, time_s, inputs, max_advance):
        if self.stats is not None and not self.stats.release(time_s):  # as the adapter: not sent
            return END_OF_TIME
        summary = self.summary
        for household, readings in _by_household(inputs):
            row = summary.get(household)
            for _, watts in readings:
                if row is None:
                    row = summary[household] = [0, watts, 0.0, watts]
                row[0] += 1
                row[1] = min(row[1], watts)
                row[2] += watts
                row[3] = max(row[3], watts)
        return END_OF_TIME if _stopping(self.stats) else time_s + self.step_s


def _by_household(inputs):
    """(household id, its readings this step) for every household with readings, from mosaik's inputs."""
    for readings_by_source in inputs.values():
        for source, readings in readings_by_source["readings"].items():
            if readings:
                yield source.split(".", 1)[1], readings  # mosaik's "<sid>.<eid>": a household id may hold dots


def _stopping(stats):
    return stats is not None and stats.stop_flag()
