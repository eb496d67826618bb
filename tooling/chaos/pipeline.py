"""One pipeline of real processes for a fault scenario: cloud, edge (with its workers), simulation.

Every pipeline has its own topic, edge id, edge database file, cloud key
prefix and ports; the edge reaches the cloud through a Proxy the harness
can cut. The broker and the cloud Redis are the harness's own
(ChaosServices), so killing them disturbs nothing else.

The processes run in sessions of their own (so a fault hits exactly the
process it means to), which also means a terminal's Ctrl-C never reaches
them: every process a Pipeline starts is tracked and killed by its close(),
and, should that not run (an interrupted harness), at interpreter exit.
The edge's RQ workers die with their supervisor (edge_app/worker.py).

A lane runner (tooling/chaos/lanes.py) runs scenarios in threads, so close()
may come from another thread than the one running the scenario: it is
idempotent, and a closed pipeline (or one whose `stop` event is set) starts
no process any more, and its waits and sleeps raise PipelineClosed, so the
scenario's thread unwinds instead of carrying on against killed processes.
"""

import atexit
import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from edge_app.models import Status
from edge_app.processes import alive, child_pids
from fogwire.limits import DEFAULT_HOUSEHOLDS_PER_EDGE
from tooling.bench.common import remove_sqlite
from tooling.bench.simulate import SUMMARY
from tooling.chaos.proxy import Proxy
from tooling.net import POLL_INTERVAL_S, free_port, port_open, wait_for
from tooling.localservices import Kafka, Paths, PortTaken, Redis
from tooling.signals import end_child, start_child, uninterrupted

ROOT = Path(__file__).resolve().parent.parent.parent
log = logging.getLogger("fog.chaos")
SECRET = "chaos-secret-not-for-production"
LOOPS = ("ingest", "sender", "heartbeat")
CLOUD_PORT_TRIES = 3  # first starts of the cloud, each on new ports when the last ones were taken meanwhile
PROXY_PORT_TRIES = 3  # the link's proxies likewise: a port reserved here may be bound by another test first
SERVICE_PORT_TRIES = 3  # a lane's broker and Redis likewise (ChaosServices.up)
CLOUD_START_S = 30  # how long a first start may take to listen before the edge is started anyway
STEP_S = 2  # the simulation's step: one reading per household every 2 s
SIMULATION_STOP_S = 60  # how long a stopped simulation may take to flush to Kafka and end
_RESERVED = set()  # ports handed out in this process: two lanes picking ports at once never get the same one
_RESERVING = threading.Lock()
MIGRATE_SECONDS = 60
# The first pipeline of a harness process migrates its edge database and keeps a copy; later ones start on a copy
# of that. A `manage.py migrate` of its own took each pipeline a Python start and every migration again, and the
# suite and the fault matrix start dozens.
_TEMPLATE = {}
_TEMPLATE_LOCK = threading.Lock()


class PipelineClosed(Exception):
    """The pipeline was closed (or its runner stopped) while its scenario still ran."""


def reserve_port():
    """A free loopback port no other pipeline or lane of this process was given."""
    with _RESERVING:
        while (port := free_port()) in _RESERVED:
            pass
        _RESERVED.add(port)
        return port


def _proxy(target):
    """A proxy to `target` listening on a port of its own. Nothing dials it before the edge starts, so one that
    another process bound since it was reserved gives way to a new one."""
    for attempt in range(PROXY_PORT_TRIES):
        proxy = Proxy(reserve_port(), target)
        try:
            return proxy.start()
        except OSError as exc:
            proxy.stop()
            if exc.errno != errno.EADDRINUSE or attempt == PROXY_PORT_TRIES - 1:
                raise


class ChaosServices:
    """A Kafka broker and a cloud Redis of the harness's own, in a temporary folder."""

    def __init__(self, libs):
        self.libs = libs
        self._lock, self._closed = threading.Lock(), False
        self._make()

    def _make(self):
        self.folder = Path(tempfile.mkdtemp(prefix="fog-chaos-"))
        paths = Paths(ROOT, self.folder, libs=self.libs)
        self.kafka = Kafka(paths, "127.0.0.1", _free_pair())
        self.kafka.short_lived = True
        self.redis = Redis(paths, "127.0.0.1", reserve_port())

    def up(self, out=lambda line: None, redis=True):
        """Start the broker (and the Redis unless `redis` is false). Their ports are only found free: one that
        another process binds before the server does (a broker's JVM takes seconds to get there; a lane of a test
        run starts beside other lanes and tests) starts both again, in a new folder on new ports.

        A down() from another thread meanwhile (a lane runner closed while its lanes start) may find a server
        not started yet, or end one halfway: what started is ended here then, and PipelineClosed raised."""
        try:
            self._start(out, redis)
        except Exception as exc:
            if self._taken_down():
                raise PipelineClosed("the services were taken down while they started") from exc
            raise
        if self._taken_down():
            raise PipelineClosed("the services were taken down while they started")
        return self

    def _start(self, out, redis):
        for attempt in range(1, SERVICE_PORT_TRIES + 1):
            try:
                self.kafka.up(out)
                if redis:
                    self.redis.up(out)
                return
            except PortTaken as exc:
                if attempt == SERVICE_PORT_TRIES:
                    raise
                out(f"chaos services: {exc.args[0].splitlines()[0]}; starting again on other ports")
                self._end()
                with self._lock:  # down() sets the flag under it: it ends these, or no new ones start
                    if self._closed:
                        raise
                    self._make()

    def _taken_down(self):
        """True if down() was called: what runs of these services is ended (again) here."""
        with self._lock:
            closed = self._closed
        if closed:
            self._end()
        return closed

    def down(self):
        with self._lock:
            self._closed = True
        self._end()

    def _end(self):
        for service in (self.redis, self.kafka):
            try:
                service.down(lambda line: None)
            except Exception:
                pass
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.kafka.port}"

    @property
    def redis_url(self):
        return f"redis://127.0.0.1:{self.redis.port}/0"

    def kill(self, service):
        """SIGKILL, then start again from what is on disk; returns when it answers."""
        os.kill(service.our_pid(), signal.SIGKILL)
        wait_for(lambda: not service.ready(), 10, interval=0.1)
        service.pidfile.unlink(missing_ok=True)

    def restart(self, service):
        service.up(lambda line: None)


def _free_pair():
    """A port whose successor is free too (Kafka's controller listens on port + 1)."""
    while True:
        port = reserve_port()
        with _RESERVING:
            if port + 1 in _RESERVED:
                continue
            try:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            _RESERVED.add(port + 1)
            return port


def environ_now():
    """A copy of os.environ, taken while another thread may change it: a lane starts its pipeline in a thread of
    the test session, whose pytest sets and removes PYTEST_CURRENT_TEST around each test meanwhile, and a key
    removed between os.environ's listing of its keys and the reading of one raised KeyError (a CI run). Such a
    copy is taken again."""
    while True:
        try:
            return dict(os.environ)
        except KeyError:
            continue


class Pipeline:
    def __init__(self, services, edge_redis_url, households=300, until=900, speed=30.0, proxied=True,
                 simulation_args=(), idle_seconds=2, stop=None):
        self.services = services
        # close() and _manage() hold this lock, so no process starts after close() from any thread.
        self._lock, self._closed, self._stop = threading.Lock(), threading.Event(), stop
        self._procs = []  # every process this pipeline started, ended by close()
        # The fault matrix streams at 30x, where 2 s of silence is a minute of simulated time; a real-time
        # run (bench e2e) passes None for runedge's own default, or windows would close 2 s after their last
        # reading, before their grace is up.
        self.idle_seconds = idle_seconds
        self.households, self.until, self.speed = households, until, speed
        self.proxied, self.simulation_args = proxied, list(simulation_args)
        self.folder = Path(tempfile.mkdtemp(prefix="fog-chaos-edge-"))
        self.edge_id = f"chaos-{uuid.uuid4().hex[:8]}"
        self.hb, self.data = reserve_port(), reserve_port()
        self.proxy_hb = self.proxy_data = None
        self.env = {
            **environ_now(),
            "FOG_DATABASE_URL": f"sqlite:///{self.folder / 'edge.sqlite3'}",
            "FOG_EDGE_ID": self.edge_id, "FOG_EDGE_SECRET": SECRET, "FOG_EDGE_SECRETS": f"{self.edge_id}:{SECRET}",
            "FOG_KAFKA_BOOTSTRAP": services.bootstrap, "FOG_TOPIC": f"chaos-{uuid.uuid4().hex[:8]}",
            "FOG_CLOUD_REDIS_URL": services.redis_url, "FOG_CLOUD_KEY_PREFIX": f"{self.edge_id}:",
            "FOG_EDGE_REDIS_URL": edge_redis_url, "FOG_CLOUD_HOST": "127.0.0.1",
            # expected_windows counts aligned windows, whatever this shell sets (bench e2e sets its own)
            "FOG_WINDOW_STAGGER": "off",
            # This one edge brings every household: at the default quota, the cloud refused those beyond it
            # for good, and bench e2e saw its trials above 100,000 households fall behind for it.
            "FOG_CLOUD_HOUSEHOLDS_PER_EDGE": str(max(households, DEFAULT_HOUSEHOLDS_PER_EDGE)),
        }
        self.cloud = self.edge = self.simulation = None
        self.budget, self.peak_backlog, self.paused_seen = None, 0, False
        self._watching = None
        try:
            self.proxy_hb = _proxy(self.hb)
            self.proxy_data = _proxy(self.data)
            self._migrate()  # the edge refuses a database that is not
        except BaseException:  # stopped (or interrupted) already: the proxies and the folder go too
            self.close()
            raise

    # --- processes ------------------------------------------------------------

    @property
    def closed(self):
        return self._closed.is_set() or (self._stop is not None and self._stop.is_set())

    def _check_open(self):
        if self.closed:
            raise PipelineClosed(f"pipeline {self.edge_id} was closed")
        return True

    def _migrate(self):
        """This pipeline's edge database, migrated: a copy of the process's template, or by `manage.py migrate`
        (a process of this pipeline's, so close() ends it) which then becomes the template."""
        database = self.folder / "edge.sqlite3"
        with _TEMPLATE_LOCK:  # the lanes' pipelines start at once: one migrates, the others wait for its copy
            self._check_open()  # closed while it waited for the lock: nothing to copy into
            template = _TEMPLATE.get("path")
            if template and template.exists():  # else gone (a temp folder cleaner): migrate, as the first did
                try:
                    return _copy_database(template, database)
                except sqlite3.Error as exc:
                    log.warning("chaos: could not copy the migrated edge database %s (%s); migrating", template, exc)
                    _TEMPLATE.clear()
                    remove_sqlite(database)
            proc = self._manage("migrate", "--skip-checks", "-v", "0")
            self.wait_for(lambda: proc.poll() is not None, MIGRATE_SECONDS, "the edge database's migrate")
            if proc.returncode != 0:
                return  # the edge says so as it starts (the log is in this pipeline's folder); no template of it
            folder = Path(tempfile.mkdtemp(prefix="fog-chaos-template-"))
            atexit.register(shutil.rmtree, folder, True)
            try:
                _copy_database(database, folder / "edge.sqlite3")
                _TEMPLATE["path"] = folder / "edge.sqlite3"
            except sqlite3.Error as exc:  # this pipeline's database is fine; the next one migrates its own
                log.warning("chaos: could not keep a copy of the migrated edge database (%s)", exc)

    def _manage(self, *args, env=None, output=None):
        """Start `manage.py args` (its output to `output`, default a log file named after the command)."""
        with self._lock, uninterrupted():  # a stop waits until close() can find the process
            self._check_open()
            with open(self.folder / f"{args[0]}.log", "ab") as log:
                proc = start_child([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT,
                                   env={**self.env, **(env or {})}, stdout=output or log, stderr=log,
                                   start_new_session=True)
            self._procs.append(proc)
        return proc

    def start_cloud(self):
        """Start `runcloud` on this pipeline's ports. Another test or program may have bound one of them since
        they were reserved (nothing holds a port between its pick and its bind): at the first start the cloud
        then exits at once, and gets new ones before anything dials them. A restart (a scenario's recovery,
        timed from here) is not waited for."""
        first = self.edge is None
        for _ in range(CLOUD_PORT_TRIES if first else 1):
            self.cloud = self._manage("runcloud", "-v", "0",
                                      env={"FOG_HEARTBEAT_PORT": str(self.hb), "FOG_DATA_PORT": str(self.data)})
            if not first:
                return
            wait_for(lambda: self.cloud.poll() is not None or port_open("127.0.0.1", self.data), CLOUD_START_S)
            if self.cloud.poll() is None:
                return
            self.hb, self.data = reserve_port(), reserve_port()
            if self.proxied:
                self.proxy_hb.target_port, self.proxy_data.target_port = self.hb, self.data

    def start_edge(self):
        hb, data = (self.proxy_hb.listen_port, self.proxy_data.listen_port) if self.proxied else (self.hb, self.data)
        idle = () if self.idle_seconds is None else ("--idle", str(self.idle_seconds))
        self.edge = self._manage("runedge", *idle, "-v", "0",
                                 env={"FOG_HEARTBEAT_PORT": str(hb), "FOG_DATA_PORT": str(data)})

    def start_simulation(self):
        self.simulation = self._manage("runsimulation", "--households", str(self.households), "--until",
                                       str(self.until), "--step", str(STEP_S), "--speed", str(self.speed), "--no-progress",
                                       *self.simulation_args)

    def stop_simulation(self):
        """End the stream now rather than at `until`: SIGTERM ends `runsimulation` after a whole step, with
        every reading it sent in Kafka. `until` becomes the simulated seconds it streamed, so that
        expected_windows() counts what was sent. For a scenario that needs readings streaming until its
        fault is over, however long the machine takes to get there."""
        self.simulation.send_signal(signal.SIGTERM)
        self.wait_for(lambda: self.simulation.poll() is not None, SIMULATION_STOP_S, "the stopped simulation to end")
        summary = SUMMARY.search((self.folder / "runsimulation.log").read_text(errors="replace"))
        sent, failed = (int(summary[1]), int(summary[2])) if summary else (-1, -1)
        if self.simulation.returncode or failed or sent < 0 or sent % self.households:
            raise RuntimeError(f"the stopped simulation exited {self.simulation.returncode} with "
                               f"{summary[0] if summary else 'no summary line'} ({self.households} households)")
        self.until = sent // self.households * STEP_S
        return sent

    def kill_cloud(self):
        _kill(self.cloud)

    def kill_cloud_host(self):
        """`runcloud` and its Redis SIGKILLed together; Redis starts again from its append-only file."""
        _signal(self.cloud.pid)
        self.services.kill(self.services.redis)
        _kill(self.cloud)

    def loop_pid(self, loop):
        import redis

        from edge_app.control import EdgeControl

        client = redis.Redis.from_url(self.env["FOG_EDGE_REDIS_URL"])
        try:
            return next(iter(EdgeControl(self.edge_id, client).pids_here([loop])), None)
        finally:
            client.close()

    def kill_loop(self, loop):
        """SIGKILL the worker process that runs one of the edge's loops."""
        pid = self.wait_for(lambda: self.loop_pid(loop), 60, f"the {loop} loop to run")
        os.kill(pid, signal.SIGKILL)
        return pid

    def worker_pids(self):
        """The edge's RQ workers: the supervisor's children."""
        return child_pids(self.edge.pid) if self.edge is not None else []

    def kill_edge(self):
        """The whole edge host at once: the supervisor and every worker, SIGKILLed together."""
        pids = set(self.worker_pids()) | {pid for pid in map(self.loop_pid, LOOPS) if pid}
        _signal(self.edge.pid)
        for pid in pids:
            _signal(pid)
        _kill(self.edge)

    def kill_supervisor(self):
        """SIGKILL only `runedge` itself; returns its workers' pids (they are to follow it)."""
        workers = self.worker_pids()
        _kill(self.edge)
        return workers

    def loops_running(self):
        """True once every loop of the edge is held by a live process."""
        pids = [self.loop_pid(loop) for loop in LOOPS]
        return all(pid and alive(pid) for pid in pids)

    # --- the edge database ------------------------------------------------

    def counts(self):
        """{Status: count} of the edge's tuples."""
        path = self.folder / "edge.sqlite3"
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
                return dict(db.execute("select status, count(*) from edge_app_windowaggregate group by status"))
        except sqlite3.OperationalError:
            return {}

    def seed_backlog(self, count):
        """`count` PENDING tuples, as an edge whose cloud was away a long time would have."""
        path = self.folder / "edge.sqlite3"
        t0 = 1_577_142_000_000
        with sqlite3.connect(path) as db:
            db.executemany(
                "insert into edge_app_windowaggregate (household, window_start, window_end, day, average_w, readings, "
                "status, postal_code, refusal, attempts, created_at) values (?, ?, ?, '2019-12-24', ?, 3, "
                f"{int(Status.PENDING)}, '', '', 0, '2019-12-24 00:00:00')",
                ((f"backlog-{i % 1000}", t0 + (i // 1000) * 5000, t0 + (i // 1000) * 5000 + 5000, 100.0 + i % 89)
                 for i in range(count)))

    def expected_windows(self):
        """What the simulation must produce: its households x the 5 s windows its readings fall in."""
        start = int(datetime(2019, 12, 24, tzinfo=ZoneInfo("Europe/Berlin")).timestamp() * 1000)
        return self.households * len({(start + t * 1000) // 5000 for t in range(0, self.until, STEP_S)})

    # --- waiting ----------------------------------------------------------------

    def wait_for(self, predicate, timeout=10.0, what=None, *, interval=POLL_INTERVAL_S):
        """tooling.net.wait_for that raises PipelineClosed as soon as the pipeline is closed."""
        return wait_for(lambda: self._check_open() and predicate(), timeout, what, interval=interval)

    def sleep(self, seconds):
        """time.sleep that ends early, raising PipelineClosed, once the pipeline is closed."""
        self._closed.wait(seconds)
        self._check_open()

    def wait_quiet(self, expected, timeout=240):
        """Until every expected window is ACKED (or `timeout`); returns the seconds it took, or None."""
        def quiet():
            counts = self.counts()
            return (counts.get(Status.ACKED, 0) >= expected and not counts.get(Status.PENDING)
                    and not counts.get(Status.SENT))

        started = time.monotonic()
        return time.monotonic() - started if self.wait_for(quiet, timeout, interval=0.25) else None

    def _query(self, sql):
        return self.rows(sql)[0][0]

    def rows(self, sql):
        path = self.folder / "edge.sqlite3"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            return db.execute(sql).fetchall()

    def wait_recovered(self, threshold, timeout=240, expected=None):
        """Seconds from now until the pipeline works again and the backlog (PENDING + SENT) is back
        to what is normally in flight. Working again: a window stored after this moment has been
        acknowledged; or, if none has been stored since (the stream ended during the fault, or
        there is none), acknowledgements have resumed, or every `expected` window is acknowledged
        already (on a slow machine the edge may have taken the whole stream before the fault)."""
        started = time.monotonic()
        last_id = self._query("select coalesce(max(id), 0) from edge_app_windowaggregate")
        acked = self.counts().get(Status.ACKED, 0)

        def recovered():
            counts = self.counts()
            new, new_acked = self.rows(f"select count(*), coalesce(sum(status = {int(Status.ACKED)}), 0) "
                                       f"from edge_app_windowaggregate where id > {last_id}")[0]
            done = counts.get(Status.ACKED, 0)
            moving = new_acked > 0 if new else done > acked or (expected is not None and done >= expected)
            return moving and counts.get(Status.PENDING, 0) + counts.get(Status.SENT, 0) <= threshold

        return time.monotonic() - started if self.wait_for(recovered, timeout, interval=0.1) else None

    def watch_backlog(self, budget):
        """Give the edge a disk budget and sample its backlog's peak (and whether it paused) until close."""
        self.budget = budget
        self.env["FOG_EDGE_BUDGET_TUPLES"] = str(budget)
        self._watching = threading.Event()

        def sample():
            while not self._watching.wait(0.1):
                try:
                    backlog, paused = self.rows(
                        "select (select count(*) from edge_app_windowaggregate where status in (0, 1)), "
                        "(select coalesce(max(paused), 0) from edge_app_edgestatus)")[0]
                except sqlite3.OperationalError:
                    continue
                self.peak_backlog = max(self.peak_backlog, backlog)
                self.paused_seen = self.paused_seen or bool(paused)

        threading.Thread(target=sample, daemon=True).start()

    def reconcile(self):
        report = self.folder / "reconcile.json"
        with open(report, "wb") as output:  # a tracked process, so close() ends it too
            proc = self._manage("reconcile", "--json", "--strict", output=output)
        try:
            proc.wait(300)
        finally:
            _kill(proc)
        self._check_open()
        return json.loads(report.read_text())

    def forget(self):
        """Delete this run's cloud keys and topic: a benchmark on the shared services (bench e2e, latency)
        would otherwise leave them there, gigabytes at 100,000 households, slowing every later run."""
        from kafka.admin import KafkaAdminClient
        from kafka.errors import UnknownTopicOrPartitionError

        from tooling.bench.common import delete_prefix

        delete_prefix(self.env["FOG_CLOUD_REDIS_URL"], self.env["FOG_CLOUD_KEY_PREFIX"])
        admin = KafkaAdminClient(bootstrap_servers=self.env["FOG_KAFKA_BOOTSTRAP"], client_id="fog-harness")
        try:
            admin.delete_topics([self.env["FOG_TOPIC"]])
        except UnknownTopicOrPartitionError:
            pass  # a run that failed before its topic was made: nothing to delete, and its own error stands
        finally:
            admin.close()

    def close(self, keep_logs=False):
        """End every process of this pipeline; from any thread, any number of times. The folder (the
        processes' logs) goes unless `keep_logs`; a later call may still remove it."""
        with self._lock:
            first = not self._closed.is_set()
            self._closed.set()
        if first:
            if self._watching is not None:
                self._watching.set()
            for proc in reversed(self._procs):  # the newest first: the stream, then the edge, then the cloud
                _kill(proc)
            for loop in LOOPS:
                try:
                    pid = self.loop_pid(loop)
                except Exception:  # noqa: BLE001 -- the edge Redis is down: the proxies still go
                    log.warning("could not read who runs the %s loop of %s", loop, self.edge_id, exc_info=True)
                    continue
                if pid:
                    _signal(pid)
            for proxy in (self.proxy_hb, self.proxy_data):
                if proxy is not None:
                    proxy.stop()
        if not keep_logs:
            shutil.rmtree(self.folder, ignore_errors=True)


def _copy_database(source, target):
    """SQLite's backup, not a file copy: it reads through the source's write-ahead log, as a reader would. Read-only:
    a source gone raises, where a plain connect would make an empty one."""
    with contextlib.closing(sqlite3.connect(f"{Path(source).resolve().as_uri()}?mode=ro", uri=True)) as original, \
            contextlib.closing(sqlite3.connect(target)) as copy:
        original.backup(copy)


def _kill(proc):
    if proc is not None:
        # Its whole session. An edge supervisor's workers are each in a session of their own: they follow it by
        # their parent-death signal (edge_app/worker.py), as they do a supervisor SIGKILLed by a fault.
        end_child(proc)


def _signal(pid, signum=signal.SIGKILL):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass

