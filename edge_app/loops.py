"""The edge's three loops as RQ jobs.

`run_loop` is the job: it checks that it belongs to the current run (a job
left in the queue by a killed run is discarded), takes the loop's lock (so
one edge never runs two copies of a loop), then repeats the loop's small
step until the stop flag is set or, in burst mode, its work is done. RQ
cannot interrupt a running job, so stopping goes through a Redis key every
loop checks about every half second (edge_app/control.py).
"""

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

from django.conf import settings
from django.db import connection

from edge_app.budget import BUDGET_CHECK_SECONDS, budget_folder, derived_budget, low_water
from edge_app.control import LOOPS, REDIS_AWAY, EdgeControl, Holder, queue_name  # noqa: F401  (the loops' public names)
from edge_app.database_outage import DATABASE_AWAY, DatabaseOutage
from edge_app.ingest import IDLE_SECONDS, TOPIC_WAIT_SECONDS, IngestSetupError
from edge_app.kafka_source import TOPIC_POLL_SECONDS, KafkaSourceError
from edge_app.models import WindowAggregate
from fogwire.fullgc import FullCollections

log = logging.getLogger("fog.edge")

RENEW_SECONDS = 1.0
TLS_CHECK_SECONDS = 60  # for `python -m fogwire.tls` (a fraction of a second) on a loaded machine
TLS_CHECK_SAID = 1000  # characters of its stderr a failed check quotes (the end, where the error is)
HEARTBEAT, DATA = 1, 2  # places of the ports in a FOG_CLOUD_ENDPOINTS entry
REFUSED_RETRY_SECONDS = 30  # how often an ingest that can't start as configured looks again (a recreated topic)
# Partition checks in a row that find the topic gone before it is said: one metadata answer without it may be a
# broker catching up (a partition's leader moving), not a deletion.
TOPIC_GONE_CHECKS = 2
IDLE_SLEEP = {"ingest": 0.0, "sender": 0.05, "heartbeat": 0.0}  # seconds between steps that did nothing (the
# heartbeat's own step keeps its beats a second apart)


def cloud_tls():
    """The edge's TLS config (FOG_TLS_CA, FOG_TLS_SERVER_NAME, FOG_EDGE_TLS_CERT), or None for plain tcp."""
    from fogwire.tls import client_config

    if not settings.FOG_TLS_CA:
        return None
    return client_config(settings.FOG_TLS_CA, settings.FOG_TLS_SERVER_NAME, settings.FOG_EDGE_TLS_CERT or None)


def cloud_tls_problem():
    """What makes the edge's TLS files unusable for the loops, or None. Asked of an interpreter of its own
    (`python -m fogwire.tls`): nng, started in the supervisor, would panic in every worker forked from it."""
    from fogwire.tls import TLS_OK, TLS_UNUSABLE

    if not settings.FOG_TLS_CA:
        return None
    path = os.pathsep.join(filter(None, [str(settings.BASE_DIR), os.environ.get("PYTHONPATH")]))
    try:  # -P: this project's fogwire, not one in the working directory
        result = subprocess.run([sys.executable, "-P", "-m", "fogwire.tls", settings.FOG_TLS_CA,
                                 settings.FOG_TLS_SERVER_NAME, settings.FOG_EDGE_TLS_CERT or ""],
                                env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True,
                                timeout=TLS_CHECK_SECONDS)
    except subprocess.TimeoutExpired:
        return f"checking the TLS files took over {TLS_CHECK_SECONDS} s (python -m fogwire.tls)"
    if result.returncode == 0 and result.stdout.strip() == TLS_OK:
        return None
    if result.returncode == TLS_UNUSABLE and result.stdout.strip():
        return result.stdout.strip()
    return (f"checking the TLS files failed (python -m fogwire.tls, exit {result.returncode}): "
            f"{result.stderr.strip()[-TLS_CHECK_SAID:]}")


def cloud_address(port_index, tls):
    """Every cloud replica's heartbeat (HEARTBEAT) or data (DATA) address, comma-separated (FOG_CLOUD_HOST)."""
    from fogwire.tls import address

    return ",".join(address(endpoint[0], endpoint[port_index], tls) for endpoint in settings.FOG_CLOUD_ENDPOINTS)


class Step:
    restart = False  # set by a step: run_loop ends the loop, to be enqueued again by its supervisor

    def room_s(self):
        """Seconds the loop may pause for other work (a full garbage collection) before its next step is
        due; None: not known (fogwire/fullgc.py)."""
        return None


class IngestStep(Step):
    def __init__(self, options, control):
        from edge_app.ingest import Ingestor

        self.ingest = Ingestor(edge_id=settings.FOG_EDGE_ID, topic=options.get("topic") or settings.FOG_TOPIC,
                               bootstrap=settings.FOG_KAFKA_BOOTSTRAP, window_seconds=settings.FOG_WINDOW_SECONDS,
                               grace_seconds=settings.FOG_GRACE_SECONDS, idle_seconds=options.get("idle", IDLE_SECONDS),
                               live_windows=settings.FOG_LIVE_WINDOWS, stagger=settings.FOG_WINDOW_STAGGER,
                               live_grace_seconds=settings.FOG_LIVE_GRACE_SECONDS, client=options.get("kafka_client"),
                               legacy=options.get("legacy_input", False))
        self.burst, self.connected, self.waiting_since, self.waiting_for = options.get("burst"), False, None, None
        self.refused_until, self.refused_said = 0.0, False  # an IngestSetupError: when to look again
        self.control = control
        self.watch = self.end = None
        self.budget_due = 0.0  # when a derived budget is worked out again (set as the ingest connects)
        self.topic_gone = 0  # partition checks in a row the broker answered without the topic

    def step(self):
        if not self.connected:
            return self.handle_one_connect()
        if self.watch.due():
            self.watch.handle_one_check(self.ingest.needed_offsets())
            self.handle_one_partition_check()
        if not settings.FOG_EDGE_BUDGET_TUPLES and time.monotonic() >= self.budget_due:
            self.budget_due = time.monotonic() + BUDGET_CHECK_SECONDS
            self.ingest.resize_budget(*edge_budget())  # counted again: the ingest's own count is an upper bound
        return self.ingest.handle_one_poll()

    def handle_one_partition_check(self):
        """Partitions added to the topic since the ingest began (kafka-topics --alter), or the topic made anew:
        the loop ends, and its supervisor starts it again, which reads them from their beginning. Left alone,
        they were read only after a restart, and Kafka's retention could delete their readings first."""
        try:
            partitions = self.ingest.source.partitions(self.ingest.topic)
        except KafkaSourceError:
            return  # Kafka away: the poll says so
        if not partitions:  # the broker answers, without the topic: deleted. Polls just find nothing, and said nothing
            self.topic_gone += 1
            if self.topic_gone == TOPIC_GONE_CHECKS:
                log.error("topic %s is gone from %s (deleted?): the ingest reads nothing until it is made again",
                          self.ingest.topic, self.ingest.bootstrap)
            return
        if self.topic_gone >= TOPIC_GONE_CHECKS:
            log.warning("topic %s is there again on %s", self.ingest.topic, self.ingest.bootstrap)
        self.topic_gone = 0
        added = sorted(set(partitions) - set(self.ingest.next_offsets))
        if added:
            log.warning("topic %s has new partitions %s; the ingest starts again to read them", self.ingest.topic,
                        added)
            self.restart = True
            return
        # Deleted and made again while it was read: the consumer goes on at its old offsets, which skip the new
        # topic's first readings. Started again, the ingest sees the new id and reads the new topic from its
        # beginning (Ingestor.try_connect), saying what of the old one was lost.
        now = self.ingest.source.topic_id(self.ingest.topic)
        if now and self.ingest.topic_id and now != self.ingest.topic_id:
            log.error("topic %s was deleted and made again while this edge read it (id %s, now %s); the ingest "
                      "starts again to read the new one from its beginning", self.ingest.topic, self.ingest.topic_id,
                      now)
            self.restart = True

    def handle_one_connect(self):
        """Start reading once Kafka answers and the topic exists. Until then the loop runs (stops, renews its
        lock) and says once that it waits; a burst run gives up after TOPIC_WAIT_SECONDS, with what is missing."""
        from edge_app.kafka_retention import RetentionWatch

        if time.monotonic() < self.refused_until:
            time.sleep(TOPIC_POLL_SECONDS)  # short: run_loop sees a stop request between steps
            return False
        try:
            connected = self.ingest.try_connect()
        except KafkaSourceError as exc:
            # Kafka away as the ingest starts: it waits in the loop, as for a topic not made yet. Ended, the loop
            # was enqueued again every few seconds, each a restart counted against WORKER_RESTARTS.
            return self._wait_to_connect("kafka", f"Kafka does not answer ({exc}); the ingest waits for it", exc)
        except IngestSetupError as exc:
            # Nothing a running edge can mend (its settings are read at start): said once, while the sender and
            # the heartbeat go on delivering what is stored. A burst can't finish: it ends at once, failed.
            if self.burst:
                self.control.give_up(f"the ingest can't start: {exc}")
                raise
            if not self.refused_said:
                log.error("the ingest can't start: %s. It waits; stop the edge and start it again as it says", exc)
                self.refused_said = True
            self.refused_until = time.monotonic() + REFUSED_RETRY_SECONDS
            return False
        if not connected:
            return self._wait_to_connect("topic", f"topic {self.ingest.topic!r} does not exist on "
                                        f"{self.ingest.bootstrap} yet; the ingest waits for it (runsimulation makes it)")
        if self.waiting_since is not None:
            log.info("Kafka answers and topic %r is there; the ingest starts", self.ingest.topic)
        backlog = WindowAggregate.objects.backlog().count()
        self.ingest.set_budget(*edge_budget(backlog), counted=backlog)
        self.budget_due = time.monotonic() + BUDGET_CHECK_SECONDS
        self.watch = RetentionWatch(edge_id=settings.FOG_EDGE_ID, topic=self.ingest.topic,
                                    bootstrap=settings.FOG_KAFKA_BOOTSTRAP,
                                    margin_seconds=settings.FOG_EDGE_RETENTION_MARGIN_HOURS * 3600)
        self.end = self.ingest.end_offsets() if self.burst else None
        self.connected = True
        return True

    def _wait_to_connect(self, kind, why, error=None):
        """Said once for each `kind` of wait in a row; a burst gives up after TOPIC_WAIT_SECONDS (with `error`, or
        the topic missing)."""
        now = time.monotonic()
        if kind != self.waiting_for:
            self.waiting_for = kind
            log.warning("%s", why)
        if self.waiting_since is None:
            self.waiting_since = now
        elif self.burst and now - self.waiting_since >= TOPIC_WAIT_SECONDS:
            raise error or KafkaSourceError(f"topic {self.ingest.topic!r} does not exist on {self.ingest.bootstrap} "
                                            f"(waited {TOPIC_WAIT_SECONDS} s)")
        time.sleep(TOPIC_POLL_SECONDS)
        return False

    def room_s(self):
        return self.ingest.room_s() if self.connected else None

    def finished(self, control):
        if not self.connected or not self.ingest.at_end(self.end):
            return False
        self.ingest.finish()
        return True

    def close(self):
        try:
            if self.ingest.dirty or self.ingest.book.closed:
                self.ingest.flush()
        finally:
            self.ingest.close()
            if self.watch is not None:
                self.watch.close()


def edge_budget(backlog=None):
    """(budget, low-water mark) in tuples: FOG_EDGE_BUDGET_TUPLES, or derived from the free disk space now and
    the backlog (counted here unless given)."""
    budget = settings.FOG_EDGE_BUDGET_TUPLES
    if not budget:
        folder = budget_folder(settings.DATABASES["default"], settings.VAR_DIR)
        if backlog is None:
            backlog = WindowAggregate.objects.backlog().count()
        budget = derived_budget(shutil.disk_usage(folder).free, backlog)
    return budget, low_water(budget, settings.FOG_EDGE_BUDGET_LOW_WATER_PERCENT)


class SenderStep(Step):
    def __init__(self, options, control):
        from edge_app.sender import Sender

        tls = cloud_tls()
        self.sender = Sender(edge_id=settings.FOG_EDGE_ID, secret=settings.FOG_EDGE_SECRET,
                             address=cloud_address(DATA, tls), batch=options.get("batch", 1000),
                             in_flight=options.get("in_flight", 4), tls=tls)
        try:
            requeued = self.sender.requeue_sent()
        except BaseException:  # the database failing: the socket goes now, not with its contexts at collection
            self.sender.close()
            raise
        if requeued:
            log.info("sending again %d tuples left SENT by an earlier run", requeued)

    def step(self):
        return self.sender.handle_one_round() > 0

    def finished(self, control):
        return control.done("ingest") and not WindowAggregate.objects.undelivered().exists()

    def close(self):
        self.sender.close()


class HeartbeatStep(Step):
    """A beat a second; in the time the beats leave, the edge's upkeep: retention and the household index, a
    short slice at a time (edge_app/retention.py, edge_app/household_index.py), so no beat comes late."""

    FINAL_BEAT_TRIES = 3
    UPKEEP_SECONDS = 0.4  # of each beat's second: the rest is left to the sleep (and to the other loops)

    def __init__(self, options, control):
        from edge_app.household_index import HouseholdIndexer
        from edge_app.link import Heartbeat
        from edge_app.retention import Retention

        tls = cloud_tls()
        self.beat = Heartbeat(edge_id=settings.FOG_EDGE_ID, secret=settings.FOG_EDGE_SECRET,
                              address=cloud_address(HEARTBEAT, tls), tls=tls)
        self.index = HouseholdIndexer()
        self.retention = Retention(settings.FOG_EDGE_RETENTION_DAYS, on_deleted=self.index.sweep_soon)
        self.control = control

    def step(self):
        began = time.monotonic()
        self.beat.handle_one_beat()
        self.handle_upkeep(until=began + self.UPKEEP_SECONDS)
        # Counted from when this beat began: a slow answer does not widen the gap the cloud sees between beats.
        _sleep(self.beat.every_seconds - (time.monotonic() - began), self.control)
        return False

    def handle_upkeep(self, until):
        """Slices of retention and of the household index, by turns, until `until` or nothing is left to do."""
        while time.monotonic() < until and not self.control.stop_requested():
            did_retention = self.retention.handle_one_slice()
            if not (self.index.handle_one_slice() or did_retention):
                return

    def finished(self, control):
        if not control.done("sender"):
            return False
        if not self.index.caught_up():  # a finite run ends with every tuple it stored in the household index,
            return False                # built by the steps' upkeep, a slice at a time as ever
        # The last beat may have counted the backlog just before the sender emptied it; the cloud would
        # show that stale figure for good. One more answered beat tells it the backlog the burst ends with.
        for _ in range(self.FINAL_BEAT_TRIES):
            if control.stop_requested() or self.beat.handle_one_beat():
                break
        return True

    def close(self):
        self.beat.close()


STEPS = {"ingest": IngestStep, "sender": SenderStep, "heartbeat": HeartbeatStep}


def run_loop(loop, edge_id, options=None):
    """The RQ job: run one loop of one edge until stopped (or, with options['burst'], done)."""
    options = options or {}
    control = EdgeControl(edge_id, in_flight=options.get("in_flight", 4), run=options.get("run"))
    with signals_stop(control):  # from the start: a stop while it waits for its lock, or out a database outage
        return _run_loop(loop, edge_id, options, control)


def _run_loop(loop, edge_id, options, control):
    if _stale(control, loop, options):
        return "stale"
    token = Holder.new().token  # pid, host and start time tell operators (and fault tests) who holds it
    # A copy on another host that died keeps its lock for one TTL; wait that long before giving up.
    if not control.acquire(loop, token, wait_seconds=control.ttl_ms / 1000 + 1):
        log.warning("%s loop of edge %s already runs %s; this copy exits", loop, edge_id,
                    (control.holder(loop) or Holder(0, "", 0, "")).describe())
        return "duplicate"
    outage = DatabaseOutage(f"{loop} loop of edge {edge_id}")
    try:
        while True:
            try:
                return _run_steps(loop, edge_id, options, control, token, outage)
            except DATABASE_AWAY as exc:
                _drop_database_connection()
                wait, line = outage.failed(time.monotonic(), exc)
                if line:
                    log.error(line)
                ended = _wait_holding(loop, control, token, wait)
                if ended:
                    return ended
    except (KafkaSourceError, IngestSetupError) as exc:  # Kafka away, a burst's topic missing or layout: a line
        log.error("%s loop of edge %s stopped: %s; the supervisor starts it again", loop, edge_id, exc)
        return "failed"
    except REDIS_AWAY as exc:
        log.error("%s loop of edge %s stopped: the edge Redis went away (%s); the supervisor starts it again once "
                  "it is back", loop, edge_id, exc)
        return "redis-away"
    finally:
        # The worker's next job opens a connection of its own: one kept (CONN_MAX_AGE) may be dead.
        _drop_database_connection()
        try:
            control.release(loop, token)
        except REDIS_AWAY:
            pass  # it lapses by itself
        log.info("%s loop of edge %s ended", loop, edge_id)


@contextmanager
def signals_stop(control):
    """SIGINT or SIGTERM to the worker's process stops the loop at its next step, as a stop request does. rq's
    SimpleWorker (the workers `runedge --no-workers` asks for) only notes one that comes during a job, and stops
    after it: after a loop that runs until stopped, so only a second signal, a cold shutdown in the middle of a
    step, ended it. rq's handler, if any, still runs after this one. Only in the main thread, where handlers
    run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # The two rq's worker stops on (SIGHUP ends a worker by its default action); one ignored from the start stays so.
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)
              if signal.getsignal(signum) is not signal.SIG_IGN}

    def handler(signum, frame):
        control.stop_signalled()  # sets a flag, no I/O
        previous = before[signum]
        if callable(previous):
            previous(signum, frame)

    for signum in before:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, previous in before.items():
            if signal.getsignal(signum) is handler:  # rq may have put its own in since (its second-signal stop)
                signal.signal(signum, previous)


def _run_steps(loop, edge_id, options, control, token, outage):
    """Make the loop's runner and repeat its step; the word run_loop returns. Database errors go up."""
    runner = None
    collections = FullCollections(settings.FOG_FULL_GC_SECONDS)
    try:
        if _stale(control, loop, options):  # a newer run began while we waited for the lock
            return "stale"
        runner = STEPS[loop](options, control)
        # Each try during a database outage starts it again: said once, at the first start.
        log.log(logging.DEBUG if outage.failures else logging.INFO, "%s loop of edge %s started%s", loop, edge_id,
                " (burst)" if options.get("burst") else "")
        renewed = time.monotonic()
        collections.start()
        while not control.stop_requested():
            did = runner.step()
            if outage.since is not None:
                line = outage.step_done(time.monotonic())
                if line:
                    log.info(line)
            if did:
                collections.handle_one_step()
            else:
                collections.handle_one_pause(runner.room_s())
            if time.monotonic() - renewed >= RENEW_SECONDS:
                if not control.renew(loop, token):
                    log.error("%s loop of edge %s lost its lock; exiting", loop, edge_id)
                    return "lost-lock"
                renewed = time.monotonic()
            if options.get("burst") and runner.finished(control):
                control.mark_done(loop)
                return "done"
            if runner.restart:
                return "restart"
            if not did and IDLE_SLEEP[loop]:
                _sleep(IDLE_SLEEP[loop], control)
        return "stopped"
    finally:
        collections.stop()
        if runner is not None:
            runner.close()


def _wait_holding(loop, control, token, seconds):
    """Wait out a database outage's pause, keeping the lock: None to try again, else the word to end with."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if control.stop_requested():
            return "stopped"
        if not control.renew(loop, token):
            log.error("%s loop of edge %s lost its lock; exiting", loop, control.edge_id)
            return "lost-lock"
        time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
    return None


def _drop_database_connection():
    try:
        connection.close()
    except DATABASE_AWAY:
        pass  # it is gone either way


def _stale(control, loop, options):
    run, current = options.get("run"), control.current_run()
    if run is None or run == current:
        return False
    log.warning("%s job of edge %s belongs to run %s, not the current run %s; discarded", loop, control.edge_id,
                run, current)
    return True


def _sleep(seconds, control):
    """Sleep in slices of at most 0.25 s, so a stop request is seen quickly."""
    deadline = time.monotonic() + seconds
    while not control.stop_requested():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.25))
