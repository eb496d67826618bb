"""The RQ worker `runedge` starts: a SimpleWorker that dies with its supervisor.

However the supervisor dies (SIGKILL, the OOM killer), its workers must not
live on holding the loops. Two mechanisms, because each has a gap:

- Linux's parent-death signal (prctl PR_SET_PDEATHSIG), set in the child
  as it is forked (`fork_worker`) and again as its worker starts. It fires
  when the *thread* that forked the child exits, and not at all if the
  parent died before the call;
- a parent watch: a thread that ends the worker as soon as its parent pid
  is no longer the supervisor's (FOG_SUPERVISOR_PID).

Both end the worker with SIGKILL-like abruptness (the loops are crash-safe:
a whole-edge crash loses nothing), within PARENT_WATCH_SECONDS.
Workers an operator starts by hand (no FOG_SUPERVISOR_PID) are plain SimpleWorkers.

The supervisor forks its workers (`fork_worker`) rather than starting a new
interpreter for each: a fresh one spends about a CPU-second importing Django,
rq, redis-py and the loops, which the supervisor has imported already, and an
edge starts a worker per loop, and again after each crash. The supervisor has
no thread of its own and closes its database connections before it forks, so
a child shares no lock and no database session with it; redis-py gives a
forked child connections of its own. nng must not have started in the
supervisor (it panics in a child forked from a process it ran in): runedge
checks the TLS files in a process of their own (edge_app/loops.py).
"""

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback

from rq.exceptions import StopRequested
from rq.worker import SimpleWorker

from edge_app.control import REDIS_AWAY
from fogwire.stopsignals import stop_signals

log = logging.getLogger("fog.edge")

SUPERVISOR_ENV = "FOG_SUPERVISOR_PID"
PARENT_WATCH_SECONDS = 0.2
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
PR_SET_NAME = 15
WORKER_NAME = "fog-edge-worker"  # a forked worker's process name (15 bytes, all Linux keeps); its command line is runedge's
WAIT_SLICE_SECONDS = 0.01
EXIT_REDIS_AWAY = 75  # EX_TEMPFAIL: a worker ended as the edge Redis went away (its supervisor counts no crash)


def _prctl(option, value):
    """Linux's prctl(option, value); False where there is none."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def set_parent_death_signal(signum=signal.SIGKILL):
    """Ask the kernel to send `signum` to this process when its parent (thread) exits. Linux only."""
    return _prctl(PR_SET_PDEATHSIG, int(signum))


def watch_parent(expected_ppid, interval=PARENT_WATCH_SECONDS):
    """Start a daemon thread that ends this process once its parent is not `expected_ppid` any more."""

    def watch():
        while os.getppid() == expected_ppid:
            time.sleep(interval)
        os._exit(1)  # nothing to clean up that a crash would not leave too; the loops recover from it

    thread = threading.Thread(target=watch, name="fog-parent-watch", daemon=True)
    thread.start()
    return thread


def _flush_stdio():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # closed (runedge >&-), or a pipe nobody reads
            pass


def fork_worker(args, supervisor_pid, fds_to_close=()):
    """Run `manage.py <args>` (an rqworker command line) in a child forked from this process, in a session of
    its own as `subprocess.Popen(start_new_session=True)` would, with FOG_SUPERVISOR_PID set, the descriptors
    `fds_to_close` closed and the pipeline's log level of the settings (not the supervisor's -v). Returns a
    ForkedWorker. The child never returns into the caller's code: it ends with os._exit."""
    from django.conf import settings
    from django.core.management import CommandError, call_command
    from django.db import connections

    if threading.active_count() > 1:  # a lock another thread held would stay locked in the child for ever
        raise RuntimeError("edge workers are forked from a process that runs no other thread; this one runs "
                           f"{threading.active_count()}")
    connections.close_all()  # each connection anew in the child; the parent opens its own again when it needs one
    _flush_stdio()  # else what is buffered is written twice, once by each process
    # Held back across the fork: one that reached the child before its handlers were reset would have run the
    # supervisor's, which only sets a flag nothing in the child reads, and been lost (the supervisor's stop of a
    # worker it just started). Once reset, a held one takes its default action.
    stops = stop_signals()
    before = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    pid = None
    try:
        pid = os.fork()
    finally:
        if pid != 0:  # the parent, also when the fork failed (EAGAIN): the mask it had
            signal.pthread_sigmask(signal.SIG_SETMASK, before)
    if pid:
        return ForkedWorker(pid)
    code = 1
    try:
        for signum in stops:  # SIGHUP too, unless ignored from the start (nohup): it stays ignored
            signal.signal(signum, signal.SIG_DFL)  # not the supervisor's handler: rq's worker installs its own
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        for fd in fds_to_close:  # before the child opens anything: no lock of its own yet that a close would drop
            os.close(fd)
        os.setsid()  # a terminal's Ctrl-C reaches only the supervisor, which stops the loops in order
        set_parent_death_signal()
        # Its name in ps -e, top and pgrep (not `pgrep -f`: the command line is the one the fork kept)
        _prctl(PR_SET_NAME, WORKER_NAME.encode())
        logging.getLogger("fog").setLevel(settings.LOG_LEVEL)
        os.environ[SUPERVISOR_ENV] = str(supervisor_pid)
        call_command(*args)
        code = 0
    except SystemExit as exc:
        if isinstance(exc.code, int) or exc.code is None:
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
    except CommandError as exc:  # as manage.py says it: one line
        print(f"CommandError: {exc}", file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        _flush_stdio()
        os._exit(code)


class ForkedWorker:
    """A forked worker, with the few methods of subprocess.Popen that its supervisor uses."""

    def __init__(self, pid):
        self.pid, self.returncode = pid, None

    def poll(self):
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else (SIGCHLD ignored): gone, its status unknown, so
                self.returncode = 1  # not a success (a burst worker's 0 says its loop is done)
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"edge worker {self.pid}", timeout)
            time.sleep(WAIT_SLICE_SECONDS)
        return self.returncode

    def send_signal(self, signum):
        if self.poll() is None:  # never a pid the kernel may since have given to another process
            os.kill(self.pid, signum)

    def kill(self):
        self.send_signal(signal.SIGKILL)


class EdgeWorker(SimpleWorker):
    def __init__(self, *args, **kwargs):
        supervisor = os.environ.get(SUPERVISOR_ENV)
        if supervisor:
            set_parent_death_signal()
            if os.getppid() != int(supervisor):  # the supervisor died before the signal was armed
                os._exit(1)
            watch_parent(int(supervisor))
        super().__init__(*args, **kwargs)

    def work(self, *args, **kwargs):
        # rq's SIGTERM handler raises StopRequested when the worker is not busy. Its loop catches that, but
        # the supervisor ending a run can signal a worker that is tearing down or already exiting, and the
        # exception came out of rq's teardown (or, in a worker started by hand, pynng's atexit: a forked one
        # leaves with os._exit) as a traceback. The worker was ending anyway.
        try:
            return super().work(*args, **kwargs)
        except StopRequested:
            return False
        except REDIS_AWAY as exc:
            # rq can't record the job's end without its Redis. The supervisor waits for Redis, then starts
            # another worker; the loop's data is in the edge database.
            log.error("edge Redis went away (%s); this worker ends, its supervisor starts another", exc)
            raise SystemExit(EXIT_REDIS_AWAY) from None
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, signal.SIG_IGN)
