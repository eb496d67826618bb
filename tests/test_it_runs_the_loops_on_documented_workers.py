"""`runedge --no-workers` then the workers its message asks for, exactly as written: every loop runs and
delivers; jobs of an earlier run are discarded; another edge's jobs on the same Redis are never taken."""

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import redis as redis_lib
from rq import Queue

from cloud_app.keys import Keys
from edge_app.control import EdgeControl, queue_name
from edge_app.loops import signals_stop
from tests.conftest import ROOT, child_env, edge_cloud, edge_db, held_loops, produce, reading, run_manage, wait_for

T0 = 1_577_142_000_000


def test_it_delivers_with_the_workers_the_message_names(kafka_bootstrap, topic, edge_env, redis_url, cloud_prefix,
                                                       redis_client):
    produce(kafka_bootstrap, topic, [reading(f"h{h}", T0 + i * 1000, 10.0 + h) for i in range(30) for h in range(4)])
    other = {**edge_env, "FOG_EDGE_ID": f"edge-{uuid.uuid4().hex[:8]}"}  # a second edge on the same Redis
    enqueue = ("runedge", "--no-workers", "--topic", topic, "--idle", "1")
    earlier = run_manage(*enqueue, env=child_env(edge_env))  # a run whose workers never came
    current = run_manage(*enqueue, env=child_env(edge_env))
    neighbour = run_manage(*enqueue, env=child_env(other))
    for result in (earlier, current, neighbour):
        assert result.returncode == 0, result.stderr
    match = re.search(r"start exactly (\d+) workers, each with:\n  (.+)\n", current.stdout)
    assert match, current.stdout
    count, command = int(match.group(1)), match.group(2)
    assert count == 3

    cloud = edge_cloud(edge_env, redis_url, cloud_prefix)
    shell_env = {**child_env(edge_env), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    workers = [subprocess.Popen(command, shell=True, cwd=ROOT, env=shell_env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True) for _ in range(count)]
    try:
        def delivered():
            with edge_db(edge_env) as db:
                return db.execute("select count(*), coalesce(min(status), 0) from edge_app_windowaggregate").fetchone() == (24, 2)

        assert wait_for(delivered, timeout=120, interval=0.5)
        assert redis_client.hlen(Keys(cloud_prefix).tuples(edge_env["FOG_EDGE_ID"])) == 24
        edge_redis = redis_lib.Redis.from_url(edge_env["FOG_EDGE_REDIS_URL"])
        assert Queue(queue_name(other["FOG_EDGE_ID"]), connection=edge_redis).count == 3  # untouched
        stop = run_manage("runedge", "--stop", env=child_env(edge_env))
        assert stop.returncode == 0, stop.stderr
        assert wait_for(lambda: not held_loops(edge_env), timeout=20, interval=0.2)
    finally:
        for proc in workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        logs = "".join(proc.communicate(timeout=30)[0] for proc in workers)
        cloud.stop()
        Queue(queue_name(other["FOG_EDGE_ID"]), connection=redis_lib.Redis.from_url(edge_env["FOG_EDGE_REDIS_URL"])).empty()
    # The earlier run's three jobs were taken from the queue and discarded, not run with that run's options.
    assert len(re.findall(r"job of edge \S+ belongs to run \w+, not the current run \w+; discarded", logs)) == 3, logs


def test_it_ends_a_loop_and_its_worker_on_one_sigterm(kafka_bootstrap, topic, edge_env, redis_url, cloud_prefix):
    """rq's SimpleWorker only notes a SIGTERM that comes during a job and stops after it: after a loop that runs
    until stopped. One SIGTERM (systemd's, a container's stop) ends the loop at its next step, and the worker."""
    produce(kafka_bootstrap, topic, [reading("h", T0, 1.0)])
    result = run_manage("runedge", "--no-workers", "--topic", topic, env=child_env(edge_env))
    assert result.returncode == 0, result.stderr
    command = re.search(r"each with:\n  (.+)\n", result.stdout).group(1)
    cloud = edge_cloud(edge_env, redis_url, cloud_prefix)
    shell_env = {**child_env(edge_env), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    workers = [subprocess.Popen(f"exec {command}", shell=True, cwd=ROOT, env=shell_env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True) for _ in range(3)]
    try:
        assert wait_for(lambda: len(held_loops(edge_env)) == 3, timeout=60, interval=0.2)
        for proc in workers:
            proc.send_signal(signal.SIGTERM)  # once
        assert wait_for(lambda: not held_loops(edge_env), timeout=10, interval=0.1)
        assert wait_for(lambda: all(proc.poll() is not None for proc in workers), timeout=20, interval=0.2)
    finally:
        for proc in workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        cloud.stop()


def test_it_keeps_a_stop_signal_that_lands_while_it_asks_redis_for_a_stop(edge_env):
    """The loop asks the edge Redis for stop requests every STOP_CHECK_SECONDS. A SIGTERM whose handler ran as that
    answer came back was overwritten by it, and the loop went on for good (CI152: one of three workers)."""
    connection = redis_lib.Redis.from_url(edge_env["FOG_EDGE_REDIS_URL"])
    control = EdgeControl(edge_env["FOG_EDGE_ID"], connection)
    asked = connection.smembers

    def answered_then_signalled(key):
        answer = asked(key)  # no stop request in Redis
        os.kill(os.getpid(), signal.SIGTERM)  # its handler runs at the next bytecode: before the answer is used
        return answer

    connection.smembers = answered_then_signalled
    came = []  # the session's own SIGTERM handler (conftest) would end the run: this one stands in meanwhile
    session = signal.signal(signal.SIGTERM, lambda signum, frame: came.append(signum))
    try:
        with signals_stop(control):  # chains to the stand-in, as to rq's handler in a worker
            stopped = control.stop_requested()
    finally:
        signal.signal(signal.SIGTERM, session)
        connection.close()
        if len(came) > 1:  # one more than ours: the session was told to stop meanwhile
            os.kill(os.getpid(), signal.SIGTERM)
    assert came == [signal.SIGTERM]
    assert stopped and control.stop_requested()
