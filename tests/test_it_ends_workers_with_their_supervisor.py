"""However `runedge` dies, its RQ workers follow within 2 s; a worker that keeps dying is not restarted forever."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as redis_lib

from edge_app.worker import WORKER_NAME
from tests.conftest import (ROOT, alive, catches_signal, child_env, child_pids, edge_cloud, held_loops, produce,
                            reading, run_manage, start_edge, wait_for)

T0 = 1_577_142_000_000
FOLLOW_SECONDS = 2.0


def _running_edge(edge_env, topic):
    proc = start_edge(edge_env, topic, start_new_session=True)  # a group of its own, to kill whole
    workers = child_pids(proc.pid)
    assert len(workers) == 3, workers
    # Forked: each in a session of its own (a terminal's Ctrl-C reaches the supervisor only), named in ps
    assert all(os.getsid(pid) == pid and Path(f"/proc/{pid}/comm").read_text().strip() == WORKER_NAME
               for pid in workers), workers
    # Not runedge's own SIGHUP handler, inherited through the fork: a flag nothing in a worker reads.
    assert not any(catches_signal(pid, signal.SIGHUP) for pid in workers), workers
    return proc, workers


def _end(proc, pids):
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


@pytest.mark.slow
@pytest.mark.serial  # a wall-clock bound: the workers follow within FOLLOW_SECONDS
@pytest.mark.parametrize("kill", ["supervisor", "process group"])
def test_it_ends_every_worker_within_two_seconds_of_a_sigkill_of_the(kill, kafka_bootstrap, topic, edge_env,
                                                                     redis_url, cloud_prefix):
    produce(kafka_bootstrap, topic, [reading("h", T0, 1.0)])
    cloud = edge_cloud(edge_env, redis_url, cloud_prefix)
    proc, workers = None, []
    try:
        proc, workers = _running_edge(edge_env, topic)
        if kill == "supervisor":
            os.kill(proc.pid, signal.SIGKILL)
        else:
            os.killpg(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        proc.wait(10)
        gone = wait_for(lambda: not any(alive(pid) for pid in workers), timeout=FOLLOW_SECONDS + 3, interval=0.05)
        took = time.monotonic() - killed
        assert gone and took <= FOLLOW_SECONDS, f"workers {workers} still alive {took:.1f} s after the kill"
    finally:
        if proc is not None:
            _end(proc, workers)
        cloud.stop()


@pytest.mark.slow
def test_it_gives_up_on_workers_that_keep_dying(kafka_bootstrap, topic, edge_env, redis_url, cloud_prefix):
    from edge_app.supervisor import WORKER_RESTARTS

    produce(kafka_bootstrap, topic, [reading("h", T0, 1.0)])
    cloud = edge_cloud(edge_env, redis_url, cloud_prefix)
    proc, killed = None, set()
    try:
        proc, _ = _running_edge(edge_env, topic)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:  # every worker dies as soon as it appears
            for pid in set(child_pids(proc.pid)) - killed:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            time.sleep(0.05)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc is not None:
            _end(proc, killed)
        cloud.stop()
    assert proc.returncode == 1, err[-3000:]
    assert f"edge workers died {WORKER_RESTARTS + 1} times within 60 s; giving up" in out
    summary = out.strip().splitlines()[-1]
    # Restarts of workers and loops enqueued again count together: a worker that took its loop's job before it
    # was killed leaves that loop lapsed, enqueued again once.
    lapsed = err.count("is not running; enqueueing it again")
    starts = int(re.search(r"ended=failed .*worker_starts=(\d+);", summary)[1])
    assert starts + lapsed == 3 + WORKER_RESTARTS, (summary, err[-3000:])
    assert len(killed) <= 3 + WORKER_RESTARTS


@pytest.mark.slow
def test_it_gives_up_on_loops_that_fail_as_they_start(tmp_path, kafka_bootstrap, topic, edge_env):
    """A CA file that stops being a certificate once runedge has checked it: the heartbeat and sender loops fail
    as they start, every time. The run ends as failed within a minute instead of enqueueing them again every
    second and a half for ever."""
    from edge_app.control import EdgeControl
    from edge_app.supervisor import WORKER_RESTARTS

    assert run_manage("makecerts", "--dir", str(tmp_path), "--cloud-name", "127.0.0.1").returncode == 0
    ca = tmp_path / "ca.pem"
    proc = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "runedge", "--topic", topic, "-v", "0"],
                            cwd=ROOT, env=child_env({**edge_env, "FOG_TLS_CA": str(ca)}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # not start_edge: no loop runs
    try:
        control = EdgeControl(edge_env["FOG_EDGE_ID"], redis_lib.Redis.from_url(edge_env["FOG_EDGE_REDIS_URL"]))
        assert wait_for(lambda: control.supervisor() is not None, timeout=60, interval=0.02)  # checked, starting
        ca.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        # A worker forked before the write may have read the good file already (a test slowed by a busy machine
        # sees the supervisor late): started again, as any worker that dies is, it reads the bad one.
        for pid in child_pids(proc.pid):
            os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 1, err[-3000:]
    assert "edge loops ended with an error" in out and f"{WORKER_RESTARTS + 1} times within 60 s; giving up" in out
    assert "ended=failed" in out.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("verbosity, level, said", [("0", "INFO", True), ("1", "WARNING", False)])
def test_it_logs_the_loops_at_the_pipelines_level_not_at_runedges_verbosity(verbosity, level, said, kafka_bootstrap,
                                                                          topic, edge_env, redis_url, cloud_prefix):
    # The workers are forked from a supervisor whose -v sets its own lines' level; their loops log at
    # FOG_LOG_LEVEL, as workers started on their own do: INFO lines under -v 0, none under -v 1 at WARNING.
    env = {**edge_env, "FOG_LOG_LEVEL": level}
    cloud = edge_cloud(edge_env, redis_url, cloud_prefix)
    proc = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "runedge", "--topic", topic, "-v", verbosity],
                            cwd=ROOT, env=child_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: len(held_loops(env)) == 3, timeout=60, interval=0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        cloud.stop()
    assert proc.returncode == 0, err[-3000:]
    assert all((f"{loop} loop of edge {edge_env['FOG_EDGE_ID']} started" in err) == said
               for loop in ("ingest", "sender", "heartbeat")), err[-3000:]


@pytest.mark.django_db(transaction=True)
def test_it_stops_what_it_started_when_a_round_fails_unexpectedly(services):
    """A round that raises what the supervisor does not wait out (the edge Redis refusing writes: MISCONF when its
    disk is full) ends the run with its loops asked to stop and their queued jobs cancelled, not left for the
    next worker to start after the supervisor is gone."""
    from edge_app.supervisor import Supervisor

    supervisor = Supervisor({"burst": False}, stop_flag=lambda: False, out=lambda line: None)
    supervisor.start(with_workers=False)

    def refused():
        raise redis_lib.ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's unable to persist")

    supervisor.handle_one_check = refused
    with pytest.raises(redis_lib.ResponseError):
        supervisor.run(timeout=30)
    assert supervisor.jobs and all(job.get_status(refresh=True) == "canceled" for job in supervisor.jobs.values())
