"""One edge's control state in the edge Redis: its queue, run generation, holder records, locks, stop flag.

Every edge has a queue of its own (`queue_name`), so edges sharing one Redis
never run each other's jobs with their own settings.

A lock's value is a holder record, `pid:host:since:nonce:machine`: it says who runs
the loop (for operators, the supervisor and the fault tests), and the nonce
makes it a token. Extend, release and take-over are one Lua script each,
so a copy can never delete or extend a lock another copy holds. A holder on
this host whose process is gone is stale and may be replaced at once; one
on another host is trusted until its TTL runs out.

Each `runedge` start is a new run: its id is stored here and given to the
jobs it enqueues; a job whose run is not the current one (left in the queue
by a killed run) is discarded instead of running with that run's options.
"""

import functools
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import django_rq
from redis import exceptions as redis_exceptions
from django.conf import settings

from edge_app.sender import ACK_TIMEOUT_MS
from edge_app.processes import alive, start_ticks

LOOPS = ("ingest", "sender", "heartbeat")
# The edge Redis gone (restarting, a network blip, frozen): its callers wait for it or end in one line.
REDIS_AWAY = (redis_exceptions.ConnectionError, redis_exceptions.TimeoutError)
CONNECTION = "edge"  # django-rq's name for the edge Redis connection (RQ_QUEUES)
STOP_CHECK_SECONDS = 0.5
STOP_ANY_RUN = "*"  # the stop request that stops every run (`runedge --stop`)
SUPERVISOR_TTL_MS = 10_000  # a supervisor refreshes its record every check (0.5 s)
LOCK_MARGIN = 2  # a lock lives this many times the longest step


def queue_name(edge_id):
    """The RQ queue of one edge's loops (the name `manage.py rqworker` takes)."""
    return f"edge:{edge_id}"


def lock_ttl_ms(in_flight=4):
    """Longer than the longest step a loop takes between two renewals: the sender waiting out the ack
    timeout of every request in flight, or a database write waiting for SQLite's busy timeout."""
    db_wait_ms = settings.DATABASES["default"].get("OPTIONS", {}).get("timeout", 0) * 1000
    return int(LOCK_MARGIN * max(in_flight * ACK_TIMEOUT_MS, db_wait_ms, ACK_TIMEOUT_MS))


# KEYS[1] the lock; ARGV: token, ttl ms. Ours: extend. Gone (lapsed in a slow step): take it back.
EXTEND = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not held then return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 or 0 end
return 0
"""
# KEYS[1] the lock; ARGV: token. Deletes it only if it is still ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS[1] the lock; ARGV: stale token, new token, ttl ms. Replaces a dead holder, nobody else.
REPLACE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) and 1 or 0 end
return 0
"""


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    since: float
    token: str
    machine: str = ""  # /etc/machine-id: two hosts may share a name (cloned images, default names)
    # When the process started, in clock ticks since boot (/proc/PID/stat): what tells it from a later process
    # under the same pid whatever the wall clock did since (NTP's first step on a box without an RTC); -1 unknown.
    ticks: int = -1

    @classmethod
    def new(cls):
        pid, host, since, machine = os.getpid(), socket.gethostname(), time.time(), machine_id()
        ticks = start_ticks(pid)
        token = f"{pid}:{host}:{since:.3f}:{uuid.uuid4().hex[:12]}:{machine}:{ticks}"
        return cls(pid, host, since, token, machine, ticks)

    @classmethod
    def parse(cls, raw):
        token = raw.decode() if isinstance(raw, bytes) else raw
        parts = token.split(":")
        try:
            return cls(int(parts[0]), parts[1], float(parts[2]), token, parts[4] if len(parts) > 4 else "",
                       int(parts[5]) if len(parts) > 5 else -1)
        except (IndexError, ValueError):  # a record of an older version: only the pid is known
            return cls(int(parts[0]), "", 0.0, token)

    def describe(self):
        when = datetime.fromtimestamp(self.since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"on {self.host or 'an unknown host'} (pid {self.pid}, since {when})"

    def here(self):
        """Whether this holder ran on this host. A host of the same name but another machine id is another
        host: its pid says nothing here."""
        return self.host == socket.gethostname() and (not self.machine or self.machine == machine_id())

    def stale(self):
        """True if this holder ran on this host and its process is gone (or the pid is a newer process); a
        holder elsewhere is trusted until its TTL runs out."""
        return self.here() and not _process_alive_since(self.pid, self.since, self.ticks)

    def alive_here(self):
        """True if this holder's process runs on this host now (the one to signal, and nobody else)."""
        return self.here() and _process_alive_since(self.pid, self.since, self.ticks)


@functools.cache
def machine_id():
    """This machine's id (systemd's /etc/machine-id, or D-Bus's copy), or "" where there is none."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path) as handle:
                text = handle.read().strip()
        except OSError:
            continue
        if text.isalnum() and text != "uninitialized":  # a token field: no ':'; systemd's placeholder is no id
            return text
    return ""


def _process_alive_since(pid, since, ticks=-1):
    if not alive(pid):  # gone, or a zombie nobody has reaped yet
        return False
    if ticks >= 0:  # the record says when its process started: the same process, or a later one under its pid
        return start_ticks(pid) == ticks
    started = start_ticks(pid)  # a record of an older version: a reused pid's process started after it was written
    try:
        with open("/proc/stat") as system:
            boot = next(int(line.split()[1]) for line in system if line.startswith("btime"))
    except (OSError, ValueError, StopIteration):
        return True
    return started < 0 or boot + started / os.sysconf("SC_CLK_TCK") <= since + 2


class EdgeControl:
    """Run id, supervisor record, one-copy locks, stop flag and burst-done marks of one edge."""

    def __init__(self, edge_id, connection=None, in_flight=4, run=None):
        self.edge_id, self.run = edge_id, run  # run: the run whose stop requests this one heeds (None: any)
        self.redis = connection or django_rq.get_connection(CONNECTION)
        self.prefix = f"fog:edge:{edge_id}:"
        self.ttl_ms = lock_ttl_ms(in_flight)
        self._extend, self._release = self.redis.register_script(EXTEND), self.redis.register_script(RELEASE)
        self._replace = self.redis.register_script(REPLACE)
        self._stop_checked, self._stop = 0.0, False
        # Its own flag, written by the signal handler only: the handler may run in the middle of stop_requested's
        # Redis call, and that method's write of what Redis said would overwrite the signal's.
        self._signalled = False

    def lock_key(self, loop):
        """The key of one loop's one-copy lock (its value is a holder record, `pid:host:since:nonce:machine`)."""
        return self.prefix + f"lock:{loop}"

    # --- runs and stopping ---------------------------------------------------------

    def new_run(self):
        return self.restore_run(uuid.uuid4().hex[:12])

    def restore_run(self, run):
        """Make `run` the edge's current run (new_run; or again, after the edge Redis came back empty)."""
        self.redis.set(self.prefix + "run", run)
        return run

    def current_run(self):
        raw = self.redis.get(self.prefix + "run")
        return raw.decode() if raw else None

    def request_stop(self, run=None):
        """Stop the loops of `run`, or (None: `runedge --stop`) of whatever run the edge is in.

        A supervisor stops its own run only: one that stalled and lost its record to a newer supervisor
        must not stop the run that took over. Requests add up (a set), so none overwrites another."""
        self.redis.sadd(self.prefix + "stops", run or STOP_ANY_RUN)

    def reset(self):
        self.redis.delete(self.prefix + "stops", self.prefix + "gave-up", *(self.prefix + f"done:{loop}" for loop in LOOPS))
        self._stop_checked, self._stop = 0.0, False

    def stop_signalled(self):
        """A stop signal reached the loop's own process (edge_app.loops.signals_stop): a stop request of its own."""
        self._signalled = True

    def stop_requested(self):
        """Whether a stop request names this run (or any run), or a stop signal came; once so, it stays so."""
        now = time.monotonic()
        if not (self._stop or self._signalled) and now - self._stop_checked >= STOP_CHECK_SECONDS:
            runs = {run.decode() for run in self.redis.smembers(self.prefix + "stops")}
            self._stop = STOP_ANY_RUN in runs or (bool(runs) if self.run is None else self.run in runs)
            self._stop_checked = now
        return self._stop or self._signalled

    def give_up(self, reason):
        """A loop can't do this run's work as configured: its supervisor ends the run as failed, saying `reason`."""
        self.redis.set(self.prefix + "gave-up", reason, ex=3600)

    def gave_up(self):
        raw = self.redis.get(self.prefix + "gave-up")
        return raw.decode() if raw else None

    def mark_done(self, loop):
        self.redis.set(self.prefix + f"done:{loop}", 1, ex=3600)

    def done(self, loop):
        return bool(self.redis.exists(self.prefix + f"done:{loop}"))

    # --- holder records and locks ------------------------------------------------------

    def holder(self, loop):
        raw = self.redis.get(self.lock_key(loop))
        return Holder.parse(raw) if raw else None

    def pids_here(self, loops=LOOPS):
        """Pids of the processes on this host that hold these loops now. Not those of other hosts, nor a pid
        named by a lock whose process ended (it may be another process's by now): the ones to signal."""
        holders = [self.holder(loop) for loop in loops]
        return [held.pid for held in holders if held is not None and held.alive_here()]

    def holder_pid(self, loop):
        held = self.holder(loop)
        return held.pid if held else None

    def running(self, loop):
        return bool(self.redis.exists(self.lock_key(loop)))

    def acquire(self, loop, token, wait_seconds, ttl_ms=None):
        """Take the loop's lock, replacing a stale holder on this host; wait up to `wait_seconds`."""
        deadline, ttl = time.monotonic() + wait_seconds, ttl_ms or self.ttl_ms
        while True:
            if self.redis.set(self.lock_key(loop), token, nx=True, px=ttl):
                return True
            held = self.holder(loop)
            if held is not None and held.stale() and self._replace(keys=[self.lock_key(loop)], args=[held.token, token, ttl]):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    def renew(self, loop, token, ttl_ms=None):
        """Extend our lock; one that lapsed during a slow step is taken back if nobody else took it.
        False only if another copy holds it."""
        return bool(self._extend(keys=[self.lock_key(loop)], args=[token, ttl_ms or self.ttl_ms]))

    def release(self, loop, token):
        return bool(self._release(keys=[self.lock_key(loop)], args=[token]))

    def clear_stale(self, loop):
        """Free the lock of a holder on this host that is gone. Returns the holder it freed, or None."""
        held = self.holder(loop)
        if held is not None and held.stale() and self.release(loop, held.token):
            return held
        return None

    # --- the supervisor's record ------------------------------------------------------

    def claim_supervisor(self, holder):
        key = self.prefix + "supervisor"
        if self.redis.set(key, holder.token, nx=True, px=SUPERVISOR_TTL_MS):
            return True
        held = self.supervisor()
        return bool(held and held.stale() and self._replace(keys=[key], args=[held.token, holder.token,
                                                                              SUPERVISOR_TTL_MS]))

    def supervisor(self):
        raw = self.redis.get(self.prefix + "supervisor")
        return Holder.parse(raw) if raw else None

    def refresh_supervisor(self, holder):
        return bool(self._extend(keys=[self.prefix + "supervisor"], args=[holder.token, SUPERVISOR_TTL_MS]))

    def release_supervisor(self, holder):
        self._release(keys=[self.prefix + "supervisor"], args=[holder.token])

    def live_holder(self):
        """Who runs this edge's loops now, if anyone live: its supervisor, else any loop's holder."""
        candidates = [self.supervisor()] + [self.holder(loop) for loop in LOOPS]
        return next((held for held in candidates if held is not None and not held.stale()), None)
