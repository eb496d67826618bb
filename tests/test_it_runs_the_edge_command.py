"""`manage.py runedge`: a burst run to completion, a clean stop, and never two copies of a loop."""

import re
import signal
import subprocess
import sys
import time

import redis as redis_lib

from cloud_app.store import Keys
from edge_app.loops import EdgeControl
from tests.conftest import ROOT, child_env, edge_cloud, edge_db, produce, reading, run_manage, wait_for

T0 = 1_577_142_000_000


def test_it_runs_a_burst_to_the_end_and_summarises(kafka_client, kafka_bootstrap, topic, edge_env, redis_url, cloud_prefix,
                                                  redis_client):
    produce(kafka_bootstrap, topic, [reading(f"h{h}", T0 + i * 1000, 50.0 + h) for i in range(60) for h in range(10)])
    cloud = edge_cloud(edge_env, redis_url, cloud_prefix)
    try:
        result = run_manage("runedge", "--burst", "--timeout", "90", "--topic", topic, "-v", "0",
                            env=child_env(edge_env), timeout=150)
    finally:
        cloud.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    line = result.stdout.strip().splitlines()[-1]
    assert re.search(r"readings=600 windows=120 late=0 malformed=0 acked=120 pending=0", line), line
    assert redis_client.hlen(Keys(cloud_prefix).tuples(edge_env['FOG_EDGE_ID'])) == 120
    with edge_db(edge_env) as db:
        assert db.execute("select count(*), min(status), max(status) from edge_app_windowaggregate").fetchone() == (120, 2, 2)


def test_it_stops_every_loop_within_five_seconds_and_never_runs_two_copies(kafka_bootstrap, topic, edge_env,
                                                                          redis_url, cloud_prefix):
    produce(kafka_bootstrap, topic, [reading("h", T0, 1.0)])
    cloud = edge_cloud(edge_env, redis_url, cloud_prefix)
    control = redis_lib.Redis.from_url(edge_env["FOG_EDGE_REDIS_URL"])
    lock = EdgeControl(edge_env["FOG_EDGE_ID"], control).lock_key
    proc = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "runedge", "--topic", topic, "-v", "0"],
                            cwd=ROOT, env=child_env(edge_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: all(control.exists(lock(loop)) for loop in ("ingest", "sender", "heartbeat")),
                        timeout=60, interval=0.2)
        again = run_manage("runedge", "--no-workers", "--topic", topic, env=child_env(edge_env))
        assert again.returncode == 0, again.stderr
        assert again.stdout.count("already runs; not enqueued again") == 3

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        assert time.monotonic() - started < 5
        assert not any(control.exists(lock(loop)) for loop in ("ingest", "sender", "heartbeat"))
    finally:
        proc.kill()
        cloud.stop()
