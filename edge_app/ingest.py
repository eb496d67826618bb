"""The ingest loop: Kafka readings -> event-time windows -> PENDING tuples.

A tuple's created_at is the moment it was written, on the poll that closed
its window, so acked_at - created_at is the delivery latency.

Closed windows are written in bulk on the poll that closed them; about
every FLUSH_EVERY_SECONDS each partition's resume position (the oldest
offset still inside an open window) is stored, after the windows closed
before it. On start the consumer seeks to those positions, so a crash at any
moment replays the open windows (and perhaps some stored since) and nothing
else is lost; the unique key on (window_start, household) absorbs replays
of windows already stored.

A message is one reading or a batch of them (edge_app/readings.py). A
malformed reading is counted, logged (at most a few lines a minute, with a
summary of the rest) and skipped, so no message can stop ingest at its
offset; a bad reading of a batch is set aside alone, a message unreadable as
a whole counts once. Each such message is kept, with where it is, what is
wrong with it and its first bytes, in the edge's database (SetAsideMessage,
the admin's "set-aside messages"), written with the counters that count it.
Like a key, a batch keeps each of its households in one partition (the
simulation routes them as their ids as keys would go). The
window book's rules (far-ahead readings, idle households leaving memory) are
in edge_app/windows.py.

With a budget (set_budget, edge_app/budget.py) the ingest stops reading while
the backlog is at the budget; the readings wait in Kafka. Readings Kafka
deleted before they were read are never skipped silently: the consumer has
no reset policy, so it stops at the gap, and the ingest logs an ERROR, counts
them (EdgeStatus.lost_to_retention) and goes on from the broker's earliest.

The Kafka client sits behind edge_app/kafka_source.py (confluent-kafka or
kafka-python, FOG_EDGE_KAFKA_CLIENT); this module only sees partitions,
offsets and values, so `handle_one_poll` stays the one step whatever the client.
"""

import logging
import math
import time
from datetime import datetime, UTC
from operator import attrgetter

from django.db import connection, transaction
from django.db.models import F
from django.conf import settings
from django.utils import timezone

from edge_app.budget import RECOUNT_SECONDS, BudgetGate
from edge_app.kafka_source import TOPIC_POLL_SECONDS, KafkaSourceError, OffsetsDeleted, open_source
from edge_app.merge import PartitionMerge
from edge_app.models import (SET_ASIDE_PROBLEM_CHARS, SET_ASIDE_VALUE_BYTES, EdgeStatus, IngestPosition,
                             SetAsideMessage, Status, WindowAggregate)
from edge_app.readings import MalformedReading, parse_message
from edge_app.windows import WindowBook
from fogwire import limits
from fogwire.ratelog import RateLimitedLog

log = logging.getLogger("fog.edge.ingest")

FLUSH_EVERY_SECONDS = 0.5
# Idle windows are looked for IDLE_CHECKS times per idle timeout, at most every IDLE_CHECK_MAX_SECONDS: a look
# passes over every household in memory once one can find something (WindowBook.close_idle), and is a compare before.
IDLE_CHECKS = 4
IDLE_CHECK_MAX_SECONDS = 2.5
IDLE_SECONDS = 10.0  # runedge --idle's default: a household's windows close after this much wall-clock silence
POLL_MS = 200
# How long `connect` (and a burst run's ingest loop) waits for the topic to appear: the simulation makes it.
TOPIC_WAIT_SECONDS = 30
MAX_POLL_READINGS = 20_000  # readings one poll may apply: also the headroom the budget keeps (_room)
BUDGET_SAID_CHANGE = 10  # a budget worked out again is said when it moved by a tenth or more
# Closed windows are committed in parts of at most this many, so the sender can start on the first part
# of a burst (at real time every household's window closes within a second) while the rest is written.
# Safe at any moment: a window stored ahead of its resume position is absorbed by the unique key when a
# crash replays it.
STORE_PART_ROWS = 5000
# Live windows due at once are closed (and sorted, see Ingestor.order_closed) this many at a time before their
# parts are stored: a whole window end at the households the edge is sized for, while a backlog released at
# once (a catch-up) does not hold its first commit back for as long as it takes to close all of it.
CLOSE_ROWS = 100_000
LEGACY_BUFFER_MAX = 20000  # unkeyed input: messages a partition may have waiting in the merge before it is paused
# A live reading arrives, on the edge's clock, at its record's timestamp plus the smallest lag (edge clock at
# the read - record timestamp, at least 0) its partition showed over the last one to two of these periods: the
# producer's clock offset and the transit, without the time the reading waited for a busy ingest (see _apply).
ARRIVAL_LAG_PERIOD_S = 5.0
# The wall clock moved this far against the boot clock between two polls: a step (NTP setting it), which live
# windows must not take for time passed. NTP's slewing moves it by well under a millisecond a second.
CLOCK_STEP_MS = 500
# How long the ingest waits, as it resumes paused partitions (the budget, the merge), for the broker's ends
# (Ingestor.high_marks): not for ever, as the loop must go on answering its stop (a broker away then is a WARNING,
# and the watermarks alone).
RESUME_ENDS_SECONDS = 2
CLOCK_READ_MS = 20  # a reading of the clocks that took longer was interrupted: it is passed over
MALFORMED_LOG_LINES = 5  # at most this many malformed-reading lines per MALFORMED_LOG_SECONDS
MALFORMED_LOG_SECONDS = 60.0
# Set-aside messages written a flush, at most: a flood of bad messages costs the database a bounded write a flush.
# Those over it are counted as malformed all the same, and said; the table keeps the newest (SET_ASIDE_KEEP).
SET_ASIDE_PER_FLUSH = 1000
SET_ASIDE_PROBLEMS_SAID = 5  # a batch's problems written out in its row, then how many more


def _since_boot_ms():
    """The boot clock: monotonic, and on through a suspend (Linux); the monotonic clock elsewhere."""
    if hasattr(time, "CLOCK_BOOTTIME"):
        return time.clock_gettime(time.CLOCK_BOOTTIME) * 1000
    return time.monotonic() * 1000


def _day(start_ms, cache={}):  # noqa: B006  (the shared default is the point: a per-process memo)
    key = start_ms // 86_400_000
    day = cache.get(key)
    if day is None:
        day = cache[key] = datetime.fromtimestamp(key * 86_400, tz=UTC).date().isoformat()
    return day


# The ORM's bulk_create compiles every field of every row; one prepared
# statement run over all rows does not (`bench ingest` measures both). ON
# CONFLICT DO NOTHING (SQLite and PostgreSQL) lets the unique key absorb
# windows replayed after a crash.
INSERT_WINDOWS = (
    f"INSERT INTO {WindowAggregate._meta.db_table} (household, window_start, window_end, day, average_w, readings, "
    "status, postal_code, refusal, attempts, created_at) "
    f"VALUES (%s, %s, %s, %s, %s, %s, {int(Status.PENDING)}, '', '', 0, %s) "
    "ON CONFLICT (window_start, household) DO NOTHING"
)


class IngestSetupError(Exception):
    """The ingest can't start as configured: its loop says so in one line and waits (IngestStep)."""


def window_layout(window_ms, stagger):
    return f"{window_ms / 1000:g} s{' staggered' if stagger else ''}"


def layout_problem(edge_id, topic, layout, positions, beginning):
    """'' if the readings the edge would read again in `topic` go into windows laid out as they were, else why
    they would not. After a stop, each partition resumes at the oldest reading of an open window, before the
    offset it counted up to. Read again under another FOG_WINDOW_SECONDS or FOG_WINDOW_STAGGER, those readings
    make windows that overlap stored ones: counted twice, or lost to the unique key where a start is the same.
    Once every window is stored (a burst's end) nothing is read again, and the layout may change; nor is
    what Kafka deleted since (`beginning`: each partition's first offset now)."""
    before = {p.windows for p in positions} - {"", layout}
    pending = sum(max(p.counted_offset - max(p.resume_offset, beginning[p.partition]), 0)
                  for p in positions if p.partition in beginning)  # not of partitions the topic no longer has
    if not before or not pending:
        return ""
    return (f"the open windows of edge {edge_id} in topic {topic} are {' and '.join(sorted(before))} windows, and "
            f"this run's are {layout} (FOG_WINDOW_SECONDS, FOG_WINDOW_STAGGER): the {pending} Kafka records they "
            "span would be windowed again, overlapping stored windows. Store them first with the settings they "
            "were made with (`runedge --burst`), then change")


class Ingestor:
    def __init__(self, *, edge_id, topic, bootstrap, window_seconds, grace_seconds, idle_seconds, live_windows=True,
                 live_grace_seconds=None, client=None, legacy=False, stagger=False):
        self.edge_id, self.topic, self.bootstrap = edge_id, topic, bootstrap
        self.client = client or settings.FOG_EDGE_KAFKA_CLIENT
        self.live_windows = live_windows
        self.legacy = legacy  # the prototype's unkeyed {"node_id", "power_value"}, merged across partitions
        self.merge = PartitionMerge() if legacy else None
        self.merge_paused = set()  # partitions the merge paused for running ahead
        self.ends_at_resume = {}  # partition -> the broker's end when a pause ended, until read to there
        self.idle_check_seconds = min(idle_seconds / IDLE_CHECKS, IDLE_CHECK_MAX_SECONDS)
        self.book = WindowBook(window_seconds * 1000, int(grace_seconds * 1000), idle_seconds,
                               None if live_grace_seconds is None else int(live_grace_seconds * 1000),
                               stagger=stagger, keyed=not legacy)
        self.layout = window_layout(self.book.window_ms, stagger)  # stored with the positions: see layout_problem
        self.source = None
        self.topic_id = ""  # the broker's id of the topic read (try_connect), '' if it can't tell
        self.next_offsets = {}  # partition -> next offset to read
        self.counted = {}  # partition -> first offset not yet counted
        self.pending = {"readings": 0, "late": 0, "duplicates": 0, "malformed": 0, "lost_to_retention": 0}
        self.totals = dict.fromkeys([*self.pending, "windows"], 0)
        self.set_aside, self.set_aside_over = [], 0  # malformed messages for the next flush (_set_aside), and those over
        self.last_flush = self.last_idle_check = time.monotonic()
        self.dirty = False
        self.malformed_log = RateLimitedLog(log, MALFORMED_LOG_LINES, MALFORMED_LOG_SECONDS)
        self.clock_log = RateLimitedLog(log, MALFORMED_LOG_LINES, MALFORMED_LOG_SECONDS)  # a clock stepping on and on
        self.moved_log = RateLimitedLog(log, MALFORMED_LOG_LINES, MALFORMED_LOG_SECONDS)  # a topic's keys remapped at once
        self.gate = None  # no budget until set_budget
        self.backlog_at = None  # (counted backlog, totals["windows"] then, when), from set_budget on
        self.paused_at = None
        self.lags = ({}, {})  # partition -> smallest lag this period, and the period before (ARRIVAL_LAG_PERIOD_S)
        self.lags_rolled = time.monotonic()
        self.clock_offset_ms = None  # wall clock - boot clock at the last poll (ms): its steps, see CLOCK_STEP_MS
        # Readings a message held in the last poll, to size polls (the room is in readings, a poll takes
        # messages): until the first, as many as a batch may, except for the prototype's single readings.
        self.per_message = 1.0 if legacy else limits.MAX_READINGS_PER_MESSAGE
        self.applied = [0, 0]  # messages and readings _apply applied in this poll
        self.applied_times = {}  # partition -> the timestamp of the last record applied
        self.carry = {}  # partition -> [(offset, (value, timestamp)), ...] a poll brought beyond its room
        self.close_held = False  # the read clock was behind the wall clock at the last live close (_wait_ms)

    # --- start ----------------------------------------------------------

    def connect(self, wait_seconds=TOPIC_WAIT_SECONDS):
        """Open the consumer, wait for the topic, assign every partition at its stored position."""
        deadline = time.monotonic() + wait_seconds
        while not self.try_connect():
            if time.monotonic() >= deadline:
                raise KafkaSourceError(f"topic {self.topic!r} does not exist on {self.bootstrap}")
            time.sleep(TOPIC_POLL_SECONDS)

    def try_connect(self):
        """Open the consumer (once). If the topic exists, assign every partition at its stored position and
        return True; False while it does not exist yet (the simulation makes it)."""
        # No reset policy (kafka_source): a position Kafka deleted is reported, counted, never skipped.
        # Every value comes with its record's timestamp: the event time of legacy input, and for live
        # windows when a reading was sent (see _apply).
        if self.source is None:
            self.source = open_source(self.client, self.bootstrap, client_id=f"edge-{self.edge_id}",
                                      group_id=f"edge-{self.edge_id}", timestamps=True)
        partitions = self.source.partitions(self.topic)
        if not partitions:
            return False
        stored = {p.partition: p for p in IngestPosition.objects.filter(edge_id=self.edge_id, topic=self.topic)}
        known = {p.topic_id for p in stored.values()} - {""}
        self.topic_id = self.source.topic_id(self.topic)
        if not self.topic_id:  # the broker did not say: keep what the positions know, for the next check
            self.topic_id = next(iter(known)) if len(known) == 1 else ""
        elif known - {self.topic_id}:
            # Its offsets start again at 0: the old positions would skip the new topic's first readings.
            log.error("topic %s was deleted and made again since this edge last read it (id %s, then %s); what "
                      "the old one held and this edge had not read is gone. Reading the new one from its beginning",
                      self.topic, ", ".join(sorted(known - {self.topic_id})), self.topic_id)
            # All of the old topic's, also of partitions the new one lacks, or the next start says it again.
            IngestPosition.objects.filter(edge_id=self.edge_id, topic=self.topic).delete()
            stored = {}
        beginning = self.source.low_offsets(self.topic, partitions)
        problem = layout_problem(self.edge_id, self.topic, self.layout, stored.values(), beginning)
        if problem:
            raise IngestSetupError(problem)
        deleted = []
        for partition in partitions:
            position = stored.get(partition)
            offset = max(position.resume_offset, beginning[partition]) if position else beginning[partition]
            if position and beginning[partition] > position.resume_offset:
                deleted.append((partition, position.resume_offset, beginning[partition]))
            self.next_offsets[partition] = offset
            self.counted[partition] = position.counted_offset if position else offset
        for partition, needed, earliest in deleted:
            self._deleted_unread(partition, needed, earliest, seek=False)  # assigned at `earliest` just below
        self.source.assign(self.topic, dict(self.next_offsets))
        if self.merge is not None:  # read up to where it starts: else a partition with nothing new lags for ever
            self.merge.read_to.update(self.next_offsets)
        EdgeStatus.for_edge(self.edge_id)
        log.info("ingest of %s (%s): partitions %s from offsets %s", self.topic, self.source.name, partitions,
                 self.next_offsets)
        return True

    def end_offsets(self):
        """{partition: the broker's end offset now}: where a burst run stops."""
        return self.source.end_offsets()

    def caught_up(self):
        """True when every partition has been read up to the broker's high watermark, as the last fetch
        saw it (no broker call; see edge_app/kafka_source.py)."""
        return self.read_clock() is None

    def high_marks(self):
        """{partition: high watermark}, as the last fetch saw it (None where none came yet), and after a pause
        (the budget's, the merge's) at least the broker's end at the resume. A paused partition is not fetched,
        so its watermark stays where the pause froze it until the first fetch after the resume answers: taken
        for the end, the readings that came meanwhile would find their live windows closed and count as late."""
        marks = self.source.high_watermarks()
        if self.ends_at_resume:
            self.ends_at_resume = {p: end for p, end in self.ends_at_resume.items() if self.next_offsets.get(p, 0) < end}
            marks = {p: high if high is None else max(high, self.ends_at_resume.get(p, 0)) for p, high in marks.items()}
        return marks

    def _take_ends_as_floor(self):
        """After resuming paused partitions: the broker's ends now, under the watermarks until read to (high_marks).
        A floor not reached yet stays, also when the broker does not answer in time (a WARNING: the watermarks
        alone then, as before)."""
        try:
            ends = self.source.end_offsets(timeout_s=RESUME_ENDS_SECONDS)
        except Exception as exc:  # noqa: BLE001 -- either client's error; reading goes on, as it did before
            log.warning("ingest of %s: the broker's ends were not read at the resume (%s); readings that came "
                        "during the pause may count as late", self.topic, exc)
            return
        for partition, end in ends.items():
            self.ends_at_resume[partition] = max(end, self.ends_at_resume.get(partition, end))

    def read_clock(self, marks=None):
        """The time (epoch ms) up to which the ingest has read everything the broker held: None while every
        partition is read to its high watermark (`marks`, else high_marks(): as the last fetch saw it, and
        after a pause at least the broker's end at the resume); else, over the partitions still
        behind, the oldest timestamp of the newest record read. A partition's log is in the order records
        reached the broker, and a record is stamped before it gets there, so a record not read yet reached
        the broker after that time. Live windows close by this clock (see edge_app/windows.py), so the
        ingest need not stop reading to close them, and one that lags closes nothing it has not read.
        Record timestamps are the producers' (CreateTime) unless the topic has the broker stamp them
        (LogAppendTime): a producer whose clock runs ahead of the edge's hides that much lag."""
        marks, read = marks or self.high_marks(), self.source.read_times
        behind = [p for p, high in marks.items() if high is None or self.next_offsets.get(p, 0) < high]
        if behind and self.merge is not None:
            return -1  # unkeyed input: records read may still wait in the merge, unapplied
        # A partition with records carried over (handle_one_poll) has been applied only as far as its last
        # record applied; the others as far as they were read.
        stamps = [(self.applied_times if p in self.carry else read).get(p) for p in behind]
        stamps = [-1 if stamp is None else stamp for stamp in stamps]  # nothing read yet, or a record unstamped
        return min(stamps) if stamps else None

    def room_s(self):
        """Seconds until the next live window may be due: how long the loop may pause for other work
        (a full garbage collection, fogwire/fullgc.py). None: no live window is open."""
        if not (self.live_windows and self.book.live_due):
            return None
        return self.book.next_live_due_ms() / 1000 - time.time()  # the timetable's first time: the earliest it can be

    # --- one step ---------------------------------------------------------

    def handle_one_poll(self, timeout_ms=POLL_MS):
        """Poll once, apply what came, flush if due. True if any message was read."""
        room = self._room()  # while paused the partitions are paused: the poll only waits
        left, deleted = max(room, 1), None  # readings this poll may apply
        try:
            if self.carry and not room:  # paused: what a poll brought beyond its room waits for room
                batches = {}
                time.sleep(timeout_ms / 1000)
            elif self.carry:  # it comes first, and nothing new before it
                batches, self.carry = self.carry, {}
            else:
                batches = self.source.poll(self._wait_ms(timeout_ms), max(int(room / self.per_message), 1))
        except OffsetsDeleted as exc:
            # What the poll read before the gap is applied first, all of it (nothing carried past the seek):
            # beyond its room by what the poll misjudged, as rare as a gap.
            batches, deleted, left = exc.batches, exc.offsets, math.inf
        self._follow_clock_steps()
        now = time.monotonic()
        now_ms = int(time.time() * 1000)
        if now - self.lags_rolled >= ARRIVAL_LAG_PERIOD_S:
            self.lags, self.lags_rolled = ({}, self.lags[0]), now
        read = 0
        for partition, messages in batches.items():
            read += len(messages)  # carried-over messages count again where they are applied: only a flag
            if self.merge is None:
                left = self._apply(partition, messages, now, now_ms, left)
            else:  # the prototype's single readings: a poll brings no more than its room
                self.merge.add(partition, [(message[1][1], message) for message in messages])
        marks = self.high_marks()  # the client's, as of this poll: one look for every use below
        if not deleted:  # a gap moves its partition itself, just below
            self._step_over_what_holds_no_record(marks, batches)
        if self.merge is not None and self._apply_merged(now, now_ms, marks):
            marks = self.high_marks()  # it resumed partitions: their floor counts from now on
        if self.book.moved:  # after every way a poll applies readings
            self._say_moved()
        if deleted:
            earliest = self.source.low_offsets(self.topic, list(deleted))
            for partition, offset in deleted.items():
                needed = self.next_offsets.get(partition, 0) if offset is None else offset
                self._deleted_unread(partition, needed, earliest[partition])
        if self.applied[0]:  # readings a message held in this poll: the next is sized by it
            messages, readings = self.applied
            self.per_message, self.applied = max(1.0, readings / messages), [0, 0]
        # Not while paused for the budget: paused partitions are not fetched, so the high watermarks the
        # read clock compares with are frozen, and unread readings would find their windows closed.
        if self.live_windows and self.paused_at is None and self.book.live_due:
            # At real time every household's aligned window is due within a second: up to CLOSE_ROWS of them
            # are closed, then stored in household order (store_closed), then the next.
            read_ms = self.read_clock(marks)
            away = self.source.away_since_ms()  # what the producers held back meanwhile is stamped since then
            if away is not None:
                read_ms = away if read_ms is None else min(read_ms, away)
            while self.book.close_live(now_ms, read_ms, limit=CLOSE_ROWS):
                self.store_closed()
            self.close_held = read_ms is not None and read_ms < now_ms
        if now - self.last_idle_check >= self.idle_check_seconds and self.paused_at is None:
            self.last_idle_check = now
            self.book.close_idle(now)
        # Closed windows are stored on the poll that closed them (window close -> ACK is a latency
        # target); the positions and counters, a pass over every open window, wait for the timer.
        if self.dirty and now - self.last_flush >= FLUSH_EVERY_SECONDS:
            self.flush()
        elif self.book.closed:
            self.store_closed()
        return read > 0

    def _wait_ms(self, timeout_ms):
        """How long this poll may wait for a message: `timeout_ms`, or until the next live window is due, if sooner.
        Windows come due between the producers' sends (staggered ones all the time): a poll that waited its whole
        timeout held every close due meanwhile back by up to as much.

        Not while the read clock held the last closes back (a partition behind, the broker away): only a record
        read moves that clock on, and it ends the wait anyway; waiting for the wall clock, the loop span round."""
        room = None if self.paused_at is not None or self.close_held else self.room_s()
        if room is None:  # nothing live, paused for the budget, or held back: the whole timeout
            return timeout_ms
        # Rounded up, and a millisecond more: the poll that follows takes the clock in whole milliseconds,
        # rounded down, and a wait cut short by that leaves the window for the next turn.
        return min(timeout_ms, max(math.ceil(room * 1000) + 1, 1))

    def _say_moved(self):
        """Warn of households whose readings came from another partition than before (WindowBook.moved)."""
        for household, (before, now) in self.book.moved.items():
            self.moved_log.warning(
                "household %s: a reading in %s[%d] after readings in %s[%d]. A household's readings belong in one "
                "partition (the same key, and producers that partition alike; adding partitions to a topic moves "
                "keys): while the edge reads a backlog, those of the partition it reads later may count as late",
                household, self.topic, now, self.topic, before)
        self.book.moved.clear()

    def _step_over_what_holds_no_record(self, marks, given):
        """Move each partition read to its last record past the offsets after it that hold none: a transaction's
        commit or abort marker, an aborted transaction's records (read_committed). The high watermark counts
        them, so such a partition never looked read to its end: a burst run never ended, and the read clock
        held live windows back for it. The client's position steps over them; records it gave that wait
        (carried over, or in the merge of unkeyed input) keep their partition where it is. Only partitions this
        poll gave nothing (`given`): one still giving records is not at its end, and a backlog's polls, which
        give from every partition, ask the client nothing."""
        merge = self.merge
        behind = [p for p, high in marks.items() if high is not None and p not in self.carry and p not in given
                  and min(self.next_offsets.get(p, 0), merge.read_to.get(p, 0) if merge else math.inf) < high]
        if not behind:
            return
        for partition, position in self.source.positions(behind).items():
            if position is None:
                continue
            if merge is not None:
                merge.read_to[partition] = max(merge.read_to.get(partition, 0), position)
                if merge.buffered(partition):
                    continue
            if position > self.next_offsets.get(partition, 0):
                self.next_offsets[partition] = position
                self.dirty = True

    def _follow_clock_steps(self):
        """Carry the live windows over a step of the edge's wall clock: their households' clocks run on the wall
        clock, so a step forward would close them early and count the readings still to come as late.

        The wall clock is read between two readings of the boot clock (which, unlike the monotonic one, runs on
        through a suspend: that time did pass); a reading this process was descheduled in the middle of says
        nothing and is passed over."""
        before = _since_boot_ms()
        wall = time.time() * 1000
        after = _since_boot_ms()
        if after - before > CLOCK_READ_MS:
            return
        offset = wall - (before + after) / 2
        last, self.clock_offset_ms = self.clock_offset_ms, offset
        if last is None or abs(offset - last) < CLOCK_STEP_MS:
            return
        step = round(offset - last)
        self.book.shift_clock(step)
        for lags in self.lags:  # the arrival lags measured on the clock before the step
            for partition in lags:
                lags[partition] += step
        self.clock_log.warning("the edge's clock stepped %+.1f s; its live windows keep to the time that passed",
                               step / 1000)

    # --- the budget and readings Kafka deleted (edge_app/budget.py) -------

    def set_budget(self, budget, low_water_mark, counted=None):
        """Stop reading Kafka while the backlog is at `budget` tuples, until it is below the low-water mark;
        `counted`: the backlog, if the caller just counted it."""
        self.gate = BudgetGate(budget, low_water_mark)
        if counted is None:
            counted = WindowAggregate.objects.backlog().count()
        self.backlog_at = (counted, self.totals["windows"], time.monotonic())
        EdgeStatus.objects.filter(edge_id=self.edge_id).update(budget=budget, paused=False)

    def resize_budget(self, budget, low_water_mark):
        """A budget worked out again (free disk space changed): paused or not, the ingest keeps to the new marks."""
        if (budget, low_water_mark) == (self.gate.budget, self.gate.low_water):
            return
        if abs(budget - self.gate.budget) * BUDGET_SAID_CHANGE >= self.gate.budget:
            log.info("edge budget now %d tuples (was %d): the free disk space changed", budget, self.gate.budget)
        self.gate.resize(budget, low_water_mark)
        EdgeStatus.objects.filter(edge_id=self.edge_id).update(budget=budget)

    def _room(self):
        """Readings the next poll may take; pauses or resumes the partitions at the budget's marks."""
        if self.gate is None:
            return MAX_POLL_READINGS
        counted, windows_then, when = self.backlog_at
        # Windows stored since the count only add (the sender only takes away): an upper bound, so the
        # database is counted again only near the budget or while paused (a count is O(backlog)).
        backlog, open_windows = counted + self.totals["windows"] - windows_then, self.book.open_windows()
        near = self.gate.paused or backlog + open_windows + MAX_POLL_READINGS >= self.gate.budget
        if near and time.monotonic() - when >= RECOUNT_SECONDS:
            counted, windows_then = WindowAggregate.objects.backlog().count(), self.totals["windows"]
            self.backlog_at = (counted, windows_then, time.monotonic())
            backlog = counted
        was_paused = self.gate.paused
        room = self.gate.allowed(backlog, open_windows)
        if self.gate.paused and not was_paused:
            self.source.pause()
            self.paused_at = time.monotonic()
            log.warning("ingest paused: backlog %d tuples reached the budget of %d; readings wait in Kafka",
                        backlog, self.gate.budget)
        elif was_paused and not self.gate.paused:
            self.source.resume()
            self.merge_paused = set()  # the budget resumed every partition
            self._take_ends_as_floor()
            self.book.shift_idle(time.monotonic() - self.paused_at)  # a pause is not a household's silence
            self.paused_at = None
            log.info("ingest resumed: backlog %d tuples is below the low-water mark %d", backlog, self.gate.low_water)
        if self.gate.paused != was_paused:
            EdgeStatus.objects.filter(edge_id=self.edge_id).update(paused=self.gate.paused)
        return min(room, MAX_POLL_READINGS)

    def _deleted_unread(self, partition, needed, earliest, seek=True):
        """Kafka deleted [needed, earliest) before the edge read it: say so loudly, count it, go on.

        Counted with the position past it, in the flush's transaction (as the readings are): counted at once, a
        restart before the next flush found the old position still stored and counted the same records again.
        Records the edge had read before (below its counted offset: an open window's, when it stopped) are
        said, not counted as never read."""
        read_before = min(max(self.counted.get(partition, 0), needed), earliest)
        lost = earliest - read_before
        if read_before > needed:
            log.warning("Kafka's retention deleted offsets %d..%d of %s[%d], which this edge read before it stopped: "
                        "the windows they were in when it stopped are stored with the readings still in Kafka",
                        needed, read_before - 1, self.topic, partition)
        if lost:
            log.error("Kafka's retention deleted %d records (readings or batches of them) of %s[%d] (offsets %d..%d) "
                      "before this edge read them",
                      lost, self.topic, partition, read_before, earliest - 1)
            self.pending["lost_to_retention"] += lost
            self.dirty = True
        elif earliest <= needed:  # past the end: the topic was truncated or made anew
            log.error("offset %d of %s[%d] is not in the broker's log; reading again from its earliest offset %d",
                      needed, self.topic, partition, earliest)
        if seek:
            self.source.seek(partition, earliest)
        self.next_offsets[partition] = earliest
        self.ends_at_resume.pop(partition, None)  # an end of the log before the gap (a topic made anew: far ahead)
        if self.merge is not None:
            self.merge.read_to[partition] = earliest  # read from there on

    def needed_offsets(self):
        """Per partition, the oldest offset the edge still needs (what a restart would resume from)."""
        return self.book.resume_offsets(self.next_offsets)

    def _apply(self, partition, messages, now, now_ms, room=math.inf):
        """Apply one partition's (offset, (value, record timestamp)) pairs in offset order, while `room`
        (readings) lasts: a batch is applied whole, the messages after it are carried over to the next poll.
        Returns the room left.

        A live window's household clock starts from when its newest reading arrived: not when this poll
        came round to it, or every reading that waited behind a burst (the ingest storing the windows of
        the last one) would count the wait as its household's usual delay and hold its next window back by
        as much. The record's timestamp says when it was sent, on the producer's clock; the smallest lag of
        the partition's recent reads (ARRIVAL_LAG_PERIOD_S) carries that onto the edge's clock, the producer's
        offset and the usual transit included, so a producer whose clock runs behind the edge's does not
        close windows early. The read clock (read_clock) still keeps every window open until what reached
        Kafka before its close has been read."""
        add_many = self.book.add_many
        live = self.live_windows
        lag = None
        if live and not self.legacy and messages:
            newest = messages[-1][1][1]  # the log is in the order records came: the last is about the newest
            if newest is not None and newest > 0:
                recent, before = self.lags
                # Never below 0: a record stamped ahead of the edge's clock (a producer's clock ahead, or one record
                # stamped so on purpose) made every reading of its partition arrive that much before it was read,
                # its household's clock as far ahead, and its windows close that early, for two periods. At 0 no
                # reading arrives before it was read. (A record stamped ahead of its partition's other producers can
                # still lower the lag to 0: a producer whose clock runs behind the edge's then closes early by as
                # much as it runs behind, no more.)
                lag = max(0, now_ms - newest)
                recent[partition] = lag = min(recent.get(partition, lag), lag)
                lag = min(lag, before.get(partition, lag))
        counted_from = self.counted.get(partition, 0)
        pending, legacy = self.pending, self.legacy
        applied, stop = 0, len(messages)  # readings applied; messages[:stop] applied
        for index, (offset, (value, stamp)) in enumerate(messages):
            if room <= 0:
                self.carry[partition], stop = messages[index:], index
                break
            count = offset >= counted_from
            try:
                # Legacy input has no time of its own: the record's timestamp is its event time.
                readings, problems = parse_message(value, now_ms, stamp if legacy else None)
            except MalformedReading as exc:
                if count:
                    pending["malformed"] += 1
                    self.malformed_log.warning("malformed reading at %s[%d] offset %d: %s", self.topic, partition,
                                               offset, exc)
                    self._set_aside(partition, offset, value, None, str(exc))
                continue
            if problems and count:
                pending["malformed"] += len(problems)
                for place, problem in problems:
                    self.malformed_log.warning("malformed reading at %s[%d] offset %d, reading %d of its batch: %s",
                                               self.topic, partition, offset, place, problem)
                said = "; ".join(f"reading {place}: {problem}" for place, problem in problems[:SET_ASIDE_PROBLEMS_SAID])
                self._set_aside(partition, offset, value, len(problems), said, len(problems) - SET_ASIDE_PROBLEMS_SAID)
            if not live:
                arrived = None  # this reading can never close by the clock
            elif lag is not None and stamp is not None and stamp > 0:
                arrived = min(now_ms, stamp + lag)
            else:  # legacy input, or a record without a timestamp
                arrived = now_ms
            room -= len(readings)
            applied += len(readings)
            late, duplicates = add_many(readings, partition, offset, now, arrived)
            if count:
                pending["readings"] += len(readings)
                pending["late"] += late
                pending["duplicates"] += duplicates
        if stop:
            offset, (_, stamp) = messages[stop - 1]
            self.next_offsets[partition], self.applied_times[partition] = offset + 1, stamp
            self.applied[0] += stop
            self.applied[1] += applied
            self.dirty = True
        return room

    def _set_aside(self, partition, offset, value, readings, problem, more=0):
        """Keep a malformed message for the next flush, which writes it with the counters that count it. `more`:
        the batch's problems not in `problem`, said at its end however long the problems said before are."""
        if len(self.set_aside) >= SET_ASIDE_PER_FLUSH:
            self.set_aside_over += 1
            return
        tail = f"; and {more} more" if more > 0 else ""
        room = SET_ASIDE_PROBLEM_CHARS - len(tail)
        if len(problem) > room:
            problem = problem[:room - 1] + "…"
        problem += tail
        kept = None if value is None else bytes(value[:SET_ASIDE_VALUE_BYTES])
        self.set_aside.append(SetAsideMessage(edge_id=self.edge_id, topic=self.topic, partition=partition,
                                              offset=offset, readings=readings, problem=problem, value=kept,
                                              value_bytes=None if value is None else len(value)))

    def _apply_merged(self, now, now_ms, marks):
        """Apply what the merge releases, in runs of one partition; pause partitions that ran far ahead. True if it
        resumed partitions paused before (_take_ends_as_floor)."""
        lagging = [p for p, high in marks.items() if high is None or self.merge.read_to.get(p, 0) < high]
        run, partition = [], None
        for p, message in self.merge.release(lagging):
            if p != partition and run:
                self._apply(partition, run, now, now_ms)
                run = []
            partition = p
            run.append(message)
        if run:
            self._apply(partition, run, now, now_ms)
        if self.paused_at is not None:
            return False  # the budget has paused every partition; it resumes them all
        ahead = {p for p in marks if self.merge.buffered(p) > LEGACY_BUFFER_MAX}
        if ahead - self.merge_paused:
            self.source.pause(sorted(ahead - self.merge_paused))
        resumed = self.merge_paused - ahead
        if resumed:
            self.source.resume(sorted(resumed))
            self._take_ends_as_floor()  # their watermarks froze while paused, as for the budget
        self.merge_paused = ahead
        return bool(resumed)

    def store_closed(self):
        """Store the windows closed so far, in key order (order_closed) and in parts of
        STORE_PART_ROWS, each committed with its count.

        The resume positions stay where they were until the next flush (marked due here): older positions
        are always safe, since a crash then replays windows already stored and the unique key absorbs them.
        A window leaves the book's closed list only once its part is committed, so a part that fails leaves
        it there for the flush on the way out, and no position can pass it. Returns how many were stored."""
        closed = self.book.closed
        self.order_closed(closed)
        stored = 0
        while closed:
            created = connection.ops.adapt_datetimefield_value(timezone.now())  # each part when it is written
            part = [(w.household, w.start, w.end, _day(w.start), w.average, w.count, created)
                    for w in closed[:STORE_PART_ROWS]]
            with transaction.atomic():
                new = self.insert_windows(part)
                EdgeStatus.objects.filter(edge_id=self.edge_id).update(windows=F("windows") + new)
            del closed[:len(part)]
            self.totals["windows"] += len(part)
            stored += len(part)
            self.dirty = True  # the positions move past these windows at the next flush
        return stored

    def order_closed(self, closed):
        """The unique key's order, (window_start, household), so each part's rows go in at the index's end, next
        to each other: SQLite's WAL writes each page a commit touches in full. (The household index is built
        apart, in sorted runs: edge_app/household_index.py.) `bench store` measures this order against the
        order they closed."""
        closed.sort(key=attrgetter("start", "household"))

    def flush(self):
        """Store closed windows (store_closed), then the resume positions and the counters in one transaction."""
        self.malformed_log.flush()  # a flood of bad readings that stopped is told of too
        self.moved_log.flush()
        stored = self.store_closed()
        resume = self.book.resume_offsets(self.next_offsets)
        positions = [IngestPosition(edge_id=self.edge_id, topic=self.topic, partition=p, resume_offset=resume[p],
                                    counted_offset=max(self.next_offsets[p], self.counted.get(p, 0)),
                                    topic_id=self.topic_id, windows=self.layout)
                     for p in self.next_offsets]
        with transaction.atomic():
            IngestPosition.objects.bulk_create(positions, update_conflicts=True,
                                               unique_fields=["edge_id", "topic", "partition"],
                                               update_fields=["resume_offset", "counted_offset", "topic_id", "windows"])
            # Readings are counted here, in the same transaction as the positions they were counted up to.
            counters = {name: F(name) + value for name, value in self.pending.items() if value}
            if counters:
                EdgeStatus.objects.filter(edge_id=self.edge_id).update(**counters)
            seen = timezone.now()
            for message in self.set_aside:
                message.seen_at = seen
            SetAsideMessage.keep(self.edge_id, self.set_aside)
        self.set_aside = []
        if self.set_aside_over:
            log.warning("%d more malformed messages than the %d a flush kept in the database (set-aside messages): "
                        "counted as malformed, not kept", self.set_aside_over, SET_ASIDE_PER_FLUSH)
            self.set_aside_over = 0
        for position in positions:
            self.counted[position.partition] = position.counted_offset
        for name, value in self.pending.items():
            self.totals[name] += value
            self.pending[name] = 0
        self.last_flush = time.monotonic()
        self.dirty = False
        self.source.commit(resume)  # for Kafka's own lag tools; the database holds the position that counts
        return stored

    def insert_windows(self, rows):
        """Store closed windows; returns how many were new (a replay of a stored window is absorbed)."""
        with connection.cursor() as cursor:
            cursor.executemany(INSERT_WINDOWS, rows)
            return cursor.rowcount

    def finish(self):
        """Close every open window and store it: the end of a burst run."""
        self.book.close_all()
        return self.flush()

    def at_end(self, end_offsets):
        return all(self.next_offsets.get(p, 0) >= offset for p, offset in end_offsets.items())

    def close(self):
        if self.source is not None:
            if self.next_offsets:
                self.source.commit(self.book.resume_offsets(self.next_offsets), wait=True)
            self.source.close()
