"""SIGKILL the ingest worker mid-stream: after the restart every window is stored exactly once, unchanged."""

import os
import signal
import subprocess
import sys

import pytest
import redis as redis_lib

from edge_app.loops import EdgeControl
from tests.conftest import (ROOT, assert_delivered_once, child_env, edge_cloud, edge_db, household_batches, produce,
                            wait_for)

T0 = 1_577_142_000_000
# 150,000 readings at a 2 s step, 600 windows a household, in batches (single readings took Kafka most of the time)
HOUSEHOLDS, STEPS = 100, 1500


@pytest.mark.edge_db
@pytest.mark.slow
def test_it_stores_every_window_once_with_its_average_after_a_kill(kafka_client, kafka_bootstrap, topic, edge_env, redis_url,
                                                                   cloud_prefix, redis_client):
    messages, expected = household_batches(HOUSEHOLDS, STEPS, T0)
    produce(kafka_bootstrap, topic, messages)

    cloud = edge_cloud(edge_env, redis_url, cloud_prefix)
    control = redis_lib.Redis.from_url(edge_env["FOG_EDGE_REDIS_URL"])
    lock = EdgeControl(edge_env["FOG_EDGE_ID"], control).lock_key("ingest")
    proc = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "runedge", "--burst", "--timeout", "240",
                             "--topic", topic, "-v", "0"], cwd=ROOT, env=child_env(edge_env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def some_windows_stored():
            with edge_db(edge_env) as db:
                return db.execute("select count(*) from edge_app_windowaggregate").fetchone()[0] > 0

        assert wait_for(some_windows_stored, timeout=60, interval=0.05)
        victim = int(control.get(lock).split(b":")[0])
        os.kill(victim, signal.SIGKILL)
        with edge_db(edge_env) as db:
            stored_at_kill = db.execute("select count(*) from edge_app_windowaggregate").fetchone()[0]
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
        cloud.stop()
    assert proc.returncode == 0, err[-3000:]
    assert 0 < stored_at_kill < len(expected), "the kill did not land mid-stream"

    assert_delivered_once(edge_env, expected, HOUSEHOLDS * STEPS, redis_client, cloud_prefix)
