"""A dashboard socket that sends what the page never sends is closed with a close code and leaves the group.

Junk text or a binary frame raised inside channels' JSON decoding: the
application ended without its disconnect, the connection dropped without a
close frame, and its channel stayed in the dashboard group for the layer's
group expiry (a day, channels-redis's default), sent every update 4 times a
second. Here the real consumer runs on the real Redis channel layer; the
group is read from Redis as the cloud's publisher sees it.
"""

import asyncio
import base64
import copy
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest
import redis as redis_lib
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings

from cloud_app import consumers
from cloud_app.consumers import (CLOSE_INVALID, CLOSE_TOO_BIG, CLOSE_UNSUPPORTED, MAX_FRAME_CHARS, WS_MAX_BYTES,
                                 DashboardConsumer)
from cloud_app.server import DASHBOARD_GROUP
from fogwire.ratelog import RateLimitedLog
from tests.conftest import ROOT, free_port, wait_for
from tests.test_it_runs_the_procfile_in_compose import procfile
from tooling.net import port_open

JUNK = [  # each frame as the ASGI server hands it over
    ({"text": "not json"}, CLOSE_INVALID),
    ({"text": ""}, CLOSE_INVALID),
    ({"text": "[" * 100_000}, CLOSE_TOO_BIG),
    ({"text": "[" * (MAX_FRAME_CHARS - 1)}, CLOSE_INVALID),  # nested deeper than the JSON parser goes
    ({"bytes": b"\x00\xffjunk"}, CLOSE_UNSUPPORTED),
    ({"bytes": b'{"watch": "x"}'}, CLOSE_UNSUPPORTED),
    ({"bytes": b"x", "text": None}, CLOSE_UNSUPPORTED),
]
FLOOD = 12  # sockets, each with one junk frame
SHORT_EXPIRY = 2  # seconds: renewals every 0.4 s


def members(redis_url):
    """The dashboard group's channels, read where channels-redis keeps them."""
    layer = get_channel_layer()
    client = redis_lib.Redis.from_url(redis_url)
    try:
        return {name.decode() for name in client.zrange(f"{layer.prefix}:group:{DASHBOARD_GROUP}", 0, -1)}
    finally:
        client.close()


async def connected():
    socket = WebsocketCommunicator(DashboardConsumer.as_asgi(), "/ws/dashboard/")
    ok, _ = await socket.connect(timeout=10)
    assert ok
    assert (await socket.receive_json_from(timeout=10))["type"] == "summary"
    return socket


async def next_from_the_cloud(socket):
    """The next message but the web server's own "alive" (sent on a socket idle for ALIVE_EVERY_SECONDS)."""
    while (message := await socket.receive_json_from(timeout=5))["type"] == "alive":
        pass
    return message


def run_watching_the_loop(scenario):
    """Run `scenario`; returns what reached the loop's exception handler."""
    caught = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: caught.append(context))
        await scenario()

    asyncio.run(main())
    return caught


@pytest.mark.parametrize("frame, code", JUNK,
                         ids=["text", "empty", "oversized", "deep", "binary", "binary-json", "binary-text-none"])
def test_it_closes_with_a_code_and_leaves_the_group(cloud_settings, channel_redis_url, caplog, frame, code):
    async def scenario():
        socket = await connected()
        assert len(members(channel_redis_url)) == 1
        await socket.send_input({"type": "websocket.receive", **frame})
        closed = await socket.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": code}
        assert members(channel_redis_url) == set()  # at once, before the client answers the close
        await socket.disconnect()  # the client's side of the close; the consumer ends without an exception
        await socket.wait(timeout=5)

    with caplog.at_level(logging.WARNING):
        assert run_watching_the_loop(scenario) == []
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_it_says_so_in_a_few_lines_however_many_sockets_send_junk(cloud_settings, channel_redis_url, caplog,
                                                                  monkeypatch):
    monkeypatch.setattr(consumers, "junk_log", RateLimitedLog(logging.getLogger("fog.cloud"),
                                                              consumers.REFUSED_LOG_LINES, 60))

    async def scenario():
        for n in range(FLOOD):
            socket = await connected()
            await socket.send_input({"type": "websocket.receive", **JUNK[n % len(JUNK)][0]})
            assert (await socket.receive_output(timeout=5))["type"] == "websocket.close"
            await socket.disconnect()
            await socket.wait(timeout=5)
        assert members(channel_redis_url) == set()

    with caplog.at_level(logging.WARNING, logger="fog.cloud"):
        monkeypatch.setattr(logging.getLogger("fog.cloud"), "propagate", True)
        assert run_watching_the_loop(scenario) == []
    lines = [record for record in caplog.records if record.name == "fog.cloud"]
    assert all(record.levelno == logging.WARNING for record in lines)
    assert len(lines) == consumers.REFUSED_LOG_LINES and "closed with" in lines[0].getMessage()


def test_it_keeps_serving_sockets_that_send_what_the_page_sends(cloud_settings, channel_redis_url):
    async def scenario():
        socket = await connected()
        await socket.send_json_to({"watch": "hh-1"})
        await socket.send_json_to({"watch": None})
        await socket.send_json_to(["not", "a", "dict"])  # JSON the consumer has no use for: ignored
        await get_channel_layer().group_send(DASHBOARD_GROUP, {"type": "pipeline.update", "acked": 1})
        assert (await next_from_the_cloud(socket))["type"] == "update"
        assert len(members(channel_redis_url)) == 1
        await socket.disconnect()
        assert members(channel_redis_url) == set()

    assert run_watching_the_loop(scenario) == []


def test_it_sets_a_group_expiry_shorter_than_a_day():
    assert 0 < settings.CHANNEL_LAYERS["default"]["CONFIG"]["group_expiry"] <= 3600


@pytest.fixture
def short_expiry(cloud_settings):
    layer = copy.deepcopy(cloud_settings.CHANNEL_LAYERS["default"])
    layer["CONFIG"]["group_expiry"] = SHORT_EXPIRY
    cloud_settings.CHANNEL_LAYERS = {"default": layer}
    channel_layers.backends = {}
    yield
    channel_layers.backends = {}


def test_it_keeps_a_live_socket_in_the_group_past_the_expiry(short_expiry, channel_redis_url):
    async def scenario():
        socket = await connected()
        layer = get_channel_layer()
        dead = await layer.new_channel()
        await layer.group_add(DASHBOARD_GROUP, dead)  # a member that died without leaving
        await asyncio.sleep(SHORT_EXPIRY + 1.5)
        await layer.group_send(DASHBOARD_GROUP, {"type": "pipeline.update", "acked": 1})  # drops expired members
        assert (await next_from_the_cloud(socket))["type"] == "update"
        assert len(members(channel_redis_url)) == 1 and dead not in members(channel_redis_url)
        await socket.disconnect()

    started = time.monotonic()
    assert run_watching_the_loop(scenario) == []
    assert time.monotonic() - started < 15


def _half_sent_frame(port, declared, sent):
    """Open a dashboard socket by hand and send the start of a text frame of `declared` bytes, `sent` of them;
    the close code the server answers with within 3 s, or None if it waits for the rest."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        key = base64.b64encode(os.urandom(16)).decode()
        conn.sendall(f"GET /ws/dashboard/ HTTP/1.1\r\nHost: localhost\r\nOrigin: http://localhost\r\nUpgrade: "
                     f"websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13"
                     "\r\n\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += conn.recv(4096)
        assert answer.startswith(b"HTTP/1.1 101"), answer[:200]
        mask = os.urandom(4)
        conn.sendall(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", declared) + mask
                     + bytes(b ^ mask[i % 4] for i, b in enumerate(b"x" * sent)))
        got, deadline = answer.split(b"\r\n\r\n", 1)[1], time.monotonic() + 3  # the page's updates come on
        try:
            while (left := deadline - time.monotonic()) > 0:
                conn.settimeout(left)
                if not (more := conn.recv(65536)):
                    break
                got += more
        except TimeoutError:
            pass  # still open
    while len(got) >= 2:  # the server's frames (unmasked): the summary it sends first, then perhaps a close
        size, at = got[1] & 0x7F, 2
        if size >= 126:
            at = 4 if size == 126 else 10
            size = int.from_bytes(got[2:at], "big")
        if got[0] & 0x0F == 0x8:
            return struct.unpack("!H", got[at:at + 2])[0]
        got = got[at + size:]
    return None


def test_it_refuses_a_frame_beyond_the_pages_largest_in_the_web_server_as_shipped(services):
    """uvicorn buffers a frame whole before the consumer sees it (16 MiB by default): every anonymous socket
    could hold that much half-sent. The Procfile's web server, as `make demo` and compose run it, closes a
    socket as soon as it announces a frame past WS_MAX_BYTES."""
    command = procfile()["web"]
    port = free_port()
    command[command.index("--port") + 1] = str(port)
    web = subprocess.Popen([sys.executable, "-m", *command], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_for(lambda: port_open("127.0.0.1", port), timeout=60, interval=0.2)
        assert _half_sent_frame(port, declared=1 << 20, sent=WS_MAX_BYTES) == CLOSE_TOO_BIG
        assert _half_sent_frame(port, declared=WS_MAX_BYTES, sent=WS_MAX_BYTES // 2) is None  # within: awaited
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(10)
