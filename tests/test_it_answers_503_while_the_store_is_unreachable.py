"""With the store's Redis unreachable, every API operation answers a JSON 503 with Retry-After, as its schema says.

They answered Django's HTML 500 page, one traceback a request, and the
schema named no such reply. The store here is a port where nothing listens;
the outage is logged once, and its end once.
"""

import logging

import pytest
import yaml

from cloud_app import api
from tests.conftest import free_port

PATHS = ["/api/states/", "/api/states/BY/households/", "/api/households/", "/api/households/x/",
         "/api/power/", "/api/edges/", "/api/edges/e/history/", "/api/tuples/recent/"]


@pytest.fixture
def outage(monkeypatch):
    """A fresh outage tracker, so no earlier test's outage is still open."""
    tracker = api.StoreOutage()
    monkeypatch.setattr(api, "outage", tracker)
    return tracker


@pytest.fixture
def store_down(cloud_settings, outage):
    cloud_settings.FOG_CLOUD_REDIS_URL = f"redis://127.0.0.1:{free_port()}/12"
    return cloud_settings


@pytest.fixture
def fog_log(caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("fog.cloud"), "propagate", True)  # to caplog's handler
    caplog.set_level(logging.WARNING)
    return caplog


@pytest.mark.parametrize("path", PATHS)
def test_it_answers_503_json_with_retry_after(client, store_down, path):
    response = client.get(path)
    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == str(api.RETRY_AFTER_SECONDS)
    (detail,) = response.json().values()
    assert detail.startswith("the store is unavailable: ") and "\n" not in detail
    assert "127.0.0.1" not in detail  # the store's address stays in the log


def test_it_logs_an_outage_once_and_its_end_once(client, store_down, redis_url, fog_log):
    for _ in range(3):
        for path in PATHS:
            assert client.get(path).status_code == 503
    store_down.FOG_CLOUD_REDIS_URL = redis_url
    assert client.get("/api/states/").status_code == 200
    assert client.get("/api/states/").status_code == 200
    assert not [record for record in fog_log.records if record.levelno >= logging.ERROR]  # no "Service Unavailable"
    lines = [record.getMessage() for record in fog_log.records if record.name == "fog.cloud"]
    assert len(lines) == 2, lines
    assert "unavailable (ConnectionError" in lines[0]
    assert "back after" in lines[1] and f"{3 * len(PATHS)} requests" in lines[1]


def test_it_documents_the_503_on_every_operation(client):
    schema = yaml.safe_load(client.get("/api/schema/").content)
    operations = [(path, method, operation) for path, methods in schema["paths"].items()
                  for method, operation in methods.items()]
    assert len(operations) == len(PATHS)
    for path, method, operation in operations:
        unavailable = operation["responses"].get("503")
        assert unavailable, (path, method)
        assert unavailable["content"]["application/json"]["schema"]["$ref"].endswith("/StoreUnavailable")
        assert unavailable["headers"]["Retry-After"]["schema"]["type"] == "integer"
        assert "Retry-After" not in {parameter["name"] for parameter in operation.get("parameters", [])}
    assert schema["components"]["schemas"]["StoreUnavailable"]["required"] == ["detail"]


def test_it_answers_a_store_that_refuses_a_command_as_the_fault_it_is(client, cloud_settings, redis_client, outage):
    """WRONGTYPE is not an outage to wait out: a 500 that says nothing of retrying, and no outage begun."""
    from cloud_app.keys import Keys

    redis_client.set(Keys(cloud_settings.FOG_CLOUD_KEY_PREFIX).recent(0), "not a list")
    with pytest.raises(Exception, match="WRONGTYPE"):  # the test client re-raises what Django would log as a 500
        client.get("/api/tuples/recent/")
    assert outage.since is None
