"""The fault matrix. Each scenario runs the real pipeline, injects one fault, lifts it, and
returns when the fault ended; the runner then waits for quiescence and reconciles."""

import time
from dataclasses import dataclass

from edge_app.processes import alive
from edge_app.models import Status
from fogwire.limits import MAX_READINGS_PER_MESSAGE
from tooling.chaos.pipeline import STEP_S, Pipeline, PipelineClosed

FIRST_ACKS = 1000  # inject the fault only once delivery is under way
CAUGHT_UP = 2000  # a backlog this small is what is normally in flight: recovered
BACKLOG = 100_000
OUTAGE_SECONDS = 600  # budget-outage: simulated seconds the cloud is away
BUDGET_SHARE = 4  # budget-outage: the budget holds a quarter of the backlog the outage builds
FOLLOW_SECONDS = 2.0  # a killed supervisor's workers must be gone by then
CRASHES, CRASH_WINDOW_SECONDS = 5, 60  # repeated-crash: this many whole-edge crashes within this time
CRASH_GAP_SECONDS = 1.5  # how long the edge works between two crashes once its loops run again
# repeated-crash streams until its last crash is over, however long the edge takes to start again on a slow
# machine (Pipeline.stop_simulation); `until` only bounds it. A third of the speed keeps the backlog small.
SLOWER = {"repeated-crash": 3}
STOPPED_BY_SCENARIO = {"repeated-crash": 7200}  # the bound of a stream the scenario stops itself, simulated s


class ScenarioError(Exception):
    """The fault did not behave as the scenario requires (for example, workers outlived their supervisor)."""


@dataclass
class Outcome:
    scenario: str
    readings: int
    windows: int
    acked: int
    lost: int
    duplicated: int
    recovery_s: float | None
    detail: str = ""
    notes: str = ""  # what the report says beside the table (budget-outage: peak backlog against the budget)

    @property
    def ok(self):
        return self.lost == 0 and self.duplicated == 0 and self.recovery_s is not None and not self.detail


def _running(p):
    p.start_cloud()
    p.start_edge()
    p.start_simulation()
    p.wait_for(lambda: p.counts().get(Status.ACKED, 0) >= FIRST_ACKS, 120, "the first acknowledgements")


def cloud_kill(p, services, options):
    """The cloud is SIGKILLed mid-drain and comes back after a pause."""
    _running(p)
    p.kill_cloud()
    p.sleep(3)
    p.start_cloud()
    return time.monotonic()


def ingest_kill(p, services, options):
    """The worker running the edge's ingest loop is SIGKILLed mid-stream; the supervisor restarts it."""
    _running(p)
    p.kill_loop("ingest")
    return time.monotonic()


def sender_kill(p, services, options):
    """The sender's worker dies while tuples are SENT and not yet ACKED."""
    _running(p)
    p.wait_for(lambda: p.counts().get(Status.SENT, 0) > 0, 60, "tuples in the SENT state")
    p.kill_loop("sender")
    return time.monotonic()


def link_cut(p, services, options):
    """No connection between edge and cloud for 30 s (--cut-seconds; a proxy the harness closes)."""
    _running(p)
    p.proxy_hb.cut()
    p.proxy_data.cut()
    p.sleep(options.get("cut_seconds", 30))
    p.proxy_hb.restore()
    p.proxy_data.restore()
    return time.monotonic()


def redis_kill(p, services, options):
    """The cloud's Redis is SIGKILLed and restarts from its append-only file."""
    _running(p)
    services.kill(services.redis)
    p.sleep(1)
    services.restart(services.redis)
    return time.monotonic()


def kafka_restart(p, services, options):
    """The broker is SIGKILLed and started again while readings stream."""
    _running(p)
    services.kill(services.kafka)
    p.sleep(2)
    services.restart(services.kafka)
    return time.monotonic()


def backlog_restart(p, services, options):
    """An edge with a backlog of 100,000 tuples is killed while draining and started again."""
    p.seed_backlog(options.get("backlog", BACKLOG))
    p.start_cloud()
    p.start_edge()
    p.wait_for(lambda: p.counts().get(Status.ACKED, 0) >= options.get("backlog", BACKLOG) // 5, 120, "part of the drain")
    p.kill_edge()
    p.sleep(1)
    p.start_edge()
    return time.monotonic()


def budget_outage(p, services, options):
    """The cloud is away for 10 simulated minutes (--outage-seconds) and the edge's disk budget holds a quarter of the backlog that builds; its ingest pauses and the readings wait in Kafka"""
    outage = options.get("outage_seconds", OUTAGE_SECONDS)
    p.watch_backlog(max(1, p.households * int(outage) // 5 // BUDGET_SHARE))
    _running(p)
    p.kill_cloud()
    p.sleep(outage / p.speed)
    p.start_cloud()
    return time.monotonic()


def edge_host_crash(p, services, options):
    """The edge host crashes mid-drain: its supervisor and every worker SIGKILLed together; the edge starts again"""
    _running(p)
    p.wait_for(lambda: p.counts().get(0, 0) + p.counts().get(1, 0) > 0, 60, "tuples waiting for their ACK")
    p.kill_edge()
    p.sleep(1)
    p.start_edge()
    return time.monotonic()


def supervisor_kill(p, services, options):
    """Only `runedge` is SIGKILLed; its workers must end within 2 s, then the edge starts again"""
    _running(p)
    workers = p.kill_supervisor()
    if not workers:
        raise ScenarioError("the supervisor had no workers to watch")
    killed = time.monotonic()
    while any(alive(pid) for pid in workers) and time.monotonic() - killed < FOLLOW_SECONDS + 5:
        p.sleep(0.05)
    took = time.monotonic() - killed
    if took > FOLLOW_SECONDS:
        raise ScenarioError(f"workers {workers} outlived their supervisor by {took:.1f} s")
    p.start_edge()
    return time.monotonic()


def repeated_crash(p, services, options):
    """Five whole-edge crashes within 60 s while readings stream (at a third of the speed, until the last crash)"""
    _running(p)
    crashed = []
    crashes = options.get("crashes", CRASHES)
    for crash in range(crashes):
        p.wait_for(p.loops_running, 30, f"the edge's loops to run before crash {crash + 1}")
        p.sleep(CRASH_GAP_SECONDS)
        if p.simulation.poll() is not None:
            raise ScenarioError(f"the stream had ended before crash {crash + 1}")
        p.kill_edge()
        crashed.append(time.monotonic())
        p.start_edge()
    p.wait_for(p.loops_running, 30, "the edge's loops to run after the last crash")
    p.sleep(CRASH_GAP_SECONDS)  # readings still reach the edge that came back last
    p.stop_simulation()
    if crashed[-1] - crashed[0] > CRASH_WINDOW_SECONDS:
        raise ScenarioError(f"{crashes} crashes spanned {crashed[-1] - crashed[0]:.0f} s, more than "
                            f"{CRASH_WINDOW_SECONDS} s")
    return time.monotonic()


def cloud_host_crash(p, services, options):
    """The cloud host crashes: `runcloud` and its Redis SIGKILLed together; Redis restarts from its append-only file"""
    _running(p)
    p.kill_cloud_host()
    p.sleep(1)
    services.restart(services.redis)
    p.start_cloud()
    return time.monotonic()


def budget_verdict(p):
    """(notes, problem) of a run with a budget: its peak backlog against the budget, and whether it paused."""
    notes = f"peak backlog {p.peak_backlog:,} tuples, budget {p.budget:,} tuples; ingest paused: " + \
        ("yes" if p.paused_seen else "no")
    if p.peak_backlog > p.budget + MAX_READINGS_PER_MESSAGE - 1:  # a batch is applied whole (edge_app/budget.py)
        return notes, f"the backlog peaked at {p.peak_backlog:,} tuples, above the budget of {p.budget:,} and a batch"
    if not p.paused_seen:
        return notes, "the ingest never paused: the outage did not reach the budget"
    return notes, ""


SCENARIOS = {
    "cloud-kill": cloud_kill,
    "ingest-kill": ingest_kill,
    "sender-kill": sender_kill,
    "link-cut": link_cut,
    "redis-kill": redis_kill,
    "kafka-restart": kafka_restart,
    "backlog-restart": backlog_restart,
    "budget-outage": budget_outage,
    "edge-host-crash": edge_host_crash,
    "supervisor-kill": supervisor_kill,
    "repeated-crash": repeated_crash,
    "cloud-host-crash": cloud_host_crash,
}


def run_scenario(name, services, edge_redis_url, options=None, out=print, stop=None, started=None):
    """One run of scenario `name`; its Outcome. With a lane runner (tooling/chaos/lanes.py): `stop`, an Event
    that ends the run early (PipelineClosed), and `started(pipeline)`, told of the pipeline so that another
    thread can close it."""
    options = options or {}
    until = STOPPED_BY_SCENARIO.get(name, options.get("until", 900))
    pipeline = Pipeline(services, edge_redis_url, households=options.get("households", 300), until=until,
                        speed=options.get("speed", 30.0) / SLOWER.get(name, 1), stop=stop)
    if started is not None:
        started(pipeline)
    backlog = name == "backlog-restart"

    def streamed():  # (readings, windows) the simulation streams, or streamed once a scenario stopped it
        return ((0, options.get("backlog", BACKLOG)) if backlog else
                (pipeline.households * (pipeline.until // STEP_S), pipeline.expected_windows()))

    readings, expected = streamed()
    keep_logs, outcome = False, None  # outcome stays None if Ctrl-C, SIGTERM or a test timeout interrupts
    try:
        SCENARIOS[name](pipeline, services, options)
        readings, expected = streamed()
        caught_up = pipeline.wait_recovered(CAUGHT_UP, timeout=options.get("quiet_timeout", 240), expected=expected)
        quiet = pipeline.wait_quiet(expected, timeout=options.get("quiet_timeout", 240))
        recovery = None if quiet is None or caught_up is None else round(caught_up, 2)
        report = pipeline.reconcile()
        totals = report["totals"]
        in_cloud = report["cloud_tuples"] - totals["duplicated"]
        lost = max(expected - in_cloud, totals["missing_in_cloud"], 0)
        detail = "; ".join(filter(None, [*report["sum_mismatches"], report.get("not_a_pair")])) or (
            "" if quiet is not None else
                                                        f"not quiet after the timeout: {pipeline.counts()}")
        notes, problem = budget_verdict(pipeline) if pipeline.budget else ("", "")
        outcome = Outcome(name, readings, totals["expected"], totals["acked"], lost, totals["duplicated"],
                          recovery, "; ".join(filter(None, (detail, problem))), notes)
    except PipelineClosed:  # the runner stops (Ctrl-C, SIGTERM, a test timeout): no outcome, like an interrupt
        raise
    except Exception as exc:  # a scenario that breaks is a failed run, reported as such
        if name in STOPPED_BY_SCENARIO and pipeline.simulation is not None:  # count what it sent, not its bound
            try:
                pipeline.stop_simulation()
            except Exception:
                pass
            readings, expected = streamed()
        outcome = Outcome(name, readings, 0, 0, expected, 0, None, f"{type(exc).__name__}: {exc}")
        keep_logs = True
    finally:
        # Also on Ctrl-C (no outcome yet): the pipeline's processes must not outlive the harness.
        # Kept when it failed or was interrupted (they may say where it hung), and then it says where.
        kept = keep_logs or outcome is None or not outcome.ok
        pipeline.close(keep_logs=kept)
        if kept:
            out(f"{name}: {'interrupted; ' if outcome is None else ''}the processes' logs are kept in {pipeline.folder}")
    out(f"{name}: windows={outcome.windows} acked={outcome.acked} lost={outcome.lost} "
        f"duplicated={outcome.duplicated} recovery_s={outcome.recovery_s} {'OK' if outcome.ok else 'FAILED'}"
        + (f" ({outcome.detail})" if outcome.detail else "") + (f" [{outcome.notes}]" if outcome.notes else ""))
    return outcome
