"""How a harness run (bench, chaos) ends on a signal: like Ctrl-C, once.

Ctrl-C, SIGTERM (a CI job cancelled, `timeout`) and SIGHUP (the terminal
closed) all raise KeyboardInterrupt in the main thread, so every `finally`
of the run stops the processes it started and deletes its topics, keys and
folders. A harness is a sequence of blocking steps, not a loop with a
`handle_one_...()` body that could look at a flag between steps: the
exception is how it gets out of whichever step it is in.

Only the first signal does: from then on these signals are ignored, so a
second Ctrl-C cannot cut the cleanup short and leave a pipeline running
(SIGKILL still ends the harness, and then its children end by their own
limits). Processes started after that would inherit the ignoring, so a
cleanup starts none; a child whose start a stop waited for (uninterrupted())
inherits it too, which is why the cleanups end children with SIGKILL. A signal the harness was started ignoring (nohup's
SIGHUP) stays ignored.
"""

import atexit
import os
import signal
import subprocess
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_HELD = {"depth": 0, "stop": False}  # the main thread's steps a stop must not split, and a stop they held back
CHILDREN = set()  # every child start_child() started and end_child() has not ended: the harness's exit ends them


@contextmanager
def uninterrupted():
    """A step of the main thread that a stop must not split, such as starting a child process and recording
    it: interrupted between the two, the child would be known to no cleanup and outlive the run. A stop
    that comes meanwhile raises its KeyboardInterrupt when the step is done. Other threads never get one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _HELD["depth"] += 1
    try:
        yield
    finally:
        _HELD["depth"] -= 1
        if not _HELD["depth"] and _HELD["stop"]:
            _HELD["stop"] = False
            raise KeyboardInterrupt


def stop_on_signals(out):
    """Install the handler; `out` is told once, when a run starts to stop."""

    def first(signum, frame):
        for each in SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        try:
            out(f"{signal.Signals(signum).name}: stopping; cleaning up what this run started "
                "(further signals are ignored until it is done)")
        except Exception:  # noqa: BLE001 -- a terminal that hung up (EIO), a closed pipe: the stop goes on, unsaid
            pass
        if _HELD["depth"]:
            _HELD["stop"] = True
            return
        raise KeyboardInterrupt

    for each in SIGNALS:
        if signal.getsignal(each) is not signal.SIG_IGN:  # `nohup` (SIGHUP), `cmd &` in a script (SIGINT)
            signal.signal(each, first)


def start_child(args, **popen):
    """subprocess.Popen(args, **popen), recorded in CHILDREN before a stop can be raised (uninterrupted()):
    whatever the caller gets to do, the harness's exit ends it."""
    with uninterrupted():
        proc = subprocess.Popen(args, **popen)
        CHILDREN.add(proc)
    return proc


def end_child(proc, timeout=10):
    """SIGKILL a child (with its own session's processes, if it leads one) and reap it."""
    if proc.poll() is None:
        try:
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except ProcessLookupError:
            pass
        proc.wait(timeout)
    CHILDREN.discard(proc)


@atexit.register
def _end_children():
    for proc in list(CHILDREN):
        try:
            end_child(proc)
        except Exception:  # noqa: BLE001 -- one stuck in the kernel (D state) must not spare the others
            CHILDREN.discard(proc)
