"""The edge's PostgreSQL crashes mid-stream and comes back: the edge waits for it and loses nothing.

Before, each loop died with a traceback on its first query, was enqueued again onto the worker's dead
connection, and failed at once: within seconds the supervisor gave up and the edge stayed down, even
for a one-second restart. Now each loop drops what it holds in memory and waits for the database within
its own job, so the supervisor restarts nothing.
"""

import os
import signal
import subprocess
import sys
import time

from django.conf import settings

from edge_app.database_outage import RETRY_SECONDS, DatabaseOutage
from tests.conftest import (ROOT, assert_delivered_once, child_env, edge_cloud, edge_db, household_batches, produce,
                            run_manage, wait_for)
from tests.edge_database import SessionPostgres

T0 = 1_577_142_000_000
HOUSEHOLDS, STEPS = 100, 600  # 60,000 readings: the edge is mid-stream when its database goes
OUTAGE_SECONDS = 3


def test_it_stores_every_window_once_when_its_postgresql_crashes_and_comes_back(kafka_bootstrap, topic, edge_env,
                                                                              redis_url, cloud_prefix, redis_client):
    postgres = SessionPostgres(settings.BASE_DIR).start()  # its own: the crash must not touch other tests'
    try:
        url = postgres.new_database()
        env = {**edge_env, "FOG_DATABASE_URL": url, "_db": url}
        migrated = run_manage("migrate", "-v", "0", env=env)
        assert migrated.returncode == 0, migrated.stderr
        messages, expected = household_batches(HOUSEHOLDS, STEPS, T0)
        produce(kafka_bootstrap, topic, messages)

        cloud = edge_cloud(env, redis_url, cloud_prefix)
        proc = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "runedge", "--burst", "--timeout", "240",
                                 "--topic", topic], cwd=ROOT, env=child_env(env),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            stored = []

            def some_windows_stored():
                with edge_db(env) as db:
                    stored.append(db.execute("select count(*) from edge_app_windowaggregate").fetchone()[0])
                return stored[-1] > 0

            assert wait_for(some_windows_stored, timeout=60, interval=0.05)
            assert stored[-1] < len(expected), "the crash would not land mid-stream"
            postmaster = postgres.server.our_pid()
            os.kill(postmaster, signal.SIGQUIT)  # immediate shutdown: every connection cut, no checkpoint
            assert wait_for(lambda: postgres.server.our_pid() is None, timeout=30, interval=0.05)
            time.sleep(OUTAGE_SECONDS)
            postgres.server.up(lambda line: None)
            out, err = proc.communicate(timeout=240)
        finally:
            proc.kill()
            cloud.stop()
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err
        assert "the edge database fails" in err  # said, in one line a loop
        assert "worker_starts=3;" in out, out  # no worker died, no loop was enqueued again
        assert f"this run: readings={HOUSEHOLDS * STEPS} " in out, out  # its own connection, cut too, made again
        assert_delivered_once(env, expected, HOUSEHOLDS * STEPS, redis_client, cloud_prefix)
    finally:
        postgres.stop()


def test_it_says_an_outage_once_backs_off_and_says_when_it_is_over():
    outage = DatabaseOutage("ingest loop of edge e")
    waits, lines = [], []
    for second in range(0, 90, 3):  # a try every 3 s for 90 s, all failing
        wait, line = outage.failed(float(second), RuntimeError("server closed the connection\nsecond line"))
        waits.append(wait)
        lines.append(line)
    said = [line for line in lines if line]
    assert said[0] == ("ingest loop of edge e: the edge database fails (server closed the connection); the loop "
                       "waits for it and starts again, its data safe in the database or still in Kafka")
    assert said[1:] == ["ingest loop of edge e: the edge database still fails after 60 s (server closed the "
                        "connection)"]
    assert waits[:len(RETRY_SECONDS)] == list(RETRY_SECONDS) and set(waits[len(RETRY_SECONDS):]) == {RETRY_SECONDS[-1]}

    assert outage.step_done(100.0) is None  # the first good step
    assert outage.step_done(105.0) is None  # not yet steady
    assert outage.step_done(110.0) == "ingest loop of edge e: the edge database works again after 100 s"
    assert outage.step_done(111.0) is None
    wait, line = outage.failed(200.0, RuntimeError("disk full"))  # a new outage: said again, from the first wait
    assert wait == RETRY_SECONDS[0]
    assert line.startswith("ingest loop of edge e: the edge database fails (disk full); the loop waits")
