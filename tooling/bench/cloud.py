"""`bench cloud`: the cloud alone (decode, verify, Redis write, reply), batches vs one tuple a request."""

import asyncio
import time
import uuid

import pynng
from django.conf import settings

from cloud_app.engine import connect, is_cluster
from tooling.bench.common import Figure, delete_prefix, manage, peak_rss_mib, stop
from tooling.net import free_port, port_open, wait_for
from fogwire import protocol as wire

EDGE, SECRET = "bench-edge", "bench-secret-not-for-production"
BASE_MS = 1_577_142_000_000


def _rows(first_id, count):
    return [(i, f"household-{i % 1000}", BASE_MS + (i // 1000) * 5000, BASE_MS + (i // 1000 + 1) * 5000,
             200.0 + (i % 97) * 0.5, 3) for i in range(first_id, first_id + count)]


async def _send_all(address, frames, in_flight):
    """Send every frame over `in_flight` concurrent Req contexts; returns seconds taken.
    `address` may list several cloud replicas, comma-separated: one Req socket dials them all."""
    queue = list(reversed(frames))
    with pynng.Req0(recv_timeout=30000, recv_max_size=0) as sock:
        for one in address.split(","):
            sock.dial(one, block=True)
        async def client():
            ctx = sock.new_context()
            try:
                while queue:
                    frame = queue.pop()
                    await ctx.asend(frame)
                    reply = await ctx.arecv()
                    if reply[:4] == wire.MAGIC and reply[4] == wire.KIND_ERROR:
                        raise RuntimeError(f"cloud refused a benchmark batch: {reply[:200]!r}")
            finally:
                ctx.close()

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(in_flight)))
        return time.perf_counter() - started


def _heartbeat_answers(address):
    host, port = address.rsplit("/", 1)[1].split(":")
    if not port_open(host, int(port)):  # pynng prints a traceback when a first dial is refused
        return False
    try:
        with pynng.Req0(dial=address, recv_timeout=1000, send_timeout=1000) as sock:
            sock.send(wire.heartbeat(EDGE, SECRET))
            return bool(sock.recv())
    except pynng.NNGException:
        return False


def _redis_use(client):
    """(CPU seconds, bytes of memory) the store's Redis has used so far (INFO, of the whole server, so a busy
    neighbour shows in the difference); None on a cluster, whose nodes each answer for themselves."""
    if client is None:
        return None
    cpu, memory = client.info("cpu"), client.info("memory")
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"], memory["used_memory"]


def _per_tuple(before, after, tuples):
    """The store keeps every tuple: what one costs its Redis, in CPU and in memory that stays."""
    if before is None:
        return {}
    return {"redis cpu us/tuple": round((after[0] - before[0]) / tuples * 1e6, 1),
            "redis memory bytes/tuple": round((after[1] - before[1]) / tuples)}


def run(tuples=100_000, batch=1000, in_flight=4, baseline_tuples=2000, out=print):
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    hb, data = free_port(), free_port()
    proc = manage("runcloud", "--heartbeat-port", str(hb), "--data-port", str(data), "--workers", str(in_flight * 2),
                  "-v", "0", env={"FOG_CLOUD_KEY_PREFIX": prefix, "FOG_EDGE_SECRETS": f"{EDGE}:{SECRET}"})
    try:
        wait_for(lambda: _heartbeat_answers(f"tcp://127.0.0.1:{hb}"), 30, "runcloud")
        address = f"tcp://127.0.0.1:{data}"

        def batches(first):  # new ids each pass, so no pass meets the cloud's dedup
            return [wire.batch_frame(EDGE, SECRET, _rows(first + i, min(batch, tuples - i)))
                    for i in range(0, tuples, batch)]

        out(f"cloud: {tuples:,} tuples in batches of {batch} over {in_flight} contexts; the same batches over 1; "
            f"then {baseline_tuples:,} tuples one a request over 1")
        store = None if is_cluster(settings.FOG_CLOUD_REDIS_URL) else connect(settings.FOG_CLOUD_REDIS_URL)
        try:
            before = _redis_use(store)
            seconds = asyncio.run(_send_all(address, batches(0), in_flight))
            after = _redis_use(store)
        finally:
            if store is not None:
                store.close()
        one_seconds = asyncio.run(_send_all(address, batches(tuples), 1))
        single = [wire.batch_frame(EDGE, SECRET, _rows(2 * tuples + i, 1)) for i in range(baseline_tuples)]
        single_seconds = asyncio.run(_send_all(address, single, 1))
        return [Figure(f"cloud, {in_flight} in flight", tuples / seconds, "tuples/s", tuples / one_seconds,
                       ">= 100,000 tuples/s",
                       {"seconds": round(seconds, 2), "cloud peak RSS MiB": round(peak_rss_mib(proc.pid) or 0, 1),
                        **_per_tuple(before, after, tuples),
                        "against": f"the same batches of {batch}, 1 in flight"}),
                Figure(f"cloud, batches of {batch}", tuples / one_seconds, "tuples/s",
                       baseline_tuples / single_seconds, "", {"against": "one tuple a request, 1 in flight"})]
    finally:
        stop(proc)
        delete_prefix(settings.FOG_CLOUD_REDIS_URL, prefix)
