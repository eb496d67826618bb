import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pynng

from tooling.localservices import Paths, Redis
from fogwire import protocol as wire
from tests.conftest import ROOT, _free_port, run_manage, wait_for


def test_it_refuses_a_redis_without_persistence(tmp_path):
    volatile = Redis(Paths(Path("."), tmp_path), "127.0.0.1", _free_port())
    volatile.config = lambda: Redis.config(volatile).replace("appendonly yes", "appendonly no")
    volatile.up(lambda line: None)
    try:
        env = {"FOG_CLOUD_REDIS_URL": f"redis://127.0.0.1:{volatile.port}/1",
               "FOG_EDGE_REDIS_URL": f"redis://127.0.0.1:{volatile.port}/0"}
        result = run_manage("runcloud", "--until", "1", "--heartbeat-port", str(_free_port()),
                            "--data-port", str(_free_port()), env=env)
        assert result.returncode == 1
        assert "persistence is off" in result.stderr and "--allow-volatile" in result.stderr
        allowed = run_manage("runcloud", "--until", "0.5", "--allow-volatile", "--heartbeat-port",
                             str(_free_port()), "--data-port", str(_free_port()), env=env)
        assert allowed.returncode == 0, allowed.stderr
    finally:
        volatile.down(lambda line: None)


def test_it_stops_within_five_seconds_of_sigterm(services, tmp_path):
    hb, data = _free_port(), _free_port()
    env = {**os.environ, "FOG_CLOUD_KEY_PREFIX": "test:sigterm:", "FOG_EDGE_SECRETS": "e1:Zq7-unlogged-secret"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "runcloud", "--heartbeat-port", str(hb),
                             "--data-port", str(data)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        with pynng.Req0(dial=f"tcp://127.0.0.1:{hb}", recv_timeout=2000) as sock:
            def answers():
                try:
                    beat = wire.heartbeat("e1", "Zq7-unlogged-secret")
                    sock.send(beat)
                    return "ts" in wire.open_reply(sock.recv(), beat, "Zq7-unlogged-secret", wire.KIND_HEARTBEAT)
                except pynng.NNGException:
                    return False
            assert wait_for(answers, timeout=20, interval=0.2)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        assert time.monotonic() - started < 5
        assert proc.returncode == 0
        assert "Zq7-unlogged-secret" not in proc.stderr.read() + proc.stdout.read()  # secrets never logged
    finally:
        proc.kill()
