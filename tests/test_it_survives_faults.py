"""The fault matrix, each scenario once (`make chaos` runs each three times): nothing lost, nothing twice."""

from pathlib import Path

import pytest
from django.conf import settings

from tooling.chaos.pipeline import ChaosServices
from tooling.chaos.scenarios import SCENARIOS, run_scenario
from tooling.management.commands.chaos import EDGE_REDIS_DB


@pytest.fixture(scope="session")
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
