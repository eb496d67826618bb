"""The local Kafka broker and Redis server that `make services` runs.

Both live under var/ (jars, data, pid files, logs under var/log/), both are
idempotent (a service that already answers is left alone) and both are
waited for until they answer. A service whose address in the settings is
not on this machine is never started: the same code then runs against the
user's own cluster.

Kafka: Apache Kafka's own broker jars, resolved once from Maven Central by
services/kafka/pom.xml into var/kafka/libs, formatted once (KRaft, one
combined broker+controller node), run with a heap of at most 512 MiB.
Redis: the Debian package's redis-server with AOF and `appendfsync always`,
so a reply the cloud sends after a write never covers data a crash can
take back.
Redis Cluster (only when FOG_CLOUD_REDIS_URL is `redis+cluster://host:port/` on this machine): the same
redis-server, CLUSTER_MASTERS primaries without replicas on the URL's port and the next ones (their
cluster bus 10000 above), joined once with `redis-cli --cluster create`; the channel layer then gets the
plain Redis of FOG_CHANNEL_REDIS_URL.
PostgreSQL (only when FOG_DATABASE_URL names postgres on this machine):
Debian's PostgreSQL 15, its own cluster under var/postgres (initdb once,
C collation so a household prefix is an index range), listening on the
URL's loopback address and port (5433 in the README, so it cannot clash
with a system cluster), password-checked when the URL carries one.
"""

import base64
import fcntl
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cloud_app.engine import LOCAL_CLUSTER_MASTERS, is_cluster, node_url
from tooling.net import PICK_FLOOR, PICK_ROOM, ephemeral_floor, free_port, port_open, wait_for

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
KAFKA_READY_SECONDS = 90
REDIS_READY_SECONDS = 20
STOP_SECONDS = 30
KAFKA_HEAP = ["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC"]
# A JVM that lives briefly under light load (the storage tool; a fault lane's broker, for its lane's scenarios)
# spends much of its CPU compiling hot code twice, for code it leaves before the second compile pays: the first
# compiler alone takes less CPU to start a broker and serve a lane's light load.
SHORT_LIVED_JVM = ["-XX:TieredStopAtLevel=1"]
CLUSTER_MASTERS = LOCAL_CLUSTER_MASTERS  # the product's settings checks count on it
CLUSTER_BUS_OFFSET = 10000  # Redis's fixed offset of a node's cluster bus port
CLUSTER_READY_SECONDS = 60
POSTGRES_READY_SECONDS = 60
# ... a service whose log still grows gets this many times its *_READY_SECONDS before it is given up on (_wait)
STARTING_PATIENCE = 3
# A server that died or stuck while starting: its error quotes at most this many lines of what its log got since
# (those that name a problem, else the last), as a harness that owns the log's folder (a fault lane's, a test's)
# removes it on the way out.
LOG_TAIL_LINES = 15
# What a server's log says when its port was bound by another process between our look and its own bind.
PORT_TAKEN = "Address already in use"
PROBLEM_WORDS = (" ERROR ", " FATAL ", "Exception", "# Fatal", "aborting")  # Kafka's log4j levels, Redis's words
POSTGRES_VERSION = "15"
# Settings of the Redis this module starts beyond persistence, as CONFIG names them (`bench e2e` sets them for
# its measured runs too). rdbcompression: the AOF's base is written uncompressed, since LZF over every value made
# each rewrite (a forked child, on a core the pipeline shares) slower, and a smaller base brought the next
# rewrite sooner; `bench e2e --baseline rdb-compression` measures both against `yes`.
REDIS_TUNING = {"rdbcompression": "no"}
POSTGRES_SYSTEM_USER = "postgres"  # the server refuses to run as root; a root `make services` runs it as this user


class ServiceError(Exception):
    """A service could not be installed, started or stopped; the message says why."""


class PortTaken(ServiceError):
    """A server could not bind its port: another process took it after we found it free. On other ports it may."""


def _log_since(logfile, offset):
    """What `logfile` got after `offset` (its size before the start), "" if it cannot be read."""
    try:
        with open(logfile, "rb") as log:
            log.seek(offset or 0)
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def _quote(said):
    """A log's `said`, indented under the error that quotes it: its first LOG_TAIL_LINES lines that name a
    problem (the first is the cause, the rest mostly its consequences), else its last LOG_TAIL_LINES."""
    lines = said.splitlines()
    named = [line for line in lines if PORT_TAKEN in line or any(word in line for word in PROBLEM_WORDS)]
    return "".join(f"\n  | {line}" for line in (named[:LOG_TAIL_LINES] or lines[-LOG_TAIL_LINES:]))


@dataclass
class Paths:
    base: Path  # the project root (services/kafka/pom.xml lives there)
    var: Path
    libs: Path | None = None  # Kafka's jars, when shared with another var folder

    @property
    def run(self):
        return self.var / "run"

    @property
    def log(self):
        return self.var / "log"

    @property
    def kafka(self):
        return self.var / "kafka"

    @property
    def kafka_libs(self):
        return self.libs or self.kafka / "libs"


def split_hostport(address):
    """The first host and port of a Kafka bootstrap list."""
    host, _, port = address.split(",")[0].strip().rpartition(":")
    return host.strip("[]"), int(port)


def redis_hostport(url):
    """The host and port of a Redis URL (a cluster's: the node it names)."""
    parts = urlsplit(node_url(url))
    return parts.hostname or "127.0.0.1", parts.port or 6379


def kafka_api_versions_ok(host, port, timeout=2.0):
    """True when a Kafka broker answers an ApiVersions (v0) request."""
    client_id = b"fog-services"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(sock, 4)
            size = struct.unpack(">i", header)[0]
            payload = _recv_exact(sock, size)
    except (OSError, ConnectionError):
        return False
    correlation, error_code = struct.unpack(">ih", payload[:6])
    return correlation == 1 and error_code == 0


def redis_ping_ok(host, port, timeout=1.0):
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _recv_exact(sock, size):
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise ConnectionError("connection closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_pid(pidfile):
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _pid_runs(pid, marker):
    """The pid is alive and its command line contains `marker`, not followed by a letter or digit (pids get
    reused; the marker of port 6379 must not match a Redis on 63790, while a folder's may go on into its files)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return re.search(re.escape(marker.encode()) + rb"(?![0-9A-Za-z])", cmdline) is not None


def _wait(predicate, seconds, what, logfile, begun=None):
    """Until `predicate` holds: `seconds` at first, and longer while the server still writes to its log (a JVM
    or a cluster starting on a machine busy with other work gets there slowly), up to STARTING_PATIENCE times
    `seconds` in all. A server silent for `seconds` is stuck, or dead: ServiceError, quoting what its log got
    after `begun` (its size before the start; by default now); one whose log says its port was taken: PortTaken."""
    started = time.monotonic()
    begun = _size(logfile) if begun is None else begun
    size, grew = begun, started
    while not predicate():
        now = time.monotonic()
        if _size(logfile) != size:
            size, grew = _size(logfile), now
            said = _log_since(logfile, begun)
            if PORT_TAKEN in said:  # a daemon (Redis) that could not bind says so in its log, and exits
                raise _port_taken(what, logfile, said)
        if now - grew >= seconds or now - started >= seconds * STARTING_PATIENCE:
            why = (f"its log silent for the last {now - grew:.0f} s" if now - grew >= seconds else
                   f"the most it is given, {STARTING_PATIENCE} x {seconds} s, though its log still grew")
            raise ServiceError(f"{what} did not become ready within {now - started:.0f} s ({why}); see {logfile}"
                               f"{_quote(_log_since(logfile, begun))}")
        time.sleep(0.25)


def _port_taken(what, logfile, said, how=""):
    """The one error for a server whose log says its port was bound by another process, however the start read it."""
    return PortTaken(f"{what} could not bind its port{how}; see {logfile}{_quote(said)}")


def _size(path):
    try:
        return os.stat(path).st_size
    except OSError:
        return None


class Service:
    name = ""
    marker = ""  # a word in the process's command line, to recognise our pid
    stop_signal = signal.SIGTERM

    def __init__(self, paths, host, port):
        self.paths, self.host, self.port = paths, host, port

    @property
    def local(self):
        return self.host in LOOPBACK

    @property
    def pidfile(self):
        return self.paths.run / f"{self.name}.pid"

    @property
    def logfile(self):
        return self.paths.log / f"{self.name}.log"

    def ready(self):
        raise NotImplementedError

    def our_pid(self):
        pid = _read_pid(self.pidfile)
        return pid if pid and _pid_runs(pid, self.marker) else None

    def status(self):
        where = f"{self.host}:{self.port}"
        if not self.local:
            return f"{self.name}: external at {where} ({'answers' if self.ready() else 'NOT answering'})"
        pid = self.our_pid()
        answering = self.ready()
        if pid and answering:
            return f"{self.name}: running, pid {pid}, {where}"
        if pid:
            return f"{self.name}: pid {pid} alive but not answering on {where}; see {self.logfile}"
        if answering:
            return f"{self.name}: something not started by us answers on {where}"
        return f"{self.name}: stopped"

    def up(self, out):
        where = f"{self.host}:{self.port}"
        if not self.local:
            out(f"{self.name}: {where} is not on this machine; nothing started")
            return False
        try:
            self.paths.run.mkdir(parents=True, exist_ok=True)
            lock = open(self.paths.run / f"{self.name}.lock", "a")
        except OSError:  # another user's or a read-only var/: it can only tell what runs, as before
            return self._up(out, where)
        # Two `up`s at once (two terminals, the workers of a parallel test run) start one server: the
        # second waits here, then finds it running.
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                out(f"{self.name}: another 'services up' is starting it; waiting")
                fcntl.flock(lock, fcntl.LOCK_EX)
            return self._up(out, where)

    def _up(self, out, where):
        if self.ready():
            pid = self.our_pid()
            out(f"{self.name}: already running on {where}" + (f" (pid {pid})" if pid else " (not started by us)"))
            return False
        if port_open(self.host, self.port):
            raise PortTaken(f"{self.name}: port {where} is taken by something that is not {self.name}")
        self.paths.log.mkdir(parents=True, exist_ok=True)
        started, begun = time.monotonic(), _size(self.logfile) or 0  # 0: no log yet
        self.start(out)
        _wait(self.ready, self.ready_seconds, f"{self.name} on {where}", self.logfile, begun)
        out(f"{self.name}: started on {where}, pid {self.our_pid()}, in {time.monotonic() - started:.1f} s")
        return True

    def spawn(self, cmd, **popen):
        """Run the server in a session of its own, logging to its log file; wait until it answers."""
        begun = _size(self.logfile) or 0
        with open(self.logfile, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, **popen)
        try:
            self.pidfile.write_text(str(proc.pid))
        except BaseException:  # its folder went meanwhile (a harness taken down), or Ctrl-C: no pid file, no owner
            proc.kill()
            proc.wait()
            raise

        what = f"{self.name} on {self.host}:{self.port}"

        def ready_or_dead():
            if proc.poll() is not None:
                said = _log_since(self.logfile, begun)
                if PORT_TAKEN in said:  # as _wait says it when it reads the log first
                    raise _port_taken(what, self.logfile, said, f" (it exited with code {proc.returncode})")
                raise ServiceError(f"{what} exited with code {proc.returncode} while starting; see {self.logfile}"
                                   f"{_quote(said)}")
            return self.ready()

        _wait(ready_or_dead, self.ready_seconds, what, self.logfile, begun)

    def down(self, out):
        pid = self.our_pid()
        if not pid:
            self.pidfile.unlink(missing_ok=True)
            out(f"{self.name}: not running (no live pid file)")
            return False
        os.kill(pid, self.stop_signal)
        if not wait_for(lambda: not _pid_runs(pid, self.marker), STOP_SECONDS, interval=0.2):
            os.kill(pid, signal.SIGKILL)
            out(f"{self.name}: pid {pid} ignored SIGTERM for {STOP_SECONDS} s; killed")
        else:
            out(f"{self.name}: stopped pid {pid}")
        self.pidfile.unlink(missing_ok=True)
        return True


class Redis(Service):
    ready_seconds = REDIS_READY_SECONDS

    @property
    def marker(self):
        """Redis's process title, "redis-server HOST:PORT": this one's, not any Redis's (the system's, a test's own,
        a cluster node), whose pid a stale pid file may name after a crash."""
        return f"redis-server {self.bind}:{self.port}"

    @property
    def bind(self):
        return self.host if self.host != "localhost" else "127.0.0.1"

    def __init__(self, paths, host, port):
        super().__init__(paths, host, port)
        self.name = "redis" if port == 6379 else f"redis-{port}"
        self.data_dir = paths.var / self.name

    def ready(self):
        return redis_ping_ok(self.host, self.port)

    def config(self):
        return "\n".join(
            [
                f"bind {self.bind}",
                f"port {self.port}",
                "protected-mode yes",
                "daemonize yes",
                f"pidfile {self.pidfile}",
                f"logfile {self.logfile}",
                f"dir {self.data_dir}",
                "databases 32",
                # The cloud answers an edge only after its write: with every
                # write fsynced first, an ACK never covers data a crash loses.
                "appendonly yes",
                "appendfsync always",
                "appendfilename appendonly.aof",
                # No RDB snapshots besides: Redis loads the AOF when both exist, so each would fork and copy
                # the whole dataset for a second copy no one loads (the AOF's base is an RDB file anyway).
                'save ""',
                *(f"{name} {value}" for name, value in REDIS_TUNING.items()),
                "",
            ]
        )

    def start(self, out):
        binary = shutil.which("redis-server")
        if not binary:
            raise ServiceError("redis-server is missing: install it with `apt-get install redis-server` "
                               "(`make bootstrap` does so when run as root)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "redis.conf"
        conf.write_text(self.config())
        result = subprocess.run([binary, str(conf)], capture_output=True, text=True)
        if result.returncode != 0:
            raise ServiceError(f"redis-server failed to start: {result.stderr.strip() or result.stdout.strip()}")


class ClusterNode(Redis):
    """One primary of a local Redis Cluster: the plain Redis config with cluster mode on."""

    def __init__(self, paths, host, port, cluster):
        super().__init__(paths, host, port)
        self.name = f"{cluster}-node-{port}"
        self.data_dir = paths.var / cluster / str(port)

    def config(self):
        return super().config().replace("databases 32\n", "") + "\n".join(
            ["cluster-enabled yes", "cluster-config-file nodes.conf", "cluster-node-timeout 5000", ""])


class RedisCluster(Service):
    """CLUSTER_MASTERS ClusterNodes on consecutive ports from `port`, joined into one cluster once."""

    marker = "redis-server"
    ready_seconds = CLUSTER_READY_SECONDS

    def __init__(self, paths, host, port, masters=CLUSTER_MASTERS):
        super().__init__(paths, host, port)
        self.name = "redis-cluster" if port == 7000 else f"redis-cluster-{port}"
        self.nodes = [ClusterNode(paths, host, port + i, self.name) for i in range(masters)]

    def _info(self, node):
        """CLUSTER INFO of one node as a dict ({} when it does not answer)."""
        import redis as redis_lib

        try:
            with redis_lib.Redis(host=node.host, port=node.port, socket_timeout=2) as client:
                text = client.execute_command("CLUSTER", "INFO")
        except redis_lib.RedisError:
            return {}
        text = text.decode() if isinstance(text, bytes) else text
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    @property
    def logfile(self):
        return self.nodes[0].logfile

    def ready(self):
        return all(self._info(node).get("cluster_state") == "ok" for node in self.nodes)

    def our_pid(self):
        pids = [node.our_pid() for node in self.nodes]
        return pids[0] if all(pids) else None

    def start(self, out):
        for node in self.nodes:
            bus = node.port + CLUSTER_BUS_OFFSET
            if not node.ready() and port_open(node.host, bus):
                raise ServiceError(f"{self.name}: cluster bus port {node.host}:{bus} is taken")
            node.up(out)
        if int(self._info(self.nodes[0]).get("cluster_slots_assigned", 0)) == 0:  # formed once, kept in nodes.conf
            cli = shutil.which("redis-cli")
            if not cli:
                raise ServiceError("redis-cli is missing: install it with `apt-get install redis-tools`")
            result = subprocess.run([cli, "--cluster", "create", *(f"{n.host}:{n.port}" for n in self.nodes),
                                     "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True)
            if result.returncode != 0:
                raise ServiceError(f"{self.name}: redis-cli --cluster create failed: "
                                   f"{(result.stdout + result.stderr).strip()[-1500:]}")

    @property
    def url(self):
        return f"redis+cluster://{self.host}:{self.port}/"

    def _up(self, out, where):
        if not self.ready() and any(node.ready() for node in self.nodes):
            self.start(out)  # some nodes run: start the rest and join them, rather than refuse the taken port
            _wait(self.ready, self.ready_seconds, self.name, self.nodes[0].logfile)
            out(f"{self.name}: started on {self.host}:{self.port}..{self.nodes[-1].port}")
            return True
        return super()._up(out, where)

    def down(self, out):
        stopped = [node.down(out) for node in self.nodes]
        return any(stopped)


def private_cluster(folder, out, attempts=3):
    """A RedisCluster of its own on free ports (node and bus), its files in `folder`, up and answering: for the
    test session and `bench scale`, which own and end it. Another process may take a port between our look
    and the server's bind, so it tries other ports a few times."""
    # The buses too below the ephemeral range where it leaves room (tooling/net.py says why).
    ceiling = ephemeral_floor() - CLUSTER_BUS_OFFSET - CLUSTER_MASTERS
    ceiling = ceiling if ceiling - PICK_FLOOR >= PICK_ROOM else 65536 - CLUSTER_BUS_OFFSET - CLUSTER_MASTERS
    for attempt in range(1, attempts + 1):
        first = next(p for p in iter(free_port, None) if p < ceiling and not any(
            port_open("127.0.0.1", p + i) or port_open("127.0.0.1", p + i + CLUSTER_BUS_OFFSET)
            for i in range(CLUSTER_MASTERS)))
        cluster = RedisCluster(Paths(Path(folder), Path(folder) / str(first)), "127.0.0.1", first)
        try:
            cluster.up(out)
            return cluster
        except BaseException as exc:  # an interrupted start leaves nothing running either
            cluster.down(out)
            if not isinstance(exc, ServiceError) or attempt == attempts:
                raise


class Kafka(Service):
    name = "kafka"
    ready_seconds = KAFKA_READY_SECONDS
    short_lived = False  # a broker that lives for one fault lane (tooling/chaos) starts on SHORT_LIVED_JVM

    @property
    def controller_port(self):
        return self.port + 1

    def ready(self):
        return kafka_api_versions_ok(self.host, self.port)

    def config(self):
        host = "127.0.0.1" if self.host == "localhost" else self.host
        data = self.paths.kafka / "data"
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers={host}:{self.controller_port}",
                f"listeners=PLAINTEXT://{host}:{self.port},CONTROLLER://{host}:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://{host}:{self.port},CONTROLLER://{host}:{self.controller_port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={data}",
                "num.partitions=4",
                "offsets.topic.replication.factor=1",
                # 50 offset partitions cost seconds on the first consumer group.
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                # The cleaner's default 128 MiB buffer does not fit a small heap.
                "log.cleaner.dedupe.buffer.size=16777216",
                "num.network.threads=2",
                "num.io.threads=2",
                "auto.create.topics.enable=true",
                "",
            ]
        )

    def _java(self):
        java = shutil.which("java")
        if not java:
            raise ServiceError("java is missing: install a JDK 17+ (`apt-get install default-jre-headless`)")
        return java

    def fetch_jars(self, out):
        stamp = self.paths.kafka_libs / ".resolved"
        pom = self.paths.base / "services" / "kafka" / "pom.xml"
        if stamp.exists() and stamp.read_text() == pom.read_text():
            return
        mvn = shutil.which("mvn")
        if not mvn:
            raise ServiceError("mvn is missing: install Maven (`apt-get install maven`) to fetch the Kafka jars")
        out("kafka: resolving Apache Kafka's jars from Maven Central (once)")
        if self.paths.kafka_libs.exists():
            shutil.rmtree(self.paths.kafka_libs)
        self.paths.kafka_libs.mkdir(parents=True)
        cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", "-DincludeScope=runtime",
               f"-DoutputDirectory={self.paths.kafka_libs}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise ServiceError(f"Maven could not fetch the Kafka jars:\n{(result.stdout + result.stderr)[-1500:]}")
        stamp.write_text(pom.read_text())

    @property
    def marker(self):
        """Its main class and its config file: this broker's, not any Kafka's (a fault lane's, the user's own)."""
        return f"kafka.Kafka {self.paths.kafka / 'server.properties'}"

    def format_once(self, out):
        self.paths.kafka.mkdir(parents=True, exist_ok=True)
        config = self.paths.kafka / "server.properties"
        config.write_text(self.config())
        if (self.paths.kafka / "data" / "meta.properties").exists():
            return config
        cluster_id = "-"
        while cluster_id.startswith("-"):  # kafka-storage reads an id starting with "-" as an option; Kafka avoids those too
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        out(f"kafka: formatting the log folder (cluster {cluster_id})")
        cmd = [self._java(), *SHORT_LIVED_JVM, "-cp", f"{self.paths.kafka_libs}/*", "kafka.tools.StorageTool", "format",
               "--standalone", "-t", cluster_id, "-c", str(config)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise ServiceError(f"formatting Kafka's storage failed:\n{(result.stdout + result.stderr)[-1500:]}")
        return config

    def start(self, out):
        self.fetch_jars(out)
        config = self.format_once(out)
        if port_open(self.host, self.controller_port):
            raise PortTaken(f"kafka: controller port {self.host}:{self.controller_port} is taken")
        self.spawn([self._java(), *KAFKA_HEAP, *(SHORT_LIVED_JVM if self.short_lived else ()),
                    f"-Dkafka.logs.dir={self.paths.log}", "-cp",
                    f"{self.paths.kafka_libs}/*", "kafka.Kafka", str(config)], cwd=self.paths.kafka)


def _postgres_binary(name):
    """Debian keeps the server's programs off PATH, under /usr/lib/postgresql/<version>/bin."""
    packaged = Path(f"/usr/lib/postgresql/{POSTGRES_VERSION}/bin/{name}")
    found = str(packaged) if packaged.exists() else shutil.which(name)
    if not found:
        raise ServiceError(f"PostgreSQL's {name} is missing: install it with `apt-get install postgresql` "
                           "(`make bootstrap` does so when run as root)")
    return found


class Postgres(Service):
    ready_seconds = POSTGRES_READY_SECONDS
    stop_signal = signal.SIGINT  # "fast" shutdown; SIGTERM ("smart") waits for every client to leave

    def __init__(self, paths, host, port, user, password, dbname):
        super().__init__(paths, "127.0.0.1" if host == "localhost" else host, port)
        self.user, self.password, self.dbname = user or "fog", password or "", dbname or "fog"
        self.name = "postgres" if port == 5433 else f"postgres-{port}"
        self.data_dir = paths.var / self.name
        self.marker = str(self.data_dir)

    def _connect(self, dbname):
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password or None,
                               dbname=dbname, connect_timeout=2, autocommit=True)

    def ready(self):
        try:
            with self._connect("postgres") as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)
        except Exception:  # psycopg.Error, or anything else answering on the port
            return False

    def _as_server_user(self):
        """Popen arguments that run the server as its own user when we are root."""
        if os.geteuid() != 0:
            return {}
        return {"user": POSTGRES_SYSTEM_USER, "group": pwd.getpwnam(POSTGRES_SYSTEM_USER).pw_gid, "extra_groups": []}

    def _hand_over(self, path):
        if os.geteuid() == 0:
            entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    @property
    def cluster(self):
        return self.data_dir / "cluster"

    def init_once(self, out):
        if (self.cluster / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._hand_over(self.data_dir)
        if os.geteuid() == 0 and subprocess.run(["test", "-w", str(self.data_dir)], **self._as_server_user()).returncode:
            raise ServiceError(f"postgres: user {POSTGRES_SYSTEM_USER!r} cannot write {self.data_dir}; "
                               "the folders above it (FOG_VAR_DIR) must be searchable by that user")
        out(f"postgres: creating a cluster in {self.cluster} (once)")
        auth = "scram-sha-256" if self.password else "trust"
        cmd = [_postgres_binary("initdb"), "-D", str(self.cluster), "-U", self.user, "-E", "UTF8", "--locale=C",
               f"--auth-host={auth}", f"--auth-local={auth}"]
        pwfile = self.data_dir / "initial-password"
        if self.password:
            pwfile.write_text(self.password + "\n")
            pwfile.chmod(0o600)
            self._hand_over(pwfile)
            cmd.append(f"--pwfile={pwfile}")
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, **self._as_server_user())
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            shutil.rmtree(self.cluster, ignore_errors=True)  # initdb needs an empty folder next time
            raise ServiceError(f"initdb failed:\n{(result.stdout + result.stderr)[-1500:]}")

    def start(self, out):
        self.init_once(out)
        self.spawn([_postgres_binary("postgres"), "-D", str(self.cluster), "-p", str(self.port),
                    "-c", f"listen_addresses={self.host}", "-c", f"unix_socket_directories={self.cluster}",
                    "-c", "max_wal_size=2GB"], **self._as_server_user())

    def _up(self, out, where):
        started = super()._up(out, where)
        self.ensure_database()  # under the service's lock: two `up`s never both create it
        return started

    def ensure_database(self):
        from psycopg import sql

        with self._connect("postgres") as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.dbname]).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))


def postgres_for(database, paths):
    """The local PostgreSQL service for Django's DATABASES entry, or None when it is not postgres over TCP."""
    if "postgresql" not in database.get("ENGINE", "") or not database.get("HOST"):
        return None
    return Postgres(paths, database["HOST"], int(database.get("PORT") or 5432), database.get("USER"),
                    database.get("PASSWORD"), database.get("NAME"))


def services(settings, base_dir, var_dir):
    paths = Paths(Path(base_dir), Path(var_dir))
    kafka_host, kafka_port = split_hostport(settings.FOG_KAFKA_BOOTSTRAP)
    result = [Kafka(paths, kafka_host, kafka_port)]
    seen = set()
    for url in (settings.FOG_EDGE_REDIS_URL, settings.FOG_CLOUD_REDIS_URL, settings.FOG_CHANNEL_REDIS_URL):
        host, port = redis_hostport(url)
        if (host, port) not in seen:
            seen.add((host, port))
            result.append((RedisCluster if is_cluster(url) else Redis)(paths, host, port))
    postgres = postgres_for(settings.DATABASES["default"], paths)
    if postgres is not None:
        result.append(postgres)
    return result
