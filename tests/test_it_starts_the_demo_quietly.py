"""A short `make demo`-like run (honcho and the Procfile) prints no line a new user reads as a fault (issue 18).

The whole Procfile runs as `make demo` runs it, isolated: its own Redis
(in a temporary folder, AOF fsynced as the cloud requires), a fresh topic,
free ports, a temporary edge database. It runs until the cloud has stored
tuples, is stopped as Ctrl-C stops it, and its output lines are counted.
"""

import os
import signal
import subprocess
import uuid

import pytest
import redis

from edge_app.processes import with_environment
from tests.conftest import ROOT, free_port, child_env, run_manage, wait_for

FIRST_TUPLES_WITHIN_S = 120  # windows close 5 s + grace after their readings; slack for a loaded machine


@pytest.fixture
def own_redis(tmp_path):
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
                             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        assert wait_for(lambda: _answers(client), timeout=20), "the test's own redis-server did not start"
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(client):
    try:
        return client.ping()
    except redis.exceptions.ConnectionError:
        return False


def _demo_env(tmp_path, topic, own_redis):
    return {
        "FOG_VAR_DIR": str(tmp_path / "var"),
        "FOG_DATABASE_URL": f"sqlite:///{tmp_path / 'edge.sqlite3'}",
        "FOG_EDGE_REDIS_URL": f"redis://127.0.0.1:{own_redis}/0",
        "FOG_CLOUD_REDIS_URL": f"redis://127.0.0.1:{own_redis}/1",
        "FOG_TOPIC": topic,
        "FOG_EDGE_ID": f"demo-{uuid.uuid4().hex[:6]}",
        "FOG_HEARTBEAT_PORT": str(free_port()),
        "FOG_DATA_PORT": str(free_port()),
        "WEB_PORT": str(free_port()),
        "DEMO_HOUSEHOLDS": "20",
        "PYTHONUNBUFFERED": "1",
    }


def test_it_runs_the_demo_without_lifespan_noise_or_tracebacks(tmp_path, topic, own_redis):
    env = _demo_env(tmp_path, topic, own_redis)
    assert run_manage("migrate", "--noinput", "-v", "0", env=env).returncode == 0
    cloud = redis.Redis(port=own_redis, db=1)
    honcho = subprocess.Popen([str(ROOT / ".venv/bin/honcho"), "start", "-f", "Procfile", "--no-colour"],
                              cwd=ROOT, env=child_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    try:
        stored = wait_for(lambda: cloud.dbsize() > 1 or honcho.poll() is not None, timeout=FIRST_TUPLES_WITHIN_S,
                          interval=0.5)
        running = honcho.poll() is None
        honcho.send_signal(signal.SIGINT)  # what Ctrl-C sends
        output, _ = honcho.communicate(timeout=60)
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.communicate()
    lines = output.splitlines()
    assert running and stored, "\n".join(lines[-40:])
    assert [line for line in lines if "lifespan" in line] == []
    assert [line for line in lines if "Traceback" in line] == [], "\n".join(lines)
    slow_task = [line for line in lines if "blocking the event loop" in line]
    assert len(slow_task) <= 4, "\n".join(slow_task)  # at most one a minute from each process that logs it


def test_it_ends_every_process_of_the_demo_when_its_terminal_closes(tmp_path, topic, own_redis):
    """A closed terminal sends SIGHUP to honcho and its helpers, not to the Procfile's processes (each in a session
    of its own): they end by the parent-death signal the Procfile gives them, not run on for a day."""
    env = _demo_env(tmp_path, topic, own_redis)
    assert run_manage("migrate", "--noinput", "-v", "0", env=env).returncode == 0
    honcho = subprocess.Popen([str(ROOT / ".venv/bin/honcho"), "start", "-f", "Procfile", "--no-colour"],
                              cwd=ROOT, env=child_env(env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    marker = ("FOG_EDGE_ID", env["FOG_EDGE_ID"])
    try:
        # web (uvicorn and its two workers), cloud, edge (and its workers), simulation: all started
        assert wait_for(lambda: len([cmd for cmd in with_environment(*marker).values() if "manage.py" in cmd]) >= 3,
                        timeout=60, interval=0.5), with_environment(*marker)
        os.killpg(honcho.pid, signal.SIGHUP)  # what a terminal that closes sends its foreground process group
        honcho.wait(30)
        assert wait_for(lambda: not with_environment(*marker), timeout=30, interval=0.5), with_environment(*marker)
    finally:
        for pid in [honcho.pid, *with_environment(*marker)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        honcho.wait(10)
