"""Event-time tumbling windows per household, with no I/O.

A reading at `ts` (epoch ms) belongs to the window starting at
floor(ts / W) * W. Staggered (FOG_WINDOW_STAGGER), each household's windows
start at a phase of its own instead, floor((ts - phase) / W) * W + phase,
where the phase is a multiple of PHASE_STEP_MS below W taken from a CRC-32
of the household's id: the same on every edge and in every run, so a replay
makes the same windows. Aligned, every household's window ends in the same
instant, and at real time the edge closes, stores and sends a whole
window's worth of tuples at once, every W; staggered (Flink's
WindowStagger offsets its panes for the same reason; here the offset is
per household and fixed), they flow evenly (`bench e2e --stagger
--baseline aligned-windows` measures the two). A household still has one
window every W, each reading in exactly one; only where they begin moves.
Change it, as FOG_WINDOW_SECONDS, only after `runedge --burst` stored every
window: otherwise the readings a restart replays from Kafka make windows of
the other kind, which the unique key cannot match with those stored.

Each household has an event clock, the newest event time
of its stream. A window closes when its household's clock reaches the
window's end plus the grace period, or when no reading has come to it for
the idle timeout (wall clock; a live window waits for its household's live
clock instead, below; the idle timeout closes one only LIVE_BACKSTOP_IDLES
idle timeouts after its end). A reading whose window has closed, or would
have, is late: counted, never applied. A reading at a time its household's
open window already has a reading for is a duplicate (a producer's retry,
the same message in two partitions): counted, never applied, so no reading
weighs twice in an average; the first one stands, and the copy does not keep
the window from its idle timeout.

Far-ahead readings: a reading more than MAX_JUMP_MS ahead of its
household's clock (or, in a live stream, more than LIVE_WITHIN_MS ahead of
the edge's clock) is applied to its own window but does not move the clock,
unless the household's previous far-ahead reading lies within MAX_JUMP_MS of
it (two readings agree: the stream really jumped, e.g. a meter back after an
outage). So one reading with a wrong clock (23 h ahead, say) cannot make the
household's following genuine readings late; its window closes by the idle
timeout (a live one's: LIVE_BACKSTOP_IDLES), or when the clock catches up. A household's first reading sets its
clock, but only until the next one: a second reading more than MAX_JUMP_MS
behind it shows the first was the stray one (unless the first came live, at
about its own time by the edge's clock), whose time is then forgotten (as a
far-ahead reading's) and the second's taken.

Live streams: a household whose readings carry event times within
LIVE_WITHIN_MS of the edge's clock when they arrive is live, and its event
clock also advances with the wall clock between its readings (its newest
event time plus the wall time since that reading came). `close_live` closes
the windows that clock has carried past their end plus the live grace, so
at real time a window is stored `live grace` after its end instead of
waiting for the household's next reading. The live grace can be shorter
than the event-time grace: the extrapolated clock already absorbs the
stream's steady delay (a household whose readings arrive 0.6 s after their
event time has its windows closed 0.6 s later), so the live grace only
covers jitter, a reading that comes later than its household's usual. A
reading that comes later still is late, and counted as such. When a reading
"arrives" is the caller's to say (`wall_ms`): the ingest gives its Kafka
record's timestamp carried onto the edge's clock by the partition's usual
lag (edge_app/ingest.py), so the time a reading waited in Kafka for a busy
ingest does not count as its household's delay.

The wall clock counts only as far as the consumer has read: while it is
behind in a partition, up to the timestamp of the newest record it has read
there (the ingest's `read_clock`). So a consumer that lags (catching up
after a restart, or overloaded) never closes a window whose readings are
still unread, and one that keeps up need not stop reading to close windows:
at real time the next readings stream in while the last windows close.
Replays of past data are never live and follow event time alone. A step of
the edge's wall clock (NTP setting it) is not time passed: the ingest moves
every live household's clock with it (`shift_clock`), so a step forward
closes nothing early.

Memory: a household silent for FORGET_AFTER_IDLES idle timeouts is
forgotten once its windows have all closed (a live one may close later:
LIVE_BACKSTOP_IDLES). Until then a straggler for a
closed window is late; after it, such a reading opens that window again and
the database's unique key absorbs the copy (nothing is counted twice).
Resume offsets only ever depend on open windows, so forgetting changes none.

Every open window remembers the Kafka offset of its first reading (in each
partition it has readings from: unkeyed input spreads a household over all
of them), so the consumer can resume from the oldest offset still inside an
open window.

Keyed input keeps a household's readings in one partition, in order; only
across partitions can the ingest read one far ahead of another (a backlog
comes in chunks per partition). A household whose readings come from a
second partition (producers that partition differently, or partitions
added to the topic, which moves keys) can then find its windows closed by
the other's readings: late. The book notes each such move (`moved`) for
the ingest to say.

Compiled: `make build` turns this module, with the C types of windows.pxd,
into an extension module (Cython), which Python imports instead; the same
code runs as plain Python where it is not built (edge_app/compiled.py says
which runs). Hence OpenWindow and Household are plain classes, not
dataclasses, and the loops keep `wall` apart from `wall_ms`, which may be
None: a C integer cannot.
"""

import heapq
import math
import zlib
from dataclasses import dataclass

from fogwire.limits import MAX_POWER_W

LIVE_WITHIN_MS = 30_000  # event time this close to the edge's clock on arrival: the stream is live
MAX_JUMP_MS = 10 * 60 * 1000  # further ahead than this, a lone reading does not move its household's clock
FORGET_AFTER_IDLES = 6  # idle timeouts of silence after which a household leaves memory
# close_live closes a live window once the consumer has read what came before its end: the idle timeout closes
# one only this many idle timeouts after its end, whatever came to it, so that a read clock that stands still
# (a partition that never catches up) keeps none open for good, while a stall of the loop shorter than that
# (a slow commit, a pause) does not make late the readings it held up in Kafka.
LIVE_BACKSTOP_IDLES = FORGET_AFTER_IDLES
# Each open live window has one entry in the live timetable; past this many more (and as many again as open
# windows), the timetable is pruned of the entries of windows closed elsewhere.
STALE_LIVE_MIN = 10_000
# Staggered windows start on this grid: coarse enough that the windows ending in one of the dashboard's
# updates are a few ends, not thousands (the cloud counts each end's tuples, for `bench e2e`'s freshness).
PHASE_STEP_MS = 100
LATE, APPLIED, DUPLICATE = 0, 1, 2  # what add() did with a reading (LATE is falsy, APPLIED truthy)


def window_phase(household, window_ms):
    """Where in every W-long span a household's staggered windows start (ms): a multiple of PHASE_STEP_MS
    below window_ms, the same wherever and whenever it is asked."""
    phases = max(window_ms // PHASE_STEP_MS, 1)
    return zlib.crc32(household.encode()) % phases * PHASE_STEP_MS


class OpenWindow:
    """A window open in the book. Compared and hashed as itself: the key of its entry in WindowBook.opened."""

    __slots__ = ("start", "partition", "first_offset", "total", "count", "touched", "live_until", "others", "stamps")

    def __init__(self, start, partition, first_offset, total=0.0, count=0, touched=0.0, live_until=0.0, others=None,
                 stamps=None):
        self.start, self.partition, self.first_offset = start, partition, first_offset
        self.total, self.count = total, count
        self.touched = touched  # wall clock (monotonic seconds) of its latest reading
        # Opened by a live reading: close_live closes it, on its household's clock; close_idle only from this time on
        # (monotonic s): LIVE_BACKSTOP_IDLES idle timeouts after its end and live grace, by its first reading's own
        # delay. 0: not live, closed by the idle timeout as usual.
        self.live_until = live_until
        self.others = others  # partition -> first offset, for readings from other partitions than the first
        self.stamps = set() if stamps is None else stamps  # the event times applied: a copy of one is a duplicate


@dataclass(slots=True)
class ClosedWindow:
    household: str
    start: int
    end: int
    average: float
    count: int


class Household:
    __slots__ = ("windows", "newest_ts", "closed_until", "closed_ahead", "ahead_ts", "last_seen", "newest_at",
                 "confirmed", "phase", "partition")

    def __init__(self, phase=0):
        self.windows = {}  # start -> OpenWindow
        self.newest_ts = -1
        self.closed_until = -1  # end of the newest window closed by the clock
        self.closed_ahead = set()  # starts of far-ahead windows closed by the idle timeout
        self.ahead_ts = -1  # the latest far-ahead reading, waiting for a second one to agree
        self.last_seen = 0.0  # wall clock (monotonic seconds)
        self.newest_at = 0  # when the reading at newest_ts arrived (epoch ms, as add's wall_ms)
        self.confirmed = False  # a second reading within MAX_JUMP_MS of the clock has come: it is not one stray
        self.phase = phase  # its windows start at phase + k * W (window_phase; 0 aligned)
        self.partition = -1  # where its latest reading came from (keyed input keeps a household in one)


class WindowBook:
    def __init__(self, window_ms, grace_ms, idle_seconds, live_grace_ms=None, stagger=False, keyed=True):
        if window_ms <= 0:
            raise ValueError("window must be positive")
        self.window_ms, self.grace_ms, self.idle_seconds = window_ms, grace_ms, idle_seconds
        self.stagger = stagger
        self.live_grace_ms = grace_ms if live_grace_ms is None else min(live_grace_ms, grace_ms)
        self.households = {}
        self.closed = []
        # The live timetable: when a live window may close (epoch ms on the edge's clock) -> [(its end, household),
        # ...], and those times as a heap. A heap of the windows themselves costs a sift through every open one at
        # each push and pop; at real time tens of thousands of windows come due a second, on far fewer distinct
        # milliseconds, and each is a list append here.
        self.live_due = {}
        self.live_times = []
        self.live_entries = 0  # entries in live_due, of open windows and of those closed since by other means
        self.open_count = 0  # open windows, kept as they open and close (the budget asks every poll)
        # close_idle passes over every household only once one of these floors lets a window close or a household
        # be forgotten, each held to `now` as the pass holds its own times (the same float expressions, so no
        # rounding tells the two apart). A pass over 100,000 households held the ingest up for tens of
        # milliseconds every check, to find nothing at real time, where close_live closes every window first.
        self.idle_live = -math.inf  # the earliest live_until of a live window (<= now)
        self.idle_base = -math.inf  # the earliest latest reading of a window not live (<= now - idle)
        self.forget_base = -math.inf  # the earliest a household was last seen (<= now - idle * FORGET_AFTER_IDLES)
        # partition -> {window: first offset} of the open windows that began there. A partition's
        # readings are applied in offset order, so each dict's first entry holds its oldest offset.
        self.opened = {}
        self.last_opened = {}  # partition -> offset of the newest window opened there
        self.unordered = set()  # partitions read backwards (a topic made anew): their dicts are not in order
        self.spread = 0  # open windows with readings from more than one partition (unkeyed input)
        self.keyed = keyed  # a household's readings come from one partition: a move is noted
        self.moved = {}  # household -> (partition before, partition now), taken by the ingest

    def add(self, household, ts, power, partition, offset, now, wall_ms=None):
        """Apply one reading that arrived at `now` (monotonic s) and `wall_ms` (the edge's clock, epoch ms;
        None: no live closing). Returns APPLIED, or LATE or DUPLICATE having applied nothing."""
        late, duplicates = self.add_many(((household, ts, power),), partition, offset, now, wall_ms)
        return LATE if late else DUPLICATE if duplicates else APPLIED

    def add_many(self, readings, partition, offset, now, wall_ms=None):
        """add() each (household, ts, power) of one Kafka message, in order; returns (late, duplicates): how
        many were not applied, and why. One call a message, not a reading: what every reading reads of the
        book is read once, the larger part of the edge's work at the households it is sized for."""
        late = duplicates = 0
        # What every reading reads of the book, read once: none of it is rebound while a message is applied.
        households, window_ms, grace_ms, live_grace_ms = self.households, self.window_ms, self.grace_ms, self.live_grace_ms
        opened_all, last_opened = self.opened, self.last_opened
        live_clock = wall_ms is not None
        wall = wall_ms if live_clock else 0  # 0: no arrival time, as `newest_at` keeps it
        for household, ts, power in readings:
            state = households.get(household)
            if state is None:
                state = households[household] = Household(
                    phase=window_phase(household, window_ms) if self.stagger else 0)
            if not state.confirmed and state.newest_ts >= 0:
                # Far behind the first reading: beyond MAX_JUMP_MS, or beyond LIVE_WITHIN_MS when this one comes live
                # (at about its time by the edge's clock) and the first did not.
                live = live_clock and abs(ts - wall) <= LIVE_WITHIN_MS
                if state.newest_ts - ts > (LIVE_WITHIN_MS if live else MAX_JUMP_MS) and not self._came_live(state):
                    # The clock stands on the first reading alone, this far ahead of the second: that one was the
                    # stray. Nothing but its window can have closed by it (not live: by the idle timeout at most),
                    # and that window now closes by the idle timeout, or stays closed (stored: a reading for it is
                    # late). It stays the reading a jump must agree with.
                    if state.closed_until >= 0:
                        state.closed_ahead.add(state.closed_until - window_ms)
                    state.ahead_ts, state.newest_ts, state.newest_at, state.closed_until = (
                        state.newest_ts, ts, wall, -1)
                elif ts != state.newest_ts and ts - state.newest_ts <= MAX_JUMP_MS:  # not a copy of the first
                    state.confirmed = True
            if state.partition != partition:  # rare for keyed input; every reading may for unkeyed
                if state.partition >= 0 and self.keyed:
                    self.moved[household] = (state.partition, partition)
                state.partition = partition
            newest, windows = state.newest_ts, state.windows
            start = ts - (ts - state.phase) % window_ms
            end = start + window_ms
            if end <= state.closed_until or end + grace_ms <= newest or start in state.closed_ahead:
                late += 1
                if state.last_seen < self.forget_base:  # a household whose first reading was late: never seen
                    self.forget_base = state.last_seen
                continue
            window = windows.get(start)
            if window is None:
                live_until = 0.0
                if live_clock and abs(ts - wall) <= LIVE_WITHIN_MS:
                    # Due at end + live grace on the household's clock, which runs (wall_ms - ts) behind the edge's.
                    self._due_at(end + live_grace_ms + wall - ts, end, household)
                    live_until = now + (end + live_grace_ms - ts) / 1000 + self.idle_seconds * LIVE_BACKSTOP_IDLES
                window = windows[start] = OpenWindow(start, partition, offset, power, 1, now, live_until, None, {ts})
                if live_until:
                    if live_until < self.idle_live:
                        self.idle_live = live_until
                elif now < self.idle_base:
                    self.idle_base = now
                if now < self.forget_base:  # its household is seen now (a new one, or one after a pass at nothing)
                    self.forget_base = now
                self.open_count += 1
                opened = opened_all.get(partition)
                if opened is None:
                    opened = opened_all[partition] = {}
                if offset < last_opened.get(partition, -1):
                    self.unordered.add(partition)
                last_opened[partition] = offset
                opened[window] = offset
                state.last_seen = now
            else:
                stamps = window.stamps
                if ts in stamps:
                    # A copy says the household is there, not that the window goes on: a meter repeating one reading
                    # (a frozen clock, a producer retrying in a loop) kept it open, and its resume offset, for good.
                    state.last_seen = now
                    duplicates += 1
                    continue
                if partition != window.partition:
                    if window.others is None:
                        window.others = {}
                        self.spread += 1
                    window.others.setdefault(partition, offset)
                stamps.add(ts)
                window.total += power
                window.count += 1
                window.touched = state.last_seen = now
            if ts > newest:
                # Far ahead: beyond MAX_JUMP_MS of the household's clock, or, for a household that came live, beyond
                # LIVE_WITHIN_MS of the edge's own clock (one reading five minutes ahead closed its open window
                # and made a minute of its genuine readings late).
                far = ts - newest > MAX_JUMP_MS or (
                    live_clock and ts - wall > LIVE_WITHIN_MS and self._came_live(state))
                if newest < 0 or not far or abs(ts - state.ahead_ts) <= MAX_JUMP_MS:
                    if far and newest >= 0:  # two readings agree: the stream jumped, its clock is no lone stray
                        state.confirmed = True
                    state.newest_ts, state.ahead_ts = ts, -1
                    state.newest_at = wall
                    reach = ts - window_ms - grace_ms  # a window starting no later is due by event time
                    for open_start in windows:  # most readings close nothing: no list, no sort for them
                        if open_start <= reach:
                            self._close_starts(household, state, [s for s in windows if s <= reach])
                            break
                else:
                    state.ahead_ts = ts  # a lone reading far ahead: wait for a second one before believing it
        return late, duplicates

    @staticmethod
    def _came_live(state):
        """The household's newest reading came within LIVE_WITHIN_MS of its time, by the edge's clock: a meter
        whose clock is right, so a reading far behind it is the stray one, not it."""
        return bool(state.newest_at) and abs(state.newest_at - state.newest_ts) <= LIVE_WITHIN_MS

    def _due_at(self, due, end, household):
        """Put the live window ending at `end` into the timetable, due at `due`."""
        entries = self.live_due.get(due)
        if entries is None:
            self.live_due[due] = [(end, household)]
            heapq.heappush(self.live_times, due)
        else:
            entries.append((end, household))
        self.live_entries += 1

    def next_live_due_ms(self):
        """When the earliest live window may close (epoch ms on the edge's clock), or None."""
        return self.live_times[0] if self.live_times else None

    def _close(self, household, state, start):
        window = state.windows.pop(start)
        self.open_count -= 1
        opened = self.opened[window.partition]
        del opened[window]
        if not opened:
            self.unordered.discard(window.partition)
        if window.others is not None:
            self.spread -= 1
        average = window.total / window.count
        if average > MAX_POWER_W:  # every reading is at most MAX_POWER_W, so the true mean is too: only rounding
            average = MAX_POWER_W
        self.closed.append(ClosedWindow(household, start, start + self.window_ms, average, window.count))

    def _close_starts(self, household, state, due):
        for start in sorted(due):
            self._close(household, state, start)
            if start <= state.newest_ts:
                state.closed_until = max(state.closed_until, start + self.window_ms)
            else:
                state.closed_ahead.add(start)
        if state.closed_ahead:
            state.closed_ahead = {s for s in state.closed_ahead if s >= state.closed_until}

    def close_idle(self, now):
        """Close every window no reading came to for the idle timeout, and forget silent households (once
        their windows have all closed). A live window is close_live's to close, when its household's clock, which
        runs on between its readings, passes its end and the consumer has read what came before then (by the
        idle timeout, a meter reading less often than it had its long windows closed between two readings, and
        the readings after made late); here only from its `live_until` on (LIVE_BACKSTOP_IDLES).

        Returns how many windows closed. `now` never goes back from one call of the book to the next (the
        monotonic clock), and a time the book keeps of a window or household is the `now` of a call, or moved
        on by shift_idle: whatever one is set to after a pass at `now` is no earlier than that. So a pass that
        finds the earliest times an idle close or a forget can come from (idle_live, idle_base, forget_base),
        each held to `now` where a kept time lies beyond it, need not be made again until `now` reaches one,
        but for what opens, is seen or loses its live clock since, and a household whose first reading was late
        (never seen): each of those lowers them.
        """
        before = len(self.closed)
        idle = self.idle_seconds
        if (self.idle_live <= now or self.idle_base <= now - idle
                or self.forget_base <= now - idle * FORGET_AFTER_IDLES):
            self._pass_idle(now)
        if self.live_entries > 2 * self.open_count + STALE_LIVE_MIN:  # most of its entries are for closed windows
            self._prune_live()
        return len(self.closed) - before

    def _pass_idle(self, now):
        """close_idle's pass over every household; sets the floors the next one waits for."""
        idle = self.idle_seconds
        cutoff, forget = now - idle, now - idle * FORGET_AFTER_IDLES
        silent, live_floor, base_floor, forget_floor = [], math.inf, math.inf, math.inf
        for household, state in self.households.items():
            windows, quiet = state.windows, state.last_seen <= cutoff  # quiet: every window of it is idle
            for window in windows.values():  # nearly every household's: nothing due, no list made
                if window.live_until <= now if window.live_until else quiet or window.touched <= cutoff:
                    self._close_starts(household, state, [s for s, w in windows.items() if (
                        w.live_until <= now if w.live_until else quiet or w.touched <= cutoff)])
                    break
            # A time shift_idle moved beyond `now` may still be set back to a later call's: none is held above `now`.
            last_seen = state.last_seen if state.last_seen < now else now
            for window in windows.values():  # those left open: a reading for one only makes it later
                if window.live_until:
                    if window.live_until < live_floor:
                        live_floor = window.live_until
                else:  # idle once its latest reading, or its household's (`quiet`), is `idle` old
                    base = window.touched if window.touched < last_seen else last_seen
                    if base < base_floor:
                        base_floor = base
            if state.last_seen <= forget and not windows:
                silent.append(household)
            elif last_seen < forget_floor:
                forget_floor = last_seen
        for household in silent:
            del self.households[household]
        self.idle_live, self.idle_base, self.forget_base = live_floor, base_floor, forget_floor

    def _prune_live(self):
        """The timetable without the entries of live windows closed by their clock or the idle timeout: close_live
        drops each as it comes due, but a read clock that stands still brings none due (a window a second a
        household, for as long as it stands)."""
        households, window_ms, kept, count = self.households, self.window_ms, {}, 0
        for due, entries in self.live_due.items():
            alive = [(end, household) for end, household in entries
                     if (state := households.get(household)) is not None and end - window_ms in state.windows]
            if alive:
                kept[due] = alive
                count += len(alive)
        self.live_due, self.live_times, self.live_entries = kept, sorted(kept), count  # a sorted list is a heap

    def close_live(self, wall_ms, read_ms=None, limit=None):
        """Close the live windows whose household's clock, advanced by the wall clock since its newest
        reading, has passed their end plus the live grace. `read_ms`: the time up to which the consumer has
        read everything (None: all of it); the wall clock counts only that far. `limit`: close at most this
        many (the rest stay due for the next call). Returns how many closed.

        O(windows due) a call: the timetable holds each live window once, at the time it was due when it
        opened; one whose household's stream has since fallen further behind goes back in at its new time.
        """
        clock = wall_ms if read_ms is None else min(wall_ms, read_ms)
        times, timetable = self.live_times, self.live_due
        if not times or times[0] > clock:
            return 0
        # The close of _close, inlined with the book's counters in locals: at real time this runs for every window.
        households, opened_all, unordered = self.households, self.opened, self.unordered
        window_ms, grace, closed = self.window_ms, self.live_grace_ms, self.closed
        open_count, spread, taken_all = self.open_count, self.spread, 0
        before, left = len(closed), -1 if limit is None else limit  # closes still allowed (-1: no limit)
        while times and times[0] <= clock and left:
            due_at = times[0]
            entries = timetable[due_at]
            taken = 0
            for end, household in entries:
                if not left:
                    break
                taken += 1
                state = households.get(household)
                start = end - window_ms
                window = None if state is None else state.windows.get(start)
                if window is None or not state.newest_at:
                    if window is not None:
                        window.live_until = 0.0  # no live clock to close it by: the idle timeout does
                        self.idle_base = -math.inf  # (close_live has no monotonic time: the next pass sets it)
                    continue  # closed already, by its clock or the idle timeout
                due = end + grace + state.newest_at - state.newest_ts
                if due > clock:  # later than `due_at`, so never into the list being read
                    self._due_at(due, end, household)
                    continue
                del state.windows[start]
                open_count -= 1
                partition = window.partition
                opened = opened_all[partition]
                del opened[window]
                if not opened:
                    unordered.discard(partition)
                if window.others is not None:
                    spread -= 1
                average = window.total / window.count
                if average > MAX_POWER_W:  # as in _close
                    average = MAX_POWER_W
                closed.append(ClosedWindow(household, start, end, average, window.count))
                if end > state.closed_until:
                    state.closed_until = end
                if state.closed_ahead:
                    state.closed_ahead = {s for s in state.closed_ahead if s >= state.closed_until}
                left -= 1
            taken_all += taken
            if taken < len(entries):  # the limit came first: the rest stay due
                del entries[:taken]
                break
            heapq.heappop(times)
            del timetable[due_at]
        self.live_entries -= taken_all  # _due_at added those it put back
        self.open_count, self.spread = open_count, spread
        return len(closed) - before

    def shift_clock(self, ms):
        """The edge's clock stepped by `ms` (set by NTP, say): each live household's clock keeps to the time that
        passed, so no live window closes early for a step forward, nor late for one back. The timetable's times
        move with them (all by the same amount, so the heap's order holds)."""
        for state in self.households.values():
            if state.newest_at:
                state.newest_at += ms
        self.live_due = {due + ms: entries for due, entries in self.live_due.items()}
        self.live_times = [due + ms for due in self.live_times]

    def shift_idle(self, seconds):
        """Forget `seconds` of silence: the ingest paused (for its budget), the households did not."""
        for state in self.households.values():
            state.last_seen += seconds
            if state.newest_at:
                state.newest_at += int(seconds * 1000)
            for window in state.windows.values():
                window.touched += seconds
                if window.live_until:
                    window.live_until += seconds

    def close_all(self):
        for household, state in self.households.items():
            if state.windows:
                self._close_starts(household, state, list(state.windows))

    def take_closed(self):
        closed, self.closed = self.closed, []
        return closed

    def open_windows(self):
        return self.open_count

    def resume_offsets(self, next_offsets):
        """Per partition: the oldest offset inside an open window, else the next unread offset."""
        resume = dict(next_offsets)
        if not self.spread:  # O(partitions): each partition's oldest open window comes first in `opened`
            for partition, opened in self.opened.items():
                if not opened:
                    continue
                offset = min(opened.values()) if partition in self.unordered else next(iter(opened.values()))
                if offset < resume.get(partition, offset + 1):
                    resume[partition] = offset
            return resume
        for state in self.households.values():
            for window in state.windows.values():
                if window.first_offset < resume.get(window.partition, window.first_offset + 1):
                    resume[window.partition] = window.first_offset
                for partition, offset in (window.others or {}).items():
                    if offset < resume.get(partition, offset + 1):
                        resume[partition] = offset
        return resume
