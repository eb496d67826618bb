"""`bench simulate` and `bench realtime`: runsimulation into the real broker, as a child process."""

import re
import time
import uuid

from fogwire.limits import MAX_READINGS_PER_MESSAGE
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


def _rate(count, until, client, per_message=MAX_READINGS_PER_MESSAGE):
    """runsimulation with `client` as its producer; (readings/s, readings, peak RSS MiB)."""
    match, rss = _simulation(["--households", str(count), "--until", str(until), "--client", client,
                              "--readings-per-message", str(per_message),
                              "--topic", f"bench-sim-{uuid.uuid4().hex[:8]}"])
    return float(match.group(4).replace(",", "")), int(match.group(1)), rss


def run_simulate(households=(10_000,), until=60, client="confluent", baseline_client="kafka-python", out=print):
    figures = []
    for count in households:
        out(f"simulate: {count:,} synthetic households, {until} simulated seconds at a 2 s step, --speed max, "
            f"{client} client, then the same with {baseline_client}, then with one reading a message")
        rate, readings, rss = _rate(count, until, client)
        base, _, _ = _rate(count, until, baseline_client)
        single, _, _ = _rate(count, until, client, per_message=1)
        label = "" if client == "confluent" else f" ({client})"
        figures.append(Figure(f"simulate {count:,} households{label}", rate, "readings/s", base,
                              ">= 100,000 readings/s",
                              {"readings": readings, "peak RSS MiB": rss, "us/reading": round(1e6 / rate, 2),
                               "against": f"the same run with the {baseline_client} producer"}))
        figures.append(Figure(f"simulate {count:,} households{label}, batches of {MAX_READINGS_PER_MESSAGE}", rate,
                              "readings/s", single, "",
                              {"against": "the same run with one reading a message, keyed by household"}))
    return figures


def run_realtime(households=10_000, until=60, out=print):
    out(f"realtime: {households:,} synthetic households at a 1 s step, --speed 1 for {until} s")
    match, rss = _simulation(["--households", str(households), "--until", str(until), "--step", "1", "--speed", "1",
                              "--topic", f"bench-rt-{uuid.uuid4().hex[:8]}"])
    return [Figure("realtime largest lag", float(match.group(5)), "s", None, "< 1 s",
                   {"readings": int(match.group(1)), "peak RSS MiB": rss})]
