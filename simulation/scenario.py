"""The mosaik scenario behind `runsimulation`: households -> Kafka adapter (-> collector)."""

import logging
import math
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fogwire import limits
from fogwire.fullgc import FullCollections
from fogwire.limits import MAX_READINGS_PER_MESSAGE
from simulation.producer import CLIENTS, StoppedBeforeStart
from simulation.sources import DataError, read_folder
from simulation.spread import SpreadSender

log = logging.getLogger("fog.simulation")

SIM_CONFIG = {
    "Household": {"python": "simulation.sims:HouseholdSim"},
    "Kafka": {"python": "simulation.sims:KafkaAdapter"},
    "Collector": {"python": "simulation.sims:Collector"},
}
PROGRESS_EVERY_S = 0.5
# Built ahead (Options.build_ahead): the households start a step this long before it is due, so the adapter sends
# it when due instead of a step's building and mosaik's routing later. The longest build of the last BUILDS_KEPT
# steps, times BUILD_MARGIN, plus BUILD_SLACK_S; at most half the time between steps (RunStats.lead_s).
BUILDS_KEPT = 5
BUILD_MARGIN = 1.5
BUILD_SLACK_S = 0.02
SEND_MARGIN_S = 0.001  # sent this long after the moment, not at it: the records' clock may run a hair behind
# --until's largest value: a century of simulated seconds, far inside mosaik's time (END_OF_TIME, 2**62), so a
# stop's jump to the end of time always comes after it.
MAX_UNTIL_S = 100 * 365 * 86400
# Synthetic households are held in memory, each an object: ten times the most a benchmark runs (bench e2e).
MAX_SYNTHETIC_HOUSEHOLDS = 1_000_000
MAX_SEED = 2**63 - 1  # a household id holds the seed (syn<seed>-<n>): within fogwire.limits.MAX_HOUSEHOLD_ID


@dataclass
class Options:
    until: float | None = None
    speed: float | None = None  # None: as fast as possible
    households: int = 10
    data: str | None = None
    step: int = 2
    seed: int = 0
    start: str = "2019-12-24 00:00:00"
    tz: str = "Europe/Berlin"
    topic: str = "power"
    bootstrap: str = "127.0.0.1:9092"
    client: str = "confluent"
    per_message: int = MAX_READINGS_PER_MESSAGE  # readings a Kafka message; 1: a message a reading, keyed
    build_ahead: bool = True  # paced runs: build a step before it is due, send it when due (RunStats.release)
    spread: bool = False  # paced runs: a household's reading at a moment of its own in the step, sent then (spread.py)
    full_gc_seconds: int = 0  # FOG_FULL_GC_SECONDS (fogwire/fullgc.py); 0: CPython's own rule
    skip_bad_lines: bool = False
    skip_bad_files: bool = False
    collect: bool = False
    progress: bool = False


@dataclass
class RunStats:
    """Throughput, progress and the real-time clock of one run.

    With --speed, the household simulator waits until each step is due on
    this clock (`pace`) and the adapter measures how late the readings of
    that step went out (`step_done`). mosaik's own rt_factor advances in
    polls of up to rt_factor seconds, too coarse for a lag under a second.

    Built ahead (`build_ahead`), the households start each step `lead_s`
    before it is due and the sinks wait for the moment (`release`) before
    the adapter sends: with --speed 1 --start now, a reading goes out at the
    time it carries, not after every household's reading of the step has been
    built and routed through mosaik (at 100,000 households a good part of a
    second, which the edge's live windows then wait for: they learn each
    household's usual delay). The first step has no build to learn a lead
    from, and goes out as built (max_lag).
    """

    until: float
    progress: bool = False
    readings: int = 0
    max_lag: float = 0.0
    started: float = field(default_factory=time.monotonic)
    clock: float | None = None  # wall time of simulated second 0, set by the first step
    # With --start now: the epoch ms simulated second 0 is due, so each step goes out at the wall time it
    # stamps its readings with (anchored at the first step instead, they would carry the start-up's delay).
    anchor_ms: int | None = None
    step_ms: int = 0
    # Whole steps the run starts later than anchor_ms, when setting up outlasted the wait for that boundary
    # (many households, a slow machine): the households add it to their stamps (simulation/sims.py).
    shift_ms: int = 0
    stop_flag: Callable[[], str | None] = lambda: None  # the name of the signal that asked to stop, if any
    # Full garbage collections go where a step waits for its time (an entity per household: a large heap).
    collections: FullCollections = field(default_factory=lambda: FullCollections(0))
    build_ahead: bool = False
    speed: float | None = None  # the run's --speed (None: as fast as possible, never paced)
    building: float | None = None  # monotonic time the households began building the step now in hand
    builds: deque = field(default_factory=lambda: deque(maxlen=BUILDS_KEPT))  # seconds from that to a sink
    released: tuple = (None, True)  # (simulated second, whether it went out): the first sink's answer (release)
    _shown: float = 0.0

    def lead_s(self):
        """How long before a step is due the households start building it (0 until a step was built)."""
        if not (self.build_ahead and self.builds):
            return 0.0
        return min(max(self.builds) * BUILD_MARGIN + BUILD_SLACK_S, self.step_ms / 1000 / self.speed / 2)

    def begin_build(self, time_s):
        """The households' wait for the step of `time_s`: until it is due, or built ahead until its lead before
        (the sinks then wait for the moment: release)."""
        self.pace(time_s, ahead_s=self.lead_s())
        if self.build_ahead:
            self.building = time.monotonic()

    def release(self, time_s):
        """Whether the step of `time_s`, in a sink's hands, goes out. Built ahead, the first sink to ask waits
        for its moment (a little past it: the wall clock the records are stamped with may run a hair behind
        the one paced by), and a stop that comes before keeps the whole step back, as for a step not yet due;
        every other sink of the step gets the same answer, whichever mosaik steps first."""
        if not self.build_ahead:
            return True
        if self.released[0] != time_s:
            if self.building is not None:  # how long building and routing it took counts for the next lead
                self.builds.append(time.monotonic() - self.building)
                self.building = None
            self.released = (time_s, not self.pace(time_s, ahead_s=-SEND_MARGIN_S, collect=False))
        return self.released[1]

    def due(self, time_s):
        """The monotonic moment the step of `time_s` goes out (as release waits for it), once paced."""
        return self._moment(time_s) + SEND_MARGIN_S

    def _moment(self, time_s):
        return self.clock + time_s / self.speed

    def pace(self, time_s, ahead_s=0.0, collect=True):
        """Wait until `ahead_s` before simulated second `time_s` is due, full garbage collections (`collect`) in
        the wait. True if a stop request ended the wait before that."""
        if self.clock is None:
            if self.anchor_ms is None:
                self.clock = time.monotonic()
            else:
                # Both clocks at once: a pause between the readings would put every moment early by as much.
                wall_ms, mono = time.time() * 1000, time.monotonic()
                late = wall_ms - self.anchor_ms
                if late > 0:
                    self.shift_ms = int(-(-late // self.step_ms) * self.step_ms)
                self.clock = mono + (self.anchor_ms + self.shift_ms - wall_ms) / 1000
        now = time.monotonic()
        due = self._moment(time_s) - ahead_s
        if now < due and collect:
            self.collections.handle_one_pause(due - now)
            now = time.monotonic()
        while now < due and not self.stop_flag():
            time.sleep(min(due - now, 0.25))
            now = time.monotonic()
        return now < due

    def step_done(self, time_s, count):
        self.readings += count
        self.collections.handle_one_step()
        now = time.monotonic()
        if self.speed and self.clock is not None:
            self.max_lag = max(self.max_lag, now - self._moment(time_s))
        if self.progress and now - self._shown >= PROGRESS_EVERY_S:
            self._shown = now
            done = min(1.0, time_s / self.until) if self.until else 0
            rate = self.readings / max(now - self.started, 1e-9)
            bar = "#" * int(done * 30)
            sys.stderr.write(f"\r[{bar:<30}] {done:6.1%}  {self.readings:,} readings  {rate:,.0f}/s ")
            sys.stderr.flush()


@dataclass
class Result:
    sent: int
    failed: int
    seconds: float
    skipped_lines: int
    skipped_files: int
    max_lag: float | None
    first_error: str | None
    summary: dict | None
    ended: str = "until"  # or the signal that stopped the run early (SIGINT, SIGTERM)

    @property
    def rate(self):
        return self.sent / self.seconds if self.seconds else 0.0

    def line(self):
        text = (f"simulation: ended={self.ended} sent={self.sent} failed={self.failed} seconds={self.seconds:.1f} "
                f"readings/s={self.rate:,.0f}")
        if self.skipped_lines:
            text += f" skipped_lines={self.skipped_lines}"
        if self.skipped_files:
            text += f" skipped_files={self.skipped_files}"
        if self.max_lag is not None:
            text += f" max_lag_s={self.max_lag:.3f}"
        return text


def _show_reading(done, total, files):
    sys.stderr.write(f"\rreading {files:,} file{'s' if files != 1 else ''}: {done / max(total, 1):6.1%} "
                     f"of {total / 1e6:,.0f} MB ")
    sys.stderr.flush()


def prepare(options):
    """Check everything that can be checked before a byte is sent. Raises DataError."""
    if options.until is not None and not 1 <= options.until <= MAX_UNTIL_S:  # also NaN: no comparison holds
        raise DataError(f"--until takes simulated seconds from 1 to {MAX_UNTIL_S} (a century), got {options.until:g}")
    if options.step <= 0:
        raise DataError(f"--step must be a positive number of seconds, got {options.step}")
    if options.speed is not None and not 0 < options.speed < math.inf:  # also NaN
        raise DataError(f"--speed must be a positive number or 'max', got {options.speed:g}")
    if options.spread and options.speed is None:
        raise DataError("--spread on sends each reading at its moment of the step: it takes a --speed (1 for real "
                        "time), not max")
    try:
        zone = ZoneInfo(options.tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of zones, such as Europe
        raise DataError(f"--tz {options.tz!r} is not a known time zone (e.g. Europe/Berlin, UTC)") from None
    if options.data is not None:
        households, skipped, set_aside = read_folder(options.data, zone, options.skip_bad_lines,
                                                     _show_reading if options.progress else None,
                                                     skip_bad_files=options.skip_bad_files)
        if options.progress:
            sys.stderr.write("\n")
        start_ms = min(h.timestamps[0] for h in households)
        start_ms -= start_ms % (options.step * 1000)
        end_ms = max(h.timestamps[-1] for h in households)
        until = options.until or (end_ms - start_ms) / 1000 + options.step
        _sent_in_time(start_ms, until, options.speed)
        return households, start_ms, int(until), zone, (skipped, set_aside)
    if not 0 < options.households <= MAX_SYNTHETIC_HOUSEHOLDS:
        raise DataError(f"--households takes 1 to {MAX_SYNTHETIC_HOUSEHOLDS:,}, got {options.households}")
    if not 0 <= options.seed <= MAX_SEED:
        raise DataError(f"--seed takes 0 to {MAX_SEED}, got {str(options.seed)[:30]}")
    if options.start == "now":
        # The next step boundary: the first readings go out when it comes, stamped with it (see RunStats).
        step_ms = int(options.step * 1000)
        start_ms = -(-int(time.time() * 1000) // step_ms) * step_ms
    else:
        try:
            start = datetime.fromisoformat(options.start)
        except ValueError:
            raise DataError(f"--start {options.start!r} is not YYYY-MM-DD HH:MM:SS or 'now'") from None
        if start.tzinfo is None:  # local time in --tz, which must have happened there
            naive, start = start, start.replace(tzinfo=zone)
            if datetime.fromtimestamp(start.timestamp(), zone).replace(tzinfo=None) != naive:
                raise DataError(f"--start {options.start!r} never happened in {zone}: the clocks went forward over it")
        start_ms = int(start.timestamp() * 1000)
        # The readings the edge takes (the files' dates are held to the same); with --until at most a
        # century, the last reading's time stays far inside what dates can hold (year 9999).
        if limits.time_problem(start_ms, time.time() * 1000):
            raise DataError(f"--start {options.start!r} is before 2000-01-01 00:00 UTC or more than "
                            f"{limits.FUTURE_SLACK_MS // 3_600_000} h from now: an edge takes no readings from then")
    until = int(options.until or 3600)
    _sent_in_time(start_ms, until, options.speed)
    source = ("synthetic", options.seed, options.households, start_ms, zone)
    return source, start_ms, until, zone, (0, 0)


def _sent_in_time(start_ms, until, speed):
    """Refuse a run whose last readings would go out further ahead of the clock than an edge takes them
    (fogwire.limits.FUTURE_SLACK_MS): at `speed` the run's simulated seconds pass that many times as fast."""
    ahead_ms = start_ms + until * 1000 - (time.time() * 1000 + (until * 1000 / speed if speed else 0))
    if ahead_ms > limits.FUTURE_SLACK_MS:
        raise DataError(f"the run's last readings would go out {ahead_ms / 3_600_000:.0f} h ahead of the clock, and an "
                        f"edge takes none more than {limits.FUTURE_SLACK_MS // 3_600_000} h ahead: lower --until, "
                        "start earlier (--start), or run slower (--speed)")


def run(options, stop_flag=lambda: None):
    """Run the scenario to `until`, or until `stop_flag()` names a signal: then every simulator ends at
    its next step, the producer flushes what was sent, and Result.ended says which signal it was."""
    source, start_ms, until, zone, skipped = prepare(options)
    if not 1 <= options.per_message <= MAX_READINGS_PER_MESSAGE:
        raise DataError(f"readings per message must be 1..{MAX_READINGS_PER_MESSAGE}, not {options.per_message}")
    try:
        producer = CLIENTS[options.client](options.bootstrap, options.topic, stop_flag,  # raises KafkaUnavailable
                                           batched=options.per_message > 1)
    except StoppedBeforeStart as exc:  # stopped while Kafka had not answered yet: nothing was sent
        return Result(0, 0, 0.0, *skipped, None, None, None, exc.signal)
    stats = RunStats(until=until, progress=options.progress, stop_flag=stop_flag,
                     anchor_ms=start_ms if options.start == "now" and not options.data else None,
                     step_ms=int(options.step * 1000), collections=FullCollections(options.full_gc_seconds),
                     build_ahead=options.build_ahead and options.speed is not None, speed=options.speed)
    summary = {} if options.collect else None
    # Here, not at the top: a run its input or Kafka stops, and --help, do without mosaik and networkx, which
    # are most of what this command imports.
    import mosaik
    import mosaik.util

    world = mosaik.World(SIM_CONFIG, skip_greetings=True, configure_logging=False)
    sender = SpreadSender(producer.poll, stop_flag) if options.spread and options.speed is not None else None
    ran = False
    try:
        households_sim = world.start("Household", source=source, step=options.step, start_ms=start_ms, zone=zone,
                                     pacer=stats if options.speed else None, stats=stats, spread=sender is not None)
        count = len(source) if isinstance(source, list) else options.households
        households = households_sim.Household.create(count)
        adapter = world.start("Kafka", producer=producer, stats=stats, step=options.step,
                              per_message=options.per_message, sender=sender, start_ms=start_ms).Sink()
        mosaik.util.connect_many_to_one(world, households, adapter, "readings")
        if summary is not None:
            collector = world.start("Collector", summary=summary, step=options.step, stats=stats).Sink()
            mosaik.util.connect_many_to_one(world, households, collector, "readings")
        stats.started = time.monotonic()
        stats.collections.start()
        world.run(until=until, print_progress=False)
        ran = True
    finally:
        stats.collections.stop()
        try:
            if sender is not None:  # the last step's moments still to come; everything at once after a failure
                try:
                    sender.close(hurry=not ran)
                except Exception:  # noqa: BLE001 -- after a failure, the failure is what the run ends with
                    if ran:
                        raise
                    log.exception("the simulation's sender failed too")
        finally:
            failed = producer.close()
            if options.progress:
                sys.stderr.write("\n")
    seconds = time.monotonic() - stats.started
    max_lag = max(stats.max_lag, sender.max_late if sender is not None else 0.0)
    return Result(producer.sent, failed, seconds, *skipped, max_lag if options.speed else None,
                  producer.first_error, summary, stop_flag() or "until")
