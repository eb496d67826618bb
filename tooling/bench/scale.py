"""`bench scale`: the cloud with 1, 2, 4 replicas on one store, one replica on a single Redis against one on
a Redis Cluster, and 1, 3, 10 edges delivering at once.

Replicas: the same tuples in the same batches over the same number of Req contexts, from one Req socket
that dials every replica (as an edge does); only the replica count differs, and 1 replica is the
baseline. Edges: every edge (a real `runedge --burst` with its workers) drains a PENDING backlog of the
same size into one `runcloud`; the rate is all tuples over the span from the first SENT to the last
ACK in the edges' databases (process start-up is not in it), and 1 edge is the baseline. Engines: the
same tuples in the same batches into one replica, on the single Redis (the baseline) and on a local
3-master Redis Cluster this run starts on free ports in a folder of its own (tooling.localservices) and
ends; only the store's engine differs.
"""

import asyncio
import contextlib
import shutil
import tempfile
import time
from pathlib import Path

from django.conf import settings

from tooling.bench.cloud import _rows, _send_all
from tooling.bench.common import Figure, peak_rss_mib, write_generated
from cloud_app.engine import is_cluster
from tooling.fleet import MAX_EDGES, Fleet  # noqa: F401  (bench --help names the limit)
from tooling.localservices import CLUSTER_MASTERS, private_cluster
from fogwire import protocol as wire

SECTION = "scale"


def _fleet(edges, cloud_redis_url=None):
    return Fleet(bootstrap=settings.FOG_KAFKA_BOOTSTRAP, cloud_redis_url=cloud_redis_url or settings.FOG_CLOUD_REDIS_URL,
                 edge_redis_url=settings.FOG_EDGE_REDIS_URL, edges=edges, partitions=1)


def _replica_pass(count, tuples, batch, in_flight, out, cloud_redis_url=None):
    """(seconds, tuples served per replica, peak RSS per replica) of `tuples` sent into `count` replicas."""
    fleet = _fleet(1, cloud_redis_url)
    try:
        fleet.start_replicas(count, workers=max(2, 2 * in_flight // count))
        edge = fleet.edges[0]
        frames = [wire.batch_frame(edge.edge_id, edge.secret, _rows(i, min(batch, tuples - i)))
                  for i in range(0, tuples, batch)]
        addresses = ",".join(f"tcp://127.0.0.1:{data}" for _, _, data in fleet.replicas)
        out(f"scale: {tuples:,} tuples in batches of {batch} over {in_flight} contexts into {count} replica(s)"
            + (f" on {cloud_redis_url}" if cloud_redis_url else ""))
        seconds = asyncio.run(_send_all(addresses, frames, in_flight))
        if fleet.stored() != tuples:
            raise RuntimeError(f"{count} replicas stored {fleet.stored()} of {tuples} tuples")
        rss = [round(peak_rss_mib(proc.pid) or 0, 1) for proc, _, _ in fleet.replicas]
        served = [fleet.stop_replica(n).get("tuples", 0) for n in range(count)]
    finally:
        fleet.close()
    return seconds, served, rss


def run_replicas(replicas, tuples, batch, in_flight, out):
    rates = {}
    figures = []
    for count in replicas:
        seconds, served, rss = _replica_pass(count, tuples, batch, in_flight, out)
        rates[count] = tuples / seconds
        figures.append(Figure(f"scale cloud, {count} replica{'s' if count > 1 else ''}", rates[count], "tuples/s",
                              rates.get(1) if count != 1 else None, "",
                              {"seconds": round(seconds, 2), "tuples per replica": "/".join(map(str, served)),
                               "peak RSS MiB per replica": "/".join(map(str, rss))}))
    return figures


@contextlib.contextmanager
def local_cluster(out):
    """A 3-master Redis Cluster on free ports in a folder of its own, for this run only: its URL."""
    folder = Path(tempfile.mkdtemp(prefix="fog-bench-cluster-"))
    try:
        cluster = private_cluster(folder, out)
        try:
            yield cluster.url
        finally:
            cluster.down(out)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_engines(tuples, batch, in_flight, out):
    """One replica on the single Redis (the baseline), then on a Redis Cluster: same tuples, same batches."""
    single = settings.FOG_CLOUD_REDIS_URL
    if is_cluster(single):
        single = settings.FOG_CHANNEL_REDIS_URL  # a plain Redis, always
    figures, baseline = [], None
    with local_cluster(out) as cluster_url:
        for name, url in (("single Redis", single), (f"Redis Cluster of {CLUSTER_MASTERS} masters", cluster_url)):
            seconds, _, rss = _replica_pass(1, tuples, batch, in_flight, out, url)
            figures.append(Figure(f"scale store, {name}", tuples / seconds, "tuples/s", baseline, "",
                                  {"seconds": round(seconds, 2), "replicas": 1, "peak RSS MiB": rss[0],
                                   **({"against": "the same tuples into one replica on the single Redis"}
                                      if baseline else {})}))
            baseline = baseline or tuples / seconds
    return figures


def run_edges(edges, tuples_per_edge, batch, in_flight, out):
    rates = {}
    figures = []
    for count in edges:
        fleet = _fleet(count)
        try:
            for edge in fleet.edges:
                edge.seed_backlog(tuples_per_edge)
            out(f"scale: {count} edge(s) at once, each draining {tuples_per_edge:,} PENDING tuples into one cloud")
            started = time.monotonic()
            # The edges start while the cloud is not there yet, so they all begin sending within a heartbeat
            # of each other once it is, and no edge's start-up stretches the measured span.
            fleet.plan_replicas(1)
            fleet.start_edges("--batch", str(batch), "--in-flight", str(in_flight), "--timeout", "1500")
            # The sender loop (the ingest of an empty topic may already be done): it waits for the link.
            fleet.wait(lambda edges=fleet.edges: all(edge.running("sender") for edge in edges), 600,
                       "every edge's sender loop")
            fleet.start_replicas()
            codes = fleet.wait_edges(1800)
            wall = time.monotonic() - started
            failed = [edge.edge_id for edge in fleet.edges if codes[edge.edge_id] != 0]
            if failed:
                raise RuntimeError(f"edges {', '.join(failed)} did not finish:\n{fleet.log(failed[0])}")
            total = count * tuples_per_edge
            if fleet.stored() != total:
                raise RuntimeError(f"{count} edges: the cloud holds {fleet.stored()} of {total} tuples")
            spans = [edge.delivery_span() for edge in fleet.edges]
            seconds = (max(last for _, last in spans) - min(first for first, _ in spans)).total_seconds()
        finally:
            fleet.close()
        rates[count] = total / seconds
        figures.append(Figure(f"scale edges, {count} at once", rates[count], "tuples/s",
                              rates.get(1) if count != 1 else None, "",
                              {"tuples": total, "first SENT to last ACK s": round(seconds, 2),
                               "wall s with start-up": round(wall, 1)}))
    return figures


def run(replicas=(1, 2, 4), edges=(1, 3, 10), tuples=100_000, tuples_per_edge=20_000, batch=1000, in_flight=8,
        engine_tuples=100_000, out=print):
    return (run_replicas(replicas, tuples, batch, in_flight, out)
            + (run_engines(engine_tuples, batch, in_flight, out) if engine_tuples else [])
            + run_edges(edges, tuples_per_edge, batch, 4, out))


# --- the generated section (docs/BENCHMARKS.md and docs/SCALING.md) ------------------------------------

BEGIN, END = f"<!-- begin generated: bench {SECTION} -->", f"<!-- end generated: bench {SECTION} -->"
TARGET_EDGES = 100_000
HOUSEHOLDS_PER_EDGE = 100  # an edge for a street or a block
WINDOW_SECONDS = 5


def section(figures, command):
    """Markdown of one `bench scale` run: its figures, and what 100,000 edges would ask of the cloud at those
    figures (arithmetic on this run's numbers, nothing typed in)."""
    from tooling.bench.common import ran

    lines = [BEGIN, "", ran(command, "one local Redis (and for the store rows a local 3-master Redis Cluster), one "
                            "Kafka broker; every process on the same machine"), "",
             "| run | tuples/s | against the first of its series | details |", "|---|---|---|---|"]
    for figure in figures:
        ratio = f"x{figure.ratio:,.2f}" if figure.ratio else "baseline"
        details = figure.details()
        lines.append(f"| {figure.name} | {figure.value:,.0f} | {ratio} | {details} |")
    cloud = [f for f in figures if f.name.startswith("scale cloud")]
    if cloud:
        best = max(cloud, key=lambda f: f.value)
        load = TARGET_EDGES * HOUSEHOLDS_PER_EDGE / WINDOW_SECONDS
        lines += ["", f"{TARGET_EDGES:,} edges of {HOUSEHOLDS_PER_EDGE} households, one tuple per household every "
                  f"{WINDOW_SECONDS} s: {load:,.0f} tuples/s into the cloud. At this run's best cloud figure "
                  f"({best.name}: {best.value:,.0f} tuples/s on this machine) that is "
                  f"{load / best.value:,.1f} times what this machine's one Redis took."]
    return "\n".join(lines + ["", END])


def write_section(path, text):
    """Put `text` between the markers in `path`, or at its end if it has none yet."""
    write_generated(path, text, BEGIN, END)
