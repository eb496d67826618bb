"""The fault matrix, each scenario once (`make chaos` runs each three times): nothing lost, nothing twice.

The scenarios run in two lanes at once (tooling/chaos/lanes.py), each with a Kafka broker, a cloud Redis and
an edge Redis database of its own; each test waits for its scenario's outcome."""

from pathlib import Path

import pytest
from django.conf import settings

from tooling.chaos.lanes import LaneRunner, longest_first, schedule
from tooling.chaos.scenarios import SCENARIOS

LANES = 2  # two streams at once on two cores: the matrix takes little more than half as long

# Shortened for the suite (a quarter to a half of the stream, a 10 s cut, a 300 s outage, three crashes instead of five), so
# `make test` stays within 15 minutes; `make chaos` runs the full length.
SHORTER = {name: {"until": 240} for name in SCENARIOS}
for name in ("budget-outage", "sender-kill", "edge-host-crash"):  # their faults need the stream still running
    SHORTER[name]["until"] = 450
SHORTER["kafka-restart"]["until"] = 300  # the broker's restart takes seconds; readings still stream after it
SHORTER["repeated-crash"] = {"until": 450, "crashes": 3}
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


@pytest.mark.slow
@pytest.mark.parametrize("scenario", longest_first(list(SCENARIOS)))  # the order the lanes finish them in
def test_it_acknowledges_every_window_exactly_once_after(fault_matrix, scenario):
    outcome = fault_matrix.outcome(scenario)
    assert outcome.windows > 0
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
