import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import pynng

from cloud_app import server
from fogwire import protocol as wire
from tests.conftest import EDGE_ID, EDGE_SECRET, ROOT, CloudThread, free_port, wait_for


def test_it_stops_within_five_seconds_of_sigterm(services, tmp_path):
    hb, data = free_port(), free_port()
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


def test_it_stops_though_a_request_in_hand_lost_its_cancel(redis_url, cloud_prefix, monkeypatch):
    entered = threading.Event()

    async def loses_its_cancel(self, frame):
        entered.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            pass  # as 3.11's wait_for does when the cancel meets the end of a redis-py write
        return b"late"

    monkeypatch.setattr(server, "SHUTDOWN_SECONDS", 0.5)
    monkeypatch.setattr(server.CloudServer, "handle_data", loses_its_cancel)
    cloud = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}).start()

    def ask():
        with contextlib.suppress(pynng.NNGException):
            cloud.request(b"any", timeout_ms=3000)

    try:
        threading.Thread(target=ask, daemon=True).start()
        assert entered.wait(5)
        started = time.monotonic()
        cloud.stop()
        assert not cloud.thread.is_alive(), "the cloud went on serving after its stop"
        assert time.monotonic() - started < 3
    finally:
        cloud.stop()
