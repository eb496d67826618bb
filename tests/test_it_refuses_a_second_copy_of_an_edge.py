"""An edge whose loops already run is not started twice: one line says where they run, and a burst exits 1."""

import re
import socket
import subprocess
import sys
import time

import redis as redis_lib
from rq import Queue, Worker

from edge_app.control import EdgeControl, Holder, queue_name
from tests.conftest import child_env, edge_cloud, produce, reading, run_manage, start_edge

T0 = 1_577_142_000_000
LOOPS = ("ingest", "sender", "heartbeat")


def test_it_names_the_running_copy_and_starts_no_worker(kafka_bootstrap, topic, edge_env, redis_url, cloud_prefix):
    produce(kafka_bootstrap, topic, [reading("h", T0, 1.0)])
    cloud = edge_cloud(edge_env, redis_url, cloud_prefix)
    control = redis_lib.Redis.from_url(edge_env["FOG_EDGE_REDIS_URL"])
    first = start_edge(edge_env, topic)
    try:
        queue = Queue(queue_name(edge_env["FOG_EDGE_ID"]), connection=control)
        workers_before = Worker.count(queue=queue)
        assert workers_before == 3
        for mode in (["--burst"], ["--no-workers"], []):
            started = time.monotonic()
            again = run_manage("runedge", "--topic", topic, *mode, env=child_env(edge_env), timeout=60)
            assert again.returncode == 1, (mode, again.stdout, again.stderr)
            assert time.monotonic() - started < 30  # says so at once instead of waiting for the loops
            lines = again.stderr.strip().splitlines()
            assert len(lines) == 1, lines
            assert re.fullmatch(rf"CommandError: edge {edge_env['FOG_EDGE_ID']} already runs on "
                                rf"{re.escape(socket.gethostname())} \(pid {first.pid}, since \d{{4}}-\d\d-\d\d "
                                r"\d\d:\d\d:\d\d UTC\); not starting another copy \(`manage.py runedge --stop` "
                                r"stops it\)", lines[0]), lines[0]
            assert Worker.count(queue=queue) == workers_before  # no worker was started
        assert first.poll() is None  # the running copy is undisturbed
    finally:
        first.kill()
        first.communicate()
        cloud.stop()


def test_it_starts_after_a_crash_left_locks_of_processes_that_are_gone(edge_env, kafka_bootstrap, topic, redis_url,
                                                                       cloud_prefix):
    """A killed edge's records name pids that no longer exist on this host: they are freed, not waited out."""
    produce(kafka_bootstrap, topic, [reading("h", T0 + i * 1000, 1.0) for i in range(20)])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    control = EdgeControl(edge_env["FOG_EDGE_ID"], redis_lib.Redis.from_url(edge_env["FOG_EDGE_REDIS_URL"]))
    gone = Holder.parse(f"{dead.pid}:{socket.gethostname()}:{time.time() - 5:.3f}:gone")
    assert control.claim_supervisor(gone)
    for loop in LOOPS:
        assert control.acquire(loop, gone.token, wait_seconds=0, ttl_ms=600_000)
    cloud = edge_cloud(edge_env, redis_url, cloud_prefix)
    try:
        started = time.monotonic()
        result = run_manage("runedge", "--burst", "--timeout", "90", "--topic", topic, "-v", "0",
                            env=child_env(edge_env), timeout=150)
    finally:
        cloud.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(f"freed the lock of a process that is gone (pid {dead.pid})") == 3
    assert "ended=done" in result.stdout
    assert time.monotonic() - started < 60  # far less than the locks' ten minutes


def test_it_lets_a_supervisor_that_lost_its_record_stop_only_its_own_run(redis_url):
    """A supervisor that stalled past its record's lifetime finds a newer one in charge and ends: it stops
    the loops of its own run, not those of the run that took over. `runedge --stop` still stops any run."""
    import uuid

    connection = redis_lib.Redis.from_url(redis_url)
    edge = f"edge-{uuid.uuid4().hex[:8]}"

    def loops_of(run):  # what a loop of that run sees (a fresh control: no half-second cache)
        return EdgeControl(edge, connection, run=run)

    EdgeControl(edge, connection, run="old").request_stop("old")
    assert loops_of("old").stop_requested()
    assert not loops_of("new").stop_requested()
    new = loops_of("new")
    EdgeControl(edge, connection).request_stop()  # runedge --stop, which knows no run
    EdgeControl(edge, connection, run="old").request_stop("old")  # a late one of the old run overwrites nothing
    assert loops_of("old").stop_requested() and new.stop_requested()
    connection.delete(EdgeControl(edge, connection).prefix + "stops")
    assert new.stop_requested()  # once seen, a stop stays seen while the loop winds down
    connection.delete(EdgeControl(edge, connection).prefix + "stops")
