"""Shared fixtures: the real local services, and per-test isolation on them.

The session starts (or finds) the project's own Kafka and Redis through the
same code as `make services`; a service that can't be had is an error, never
a skip. Each test gets its own Kafka topic and a freshly emptied Redis
database reserved for tests, so tests never see each other's data.

Cloud store tests marked `engines` run twice: on the single Redis and on a local 3-master Redis
Cluster the session starts on its own free ports (tooling.localservices.RedisCluster, the code of
`make services`) when the first such test needs it, and ends at its end.

Process hygiene: the session puts a marker (FOG_TEST_SESSION) into its
environment, which every process it starts inherits; other engineers' test
sessions on the same machine carry other markers. SIGTERM is turned into
Ctrl-C so every test's `finally` and every fixture's teardown run; the last
test (test_it_leaves_no_process_behind) asserts that nothing with the marker
is still alive, and the session's end names and kills any survivor and fails
the session. A parallel run (`make test`) keeps the same rules per worker:
tests/parallel.py.
"""

import atexit
import copy
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
import redis as redis_lib
from django.conf import settings

from edge_app import compiled
from edge_app.processes import alive, child_pids, with_environment  # noqa: F401  (for the tests)
from fogwire.stopsignals import stop_signals
from tests import edge_database, parallel
from tooling.net import free_port, wait_for  # noqa: F401  (tests import them from here too)

ROOT = Path(__file__).resolve().parent.parent
TEST_REDIS_DB = int(os.environ.get("FOG_TEST_REDIS_DB", "15"))
SESSION_ENV = "FOG_TEST_SESSION"
REQUEST_TIMEOUT_MS = 30000  # CloudThread.request: how long a test waits for the cloud's reply to a frame
_SESSION = {}  # the running session, whose exit status the process check may set
LAST_TEST_FILE = "test_it_leaves_no_process_behind.py"
# The longest files go first, so that in a parallel run (`make test`) the other workers fill the time beside them
# rather than one worker running them alone at the end: the fault matrix, the benchmarks, the kills of processes.
FIRST_TEST_FILES = ("test_it_survives_faults.py", "test_it_runs_the_benchmarks.py",
                    "test_it_recovers_from_an_ingest_kill.py", "test_it_ends_workers_with_their_supervisor.py")

os.environ.setdefault(SESSION_ENV, uuid.uuid4().hex)  # inherited by every process the suite starts


def session_processes():
    """{pid: command line} of the live processes (other than this one) that this test session started. A
    parallel run's controller starts none itself: it looks for its workers' (tests/parallel.py)."""
    marker = os.environ[SESSION_ENV]
    if parallel.RUN["controller"]:
        return with_environment(SESSION_ENV, f"{marker}-", prefix=True)
    return with_environment(SESSION_ENV, marker)


def _kill_survivors():
    survivors = session_processes()
    for pid in survivors:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return survivors


def _sigterm_as_ctrl_c(signum, frame):
    # Once: a SIGTERM to a whole process group (`timeout make test`) reaches a session twice, directly and passed
    # on by scripts/alongside.sh, and a second KeyboardInterrupt would cut short the teardown the first began.
    for other in stop_signals():
        if other != signal.SIGINT:
            signal.signal(other, parallel.once_is_enough)
    raise KeyboardInterrupt  # so `finally` blocks and fixture teardowns end what the tests started


def pytest_addoption(parser):
    edge_database.add_option(parser)


# Django's advice for test suites: a password set in a test is hashed with MD5, not with PBKDF2's deliberately
# slow rounds, which every admin_client would pay for again. Only in this process: the servers the tests start
# keep the real hashers, and no test logs in to them.
TEST_PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def pytest_configure(config):
    kind, said = compiled.state()
    if kind == compiled.STALE:  # every test of the windows would run the old book, and pass or fail for it
        raise pytest.UsageError(said)
    settings.PASSWORD_HASHERS = TEST_PASSWORD_HASHERS
    parallel.configure(config, SESSION_ENV, session_processes, _kill_survivors, wait_for)
    # SIGHUP too (a terminal closed under the run), unless the run was started ignoring it (nohup): its default
    # action skips every teardown, and what the tests started in sessions of their own would run on.
    for signum in stop_signals():
        if signum != signal.SIGINT:  # Ctrl-C is one already
            signal.signal(signum, _sigterm_as_ctrl_c)
    atexit.register(_kill_survivors)


def pytest_collection_modifyitems(session, config, items):
    """The process check runs last, after every other test and module-scoped fixture has ended, and the
    longest files first; the PostgreSQL pass keeps what it needs (tests/edge_database.py)."""
    deselected = edge_database.deselected(config, items)
    if deselected:
        dropped = set(deselected)
        items[:] = [item for item in items if item not in dropped]
        config.hook.pytest_deselected(items=deselected)
    items.sort(key=lambda item: (item.nodeid.split("::")[0].endswith(LAST_TEST_FILE),
                                 not item.nodeid.split("::")[0].endswith(FIRST_TEST_FILES)))


def pytest_sessionstart(session):
    _SESSION["session"] = session


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Names and kills what the session left running (in a parallel run: what the workers reported, and
    anything of theirs still alive), and fails the session for it."""
    if parallel.worker_id(config):
        return  # the worker has reported its own to the controller (tests/parallel.py)
    survivors = {**parallel.reported_survivors(config), **{str(pid): cmd for pid, cmd in _kill_survivors().items()}}
    if survivors:
        terminalreporter.write_sep("=", f"{len(survivors)} process(es) this session started outlived it (now killed)",
                                   red=True)
        for pid, cmdline in sorted(survivors.items(), key=lambda survivor: int(survivor[0])):
            terminalreporter.write_line(f"  pid {pid}: {cmdline}")
        if not _SESSION["session"].exitstatus:
            _SESSION["session"].exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def services():
    from tooling.localservices import services as all_services

    marker = os.environ.pop(SESSION_ENV)  # the shared services outlive the session by design (`make services`)
    try:
        for service in all_services(settings, settings.BASE_DIR, settings.VAR_DIR):
            service.up(lambda line: None)
    finally:
        os.environ[SESSION_ENV] = marker
    for service in all_services(settings, settings.BASE_DIR, settings.VAR_DIR):
        if not service.ready():
            pytest.fail(f"{service.name} is not answering at {service.host}:{service.port}", pytrace=False)
    return settings


@pytest.fixture(scope="session")
def django_db_setup(services, django_db_setup):  # noqa: F811  (pytest-django's, after the services)
    """A PostgreSQL that FOG_DATABASE_URL names on this host is started before the test database is made."""
    yield


@pytest.fixture(scope="session")
def session_postgres(request):
    """With --edge-database postgres, the PostgreSQL 15 this session starts and stops; else None."""
    if edge_database.engine(request.config) != "postgres":
        yield None
        return
    server = edge_database.SessionPostgres(settings.BASE_DIR)
    try:  # start() inside: a Ctrl-C (or SIGTERM) just after it returned left the server running, stopped by nothing
        yield server.start()
    finally:
        server.stop()  # again after a start() that stopped it itself: nothing left to stop then


@pytest.fixture(scope="session")
def django_db_modify_db_settings(session_postgres, django_db_modify_db_settings_parallel_suffix):
    """pytest-django's hook before the test database is made: on the session's PostgreSQL when there is one."""
    if session_postgres:
        edge_database.point_default_database_at(session_postgres.url())


@pytest.fixture(scope="session")
def kafka_bootstrap(services):
    return settings.FOG_KAFKA_BOOTSTRAP


# Some tests stamp their records with the sample's times (T0, December 2019), and the broker deletes a segment by
# its records' timestamps at its retention check, every five minutes: at default retention a check between a
# test's produce and its read deleted every record, and the edge rightly began at the log's new start, past them
# all. Test topics keep their records; a test of retention sets its own
# (test_it_warns_before_kafka_retention_deletes_unread_readings).
KEEP_RECORDS = {"retention.ms": "-1"}


@pytest.fixture
def topic(kafka_bootstrap):
    """A fresh topic with 3 partitions that keeps records of any age (KEEP_RECORDS), deleted afterwards with any
    topic a test named after it (`{name}-...`)."""
    from kafka.admin import KafkaAdminClient, NewTopic

    name = f"test-{uuid.uuid4().hex[:12]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="fog-tests")
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1, topic_configs=KEEP_RECORDS)])
    yield name
    try:
        admin.delete_topics([t for t in admin.list_topics() if t == name or t.startswith(f"{name}-")])
    finally:
        admin.close()


def make_topic(bootstrap, name, partitions, **configs):
    """A topic of `partitions` partitions that keeps records of any age (KEEP_RECORDS) unless the topic configs
    given say otherwise (`max.message.bytes` as max_message_bytes); name it `{topic}-...` so the topic fixture
    deletes it."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="fog-tests")
    configs = {**KEEP_RECORDS, **{key.replace("_", "."): str(value) for key, value in configs.items()}}
    try:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1, topic_configs=configs)])
    finally:
        admin.close()


@pytest.fixture(params=["confluent", "kafka-python"])
def kafka_client(request, settings):
    """Run the test once per ingest Kafka client: in this process (the setting) and in child edges
    (edge_env carries FOG_EDGE_KAFKA_CLIENT when a test asks for both fixtures)."""
    settings.FOG_EDGE_KAFKA_CLIENT = request.param
    return request.param


ENGINES = ("redis", "cluster")


def pytest_generate_tests(metafunc):
    """A test marked `engines` that uses the cloud store runs once per engine."""
    if metafunc.definition.get_closest_marker("engines") and "engine" in metafunc.fixturenames:
        metafunc.parametrize("engine", ENGINES, indirect=True)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A local Redis Cluster of this session (own folder, own ports), started through tooling's code; ended
    at the session's end. Like the shared services it runs without the session marker: the session, not
    the last test, ends it."""
    from tooling.localservices import private_cluster

    marker = os.environ.pop(SESSION_ENV)
    try:
        cluster = private_cluster(tmp_path_factory.mktemp("redis-cluster"), lambda line: None)
    finally:
        os.environ[SESSION_ENV] = marker
    atexit.register(cluster.down, lambda line: None)  # also after an interrupted session
    yield cluster.url
    cluster.down(lambda line: None)


@pytest.fixture
def engine(request):
    """'redis' (the default) or 'cluster': which engine this test's cloud store runs on."""
    return getattr(request, "param", "redis")


@pytest.fixture
def redis_url(services, engine, request):
    """URL of the test's cloud store: a Redis database reserved for tests, or the session's cluster. Tests
    keep to their own key prefix (cloud_prefix), so two test sessions on one machine never see each other's data."""
    if engine == "cluster":
        return request.getfixturevalue("redis_cluster")
    base = settings.FOG_CLOUD_REDIS_URL.rsplit("/", 1)[0]
    return f"{base}/{TEST_REDIS_DB}"


@pytest.fixture
def channel_redis_url(services):
    """A plain Redis database for the channel layer of tests (a cluster can't carry one)."""
    base = settings.FOG_CLOUD_REDIS_URL.rsplit("/", 1)[0]
    return f"{base}/{TEST_REDIS_DB}"


@pytest.fixture
def redis_client(redis_url):
    from cloud_app.engine import connect

    client = connect(redis_url)
    yield client
    client.close()


def cloud_stats(redis_client, prefix):
    """The cloud's counters (batches, tuples, dedup_hits, refused:{reason}) summed over its shards."""
    from cloud_app.reader import CloudReader

    return CloudReader(redis_client, prefix, price_eur_per_kwh=1.0).stats()


def counted(stats, name, expected, timeout=5.0):
    """True once the counter `name` of `stats()` is `expected`: a cloud saves a refusal count with its reply only
    after a quiet spell, else within a second (cloud_app.server.COUNTS_SAVE_SECONDS)."""
    return wait_for(lambda: stats().get(name) == expected, timeout)


@pytest.fixture
def cloud_reader(redis_client, cloud_prefix):
    """The product's reader of the test's cloud store (sums and merges over the shards)."""
    from cloud_app.reader import CloudReader

    return CloudReader(redis_client, cloud_prefix, price_eur_per_kwh=1.0)


def run_manage(*args, env=None, timeout=120):
    """Run `manage.py` as a user would, in a child process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


from tests.corpus import EDGE_ID, EDGE_SECRET, GEM_HEADER  # noqa: E402  (shared with the corpus)


class CloudThread:
    """A real CloudServer on real pynng sockets and a real Redis, in a thread of its own."""

    def __init__(self, redis_url, prefix, secrets, legacy_edge=None, publish=False, ports=None,
                 households_per_edge=None, tls=None, max_connections=None):
        import threading

        from fogwire.limits import DEFAULT_HOUSEHOLDS_PER_EDGE

        self.redis_url, self.prefix, self.secrets = redis_url, prefix, secrets
        self.households_per_edge = households_per_edge or DEFAULT_HOUSEHOLDS_PER_EDGE
        self.legacy_edge, self.publish, self.tls, self.max_connections = legacy_edge, publish, tls, max_connections
        hb, data = ports or (free_port(), free_port())
        scheme = "tls+tcp" if tls else "tcp"
        self.hb_addr, self.data_addr = f"{scheme}://127.0.0.1:{hb}", f"{scheme}://127.0.0.1:{data}"
        self.ready, self.server, self.error = threading.Event(), None, None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import asyncio

        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced to the test by start()
            self.error = exc
            self.ready.set()

    async def _main(self):
        import asyncio

        from cloud_app.run import store_client
        from cloud_app.server import CloudServer
        from cloud_app.store import CloudStore

        client = store_client(self.redis_url)  # as runcloud's: its timeouts too
        layer = None
        if self.publish:
            from channels.layers import get_channel_layer
            layer = get_channel_layer()
        store = CloudStore(client, self.prefix, self.households_per_edge)
        self.server = CloudServer(store, self.secrets, legacy_edge=self.legacy_edge, channel_layer=layer,
                                  max_connections=self.max_connections or settings.FOG_CLOUD_MAX_CONNECTIONS)
        self.loop, self.stop_event = asyncio.get_running_loop(), asyncio.Event()
        serving = asyncio.create_task(self.server.serve(self.hb_addr, self.data_addr, self.stop_event, workers=4,
                                                        tls=self.tls))
        await asyncio.sleep(0.2)
        if serving.done():
            serving.result()  # it could not bind its ports: start() raises that, not a later wait for beats
        self.ready.set()
        await serving
        await client.aclose()

    def start(self):
        self.thread.start()
        self.ready.wait(10)
        if self.error:
            raise self.error
        return self

    def stop(self):
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_event.set)
            self.thread.join(10)

    # The first batch to a cloud on a Redis Cluster (a client to make, households to claim) took more than 5 s
    # on a machine busy with the parallel pass (CI128): a cloud that does answer is waited for.
    def request(self, frame, data=True, timeout_ms=REQUEST_TIMEOUT_MS):
        import pynng

        with pynng.Req0(dial=self.data_addr if data else self.hb_addr, recv_timeout=timeout_ms,
                        send_timeout=timeout_ms, recv_max_size=0) as sock:
            sock.send(frame)
            return sock.recv()


@pytest.fixture(scope="module")
def own_kafka():
    """A Kafka broker of the test module's own (the fault harness's), to SIGKILL or SIGSTOP without disturbing
    the suite's: `.kafka` the service, `.bootstrap` its address; stopped, and its folder gone, at the end."""
    from tooling.chaos.pipeline import ChaosServices

    services = ChaosServices(Path(settings.VAR_DIR) / "kafka" / "libs")
    try:
        services.up(redis=False)
        yield services
    finally:
        services.down()


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of the test's own (same config as `make services`) in a tmp var dir on its own port, so
    killing it or changing its settings disturbs no one; stopped at the end."""
    from tooling.localservices import Paths, Redis

    server = Redis(Paths(Path("."), tmp_path), "127.0.0.1", free_port())
    server.up(lambda line: None)
    yield server
    server.down(lambda line: None)


@pytest.fixture
def cloud_prefix(redis_url):
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    yield prefix
    from tooling.bench.common import delete_prefix

    delete_prefix(redis_url, prefix)


@pytest.fixture
def cloud(redis_url, cloud_prefix):
    server = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET, "edge-other": "other-secret"}).start()
    yield server
    server.stop()


def make_rows(count, household="hh", start_id=0, base_ms=1_577_142_000_000, power=100.0):
    """`count` valid tuples (id, household, ws, we, avg, n) of consecutive 5 s windows."""
    return [(start_id + i, f"{household}-{i % 5}", base_ms + i * 5000, base_ms + (i + 1) * 5000,
             power + i * 0.25, 3) for i in range(count)]


def produce(bootstrap, topic, messages):
    """Send (key, value-bytes) pairs to `topic` and wait until Kafka has them all."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10, batch_size=512 * 1024)
    for key, value in messages:
        producer.send(topic, key=key.encode() if isinstance(key, str) else key, value=value)
    producer.flush(timeout=60)
    producer.close()


def reading(household, ts, power):
    import json

    return household, json.dumps({"household": household, "ts": ts, "power_w": power}).encode()


def household_batches(households, steps, t0, steps_per_message=20):
    """Readings a 2 s step apart as the simulation sends them: each message a household's readings of
    `steps_per_message` steps, keyed by it (so in one partition, in order). Returns (messages, the average of
    every 5 s window by (household, window start))."""
    from fogwire.limits import READINGS_FIELD

    messages, windows = [], defaultdict(list)
    for first in range(0, steps, steps_per_message):
        for h in range(households):
            batch = []
            for step in range(first, min(first + steps_per_message, steps)):
                ts, watts = t0 + step * 2000, 100.0 + h + (step % 17) * 0.5
                batch.append((f"house-{h}", ts, watts))
                windows[(f"house-{h}", ts - ts % 5000)].append(watts)
            messages.append((f"house-{h}", json.dumps({READINGS_FIELD: batch}).encode()))
    return messages, {key: sum(v) / len(v) for key, v in windows.items()}


def assert_delivered_once(env, expected, readings, redis_client, cloud_prefix):
    """A child edge stored every window of `expected` (household_batches) once, with its average, and had each
    acknowledged by the cloud, which holds each once; its readings counter counts each reading once."""
    from cloud_app.keys import Keys
    from edge_app.models import Status

    with edge_db(env) as db:
        rows = db.execute("select household, window_start, average_w, status from edge_app_windowaggregate").fetchall()
        counted = db.execute("select readings from edge_app_edgestatus").fetchone()[0]
    stored = {(h, start): avg for h, start, avg, _ in rows}
    assert len(rows) == len(stored) == len(expected)  # every window, each once
    assert all(stored[key] == pytest.approx(avg, rel=1e-12) for key, avg in expected.items())
    assert {status for *_, status in rows} == {Status.ACKED}
    assert counted == readings  # replayed readings are not counted twice
    assert redis_client.hlen(Keys(cloud_prefix).tuples(env["FOG_EDGE_ID"])) == len(expected)


def ingest_to_end(bootstrap, topic, edge_id="edge-test", idle_seconds=60):
    """Run the real Ingestor over everything in `topic` and store the windows (a burst run, in process)."""
    from edge_app.ingest import Ingestor

    ingest = read_to_end(Ingestor(edge_id=edge_id, topic=topic, bootstrap=bootstrap, window_seconds=5,
                                  grace_seconds=2, idle_seconds=idle_seconds))
    ingest.finish()
    ingest.close()
    return ingest


def read_to_end(ingest):
    """Connect an Ingestor and poll until it has read everything its topic held when it connected."""
    ingest.connect()
    end = ingest.end_offsets()
    while not ingest.at_end(end):
        ingest.handle_one_poll()
    return ingest


def sample_data_dir():
    """FOG_SAMPLE_DATA, or a skip saying why when it is unset outside CI (in CI it must be there)."""
    folder = os.environ.get("FOG_SAMPLE_DATA")
    if not folder:
        if os.environ.get("CI"):
            pytest.fail("FOG_SAMPLE_DATA is not set in CI; .ci/run must point it at the Gem House sample", pytrace=False)
        pytest.skip("FOG_SAMPLE_DATA is unset: set it to a folder of Gem House CSV files to run this test")
    path = Path(folder)
    if not path.is_dir() or not list(path.glob("*.csv")):
        pytest.fail(f"FOG_SAMPLE_DATA={folder} holds no .csv files", pytrace=False)
    return path


TEST_EDGE_REDIS_DB = int(os.environ.get("FOG_TEST_EDGE_REDIS_DB", "14"))


@pytest.fixture(scope="session")
def migrated_edge_database(tmp_path_factory, session_postgres):
    """The URL of an edge database this worker migrated once, as `manage.py migrate` leaves a new one: edge_env
    gives each child edge a copy, where a migrate process a test was one of the suite's largest costs."""
    url = edge_database.child_database_url(session_postgres, tmp_path_factory.mktemp("edge-template"))
    result = run_manage("migrate", "--skip-checks", "-v", "0", env={"FOG_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    return url


@pytest.fixture
def edge_env(request, tmp_path, services, session_postgres, migrated_edge_database):
    """Environment for an edge node in child processes: its own migrated database (a file, or one on the session's
    PostgreSQL), edge id and RQ database (and the test's Kafka client, if it asks for kafka_client)."""
    edge_id = f"edge-{uuid.uuid4().hex[:8]}"
    base = settings.FOG_EDGE_REDIS_URL.rsplit("/", 1)[0]
    database_url = edge_database.child_database_url(session_postgres, tmp_path, template=migrated_edge_database)
    env = {
        "FOG_DATABASE_URL": database_url,
        "FOG_EDGE_ID": edge_id,
        "FOG_EDGE_SECRET": EDGE_SECRET,
        "FOG_EDGE_REDIS_URL": f"{base}/{TEST_EDGE_REDIS_DB}",
    }
    if "kafka_client" in request.fixturenames:
        env["FOG_EDGE_KAFKA_CLIENT"] = request.getfixturevalue("kafka_client")
    env["_db"] = database_url
    return env


def edge_db(env):
    """A read-only connection to a child edge's database, SQLite or PostgreSQL (`with` it)."""
    return edge_database.connect_read_only(env["_db"])


def edge_cloud(env, redis_url, prefix):
    """A cloud that knows the child edge, its ports put into the edge's environment."""
    cloud = CloudThread(redis_url, prefix, {env["FOG_EDGE_ID"]: EDGE_SECRET}).start()
    env["FOG_HEARTBEAT_PORT"] = cloud.hb_addr.rsplit(":", 1)[1]
    env["FOG_DATA_PORT"] = cloud.data_addr.rsplit(":", 1)[1]
    return cloud


def catches_signal(pid, signum):
    """Whether process `pid` has a handler for `signum` (its SigCgt mask in /proc)."""
    with open(f"/proc/{pid}/status") as status:
        caught = next(line for line in status if line.startswith("SigCgt:")).split()[1]
    return bool(int(caught, 16) >> (signum - 1) & 1)


def child_env(env):
    return {**os.environ, **{k: v for k, v in env.items() if not k.startswith("_")}}


EDGE_LOOPS = ("ingest", "sender", "heartbeat")


def held_loops(env):
    """The loops of a child edge whose lock is held now."""
    from edge_app.control import EdgeControl

    connection = redis_lib.Redis.from_url(env["FOG_EDGE_REDIS_URL"])
    try:
        control = EdgeControl(env["FOG_EDGE_ID"], connection)
        return [loop for loop in EDGE_LOOPS if control.running(loop)]
    finally:
        connection.close()


def start_edge(env, topic, **popen):
    """A child edge's `manage.py runedge` (not burst), returned once every loop runs; the caller ends it."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "runedge", "--topic", topic, "-v", "0"],
                            cwd=ROOT, env=child_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)
    if not wait_for(lambda: len(held_loops(env)) == len(EDGE_LOOPS), timeout=60, interval=0.2):
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"runedge's loops did not all start within 60 s: {out[-2000:]} {err[-2000:]}")
    return proc


def write_gem_csv(path, rows, header=GEM_HEADER):
    """A file in the Gem House format: rows of (local date text, power in mW[, timestamp column]); the
    timestamp column is 0 unless a row gives one."""
    lines = [f"{date},{stamp[0] if stamp else 0},{1000 + i},{mw},{mw // 3},{mw // 3},{mw - 2 * (mw // 3)}"
             for i, (date, mw, *stamp) in enumerate(rows)]
    path.write_text(header + "\n".join(lines) + "\n")
    return path


def consume_all(bootstrap, topic, expected, timeout_ms=10000, weigh=lambda record: 1):
    """The records of `topic`, once what they weigh (one each by default) adds up to `expected`, and whatever
    else comes within a second."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=timeout_ms)
    messages, weight = [], 0
    for message in consumer:
        messages.append(message)
        weight += weigh(message)
        if weight >= expected:
            break
    extra = consumer.poll(timeout_ms=1000)  # anything beyond what was expected?
    messages += [m for batch in extra.values() for m in batch]
    consumer.close()
    return messages


def consume_readings(bootstrap, topic, expected, timeout_ms=10000):
    """(household, ts, power_w, record) of every reading in `topic`, sent one a record or in batches."""
    records = consume_all(bootstrap, topic, expected, timeout_ms, weigh=lambda record: len(_readings_of(record)))
    return [reading for record in records for reading in _readings_of(record)]


def _readings_of(record):
    from fogwire.limits import READINGS_FIELD

    value = json.loads(record.value)
    if READINGS_FIELD in value:
        return [(household, ts, power, record) for household, ts, power in value[READINGS_FIELD]]
    return [(value["household"], value["ts"], value["power_w"], record)]


@pytest.fixture
def cloud_settings(settings, redis_url, channel_redis_url, cloud_prefix):
    """Point this process's API, channel layer and metrics at the test's cloud store and prefix."""
    from channels.layers import channel_layers

    settings.FOG_CLOUD_REDIS_URL = redis_url
    settings.FOG_CHANNEL_REDIS_URL = channel_redis_url
    settings.FOG_CLOUD_KEY_PREFIX = cloud_prefix
    # The project's own layer settings (connection options included), pointed at the test's database.
    layer = copy.deepcopy(settings.CHANNEL_LAYERS["default"])
    layer["CONFIG"]["hosts"] = [{**host, "address": channel_redis_url} for host in layer["CONFIG"]["hosts"]]
    layer["CONFIG"]["prefix"] = f"{cloud_prefix}asgi"
    settings.CHANNEL_LAYERS = {"default": layer}
    channel_layers.backends = {}
    yield settings
    channel_layers.backends = {}


def deliver(cloud, rows, edge=EDGE_ID, secret=EDGE_SECRET):
    """(postal codes, reasons) for rows delivered the way an edge does, through the real cloud server."""
    from fogwire import protocol as wire

    request = wire.batch_frame(edge, secret, rows)
    return wire.read_reply(cloud.request(request), request, secret, len(rows))


async def answer(server, rows, edge=EDGE_ID, secret=EDGE_SECRET):
    """What a CloudServer of this process answers a batch of `rows`: (postal codes, reasons), or the reason of
    its error reply."""
    from fogwire import protocol as wire

    request = wire.batch_frame(edge, secret, rows)
    reply = await server.handle_data(request)
    try:
        return wire.read_reply(reply, request, secret, len(rows))
    except wire.ProtocolError as exc:
        return exc.reason


def refusal(reply):
    """The reason an error reply names (whoever tagged it, or nobody)."""
    from fogwire import protocol as wire

    return wire.read_error(reply)[0]


def store_through_cloud(cloud, rows, edge=EDGE_ID, secret=EDGE_SECRET):
    """Deliver rows the way an edge does, through the real cloud server; returns the postal codes."""
    codes, reasons = deliver(cloud, rows, edge, secret)
    assert reasons == [""] * len(rows)
    return codes


def stored_by_a_cloud(redis_url, prefix, rows):
    """Rows a cloud server of its own (started and stopped here) stored under `prefix`, as an edge delivers them."""
    cloud = CloudThread(redis_url, prefix, {EDGE_ID: EDGE_SECRET}).start()
    try:
        return store_through_cloud(cloud, rows)
    finally:
        cloud.stop()


def dashboard_summary(base):
    """The summary a web server at `base` (http://host:port) sends first on its dashboard websocket."""
    from websockets.sync.client import connect

    with connect(base.replace("http", "ws", 1) + "/ws/dashboard/", origin=base, open_timeout=20) as socket:
        return json.loads(socket.recv(timeout=20))


async def open_dashboard():
    """A websocket on the real ASGI app's /ws/dashboard/, connected, and the summary it sends first."""
    from channels.testing import WebsocketCommunicator

    from fogsite.asgi import application

    socket = WebsocketCommunicator(application, "/ws/dashboard/", headers=[(b"origin", b"http://localhost"),
                                                                            (b"host", b"localhost")])
    connected, _ = await socket.connect()
    assert connected
    summary = await socket.receive_json_from(timeout=10)
    assert summary["type"] == "summary"
    return socket, summary


def is_tick(update):
    """An update that says only that the cloud is there (cloud_app/server.py, TICK_EVERY_SECONDS)."""
    return not (update.get("acked") or update.get("beats") or update.get("states") or update.get("recent"))


async def update_after_storing(socket, cloud, rows, timeout):
    """Store `rows` through `cloud` from inside the socket's event loop (in a thread, so the loop keeps
    serving), then return the first update the dashboard socket receives that is not a tick, and close the
    socket."""
    import asyncio

    await asyncio.get_running_loop().run_in_executor(None, store_through_cloud, cloud, rows)
    update = await socket.receive_json_from(timeout=timeout)
    while is_tick(update):
        update = await socket.receive_json_from(timeout=timeout)
    await socket.disconnect()
    return update


@pytest.fixture
def publishing_cloud(cloud_settings, redis_url, cloud_prefix):
    """A real cloud that publishes its updates to the dashboard group through the real channel layer."""
    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}, publish=True).start()
    yield cloud
    cloud.stop()


class FakeCloud:
    """A pynng Rep socket on a free port that answers each request with `answer(request)`, in a thread.

    Stands where the cloud should be, to show what the edge does with replies
    a real cloud never sends. `served` lists the requests answered.
    """

    def __init__(self, answer):
        import threading

        import pynng

        self.answer, self.served = answer, []
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.sock = pynng.Rep0(listen=self.address)
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        import pynng

        try:
            while True:
                request = self.sock.recv()
                self.sock.send(self.answer(request))
                self.served.append(request)
        except pynng.NNGException:
            pass  # closed

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.sock.close()
        self.thread.join(5)


def edge_sender(address, **options):
    """A Sender for EDGE_ID on `address`, its link marked up so it sends at once (needs the django_db mark)."""
    from edge_app.models import EdgeStatus
    from edge_app.sender import Sender

    sender = Sender(edge_id=EDGE_ID, secret=EDGE_SECRET, address=address, **options)
    EdgeStatus.objects.filter(edge_id=EDGE_ID).update(connected=True)
    sender._link_checked = -1e9
    return sender


def add_pending(count, households=40, base_ms=1_577_142_000_000):
    """`count` PENDING tuples in the edge database, consecutive windows over `households` households."""
    from edge_app.models import WindowAggregate

    WindowAggregate.objects.bulk_create([
        WindowAggregate(household=f"house-{i % households}", window_start=base_ms + i * 5000,
                        window_end=base_ms + i * 5000 + 5000, day="2019-12-24", average_w=100.0 + i % 13, readings=3)
        for i in range(count)])


def send_until_all_acked(sender, timeout=60):
    """Run the sender's rounds until no tuple is left unacknowledged; False if that takes longer than `timeout`."""
    from edge_app.models import Status, WindowAggregate

    def all_acked():
        sender.handle_one_round()
        return not WindowAggregate.objects.exclude(status=Status.ACKED).exists()
    return wait_for(all_acked, timeout=timeout, interval=0.05)


ACKED_LINK_TUPLES = 300


@pytest.fixture
def acked_link(redis_url, cloud_prefix):
    """(a Heartbeat, a Sender) of EDGE_ID on a real cloud, which acknowledged ACKED_LINK_TUPLES tuples and named
    its store (needs the django_db mark, transaction=True: the cloud runs in a thread of its own)."""
    from edge_app.link import Heartbeat
    from edge_app.models import EdgeStatus

    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}).start()
    beat = Heartbeat(edge_id=EDGE_ID, secret=EDGE_SECRET, address=cloud.hb_addr, timeout_ms=1000)
    sender = edge_sender(cloud.data_addr, batch=100, in_flight=2, ack_timeout_ms=2000)
    try:
        add_pending(ACKED_LINK_TUPLES)
        assert wait_for(beat.handle_one_beat, timeout=5, interval=0.1)
        assert EdgeStatus.objects.get(edge_id=EDGE_ID).cloud_store  # heard with the first answer
        assert send_until_all_acked(sender)
        yield beat, sender
    finally:
        beat.close()
        sender.close()
        cloud.stop()


@pytest.fixture
def fleet_of(kafka_bootstrap, redis_url, cloud_prefix):
    """`fleet_of(n)`: n real edges and the cloud replicas a test starts (tooling.fleet), on this test's
    cloud Redis and key prefix; every process ended and everything removed afterwards."""
    from tooling.fleet import Fleet

    made = []

    def make(edges):
        made.append(Fleet(bootstrap=kafka_bootstrap, cloud_redis_url=redis_url,
                          edge_redis_url=settings.FOG_EDGE_REDIS_URL, edges=edges, prefix=cloud_prefix))
        return made[-1]

    yield make
    for fleet in made:
        fleet.close()
