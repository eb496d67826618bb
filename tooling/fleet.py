"""Several edges and several cloud replicas as real processes on this host: what `bench scale` measures
and what the many-edges and replica tests run.

Every edge has its own id, secret, SQLite database, Kafka topic, and RQ queue and loop locks in the
edge Redis; every cloud replica is a `runcloud` of its own ports, and all replicas share one
cloud store (a Redis URL and key prefix). The edges dial every replica (FOG_CLOUD_HOST lists them).
`close()` ends every process the fleet started, workers included, and removes what it created.
"""

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis as redis_lib

from cloud_app.engine import connect
from cloud_app.keys import Keys
from cloud_app.store import Record
from tooling.bench.common import delete_prefix
from tooling.net import free_port, port_open, wait_for
from tooling.signals import start_child

ROOT = Path(__file__).resolve().parent.parent
T0_MS = 1_577_142_000_000  # 2019-12-23 23:00 UTC: the readings' first event time
WINDOW_MS = 5000
MAX_EDGES = 10
LOOPS = ("ingest", "sender", "heartbeat")
STOP_SECONDS = 15


class Edge:
    def __init__(self, fleet, number):
        self.number = number
        self.edge_id = f"fleet-{fleet.run}-{number}"
        self.secret = uuid.uuid4().hex
        self.topic = f"fleet-{fleet.run}-{number}"
        self.db = fleet.folder / f"{self.edge_id}.sqlite3"
        self.redis_url = fleet.edge_redis_url  # each edge has its own queue and keys in it
        self.env = {**fleet.base_env, "FOG_EDGE_ID": self.edge_id, "FOG_EDGE_SECRET": self.secret,
                    "FOG_DATABASE_URL": f"sqlite:///{self.db}", "FOG_TOPIC": self.topic,
                    "FOG_EDGE_REDIS_URL": self.redis_url}
        self.proc = None
        self.windows = 0  # windows its readings fall in

    def households(self, count):
        return [f"{self.edge_id}-h{h}" for h in range(count)]

    def counts(self):
        """{status: count} of the edge's tuples (0 pending, 1 sent, 2 acked)."""
        try:
            with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30) as db:
                return dict(db.execute("select status, count(*) from edge_app_windowaggregate group by status"))
        except sqlite3.OperationalError:
            return {}

    def seed_backlog(self, count):
        """`count` PENDING tuples, as an edge that could not reach the cloud for a while has."""
        with sqlite3.connect(self.db, timeout=30) as db:
            db.executemany(
                "insert into edge_app_windowaggregate (household, window_start, window_end, day, average_w, readings, "
                "status, postal_code, refusal, attempts, created_at) values (?, ?, ?, '2019-12-24', ?, 5, 0, '', '', 0, "
                "'2019-12-24 00:00:00')",
                ((f"{self.edge_id}-h{i % 1000}", T0_MS + (i // 1000) * WINDOW_MS, T0_MS + (i // 1000 + 1) * WINDOW_MS,
                  100.0 + i % 89) for i in range(count)))
        self.windows += count

    def delivery_span(self):
        """(first sent, last acknowledged) of the edge's tuples, as datetimes, or None before any ACK."""
        from datetime import datetime

        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30) as db:
            first, last = db.execute("select min(sent_at), max(acked_at) from edge_app_windowaggregate").fetchone()
        return (datetime.fromisoformat(first), datetime.fromisoformat(last)) if first and last else None

    def loop_pids(self, loops=LOOPS):
        """Pids of the worker processes on this host that hold this edge's loops now (EdgeControl.pids_here)."""
        from edge_app.control import EdgeControl

        client = redis_lib.Redis.from_url(self.redis_url)
        try:
            return EdgeControl(self.edge_id, connection=client).pids_here(loops)
        finally:
            client.close()

    def running(self, loop):
        return bool(self.loop_pids([loop]))


class Fleet:
    def __init__(self, *, bootstrap, cloud_redis_url, edge_redis_url, edges=3, partitions=3, prefix=None):
        if not 1 <= edges <= MAX_EDGES:
            raise ValueError(f"a fleet has 1..{MAX_EDGES} edges, not {edges}")
        self.run = uuid.uuid4().hex[:8]
        self.folder = Path(tempfile.mkdtemp(prefix="fog-fleet-"))
        self.bootstrap, self.cloud_redis_url = bootstrap, cloud_redis_url
        self.edge_redis_url = edge_redis_url
        self.prefix = prefix or f"fleet:{self.run}:"
        self.base_env = {"FOG_KAFKA_BOOTSTRAP": bootstrap, "FOG_CLOUD_REDIS_URL": cloud_redis_url,
                         "FOG_CLOUD_KEY_PREFIX": self.prefix, "FOG_VAR_DIR": str(self.folder),
                         "FOG_WINDOW_STAGGER": "off"}  # produce() counts aligned windows, whatever the shell sets
        self.edges = [Edge(self, n) for n in range(edges)]
        secrets = ",".join(f"{e.edge_id}:{e.secret}" for e in self.edges)
        self.base_env["FOG_EDGE_SECRETS"] = secrets
        for edge in self.edges:
            edge.env["FOG_EDGE_SECRETS"] = secrets
        self.replicas = []  # [process (None until started), heartbeat port, data port]
        try:
            self._create_topics(partitions)
            for edge in self.edges:
                self._flush_edge_redis(edge)
                self._run("migrate", "--skip-checks", "-v", "0", env=edge.env)  # its edge runs them as it starts
        except BaseException:  # nobody gets a fleet to close: its topics, keys and folder go now
            with contextlib.suppress(Exception):  # the error that stopped the setup is the one to see
                self.close()
            raise

    # --- setup ---------------------------------------------------------------

    def _create_topics(self, partitions):
        from kafka.admin import KafkaAdminClient, NewTopic

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="fog-fleet")
        try:
            admin.create_topics([NewTopic(e.topic, num_partitions=partitions, replication_factor=1) for e in self.edges])
        finally:
            admin.close()

    @staticmethod
    def _flush_edge_redis(edge):
        """Jobs an interrupted fleet run left in this edge's queue, and this edge's loop flags."""
        from edge_app.control import EdgeControl, queue_name

        client = redis_lib.Redis.from_url(edge.redis_url)
        try:
            prefix = EdgeControl(edge.edge_id, connection=client).prefix
            client.delete(f"rq:queue:{queue_name(edge.edge_id)}", *client.scan_iter(match=f"{prefix}*", count=1000))
        finally:
            client.close()

    def _run(self, *args, env):
        result = subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env={**os.environ, **env},
                                capture_output=True, text=True, timeout=300)
        if result.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed: {result.stderr[-2000:]}")
        return result.stdout

    def _start(self, name, *args, env):
        # start_child: known to the harness's exit before a stop can interrupt (a replica runs until told).
        log = open(self.folder / f"{name}.log", "ab")
        return start_child([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env={**os.environ, **env},
                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def produce(self, households, seconds):
        """One reading a second per household for `seconds` into every edge's topic; returns the readings sent."""
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=20, batch_size=512 * 1024)
        sent = 0
        for edge in self.edges:
            for household in edge.households(households):
                key = household.encode()
                for s in range(seconds):
                    value = {"household": household, "ts": T0_MS + s * 1000, "power_w": 100.0 + (s % 50)}
                    producer.send(edge.topic, key=key, value=json.dumps(value).encode())
                    sent += 1
            edge.windows = households * len({(T0_MS + s * 1000) // WINDOW_MS for s in range(seconds)})
        producer.flush(timeout=120)
        producer.close()
        return sent

    # --- processes ---------------------------------------------------------------

    def plan_replicas(self, count):
        """Ports for `count` more replicas, started later by start_replicas (edges may dial them before)."""
        self.replicas += [[None, free_port(), free_port()] for _ in range(count)]

    def start_replicas(self, count=0, workers=8):
        """Start `count` more replicas, and any planned ones; returns when all listen."""
        self.plan_replicas(count)
        for number, replica in enumerate(self.replicas):
            if replica[0] is None:
                replica[0] = self._start(f"cloud-{number}", "runcloud", "-v", "1", "--heartbeat-port", str(replica[1]),
                                         "--data-port", str(replica[2]), "--workers", str(workers), env=self.base_env)
        self.wait(lambda: all(port_open("127.0.0.1", hb) and port_open("127.0.0.1", data)
                              for _, hb, data in self.replicas), 60,
                  "the cloud replicas to listen")

    def cloud_hosts(self):
        return ",".join(f"127.0.0.1:{hb}:{data}" for _, hb, data in self.replicas)

    def start_edges(self, *args):
        hosts = self.cloud_hosts()
        for edge in self.edges:
            edge.proc = self._start(edge.edge_id, "runedge", "--burst", "-v", "0", *args,
                                    env={**edge.env, "FOG_CLOUD_HOST": hosts})

    def kill_replica(self, number):
        """SIGKILL one replica: no goodbye, requests in its hands are lost with it."""
        proc = self.replicas[number][0]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_replica(self, number):
        """SIGTERM one replica; returns its own counters from its last line (batches, tuples, dedup_hits)."""
        proc = self.replicas[number][0]
        _stop(proc)
        lines = (self.folder / f"cloud-{number}.log").read_text().splitlines()
        last = next((line for line in reversed(lines) if line.startswith("cloud stopped: ")), "")
        return {k: int(v) for k, v in (pair.split("=") for pair in last[len("cloud stopped: "):].split(", ") if "=" in pair)}

    def wait_edges(self, timeout):
        """Until every edge's burst run exits; returns {edge id: exit code} (None: still running)."""
        deadline = time.monotonic() + timeout
        for edge in self.edges:
            try:
                edge.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        return {edge.edge_id: edge.proc.poll() for edge in self.edges}

    # --- what arrived ------------------------------------------------------------

    def stored(self, edge=None):
        client = connect(self.cloud_redis_url)
        try:
            edges = [edge] if edge else self.edges
            return sum(client.hlen(Keys(self.prefix).tuples(e.edge_id)) for e in edges)
        finally:
            client.close()

    def cloud_windows(self, edge):
        """{(household, window start): copies} of one edge's tuples in the cloud store."""
        client = connect(self.cloud_redis_url)
        copies = {}
        try:
            for _, raw in client.hscan_iter(Keys(self.prefix).tuples(edge.edge_id), count=10_000):
                record = Record.decode(raw)
                window = (record.household, record.ws)
                copies[window] = copies.get(window, 0) + 1
        finally:
            client.close()
        return copies

    def reconcile(self, edge):
        result = subprocess.run([sys.executable, str(ROOT / "manage.py"), "reconcile", "--json", "--strict"],
                                cwd=ROOT, env={**os.environ, **edge.env}, capture_output=True, text=True, timeout=300)
        return json.loads(result.stdout)

    def log(self, name):
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    @staticmethod
    def wait(predicate, timeout, what):
        wait_for(predicate, timeout, what)

    # --- the end -------------------------------------------------------------------

    def close(self):
        """End every process, then remove the topics, keys and folder. A step that fails (a service that is
        down) does not keep the later ones from running; the first failure is raised at the end."""
        errors = []

        def attempt(step, *args):
            try:
                step(*args)
            except Exception as exc:  # noqa: BLE001 -- raised once everything else was tried
                errors.append(exc)

        for edge in self.edges:
            if edge.proc is not None:
                _stop(edge.proc)
            attempt(_kill_all, edge.loop_pids)
        for proc, _, _ in self.replicas:
            if proc is not None:
                _stop(proc)
        attempt(self._delete_topics)
        for edge in self.edges:
            attempt(self._flush_edge_redis, edge)
        attempt(delete_prefix, self.cloud_redis_url, self.prefix)
        shutil.rmtree(self.folder, ignore_errors=True)
        if errors:
            raise errors[0]

    def _delete_topics(self):
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="fog-fleet")
        try:
            admin.delete_topics([e.topic for e in self.edges])
        except Exception:  # a topic that was never made; nothing to clean
            pass
        finally:
            admin.close()


def _kill_all(pids):
    for pid in pids():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _stop(proc):
    """SIGTERM the process group, SIGKILL it after STOP_SECONDS."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass
