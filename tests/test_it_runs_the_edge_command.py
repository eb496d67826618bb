"""`manage.py runedge`: a burst run to completion, a clean stop by signal or by `--stop`, a labelled summary."""

import re
import signal

import pytest
from django.core.management import CommandError, call_command

from cloud_app.keys import Keys
from edge_app.models import Status
from tests.conftest import child_env, edge_cloud, edge_db, held_loops, produce, reading, run_manage, start_edge, wait_for

T0 = 1_577_142_000_000


@pytest.mark.edge_db
def test_it_runs_a_burst_to_the_end_and_summarises(kafka_client, kafka_bootstrap, topic, edge_env, redis_url, cloud_prefix,
                                                  redis_client):
    produce(kafka_bootstrap, topic, [reading(f"h{h}", T0 + i * 1000, 50.0 + h) for i in range(60) for h in range(10)])
    cloud = edge_cloud(edge_env, redis_url, cloud_prefix)
    try:
        result = run_manage("runedge", "--burst", "--timeout", "90", "--topic", topic, "-v", "0",
                            env=child_env(edge_env), timeout=150)
        again = run_manage("runedge", "--burst", "--timeout", "90", "--topic", topic, "-v", "0",
                           env=child_env(edge_env), timeout=150)
    finally:
        cloud.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    line = result.stdout.strip().splitlines()[-1]
    assert re.search(r"ended=done .*worker_starts=3; this run: readings=600 windows=120 late=0 malformed=0 "
                     r"acked=120 refused=0; lifetime: readings=600 windows=120 acked=120 pending=0 refused=0$", line), line
    # Closing the Kafka consumer at the end of a burst is quiet: no cancelled offset commit reported as an error.
    assert "OffsetCommitRequest" not in result.stderr and "ERROR" not in result.stderr, result.stderr[-3000:]
    assert redis_client.hlen(Keys(cloud_prefix).tuples(edge_env["FOG_EDGE_ID"])) == 120
    with edge_db(edge_env) as db:
        counts = db.execute("select count(*), min(status), max(status) from edge_app_windowaggregate").fetchone()
        assert counts == (120, Status.ACKED, Status.ACKED)
    # A second run finds nothing new: its own counts are zero, the lifetime ones unchanged.
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(r"this run: readings=0 windows=0 late=0 malformed=0 acked=0 refused=0; lifetime: "
                     r"readings=600 windows=120 acked=120 pending=0 refused=0$",
                     again.stdout.strip().splitlines()[-1]), again.stdout


@pytest.mark.serial  # a wall-clock bound
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])  # SIGHUP: its terminal closed
def test_it_stops_every_loop_within_five_seconds_on_a_signal_and_says_so(kafka_bootstrap, topic, edge_env,
                                                                        redis_url, cloud_prefix, signum):
    produce(kafka_bootstrap, topic, [reading("h", T0, 1.0)])
    cloud = edge_cloud(edge_env, redis_url, cloud_prefix)
    proc = start_edge(edge_env, topic)
    try:
        proc.send_signal(signum)
        # The README's promise: every loop stops within 5 s (its lock freed); the process follows.
        assert wait_for(lambda: not held_loops(edge_env), timeout=5, interval=0.05)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.communicate()
        cloud.stop()
    assert proc.returncode == 0, err[-3000:]
    assert re.search(r"ended=signal ", out.strip().splitlines()[-1]), out


def test_it_stops_a_running_supervisor_with_stop(kafka_bootstrap, topic, edge_env, redis_url, cloud_prefix):
    produce(kafka_bootstrap, topic, [reading("h", T0, 1.0)])
    cloud = edge_cloud(edge_env, redis_url, cloud_prefix)
    proc = start_edge(edge_env, topic)
    try:
        stop = run_manage("runedge", "--stop", env=child_env(edge_env))
        assert stop.returncode == 0, stop.stderr
        out, err = proc.communicate(timeout=20)  # the supervisor itself ends: no re-enqueueing
    finally:
        proc.kill()
        proc.communicate()
        cloud.stop()
    assert "enqueueing it again" not in err, err[-3000:]
    assert re.search(r"ended=stop ", out.strip().splitlines()[-1]), out
    assert not held_loops(edge_env)


@pytest.mark.parametrize("batch", ["0", "5001"])
def test_it_refuses_a_batch_the_protocol_does_not_carry(batch, edge_env):
    result = run_manage("runedge", "--batch", batch, env=child_env(edge_env), timeout=60)
    assert result.returncode == 1 and "--batch must be 1..5000" in result.stderr, result.stderr[-2000:]


def test_it_names_an_edge_database_without_its_tables_instead_of_a_traceback(tmp_path, edge_env):
    env = {**child_env(edge_env), "FOG_DATABASE_URL": f"sqlite:///{tmp_path / 'never-migrated.sqlite3'}"}
    result = run_manage("runedge", "--burst", "--timeout", "5", env=env, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "never-migrated.sqlite3) lacks" in result.stderr and "manage.py migrate" in result.stderr


@pytest.mark.parametrize("option, value, expected", [
    ("--idle", "-1", "expected a number > 0, got '-1'"),
    ("--idle", "nan", "expected a number > 0, got 'nan'"),
    ("--timeout", "nan", "expected a number > 0, got 'nan'"),
    ("--timeout", "-5", "expected a number > 0, got '-5'"),
    ("--topic", "", "expected 1..249 of A-Z a-z 0-9 . _ - (a Kafka topic name), got ''"),  # FOG_TOPIC's rule
    ("--topic", "a/b", "expected 1..249 of A-Z a-z 0-9 . _ - (a Kafka topic name), got 'a/b'"),
])
def test_it_refuses_an_option_value_it_cannot_run_with(option, value, expected):
    # Parsed before anything starts: argparse's one line (exit status 2 from the command line).
    with pytest.raises(CommandError, match=re.escape(f"argument {option}: {expected}")):
        call_command("runedge", option, value)
