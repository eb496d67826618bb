"""`bench simulate` and `bench realtime`: runsimulation into the real broker, as a child process."""

import re
import time
import uuid

from django.conf import settings

from tooling.bench.common import Figure, manage, peak_rss_mib

SUMMARY = re.compile(r"sent=(\d+) failed=(\d+) seconds=([\d.]+) readings/s=([\d,]+)(?:.*max_lag_s=([\d.]+))?")


def _simulation(args):
    """Run runsimulation; returns (summary match, peak RSS MiB sampled while it ran)."""
    proc = manage("runsimulation", "--no-progress", "-v", "0", *args, stdout=-1, stderr=-1, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, peak_rss_mib(proc.pid) or 0.0)
        time.sleep(0.1)
    out, err = proc.stdout.read(), proc.stderr.read()
    match = SUMMARY.search(out)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"runsimulation failed ({proc.returncode}): {err.strip()[-1500:]}")
    return match, round(peak, 1)


def _baseline(readings):
    """The original prototype's pattern: one produce and one flush per reading."""
    from confluent_kafka import Producer

    topic = f"bench-base-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": settings.FOG_KAFKA_BOOTSTRAP, "acks": "all"})
    started = time.perf_counter()
    for i in range(readings):
        producer.produce(topic, b'{"household":"h","ts":%d,"power_w":1.0}' % (1_577_142_000_000 + i), b"h")
        producer.flush()
    return readings / (time.perf_counter() - started)


def run_simulate(households=(10_000,), until=60, baseline_readings=2000, client="confluent", out=print):
    base = _baseline(baseline_readings)
    figures = []
    for count in households:
        out(f"simulate: {count:,} synthetic households, {until} simulated seconds at a 2 s step, --speed max, "
            f"{client} client")
        match, rss = _simulation(["--households", str(count), "--until", str(until), "--client", client,
                                  "--topic", f"bench-sim-{uuid.uuid4().hex[:8]}"])
        rate = float(match.group(4).replace(",", ""))
        label = "" if client == "confluent" else f" ({client})"
        figures.append(Figure(f"simulate {count:,} households{label}", rate, "readings/s", base, ">= 100,000 readings/s",
                              {"readings": int(match.group(1)), "peak RSS MiB": rss, "us/reading": round(1e6 / rate, 2)}))
    return figures


def run_realtime(households=10_000, until=60, out=print):
    out(f"realtime: {households:,} synthetic households at a 1 s step, --speed 1 for {until} s")
    match, rss = _simulation(["--households", str(households), "--until", str(until), "--step", "1", "--speed", "1",
                              "--topic", f"bench-rt-{uuid.uuid4().hex[:8]}"])
    return [Figure("realtime largest lag", float(match.group(5)), "s", None, "< 1 s",
                   {"readings": int(match.group(1)), "peak RSS MiB": rss})]
