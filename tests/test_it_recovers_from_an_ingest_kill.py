"""SIGKILL the ingest worker mid-stream: after the restart every window is stored exactly once, unchanged."""

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict

import pytest
import redis as redis_lib

from cloud_app.keys import Keys
from edge_app.loops import EdgeControl
from edge_app.models import Status
from fogwire.limits import READINGS_FIELD
from tests.conftest import ROOT, child_env, edge_cloud, edge_db, produce, wait_for

T0 = 1_577_142_000_000
HOUSEHOLDS, STEPS = 100, 1500  # 150,000 readings at a 2 s step: 600 windows a household
# A message carries a household's readings of this many steps, keyed by it (so in one partition, in order):
# batches as the simulation sends them, which Kafka takes in a fraction of the time single readings need.
STEPS_PER_MESSAGE = 20


@pytest.mark.edge_db
@pytest.mark.slow
def test_it_stores_every_window_once_with_its_average_after_a_kill(kafka_client, kafka_bootstrap, topic, edge_env, redis_url,
                                                                   cloud_prefix, redis_client):
    messages, windows = [], defaultdict(list)
    for first in range(0, STEPS, STEPS_PER_MESSAGE):
        for h in range(HOUSEHOLDS):
            batch = []
            for step in range(first, first + STEPS_PER_MESSAGE):
                ts, watts = T0 + step * 2000, 100.0 + h + (step % 17) * 0.5
                batch.append((f"house-{h}", ts, watts))
                windows[(f"house-{h}", ts - ts % 5000)].append(watts)
            messages.append((f"house-{h}", json.dumps({READINGS_FIELD: batch}).encode()))
    produce(kafka_bootstrap, topic, messages)
    expected = {key: sum(v) / len(v) for key, v in windows.items()}

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

    with edge_db(edge_env) as db:
        rows = db.execute("select household, window_start, average_w, status from edge_app_windowaggregate").fetchall()
        readings = db.execute("select readings from edge_app_edgestatus").fetchone()[0]
    stored = {(h, start): avg for h, start, avg, _ in rows}
    assert len(rows) == len(stored) == len(expected)  # every window, each once
    assert all(stored[key] == pytest.approx(avg, rel=1e-12) for key, avg in expected.items())
    assert {status for *_, status in rows} == {Status.ACKED}
    assert readings == HOUSEHOLDS * STEPS  # replayed readings are not counted twice
    assert redis_client.hlen(Keys(cloud_prefix).tuples(edge_env['FOG_EDGE_ID'])) == len(expected)
