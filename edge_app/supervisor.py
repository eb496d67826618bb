"""What `runedge` does: enqueue the loops, run and watch the workers, stop cleanly.

By default runedge starts one RQ worker process per loop (edge_app/worker.py:
a SimpleWorker that runs the loop in its own process and dies with its
supervisor) and supervises them: a dead worker is started again and a loop
whose lock has lapsed (its job failed) is enqueued again, together at most
WORKER_RESTARTS times within RESTART_WINDOW_SECONDS; one more ends the run
as failed, so a loop that fails as it starts (a broken certificate, say)
does not fill the log and the failed-job registry for ever.

An edge whose loops already run (a live supervisor, or a live holder of a
loop lock) is not started twice: runedge says who runs them and exits.
Holders on this host whose process is gone are cleared at once.
"""

import logging
import os
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import connection
from rq import Queue

from edge_app.control import LOOPS, REDIS_AWAY, EdgeControl, Holder, queue_name
from edge_app.database_outage import DATABASE_AWAY, reason
from edge_app.loops import run_loop
from edge_app.models import EdgeStatus, Status, WindowAggregate
from edge_app.worker import EXIT_REDIS_AWAY, fork_worker

log = logging.getLogger("fog.edge")

SLICE = 0.25
STOP_SECONDS = 4.5
CHECK_SECONDS = 0.5
LAPSE_CHECKS = 3  # a loop with no lock for this many checks in a row (not queued) is enqueued again
WORKER_RESTARTS = 10  # restarts allowed within RESTART_WINDOW_SECONDS; one more ends the run as failed
RESTART_WINDOW_SECONDS = 60
ENDED = ("done", "signal", "stop", "timeout", "failed")  # the summary's `ended=` word
# The edge Redis gone (control.REDIS_AWAY): the supervisor waits for it instead of ending the edge. Its loops
# end on their next call to it and are enqueued again once it is back; their data is in the edge database.
# The supervisor's own calls to it time out after this: a frozen Redis (or a link that drops packets) would
# otherwise hold it in a read for ever, deaf to SIGTERM. (Workers wait on the queue far longer: rq sets their own.)
SUPERVISOR_REDIS_TIMEOUT_S = 5.0


class EdgeStartError(Exception):
    pass


@dataclass
class Counts:
    readings: int
    late: int
    malformed: int
    windows: int
    acked: int
    refused: int  # refused by the cloud for good (status refused): not pending, so a burst run still ends
    pending: int  # not yet acknowledged: pending, sent and to resend

    @classmethod
    def now(cls):
        # The edge's counters and the index ranges of the open statuses: never a count of the whole table.
        status = EdgeStatus.for_edge(settings.FOG_EDGE_ID)
        open_ = WindowAggregate.objects.open_counts()
        return cls(status.readings, status.late, status.malformed, status.windows, status.acked, open_["refused"],
                   open_["pending"] + open_["sent"] + open_[Status.RESEND.label])


@dataclass
class Summary:
    ended: str
    run: Counts | None  # this run's figures: the difference between its end and its start (None: the database failed)
    lifetime: Counts | None
    seconds: float
    worker_starts: int

    @property
    def completed(self):
        return self.ended == "done"

    def line(self):
        r, t = self.run, self.lifetime
        if t is None:
            return (f"edge {settings.FOG_EDGE_ID}: ended={self.ended} seconds={self.seconds:.1f} "
                    f"worker_starts={self.worker_starts}; counts unavailable")
        return (f"edge {settings.FOG_EDGE_ID}: ended={self.ended} seconds={self.seconds:.1f} "
                f"worker_starts={self.worker_starts}; this run: readings={r.readings} windows={r.windows} "
                f"late={r.late} malformed={r.malformed} acked={r.acked} refused={r.refused}; lifetime: "
                f"readings={t.readings} windows={t.windows} acked={t.acked} pending={t.pending} refused={t.refused}")


def _since(before, after):
    return Counts(*(getattr(after, f) - getattr(before, f) for f in Counts.__dataclass_fields__ if f != "pending"),
                  after.pending)


class DatabaseFileWatch:
    """Is a SQLite edge database's file still the one the edge opened? Removed or replaced under a running edge
    (`rm -rf var/`), its workers' open handles keep writing into the unlinked file, acknowledged tuples and
    all, lost with it, and nothing said so. The watch keeps the file open itself: while it does, the file's
    inode can't be handed to a new file at the same path, so comparing inodes tells the two apart."""

    def __init__(self):
        database = settings.DATABASES["default"]
        self.path, self.fd = str(database["NAME"]), None
        if "sqlite" in database["ENGINE"]:
            try:
                self.fd = os.open(self.path, os.O_RDONLY)
            except (OSError, ValueError):  # an in-memory database; a missing file is runedge's to report
                self.fd = None

    def gone(self):
        if self.fd is None:
            return False
        held = os.fstat(self.fd)
        try:
            found = os.stat(self.path)
        except OSError:
            return True
        return (found.st_dev, found.st_ino) != (held.st_dev, held.st_ino)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _queued(job):
    try:
        job.refresh()
    except Exception:  # the job hash expired or was deleted
        return False
    return job.get_status() in ("queued", "scheduled", "deferred")


class Supervisor:
    def __init__(self, options, stop_flag, out=print, worker_verbosity=0):
        self.options, self.stop_flag, self.out = dict(options), stop_flag, out
        self.worker_verbosity = worker_verbosity
        connection = redis.Redis.from_url(settings.FOG_EDGE_REDIS_URL, socket_timeout=SUPERVISOR_REDIS_TIMEOUT_S,
                                          socket_connect_timeout=SUPERVISOR_REDIS_TIMEOUT_S)
        self.control = EdgeControl(settings.FOG_EDGE_ID, connection, in_flight=options.get("in_flight", 4))
        self.queue = Queue(queue_name(settings.FOG_EDGE_ID), connection=self.control.redis)
        self.holder = Holder.new()
        self.jobs, self.lapsed, self.workers = {}, {}, {}
        self.worker_starts, self.restarts = 0, deque()
        self.failure, self.baseline, self.claimed = None, None, False
        self.database_file = None  # a DatabaseFileWatch from the start on
        self.redis_away_since = None  # monotonic time the edge Redis stopped answering, while it does not
        self.redis_back_at = None  # ... and when it last answered again after that

    def start(self, with_workers=True):
        try:
            self.control.redis.ping()
        except Exception as exc:
            raise EdgeStartError(f"edge Redis at {settings.FOG_EDGE_REDIS_URL} is unreachable: {exc}") from None
        self._refuse_if_running()
        for loop in LOOPS:
            gone = self.control.clear_stale(loop)
            if gone:
                self.out(f"{loop} loop of edge {settings.FOG_EDGE_ID}: freed the lock of a process that is gone "
                         f"(pid {gone.pid})")
        if with_workers:
            if not self.control.claim_supervisor(self.holder):
                self._refuse_if_running()  # another supervisor started in the meantime
                raise EdgeStartError(f"edge {settings.FOG_EDGE_ID}: could not claim its supervisor record; try again")
            self.claimed = True
        self.control.reset()
        self.options["run"] = self.control.run = self.control.new_run()
        self.baseline = Counts.now()
        self.database_file = DatabaseFileWatch()  # `runedge --no-workers` leaves at once: its fd goes with it
        try:
            for loop in LOOPS:
                self.jobs[loop] = self.enqueue(loop)
                self.lapsed[loop] = 0
            if with_workers:
                for number in range(len(LOOPS)):
                    self.workers[number] = self._start_worker(number)
        except BaseException:
            self.database_file.close()
            raise

    def _refuse_if_running(self):
        held = self.control.live_holder()
        if held is not None:
            raise EdgeStartError(f"edge {settings.FOG_EDGE_ID} already runs {held.describe()}; not starting "
                                 "another copy (`manage.py runedge --stop` stops it)")

    def enqueue(self, loop, attempt=0):
        return self.queue.enqueue(run_loop, loop, settings.FOG_EDGE_ID, self.options, job_timeout=-1,
                                  result_ttl=300, failure_ttl=3600,
                                  job_id=f"fog-edge-{settings.FOG_EDGE_ID}-{self.options['run']}-{loop}-{attempt}")

    def worker_command(self, number):
        """The worker's `manage.py` arguments."""
        name = f"edge-{settings.FOG_EDGE_ID}-{number}-{os.getpid()}-{self.worker_starts}"
        # --skip-checks: runedge checked the same settings as it started.
        cmd = ["rqworker", self.queue.name, "--worker-class", "edge_app.worker.EdgeWorker", "--name", name,
               "-v", str(self.worker_verbosity), "--skip-checks"]
        return cmd + (["--burst"] if self.options.get("burst") else [])

    def _start_worker(self, number):
        self.worker_starts += 1
        # Forked (edge_app/worker.py says why), in a session of its own. The parent-death signal and the
        # worker's parent watch end the worker if the supervisor dies.
        watch = self.database_file.fd if self.database_file else None
        return fork_worker(self.worker_command(number), os.getpid(), fds_to_close=[] if watch is None else [watch])

    def _restart_allowed(self, what="edge workers died"):
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > RESTART_WINDOW_SECONDS:
            self.restarts.popleft()
        if len(self.restarts) >= WORKER_RESTARTS:
            self.failure = (f"{what} {len(self.restarts) + 1} times within {RESTART_WINDOW_SECONDS} s; "
                            "giving up (see the workers' log lines above)")
            return False
        self.restarts.append(now)
        return True

    def handle_one_check(self):
        """Restart dead workers, re-enqueue lapsed loops. Returns the `ended` word once the run is over, else None."""
        burst = self.options.get("burst")
        if burst and all(self.control.done(loop) for loop in LOOPS):
            return "done"
        if self.control.stop_requested():  # `runedge --stop`, from here or another host
            return "stop"
        reason = self.control.gave_up()
        if reason:
            self.failure = reason
            return "failed"
        if self.database_file and self.database_file.gone():
            self.failure = (f"the edge database file {self.database_file.path} was removed or replaced while the edge "
                            "ran: its loops would go on writing into a file nobody can read; stopping. Unsent "
                            "tuples were in it; `migrate` and a new start read Kafka again from what a new file "
                            "remembers (the beginning), and the cloud's dedup absorbs what it has (a window it holds "
                            "with other figures, as a replay closes by event time one the clock closed, is refused as "
                            "window-stored-otherwise: the cloud keeps the first)")
            return "failed"
        if self.claimed and not self.control.refresh_supervisor(self.holder):
            self.failure = f"another supervisor took over edge {settings.FOG_EDGE_ID}: {self.control.supervisor()}"
            return "failed"
        for number, proc in list(self.workers.items()):
            if proc.poll() is None:
                continue
            if burst and proc.returncode == 0:
                del self.workers[number]
                continue  # its loop is done and the queue empty: a burst worker leaves
            self._take_over(proc.pid)  # first: if Redis fails here, the dead worker is still listed for the next check
            del self.workers[number]
            if proc.returncode == EXIT_REDIS_AWAY and self._saw_redis_away():
                # rq could not record its job's end: an outage of the edge Redis, not a crash loop of the edge's
                # own, which WORKER_RESTARTS is for (a Redis that went away again and again ended the edge).
                # Only one this supervisor saw too: workers that fail at once on a Redis it reads well (a changed
                # password, maxclients) are a crash loop, counted as any other.
                log.warning("edge worker %d ended as the edge Redis went away; starting another", number)
            else:
                log.warning("edge worker %d exited with code %s; starting it again", number, proc.returncode)
                if not self._restart_allowed():
                    return "failed"
            self.workers[number] = self._start_worker(number)
        for loop in LOOPS:
            if self.control.running(loop) or (burst and self.control.done(loop)) or _queued(self.jobs.get(loop)):
                self.lapsed[loop] = 0
                continue
            self.lapsed[loop] = self.lapsed.get(loop, 0) + 1
            if self.lapsed[loop] >= LAPSE_CHECKS:
                if not self._restart_allowed(f"edge loops ended with an error ({loop} last) or workers died"):
                    return "failed"
                log.warning("%s loop of edge %s is not running; enqueueing it again", loop, settings.FOG_EDGE_ID)
                self.jobs[loop] = self.enqueue(loop, attempt=f"lapsed{int(time.time())}")
                self.lapsed[loop] = 0
        if burst and self.queue.count:  # a queued loop needs a worker (burst workers leave once theirs is done)
            unfinished = sum(1 for loop in LOOPS if not self.control.done(loop))
            for _ in range(min(unfinished - len(self.workers), self.queue.count)):
                if not self._restart_allowed():
                    return "failed"
                number = max(self.workers, default=-1) + 1
                self.workers[number] = self._start_worker(number)
        return None

    def _take_over(self, dead_pid):
        """A worker we started has died: free the locks it held and enqueue its loops at once,
        rather than waiting for the locks to lapse and the lapse checks."""
        for loop in LOOPS:
            held = self.control.holder(loop)
            if held is not None and held.pid == dead_pid and self.control.release(loop, held.token):
                log.warning("%s loop of edge %s died with its worker; enqueueing it again", loop, settings.FOG_EDGE_ID)
                self.jobs[loop] = self.enqueue(loop, attempt=f"pid{dead_pid}")
                self.lapsed[loop] = 0

    def run(self, timeout=None):
        started = time.monotonic()
        ended, last_check = None, 0.0
        try:
            while ended is None:
                if self.stop_flag():
                    ended = "signal"
                elif timeout and time.monotonic() - started >= timeout:
                    self.out(f"edge: --timeout {timeout:g} s passed before the work was done")
                    ended = "timeout"
                elif time.monotonic() - last_check >= CHECK_SECONDS:
                    last_check = time.monotonic()
                    ended = self.handle_one_round()
                if ended is None:
                    time.sleep(SLICE)
        except BaseException:
            # Whatever ended the round (a Redis that refuses writes, a fork that failed): the loops stop and the
            # workers end with the supervisor, not by the parent-death signal in the middle of a step.
            self.stop()
            raise
        if self.failure:
            self.out(f"edge: {self.failure}")
        deadline = self.stop_loops()
        try:
            # A connection of its own, opened at the start: a database that restarted since has cut it.
            connection.close()
            now = Counts.now()  # while the workers exit
        except DATABASE_AWAY as exc:
            now = None
            self.out(f"edge: the edge database fails ({reason(exc)}): the summary has no counts")
        self.stop(deadline)
        return Summary(ended, now and _since(self.baseline, now), now, time.monotonic() - started,
                       self.worker_starts)

    def handle_one_round(self):
        """handle_one_check, unless the edge Redis is away: then None, and the run waits for it (said once)."""
        try:
            if self.redis_away_since is not None:
                self._after_redis_away()
            ended = self.handle_one_check()
        except REDIS_AWAY as exc:
            if self.redis_away_since is None:
                self.redis_away_since = time.monotonic()
                log.warning("edge Redis at %s does not answer (%s); the edge waits for it, its data safe in the edge "
                            "database", settings.FOG_EDGE_REDIS_URL, exc)
            return None
        if self.redis_away_since is not None:
            log.info("edge Redis is back after %.0f s; loops that stopped meanwhile start again",
                     time.monotonic() - self.redis_away_since)
            self.redis_away_since, self.redis_back_at = None, time.monotonic()
        return ended

    def _saw_redis_away(self):
        """The edge Redis is away, or was within the last RESTART_WINDOW_SECONDS, as this supervisor saw it."""
        return self.redis_away_since is not None or (
            self.redis_back_at is not None and time.monotonic() - self.redis_back_at <= RESTART_WINDOW_SECONDS)

    def _after_redis_away(self):
        """A Redis that came back empty (no AOF, another instance) has lost the run and the supervisor record:
        without them the loops enqueued again would be discarded as stale, and the next refresh would read as
        another supervisor's takeover."""
        if self.control.current_run() is None:
            self.control.restore_run(self.options["run"])
        if self.claimed and self.control.supervisor() is None:
            self.control.claim_supervisor(self.holder)

    def stop_loops(self):
        """Ask every loop to stop, wait for them briefly, then tell the workers to end. Returns the deadline."""
        deadline = time.monotonic() + STOP_SECONDS
        try:
            self.control.request_stop(self.options.get("run"))
            while time.monotonic() < deadline and any(self.control.running(loop) for loop in LOOPS):
                time.sleep(0.05)
        except redis.RedisError:  # away, or refusing writes (MISCONF, READONLY, OOM)
            pass  # the loops can't hear it: SIGTERM below ends them, and their data is crash-safe
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        return deadline

    def stop(self, deadline=None):
        """End the loops (unless stop_loops did) and the workers, cancel jobs nobody took, leave the record."""
        deadline = deadline or self.stop_loops()
        for proc in self.workers.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Jobs nobody picked up must not start loops after we are gone (and are of a finished run anyway).
        try:
            for job in self.jobs.values():
                if _queued(job):
                    job.cancel()
            if self.claimed:
                self.control.release_supervisor(self.holder)
        except redis.RedisError as exc:  # away or refusing writes: the record lapses by itself
            log.warning("edge Redis away at the end (%s): this run's jobs and supervisor record expire by themselves",
                        exc)
        if self.database_file:
            # Last, and after our own connection: closing any descriptor of a file drops every POSIX lock this
            # process holds on it, SQLite's included.
            connection.close()
            self.database_file.close()
