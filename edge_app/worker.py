"""The RQ worker `runedge` starts: a SimpleWorker that dies with its supervisor.

However the supervisor dies (SIGKILL, the OOM killer), its workers must not
live on holding the loops. Two mechanisms, because each has a gap:

- Linux's parent-death signal (prctl PR_SET_PDEATHSIG), set in the child
  before exec (`set_parent_death_signal` as Popen's preexec_fn) and again
  here. It fires when the *thread* that forked the child exits, and not at
  all if the parent died before the call;
- a parent watch: a thread that ends the worker as soon as its parent pid
  is no longer the supervisor's (FOG_SUPERVISOR_PID).

Both end the worker with SIGKILL-like abruptness (the loops are crash-safe:
a whole-edge crash loses nothing), within PARENT_WATCH_SECONDS.
Workers an operator starts by hand (no FOG_SUPERVISOR_PID) are plain SimpleWorkers.
"""

import ctypes
import logging
import os
import signal
import threading
import time

from rq.exceptions import StopRequested
from rq.worker import SimpleWorker

from edge_app.control import REDIS_AWAY

log = logging.getLogger("fog.edge")

SUPERVISOR_ENV = "FOG_SUPERVISOR_PID"
PARENT_WATCH_SECONDS = 0.2
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def set_parent_death_signal(signum=signal.SIGKILL):
    """Ask the kernel to send `signum` to this process when its parent (thread) exits. Linux only."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0


def watch_parent(expected_ppid, interval=PARENT_WATCH_SECONDS):
    """Start a daemon thread that ends this process once its parent is not `expected_ppid` any more."""

    def watch():
        while os.getppid() == expected_ppid:
            time.sleep(interval)
        os._exit(1)  # nothing to clean up that a crash would not leave too; the loops recover from it

    thread = threading.Thread(target=watch, name="fog-parent-watch", daemon=True)
    thread.start()
    return thread


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
        # exception came out of rq's teardown or pynng's atexit as a traceback. The worker was ending anyway.
        try:
            return super().work(*args, **kwargs)
        except StopRequested:
            return False
        except REDIS_AWAY as exc:
            # rq can't record the job's end without its Redis. The supervisor waits for Redis, then starts
            # another worker; the loop's data is in the edge database.
            log.error("edge Redis went away (%s); this worker ends, its supervisor starts another", exc)
            raise SystemExit(1) from None
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, signal.SIG_IGN)
