"""The fault matrix, each scenario once (`make chaos` runs each three times): nothing lost, nothing twice."""

from pathlib import Path

import pytest
from django.conf import settings

from tooling.chaos.pipeline import ChaosServices
from tooling.chaos.scenarios import SCENARIOS, run_scenario
from tooling.management.commands.chaos import EDGE_REDIS_DB


@pytest.fixture(scope="module")  # ends with this module: the suite's last test checks nothing outlived it
def chaos_services(services):
    started = ChaosServices(Path(settings.VAR_DIR) / "kafka" / "libs").up()
    yield started
    started.down()


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_it_acknowledges_every_window_exactly_once_after(chaos_services, scenario):
    edge_redis = settings.FOG_EDGE_REDIS_URL.rsplit("/", 1)[0] + f"/{EDGE_REDIS_DB}"
    outcome = run_scenario(scenario, chaos_services, edge_redis)
    assert outcome.windows > 0
    assert (outcome.lost, outcome.duplicated, outcome.detail) == (0, 0, "")
    assert outcome.acked == outcome.windows
    assert outcome.recovery_s is not None


def test_it_adds_new_scenarios_to_the_report_and_keeps_the_earlier_rows():
    from tooling.chaos.report import markdown, previous_rows
    from tooling.chaos.scenarios import Outcome

    options = {"households": 300, "until": 900, "speed": 30}
    first = markdown([Outcome("cloud-kill", 1, 10, 10, 0, 0, 1.5)], "make chaos REPEAT=1", options)
    second = markdown([Outcome("supervisor-kill", 1, 20, 20, 0, 0, 2.5)], "python manage.py chaos --update",
                      options, previous_rows(first))
    rows = [line for line in second.splitlines() if line.startswith("| ") and "scenario |" not in line]
    assert [row.split("|")[1].strip() for row in rows] == ["cloud-kill", "supervisor-kill"]
    assert "| 1 | 10 | 0 | 0 | 1.5 |" in rows[0] and "| 1 | 20 | 0 | 0 | 2.5 |" in rows[1]
    assert "make chaos REPEAT=1\npython manage.py chaos --update\n```" in second
