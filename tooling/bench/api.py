"""`bench api`: /api/states/ under concurrent clients with many tuples stored, beside a naive scan."""

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

import redis
import redis.asyncio as aioredis
from django.conf import settings

from cloud_app.store import CloudStore, Keys, Record
from tooling.bench.common import ROOT, Figure, delete_prefix, free_port, percentile, stop, wait_until
from tooling.localservices import port_open

T0 = 1_577_142_000_000
# The web server as `make demo` runs it (Procfile).
WEB_ARGS = ["fogsite.asgi:application", "--host", "127.0.0.1", "--workers", "2", "--no-access-log",
            "--lifespan", "off", "--log-level", "warning"]


async def _seed(prefix, tuples, households, out):
    client = aioredis.Redis.from_url(settings.FOG_CLOUD_REDIS_URL)
    store = CloudStore(client, prefix)
    batch = 5000
    for first in range(0, tuples, batch):
        rows = [(i, f"house-{i % households}", T0 + (i // households) * 5000, T0 + (i // households + 1) * 5000,
                 150.0 + (i % 311), 3) for i in range(first, min(tuples, first + batch))]
        await store.store("bench-edge", rows)
        if first % 200_000 == 0:
            out(f"api: stored {first:,} of {tuples:,} tuples")
    await client.aclose()


def naive_states(prefix):
    """The original prototype's way: read every tuple, sum per state, per call."""
    client = redis.Redis.from_url(settings.FOG_CLOUD_REDIS_URL)
    sums = {}
    for tid, raw in client.hscan_iter(Keys(prefix).tuples("bench-edge"), count=5000):
        record = Record.decode(raw)
        total, count = sums.get(record.state, (0.0, 0))
        sums[record.state] = (total + record.avg, count + 1)
    client.close()
    return sums



def run(tuples=1_000_000, households=10_000, clients=8, requests=250, baseline_calls=2, out=print):
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    port = free_port()
    web = None
    try:
        started = time.perf_counter()
        asyncio.run(_seed(prefix, tuples, households, out))
        out(f"api: {tuples:,} tuples stored in {time.perf_counter() - started:.1f} s; starting uvicorn")
        web = subprocess.Popen([sys.executable, "-m", "uvicorn", *WEB_ARGS, "--port", str(port)],
                               cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL,
                               env={**os.environ, "FOG_CLOUD_KEY_PREFIX": prefix})
        wait_until(lambda: port_open("127.0.0.1", port), 30, "uvicorn")
        url = f"http://127.0.0.1:{port}/api/states/"
        subprocess.run([sys.executable, "-m", "tooling.bench.load", url, "2", "20"], cwd=ROOT, check=True,
                       capture_output=True)  # warm-up
        out(f"api: {clients} clients x {requests} requests from a second process")
        load = subprocess.run([sys.executable, "-m", "tooling.bench.load", url, str(clients), str(requests)],
                              cwd=ROOT, check=True, capture_output=True, text=True)
        result = json.loads(load.stdout)
        latencies = result["latencies"]
        scans = []
        for _ in range(baseline_calls):
            began = time.perf_counter()
            naive_states(prefix)
            scans.append((time.perf_counter() - began) * 1000)
        p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
        return [Figure("api /api/states/ p99", p99, "ms", None, "<= 20 ms",
                       {"p50 ms": round(p50, 2), "requests/s": round(len(latencies) / result["seconds"]),
                        "tuples": tuples, "naive scan ms/call": round(statistics.median(scans), 1),
                        "x faster than the scan (p99)": round(statistics.median(scans) / p99, 1)})]
    finally:
        if web is not None:
            stop(web)
        delete_prefix(settings.FOG_CLOUD_REDIS_URL, prefix)
