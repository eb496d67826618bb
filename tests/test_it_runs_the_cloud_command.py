import asyncio
import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time

import pynng
import pytest
from django.core.management import CommandError, call_command

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


@pytest.mark.parametrize("option, value, expected", [
    ("--workers", "0", "expected 1..1024, got 0"),  # the edges would see the link up and no batch served
    ("--workers", "-3", "expected 1..1024, got -3"),
    ("--workers", "100000", "expected 1..1024, got 100000"),
    ("--heartbeat-port", "70000", "expected 1..65535, got 70000"),  # FOG_HEARTBEAT_PORT's range
    ("--data-port", "0", "expected 1..65535, got 0"),
    ("--until", "-1", "expected a number > 0, got '-1'"),
    ("--until", "nan", "expected a number > 0, got 'nan'"),
    ("--bind", "0.0.0.0:80", "expected a host name or IP address (no scheme, port or path), got '0.0.0.0:80'"),
])
def test_it_refuses_an_option_value_it_cannot_serve_with(option, value, expected):
    # Parsed before anything starts: argparse's one line (exit status 2 from the command line).
    with pytest.raises(CommandError, match=re.escape(f"argument {option}: {expected}")):
        call_command("runcloud", option, value)


def _ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_it_leaves_the_signal_handlers_of_the_process_it_ran_in_as_they_were(cloud_settings, capsys):
    """asyncio puts SIG_DFL back when it removes a handler: a test session that ran runcloud in its own process
    then died of a SIGTERM instead of taking it as Ctrl-C and ending what it started."""
    def handler(signum, frame):
        pass

    before = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        call_command("runcloud", "--heartbeat-port", str(free_port()), "--data-port", str(free_port()), "--until", "0.3")
        assert "cloud stopped" in capsys.readouterr().out
        assert signal.getsignal(signal.SIGTERM) is handler and signal.getsignal(signal.SIGHUP) is handler
    finally:
        for signum, previous in before.items():
            signal.signal(signum, previous)


@pytest.mark.skipif(not _ipv6_loopback(), reason="this host has no IPv6 loopback")
@pytest.mark.parametrize("bind", ["::1", "[::1]"])
def test_it_listens_on_the_ipv6_loopback(bind, cloud_settings, capsys):
    call_command("runcloud", "--bind", bind, "--heartbeat-port", str(free_port()), "--data-port", str(free_port()),
                 "--until", "0.3")  # tcp://[::1]:port: nng takes an IPv6 address only in brackets
    assert "cloud stopped" in capsys.readouterr().out


def test_it_names_an_address_it_cannot_listen_on(cloud_settings):
    hb, data = free_port(), free_port()
    cloud_settings.FOG_EDGE_SECRETS = f"{EDGE_ID}:{secrets.token_urlsafe(32)}"  # strong: not refused before the bind
    with pytest.raises(CommandError, match=re.escape(f"can't listen on 192.0.2.1 (ports {hb} and {data}): "
                                                     "Address invalid; is it an address of this host?")):
        call_command("runcloud", "--bind", "192.0.2.1", "--heartbeat-port", str(hb), "--data-port", str(data),
                     "--insecure-plaintext", "--until", "0.3")  # 192.0.2.1: TEST-NET-1, no host's address
