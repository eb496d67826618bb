"""The fault matrix in lanes: N scenarios at once (`manage.py chaos --lanes N`, the suite's fault matrix).

A scenario mostly waits on a stream at 30x real time, so two at once on two
cores take little more than one. Each lane has everything a fault can hit
of its own: its ChaosServices (a Kafka broker and a cloud Redis, so
redis-kill, kafka-restart and cloud-host-crash only hit their own lane) and
its edge Redis database (EDGE_REDIS_DBS). With more than one lane the lanes
take the scenarios longest-first (LONGEST_FIRST), so the last to start is a
short one and the lanes end close together; one lane keeps the order given.

The scenarios' timing checks are unchanged by lanes: a killed supervisor's
workers die by the kernel's parent-death signal (FOLLOW_SECONDS does not
depend on load), repeated-crash's crashes take a fraction of
CRASH_WINDOW_SECONDS even beside budget-outage (its stream runs until they
are over), and every other wait is a timeout many times what it needs.

Interrupts (Ctrl-C, SIGTERM, a test's timeout: whatever unwinds the thread
that owns the runner) end in close(): no lane takes another scenario, the
pipeline each lane runs is closed from the owner's thread (its processes end
at once, and the lane's next wait or sleep raises PipelineClosed, so its
thread unwinds rather than starting processes again), the lanes' threads
are joined, and only then does every lane's services go down.
"""

import threading
from collections import deque
from dataclasses import dataclass, field

from tooling.chaos.pipeline import ChaosServices, PipelineClosed
from tooling.chaos.scenarios import Outcome, run_scenario

# Lane i's edges keep their RQ state in database EDGE_REDIS_DBS[i] of the edge's Redis: apart from a running
# demo's (0-2) and from the suite's (14, 15), which runs while a lead may run `make chaos`.
EDGE_REDIS_DBS = (13, 12, 11, 10)
MAX_LANES = len(EDGE_REDIS_DBS)
# Slowest first, as the suite's --durations ranks them; a scenario missing here follows in the matrix's order.
LONGEST_FIRST = ("repeated-crash", "budget-outage", "kafka-restart", "edge-host-crash", "sender-kill", "ingest-kill",
                 "link-cut", "cloud-kill", "supervisor-kill", "redis-kill", "cloud-host-crash", "backlog-restart")
JOIN_SECONDS = 120  # a closed lane's thread ends within one blocking step (a broker's restart, a reconcile)
WAIT_SLICE_SECONDS = 0.5  # the owner waits for an outcome in slices, so Ctrl-C and timeouts reach it at once


def longest_first(names):
    ranked = [name for name in LONGEST_FIRST if name in names]
    return ranked + [name for name in names if name not in ranked]


def edge_redis_url(base_url, lane):
    """Lane `lane`'s (0-based) edge Redis: `base_url` (the edge's Redis URL) on the lane's own database."""
    return base_url.rsplit("/", 1)[0] + f"/{EDGE_REDIS_DBS[lane]}"


class NotRun(Exception):
    """A scenario the runner did not finish: it stopped first, or the scenario's lane broke."""


@dataclass
class Job:
    name: str
    options: dict
    run: int = 1
    outcome: Outcome | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)


def schedule(names, options=None, repeat=1, lanes=1, per_scenario=None):
    """The jobs in the order lanes take them: run by run, longest-first with more than one lane. Each job's
    options: `options`, updated by `per_scenario[name]` if given."""
    order = longest_first(list(names)) if lanes > 1 else list(names)
    return [Job(name, {**(options or {}), **(per_scenario or {}).get(name, {})}, run)
            for run in range(1, repeat + 1) for name in order]


class Lane:
    def __init__(self, number, libs, edge_redis):
        self.number, self.edge_redis = number, edge_redis
        self.services = ChaosServices(libs)
        self.pipeline = self.thread = None


class LaneRunner:
    """Runs `jobs` in `lanes` threads, each lane with its own services; use as a context manager (or
    start() and, in a `finally`, close())."""

    def __init__(self, jobs, libs, edge_redis_base, lanes=1, out=print):
        if not 1 <= lanes <= MAX_LANES:
            raise ValueError(f"lanes must be 1 to {MAX_LANES} (one edge Redis database each), not {lanes}")
        self.jobs, self._queue = list(jobs), deque(jobs)
        self.repeat = max((job.run for job in self.jobs), default=1)
        self._lock, self._stop, self._out = threading.Lock(), threading.Event(), out
        # No more lanes than jobs: a lane's services cost a broker's start.
        self.lanes = [Lane(i + 1, libs, edge_redis_url(edge_redis_base, i)) for i in range(min(lanes, len(self.jobs)))]
        self._starters = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def say(self, line):
        with self._lock:
            self._out(line)

    def start(self):
        """Every lane's services at once (a broker takes seconds to start), then the lanes' threads."""
        errors = []

        def up(lane):
            try:
                lane.services.up()
            except BaseException as exc:
                errors.append(exc)

        try:
            self._starters = [threading.Thread(target=up, args=(lane,), daemon=True) for lane in self.lanes]
            for thread in self._starters:
                thread.start()
            for thread in self._starters:
                while thread.is_alive():
                    thread.join(WAIT_SLICE_SECONDS)
            if errors:
                raise errors[0]
            for lane in self.lanes:
                lane.thread = threading.Thread(target=self._work, args=(lane,), name=f"chaos-lane-{lane.number}",
                                               daemon=True)
                lane.thread.start()
        except BaseException:
            self.close()
            raise
        return self

    def _take(self):
        with self._lock:
            return self._queue.popleft() if self._queue and not self._stop.is_set() else None

    def _work(self, lane):
        while (job := self._take()) is not None:
            where = f" in lane {lane.number}" if len(self.lanes) > 1 else ""
            self.say(f"chaos: run {job.run}/{self.repeat}, {job.name}{where}")
            try:
                job.outcome = run_scenario(job.name, lane.services, lane.edge_redis, job.options, out=self.say,
                                           stop=self._stop, started=lambda pipeline: self._track(lane, pipeline))
            except BaseException as exc:  # PipelineClosed when stopped; anything else ends this lane
                job.error = exc
                if not isinstance(exc, PipelineClosed):
                    self.say(f"{job.name}: lane {lane.number} broke: {type(exc).__name__}: {exc}")
                    return
            finally:
                with self._lock:
                    lane.pipeline = None
                job.done.set()

    def _track(self, lane, pipeline):
        with self._lock:
            lane.pipeline = pipeline
            stopping = self._stop.is_set()
        if stopping:
            pipeline.close(keep_logs=True)

    def outcome(self, job):
        """Wait for `job` (a Job, or the first job of that scenario name) and return its Outcome; NotRun if
        the runner stopped before it ended, or every lane broke."""
        if isinstance(job, str):
            job = next(j for j in self.jobs if j.name == job)
        while not job.done.wait(WAIT_SLICE_SECONDS):
            if not any(lane.thread is not None and lane.thread.is_alive() for lane in self.lanes):
                raise NotRun(f"{job.name}: no lane is left to run it")
        if job.error is not None:
            raise NotRun(f"{job.name} did not finish: {type(job.error).__name__}: {job.error}") from job.error
        return job.outcome

    def close(self):
        """Stop taking scenarios, end the running pipelines, wait for the lanes, take the services down.
        Safe to call more than once, and from the owner's thread while the lanes still run."""
        self._stop.set()
        with self._lock:
            running = [lane.pipeline for lane in self.lanes if lane.pipeline is not None]
        for pipeline in running:
            pipeline.close(keep_logs=True)  # the lane's own close() then keeps or removes the logs
        for thread in self._starters + [lane.thread for lane in self.lanes]:
            if thread is not None:
                thread.join(JOIN_SECONDS)
        for job in self.jobs:
            if not job.done.is_set():
                job.error = job.error or NotRun("the runner stopped before it")
                job.done.set()
        stoppers = [threading.Thread(target=lane.services.down, daemon=True) for lane in self.lanes]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()
