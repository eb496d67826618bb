"""`bench latency`: window close -> ACK in the edge database, at real time, through the real pipeline."""

import time
from datetime import datetime
from types import SimpleNamespace

from django.conf import settings

from edge_app.models import Status
from tooling.chaos.pipeline import Pipeline
from tooling.bench.common import Figure, percentile
from tooling.net import wait_for

SETTLE_SECONDS = 60


def _ms(text):
    return datetime.fromisoformat(text).timestamp() * 1000


def _delivered(counts):
    return counts.get(Status.ACKED, 0) > 0 and not counts.get(Status.PENDING) and not counts.get(Status.SENT)


def run(households=1000, seconds=60, out=print):
    services = SimpleNamespace(bootstrap=settings.FOG_KAFKA_BOOTSTRAP, redis_url=settings.FOG_CLOUD_REDIS_URL)
    edge_redis = settings.FOG_EDGE_REDIS_URL.rsplit("/", 1)[0] + "/13"
    pipeline = Pipeline(services, edge_redis, households=households, until=seconds, speed=1.0, proxied=False,
                        simulation_args=["--start", "now"])
    try:
        pipeline.start_cloud()
        pipeline.start_edge()
        time.sleep(3)  # workers up and the link reported before the first window closes
        out(f"latency: {households:,} households at real time for {seconds} s")
        pipeline.start_simulation()
        pipeline.simulation.wait(seconds + 60)
        time.sleep(5)  # the last windows close (grace, idle)
        wait_for(lambda: _delivered(pipeline.counts()), SETTLE_SECONDS)  # and are delivered, however busy the machine
        rows = pipeline.rows(f"select created_at, acked_at from edge_app_windowaggregate where status = {int(Status.ACKED)}")
    finally:
        try:
            pipeline.close()
        finally:  # the topic and the cloud keys go even if a process would not
            pipeline.forget()
    if not rows:
        raise RuntimeError("no window was acknowledged")
    latencies = [_ms(acked) - _ms(created) for created, acked in rows]
    return [Figure("latency stored -> ACK p99", percentile(latencies, 0.99), "ms", None, "p99 <= 100 ms",
                   {"p50 ms": round(percentile(latencies, 0.5), 1), "max ms": round(max(latencies), 1),
                    "windows": len(rows)})]
