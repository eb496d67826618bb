"""The fault matrix, each scenario once (`make chaos` runs each three times): nothing lost, nothing twice.

The scenarios run in two lanes at once (tooling/chaos/lanes.py), each with a Kafka broker, a cloud Redis and
an edge Redis database of its own; each test waits for its scenario's outcome."""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from edge_app.worker import WORKER_NAME
from tests.conftest import ROOT, alive, wait_for, with_environment
from tooling.chaos.lanes import LaneRunner, longest_first, schedule
from tooling.chaos.pipeline import environ_now
from tooling.chaos.scenarios import SCENARIOS

PROBE = "CHAOS_TEST_PROBE"  # an environment variable that marks one test's processes
LANES = 2  # two streams at once on two cores: the matrix takes little more than half as long

# Shortened for the suite (a quarter to a half of the stream, a 10 s cut, a 300 s outage, three crashes instead of five), so
# `make test` stays within 15 minutes; `make chaos` runs the full length.
SHORTER = {name: {"until": 180} for name in SCENARIOS}
for name in ("budget-outage", "sender-kill", "edge-host-crash"):  # their faults need the stream still running
    SHORTER[name]["until"] = 450
SHORTER["kafka-restart"]["until"] = 300  # the broker's restart takes seconds; readings still stream after it
SHORTER["repeated-crash"] = {"crashes": 3}  # its stream runs until the last crash is over
SHORTER["link-cut"]["cut_seconds"] = 10
SHORTER["budget-outage"]["outage_seconds"] = 300


@pytest.fixture(scope="module")  # ends with this module: the suite's last test checks nothing outlived it
def fault_matrix(services, request):
    """The selected tests' scenarios, started at once in two lanes; closed (every process, both lanes'
    services) however the module ends: failed tests, a timeout, Ctrl-C or SIGTERM."""
    selected = [item.callspec.params["scenario"] for item in request.session.items  # e.g. `-k cloud-kill`: only it
                if item.module is request.module and "scenario" in getattr(getattr(item, "callspec", None), "params", {})]
    jobs = schedule(selected, lanes=LANES, per_scenario=SHORTER)
    with LaneRunner(jobs, Path(settings.VAR_DIR) / "kafka" / "libs", settings.FOG_EDGE_REDIS_URL, LANES) as runner:
        yield runner


KEPT_LOGS = re.compile(r"interrupted; the processes' logs are kept in (\S+)")


@pytest.mark.slow
def test_it_ends_both_lanes_when_the_chaos_command_is_interrupted(fault_matrix, tmp_path):
    """Ctrl-C while both lanes run a scenario: every pipeline process and both lanes' Kafka and Redis end with
    the command. It runs beside the matrix (which the fixture has started), so it costs the suite little time."""
    probe = uuid.uuid4().hex  # every pipeline process the command starts inherits it, and nothing else carries it
    with open(tmp_path / "chaos.log", "wb") as log:
        command = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "chaos", "--lanes", "2", "--repeat", "1",
                                    "--scenario", "link-cut", "--scenario", "cloud-kill", "--cut-seconds", "600",
                                    "--households", "50"],
                                   cwd=ROOT, env={**os.environ, PROBE: probe}, stdout=log, stderr=subprocess.STDOUT,
                                   preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))  # even under nohup
    started = {}
    try:
        def running(word):
            return [pid for pid, cmdline in started.items() if word in cmdline and alive(pid)]

        def both_lanes_run():
            started.update(with_environment(PROBE, probe))
            # Redis daemonizes and writes its title over its environment: found by its folder, the lane's.
            folders = {Path(cmdline.split()[-1]).parent.parent for cmdline in started.values() if "kafka.Kafka" in cmdline}
            started.update(_redis_servers_in(folders))
            return len([pid for pid in running("runedge") if _name(pid) != WORKER_NAME]) >= 2  # supervisors

        assert wait_for(both_lanes_run, timeout=180), (started, (tmp_path / "chaos.log").read_text())
        assert (len(running("kafka.Kafka")), len(running("redis-server"))) == (2, 2)  # a broker and a Redis per lane
        command.send_signal(signal.SIGHUP)  # the terminal closed: stopped as by Ctrl-C
        wait_for(lambda: "stopping; cleaning up" in (tmp_path / "chaos.log").read_text(errors="replace"), timeout=10)
        command.send_signal(signal.SIGINT)  # impatient: ignored while it cleans up
        command.wait(120)
        assert "SIGHUP: stopping" in (tmp_path / "chaos.log").read_text(errors="replace")
        assert wait_for(lambda: not [pid for pid in started if alive(pid)], timeout=15), \
            {pid: cmdline for pid, cmdline in started.items() if alive(pid)}
        assert not with_environment(PROBE, probe)
    finally:  # also when an assertion failed: nothing of it may outlive the test
        if command.poll() is None:
            command.send_signal(signal.SIGINT)  # its own close() first: SIGKILL would leave its services running
            try:
                command.wait(120)
            except subprocess.TimeoutExpired:
                command.kill()
                command.wait(10)
        started.update(with_environment(PROBE, probe))
        for pid, cmdline in started.items():
            if alive(pid) and _cmdline(pid) == cmdline:  # still that process, not a pid since reused
                os.kill(pid, signal.SIGKILL)
        for folder in KEPT_LOGS.findall((tmp_path / "chaos.log").read_text(errors="replace")):
            shutil.rmtree(folder, ignore_errors=True)  # the interrupted scenarios' logs, kept for a user
    # Each scenario it interrupted says where its logs are kept.
    assert len(KEPT_LOGS.findall((tmp_path / "chaos.log").read_text(errors="replace"))) == 2


def _redis_servers_in(folders):
    found = {}
    for pid, cmdline in ((pid, _cmdline(pid)) for pid in map(int, filter(str.isdigit, os.listdir("/proc")))):
        try:
            if "redis-server" in cmdline and any(Path(os.readlink(f"/proc/{pid}/cwd")).is_relative_to(f) for f in folders):
                found[pid] = cmdline
        except OSError:  # gone, or not ours to read
            continue
    return found


def _name(pid):
    try:
        return (Path("/proc") / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def _cmdline(pid):
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.parametrize("scenario", longest_first(list(SCENARIOS)))  # the order the lanes finish them in
def test_it_acknowledges_every_window_exactly_once_after(fault_matrix, scenario):
    outcome = fault_matrix.outcome(scenario)
    assert outcome.windows > 0, outcome  # none: the scenario broke, and its detail says how
    assert (outcome.lost, outcome.duplicated, outcome.detail) == (0, 0, "")
    assert outcome.acked == outcome.windows
    assert outcome.recovery_s is not None


def test_it_keeps_the_rows_of_scenarios_a_partial_run_did_not_repeat():
    from tooling.chaos.report import markdown
    from tooling.chaos.scenarios import Outcome

    options = {"households": 300, "until": 900, "speed": 30.0}
    full = markdown([Outcome("cloud-kill", 1, 10, 10, 0, 0, 1.5), Outcome("link-cut", 1, 10, 10, 0, 0, 2.5)],
                    "make chaos REPEAT=1", options)
    partial = markdown([Outcome("link-cut", 1, 20, 20, 0, 0, 9.5),
                        Outcome("budget-outage", 1, 30, 30, 0, 0, 3.0, notes="peak backlog 8 tuples, budget 9")],
                       "python manage.py chaos --repeat 1 --scenario link-cut --scenario budget-outage", options, full)
    rows = [line.split(" | ")[0] + " | " + line.split(" | ")[-1] for line in partial.splitlines()
            if line.startswith("| ") and not line.startswith("| scenario")]
    assert rows == ["| cloud-kill | 1.5 |", "| link-cut | 9.5 |", "| budget-outage | 3.0 |"]  # matrix order
    assert "- budget-outage, run 1: peak backlog 8 tuples, budget 9" in partial
    assert "make chaos REPEAT=1\npython manage.py chaos --repeat 1 --scenario link-cut" in partial


def test_it_starts_every_pipeline_on_a_migrated_edge_database_even_when_the_copy_it_keeps_is_gone():
    """Pipelines start on a copy of the first one's migrated database (a migrate each was a Python start each);
    a copy gone from under the harness (a temp folder cleaner) is migrated anew, never left empty."""
    import sqlite3
    from types import SimpleNamespace

    from tooling.chaos import pipeline as chaos

    def applied(pipeline):
        with sqlite3.connect(pipeline.folder / "edge.sqlite3") as db:
            return sorted(db.execute("SELECT app, name FROM django_migrations"))

    nowhere = SimpleNamespace(bootstrap="127.0.0.1:9", redis_url="redis://127.0.0.1:9/0")  # nothing is started
    made = []
    try:
        made += [chaos.Pipeline(nowhere, settings.FOG_EDGE_REDIS_URL, proxied=False) for _ in range(2)]
        chaos._TEMPLATE["path"].unlink()
        made.append(chaos.Pipeline(nowhere, settings.FOG_EDGE_REDIS_URL, proxied=False))
        assert not (made[1].folder / "migrate.log").exists()  # a copy
        assert (made[2].folder / "migrate.log").exists() and chaos._TEMPLATE["path"].exists()  # migrated, kept again
        assert ("edge_app", "0001_initial") in applied(made[2])
        assert applied(made[0]) == applied(made[1]) == applied(made[2])
    finally:
        for pipeline in made:
            pipeline.close()


def test_it_copies_the_environment_for_a_lanes_pipeline_while_the_session_changes_it(monkeypatch):
    """A lane starts its pipeline in a thread while pytest sets and removes PYTEST_CURRENT_TEST around each test:
    a copy of os.environ that met a removal raised KeyError, and the scenario was not run (a CI run)."""
    monkeypatch.setenv("FOG_TEST_FLIPS", "")  # restored, whatever the thread left
    stop = threading.Event()

    def flip():
        while not stop.is_set():
            os.environ["FOG_TEST_FLIPS"] = "1"
            os.environ.pop("FOG_TEST_FLIPS", None)

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        copies = [environ_now() for _ in range(20_000)]
    finally:
        stop.set()
        flipper.join()
    assert all(copy["PATH"] == os.environ["PATH"] for copy in copies)
