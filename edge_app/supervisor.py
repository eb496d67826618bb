"""What `runedge` does: enqueue the loops, run and watch the workers, stop cleanly.

By default runedge starts one RQ worker process per loop (RQ's SimpleWorker:
the loop runs in the worker process itself) and supervises them: a dead
worker is started again and a loop whose lock has lapsed is enqueued again.
"""

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import django_rq
from django.conf import settings

from edge_app.loops import LOOPS, QUEUE, EdgeControl, run_loop
from edge_app.models import EdgeStatus, WindowAggregate

log = logging.getLogger("fog.edge")

ROOT = Path(__file__).resolve().parent.parent
SLICE = 0.25
STOP_SECONDS = 4.5
CHECK_SECONDS = 0.5
LAPSE_CHECKS = 3  # a loop with no lock for this many checks in a row (not queued) is enqueued again


class EdgeStartError(Exception):
    pass


@dataclass
class Summary:
    readings: int
    windows: int
    late: int
    malformed: int
    acked: int
    pending: int
    seconds: float
    completed: bool
    refused: int = 0  # refused by the cloud for good (status refused): not pending, so a burst run still ends

    def line(self):
        return (f"edge {settings.FOG_EDGE_ID}: readings={self.readings} windows={self.windows} late={self.late} "
                f"malformed={self.malformed} acked={self.acked} pending={self.pending} refused={self.refused} "
                f"seconds={self.seconds:.1f}"
                + ("" if self.completed else " (timed out)"))


def summary(started, completed):
    status = EdgeStatus.for_edge(settings.FOG_EDGE_ID)
    counts = WindowAggregate.objects.counts_by_status()
    return Summary(status.readings, sum(counts.values()), status.late, status.malformed, counts["acknowledged"],
                   counts["pending"] + counts["sent"], time.monotonic() - started, completed, counts["refused"])


def enqueue(loop, options, attempt=0):
    queue = django_rq.get_queue(QUEUE)
    return queue.enqueue(run_loop, loop, settings.FOG_EDGE_ID, options, job_timeout=-1, result_ttl=300,
                         failure_ttl=3600, job_id=f"fog-edge-{settings.FOG_EDGE_ID}-{loop}-{int(time.time())}-{attempt}")


def _queued(job):
    try:
        job.refresh()
    except Exception:  # the job hash expired or was deleted
        return False
    return job.get_status() in ("queued", "scheduled", "deferred")


class Supervisor:
    def __init__(self, options, stop_flag, out=print, worker_verbosity=0):
        self.options, self.stop_flag, self.out = options, stop_flag, out
        self.worker_verbosity = worker_verbosity
        self.control = EdgeControl(settings.FOG_EDGE_ID)
        self.jobs, self.lapsed, self.workers = {}, {}, {}

    def start(self, with_workers=True):
        try:
            self.control.redis.ping()
        except Exception as exc:
            raise EdgeStartError(f"edge Redis at {settings.FOG_EDGE_REDIS_URL} is unreachable: {exc}") from None
        self.control.reset()
        for loop in LOOPS:
            if self.control.running(loop):
                self.out(f"{loop} loop of edge {settings.FOG_EDGE_ID} already runs; not enqueued again")
            else:
                self.jobs[loop] = enqueue(loop, self.options)
                self.lapsed[loop] = 0
        if with_workers:
            for number in range(len(LOOPS)):
                self.workers[number] = self._start_worker(number)

    def _start_worker(self, number):
        name = f"edge-{settings.FOG_EDGE_ID}-{number}-{os.getpid()}-{int(time.time() * 1000) % 100000}"
        cmd = [sys.executable, str(ROOT / "manage.py"), "rqworker", QUEUE, "--worker-class", "rq.worker.SimpleWorker",
               "--name", name, "-v", str(self.worker_verbosity)]
        if self.options.get("burst"):
            cmd.append("--burst")
        return subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)

    def handle_one_check(self):
        """Restart dead workers, re-enqueue lapsed loops. True when a burst run has finished."""
        burst = self.options.get("burst")
        if burst and all(self.control.done(loop) for loop in LOOPS):
            return True
        for number, proc in list(self.workers.items()):
            if proc.poll() is None:
                continue
            if burst and proc.returncode == 0:
                del self.workers[number]  # its loop is done and the queue empty: a burst worker leaves
                continue
            log.warning("edge worker %d exited with code %s; starting it again", number, proc.returncode)
            self._take_over(proc.pid)
            self.workers[number] = self._start_worker(number)
        for loop in LOOPS:
            if self.control.running(loop) or (burst and self.control.done(loop)) or _queued(self.jobs.get(loop)):
                self.lapsed[loop] = 0
                continue
            self.lapsed[loop] = self.lapsed.get(loop, 0) + 1
            if self.lapsed[loop] >= LAPSE_CHECKS:
                log.warning("%s loop of edge %s is not running; enqueueing it again", loop, settings.FOG_EDGE_ID)
                self.jobs[loop] = enqueue(loop, self.options, attempt=self.lapsed[loop])
                self.lapsed[loop] = 0
        if burst:  # every loop still to finish needs a live worker (they leave once theirs is done)
            unfinished = sum(1 for loop in LOOPS if not self.control.done(loop))
            for _ in range(unfinished - len(self.workers)):
                number = max(self.workers, default=-1) + 1
                self.workers[number] = self._start_worker(number)
        return False

    def _take_over(self, dead_pid):
        """A worker we started has died: free the locks it held and enqueue its loops at once,
        rather than waiting for the locks to lapse (3 s) and the lapse checks (3 s)."""
        for loop in LOOPS:
            if self.control.holder_pid(loop) == dead_pid:
                self.control.redis.delete(self.control.prefix + f"lock:{loop}")
                log.warning("%s loop of edge %s died with its worker; enqueueing it again", loop, settings.FOG_EDGE_ID)
                self.jobs[loop] = enqueue(loop, self.options, attempt=dead_pid)
                self.lapsed[loop] = 0

    def run(self, timeout=None):
        started = time.monotonic()
        completed = False
        last_check = 0.0
        while not self.stop_flag():
            if time.monotonic() - last_check >= CHECK_SECONDS:
                last_check = time.monotonic()
                if self.handle_one_check():
                    completed = True
                    break
            if timeout and time.monotonic() - started >= timeout:
                self.out(f"edge: --timeout {timeout:g} s passed before the work was done")
                break
            time.sleep(SLICE)
        self.stop()
        return summary(started, completed)

    def stop(self):
        """Ask every loop to stop, wait for them briefly, then end the workers."""
        self.control.request_stop()
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline and any(self.control.running(loop) for loop in LOOPS):
            time.sleep(0.05)
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        # Jobs nobody picked up must not start loops after we are gone.
        for job in self.jobs.values():
            if _queued(job):
                job.cancel()
