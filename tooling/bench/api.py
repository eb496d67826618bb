"""`bench api`: /api/states/ under concurrent clients with many tuples stored, OneHopASGIHandler beside Django's stock
ASGIHandler on the same server, data and load."""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

from cloud_app.consumers import WS_MAX_BYTES
from cloud_app.engine import connect_async
from django.conf import settings

from cloud_app.store import CloudStore
from tooling.bench.common import ROOT, Figure, delete_prefix, percentile, stop
from tooling.net import NotReady, free_port, listeners, wait_for
from tooling.signals import start_child

T0 = 1_577_142_000_000
SHIPPED_APP = "fogsite.asgi:application"
STOCK_APP = "tooling.bench.stock_asgi:application"
# The web server as `make demo` runs it (Procfile).
WEB_ARGS = ["--host", "127.0.0.1", "--workers", "2", "--no-access-log", "--lifespan", "off",
            "--ws-max-size", str(WS_MAX_BYTES), "--log-level", "warning"]
WEB_READY_SECONDS = 60
# A free port another process of a parallel test run bound first: the server exits at once, and another port is tried.
WEB_PORT_TRIES = 3


async def _seed(prefix, tuples, households, out):
    client = connect_async(settings.FOG_CLOUD_REDIS_URL)
    store = CloudStore(client, prefix)
    batch = 5000
    for first in range(0, tuples, batch):
        rows = [(i, f"house-{i % households}", T0 + (i // households) * 5000, T0 + (i // households + 1) * 5000,
                 150.0 + (i % 311), 3) for i in range(first, min(tuples, first + batch))]
        await store.store("bench-edge", rows)
        if first % 200_000 == 0:
            out(f"api: stored {first:,} of {tuples:,} tuples")
    await client.aclose()


def _serve(app, prefix):
    """uvicorn serving `app` on a port of its own, once it listens; why it did not, if it did not."""
    for attempt in range(WEB_PORT_TRIES):
        port = free_port()
        with tempfile.TemporaryFile() as log:
            web = start_child([sys.executable, "-m", "uvicorn", app, *WEB_ARGS, "--port", str(port)], cwd=ROOT,
                              stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "FOG_CLOUD_KEY_PREFIX": prefix})
            try:
                state = wait_for(lambda web=web, port=port: "exited" if web.poll() is not None
                                 else "serving" if _holds_listener(web.pid, port) else None, WEB_READY_SECONDS)
            except BaseException:
                stop(web)
                raise
            if state == "serving":
                return web, port
            exited = web.poll()
            stop(web)
            log.seek(0)
            said = log.read().decode(errors="replace").strip()
        if "address already in use" not in said.lower() or attempt == WEB_PORT_TRIES - 1:
            why = f"it exited with code {exited}" if exited is not None else f"not within {WEB_READY_SECONDS} s"
            raise NotReady(f"uvicorn did not listen on 127.0.0.1:{port} ({why})" + (f": {said[-800:]}" if said else ""))


def _holds_listener(pid, port):
    """The process holds the socket listening on the port: a server another process started there meanwhile
    answers a connect as well, and the load would measure it instead."""
    listening = {f"socket:[{inode}]" for inode in listeners(port)}
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") in listening for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:  # gone, or an fd closed while we looked: the next look tells
        return False


def _serve_and_load(app, prefix, clients, requests):
    """uvicorn serving `app` as `make demo` does; the latencies (ms) and seconds of the load from a second process."""
    web, port = _serve(app, prefix)
    try:
        url = f"http://127.0.0.1:{port}/api/states/"
        subprocess.run([sys.executable, "-m", "tooling.bench.load", url, "2", "20"], cwd=ROOT, check=True,
                       capture_output=True)  # warm-up
        load = subprocess.run([sys.executable, "-m", "tooling.bench.load", url, str(clients), str(requests)],
                              cwd=ROOT, check=True, capture_output=True, text=True)
        result = json.loads(load.stdout)
        return result["latencies"], result["seconds"]
    finally:
        stop(web)


def run(tuples=1_000_000, households=10_000, clients=8, requests=250, out=print):
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    try:
        started = time.perf_counter()
        asyncio.run(_seed(prefix, tuples, households, out))
        out(f"api: {tuples:,} tuples stored in {time.perf_counter() - started:.1f} s; {clients} clients x {requests} "
            "requests from a second process, against Django's stock ASGIHandler, then OneHopASGIHandler")
        stock, _ = _serve_and_load(STOCK_APP, prefix, clients, requests)
        latencies, seconds = _serve_and_load(SHIPPED_APP, prefix, clients, requests)
        p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
        return [Figure("api /api/states/ p99", p99, "ms", percentile(stock, 0.99), "<= 20 ms",
                       {"p50 ms": round(p50, 2), "requests/s": round(len(latencies) / seconds), "tuples": tuples,
                        "against": "Django's stock ASGIHandler, all else the same"})]
    finally:
        delete_prefix(settings.FOG_CLOUD_REDIS_URL, prefix)
