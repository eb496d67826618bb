"""A parallel run of the suite (`make test`: pytest-xdist, `-n TEST_WORKERS --dist loadfile`) keeps the serial run's
process hygiene.

- Each worker marks what it starts with the session's marker plus its own id, so neither worker's check
  or kill reaches the other worker, the other's processes, or the controller (whose marker the workers
  themselves were started with).
- A worker, once its own fixtures are torn down, kills what it left running and reports it to the
  controller, which names it and fails the run for it: the last test can only check the worker it
  runs on.
- Interrupted (Ctrl-C, or SIGTERM, which the suite turns into Ctrl-C), the controller stops every
  worker still running (with SIGTERM) and waits for each to finish its own teardown before xdist ends
  them: xdist would give a worker some 15 s, and a fault lane's brokers alone may take longer to stop.
"""

import json
import os
import signal
import tempfile
import time
from pathlib import Path

import pytest

from edge_app.processes import alive, has_environment
from fogwire.stopsignals import stop_signals

FOLDER_ENV = "FOG_TEST_WORKERS"  # where workers leave their pid, what they left running, and a mark once done
WORKER_TEARDOWN_S = 180
RUN = {"controller": False}  # set once this process is a parallel run's controller
SETTLE_S = 5  # what a worker's tests just told to stop gets to end before it counts as left running
SIGNALLED_WITHIN_S = 1  # a terminal's Ctrl-C reaches the workers too; give it this long to land first


def worker_id(config):
    return getattr(config, "workerinput", {}).get("workerid")


def configure(config, marker_env, session_processes, kill_survivors, wait_for):
    """Called from the suite's pytest_configure: sets this process up as a worker or controller, if it is one."""
    worker = worker_id(config)
    if worker:
        os.environ[marker_env] = f"{os.environ[marker_env]}-{worker}"
        config.pluginmanager.register(Worker(worker, kill_survivors, session_processes, wait_for), "fog-worker")
    elif (config.getoption("dist", default="no") != "no" and config.getoption("tx", default=None)
          and not config.getoption("collectonly")):  # xdist starts workers only with both (plugin.py)
        folder = tempfile.mkdtemp(prefix="fog-test-workers-")
        os.environ[FOLDER_ENV] = folder  # before xdist starts the workers, in pytest_sessionstart
        config.add_cleanup(lambda: _remove(folder))
        config.pluginmanager.register(Controller(Path(folder), wait_for), "fog-controller")
        RUN["controller"] = True


def once_is_enough(signum, frame):
    pass  # a handler, not SIG_IGN, which the processes a teardown starts would inherit


def reported_survivors(config):
    """{pid: command line} of what the workers of this parallel run reported they left (and killed)."""
    plugin = config.pluginmanager.get_plugin("fog-controller")
    return plugin.survivors() if plugin else {}


def _remove(folder):
    for path in Path(folder).iterdir():
        path.unlink(missing_ok=True)
    Path(folder).rmdir()


class Worker:
    def __init__(self, worker, kill_survivors, session_processes, wait_for):
        self.worker, self.kill_survivors, self.session_processes, self.wait_for = (
            worker, kill_survivors, session_processes, wait_for)
        self.folder = Path(os.environ[FOLDER_ENV]) if os.environ.get(FOLDER_ENV) else None
        if self.folder:  # whole or not at all: the controller may read it at any moment
            (self.folder / f"{worker}.pid.part").write_text(str(os.getpid()))
            (self.folder / f"{worker}.pid.part").rename(self.folder / f"{worker}.pid")

    def pytest_keyboard_interrupt(self):
        # One interrupt ends the run; a second one (the controller's, or execnet's own after 5 s) must not
        # cut short the teardown that ends what the tests started. A handler, not SIG_IGN: the processes a
        # teardown starts would inherit SIG_IGN and could not be stopped.
        for signum in stop_signals():
            signal.signal(signum, once_is_enough)

    @pytest.hookimpl(trylast=True)  # after the session's fixtures are torn down
    def pytest_sessionfinish(self, session):
        self.wait_for(lambda: not self.session_processes(), timeout=SETTLE_S, interval=0.5)
        survivors = self.kill_survivors()
        if self.folder:  # a file, not xdist's workeroutput: an interrupted controller no longer reads those
            (self.folder / f"{self.worker}.survivors").write_text(json.dumps(survivors))  # pids become strings
            (self.folder / f"{self.worker}.done").touch()


class Controller:
    def __init__(self, folder, wait_for):
        self.folder, self.wait_for = folder, wait_for

    def survivors(self):
        found = {}
        for report in self.folder.glob("*.survivors"):
            found.update(json.loads(report.read_text()))
        return found

    @pytest.hookimpl(tryfirst=True)  # before xdist's own, which ends the workers
    def pytest_sessionfinish(self, exitstatus):
        if exitstatus != pytest.ExitCode.INTERRUPTED:
            return
        time.sleep(SIGNALLED_WITHIN_S)
        for pid in self._running():
            try:  # SIGTERM, which the suite turns into Ctrl-C: a run started with `&` ignores SIGINT itself
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.wait_for(lambda: not self._running(), timeout=WORKER_TEARDOWN_S, interval=0.5)

    def _running(self):
        running = []
        for pidfile in self.folder.glob("*.pid"):
            pid = int(pidfile.read_text())
            if not (self.folder / f"{pidfile.stem}.done").exists() and alive(pid) and self._ours(pid):
                running.append(pid)
        return running

    def _ours(self, pid):
        """Whether `pid` is still this run's worker: a worker that died without its mark leaves its pid file, and
        the pid may be another process's since (this run's folder, in its environment, says which)."""
        return has_environment(pid, FOLDER_ENV, str(self.folder))

