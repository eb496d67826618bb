"""An edge of the original prototype (pynng Req, its exact formats) talks to the new cloud."""

import json
import re
import secrets

import pynng
import pytest

from cloud_app.postal import locate
from cloud_app.keys import Keys, shard_of
from tests.conftest import EDGE_ID, EDGE_SECRET, CloudThread


@pytest.fixture
def legacy_cloud(redis_url, cloud_prefix):
    server = CloudThread(redis_url, cloud_prefix, {EDGE_ID: EDGE_SECRET}, legacy_edge="old-edge").start()
    yield server
    server.stop()


def test_it_acks_a_heartbeat_and_answers_data_with_a_postal_code(legacy_cloud, redis_client):
    with pynng.Req0(dial=legacy_cloud.hb_addr, recv_timeout=3000) as heartbeat:
        heartbeat.send(b"heartbeat")
        assert heartbeat.recv() == b"ack"
    with pynng.Req0(dial=legacy_cloud.data_addr, recv_timeout=3000) as data:
        data.send(json.dumps({"id": 17, "node_id": "household-a", "average": 231.5}).encode())
        reply = data.recv().decode()
    match = re.fullmatch(r"PLZ for id: 17 - PLZ: (\d{5})", reply)
    assert match and match.group(1) == locate("household-a")[0]
    assert redis_client.hlen(Keys(legacy_cloud.prefix).tuples("old-edge")) == 1


def test_it_answers_a_v1_tuple_sent_again_with_its_postal_code(legacy_cloud, redis_client):
    """A prototype sends an id again when its reply was lost: the window the cloud gives a v1 tuple ends when the
    cloud takes it, so the resend's ends later, and it is the same tuple all the same."""
    import time

    with pynng.Req0(dial=legacy_cloud.data_addr, recv_timeout=3000) as data:
        for _ in range(2):
            data.send(json.dumps({"id": 18, "node_id": "household-b", "average": 120.25}).encode())
            assert data.recv().decode() == f"PLZ for id: 18 - PLZ: {locate('household-b')[0]}"
            time.sleep(0.01)  # a clock's tick at least: the second window ends later
        data.send(json.dumps({"id": 18, "node_id": "household-b", "average": 99.0}).encode())  # another average
        assert data.recv().decode().startswith("ERROR")
    assert redis_client.hlen(Keys(legacy_cloud.prefix).tuples("old-edge")) == 1


def test_it_shows_a_v1_households_windows_in_its_view_from_a_bounded_list(legacy_cloud, redis_client):
    """A v1 tuple's field in the tuple hash is its id, which no reader can work out from a window: its household's
    windows are kept in a series list of their own, trimmed back to SERIES_MAX once past SERIES_CAP, and its
    view shows them."""
    import time

    from cloud_app.reader import CloudReader
    from cloud_app.store import SERIES_CAP, SERIES_MAX

    def send(data, tid, average):
        data.send(json.dumps({"id": tid, "node_id": "household-c", "average": average}).encode())
        assert data.recv().decode().startswith(f"PLZ for id: {tid} - PLZ: ")

    with pynng.Req0(dial=legacy_cloud.data_addr, recv_timeout=3000) as data:
        for tid, average in enumerate((10.0, 20.0, 30.0), start=1):
            send(data, tid, average)
            time.sleep(0.01)  # each window ends when the cloud takes it: apart by a tick at least
        view = CloudReader(redis_client, legacy_cloud.prefix, price_eur_per_kwh=1.0).household("household-c")
        assert [point["power_w"] for point in view["series"]] == [10.0, 20.0, 30.0]
        for tid in range(4, SERIES_CAP + 2):
            send(data, tid, float(tid))
    listed = Keys(legacy_cloud.prefix).series(shard_of("old-edge"), "household-c")
    assert SERIES_MAX <= redis_client.llen(listed) <= SERIES_CAP


def test_it_answers_a_broken_v1_request_with_an_error_and_serves_on(legacy_cloud):
    with pynng.Req0(dial=legacy_cloud.data_addr, recv_timeout=3000) as data:
        data.send(b'{"id": "x", "node_id": "h", "average": 1}')
        assert data.recv().startswith(b"ERROR: bad-body")
        data.send(b'{"id": 1, "node_id": "h", "average": NaN}')
        assert data.recv().startswith(b"ERROR: not-finite")
        data.send(json.dumps({"id": 2, "node_id": "h", "average": 5.0}).encode())
        assert data.recv().startswith(b"PLZ for id: 2 - PLZ: ")


def test_it_refuses_v1_when_legacy_is_off(cloud):
    with pynng.Req0(dial=cloud.hb_addr, recv_timeout=3000) as heartbeat:
        heartbeat.send(b"heartbeat")
        assert heartbeat.recv() != b"ack"


# --- finding 7: legacy v1 is opt-in, loud, loopback-only and bounded -----------------------------------


def test_it_cuts_echoed_input_short_and_applies_the_v2_limits(legacy_cloud, redis_client):
    with pynng.Req0(dial=legacy_cloud.data_addr, recv_timeout=3000) as data:
        data.send(json.dumps({"id": 3, "node_id": "n" * 1_000_000, "average": 1.0}).encode())
        reply = data.recv()
        assert reply.startswith(b"ERROR: bad-household") and len(reply) <= 200
        data.send(json.dumps({"id": 4, "node_id": "tab\there", "average": 1.0}).encode())  # a v2 check
        assert data.recv().startswith(b"ERROR: bad-household")
    assert not redis_client.exists(f"{legacy_cloud.prefix}t:old-edge")


def test_it_refuses_an_average_past_any_float(legacy_cloud, redis_client, caplog):
    with pynng.Req0(dial=legacy_cloud.data_addr, recv_timeout=3000) as data:
        for sign in (b"", b"-"):  # a JSON integer of 400 digits: Python's float() and isfinite() raise on it
            data.send(b'{"id": 5, "node_id": "hh-big", "average": ' + sign + b"9" * 400 + b"}")
            assert data.recv().startswith(b"ERROR: negative-power" if sign else b"ERROR: implausible-power")
    assert not redis_client.exists(f"{legacy_cloud.prefix}t:old-edge")
    assert "Traceback" not in caplog.text


def _runcloud(*args, env):
    from tests.conftest import free_port, run_manage

    return run_manage("runcloud", "--until", "1", "--heartbeat-port", str(free_port()), "--data-port",
                      str(free_port()), "--legacy-v1", *args, env={"FOG_CLOUD_KEY_PREFIX": "test:legacy:", **env})


def test_it_warns_at_start_that_anyone_can_deliver(services):
    result = _runcloud(env={})
    assert result.returncode == 0, result.stderr
    assert "WARNING" in result.stderr and "ANYONE who can reach" in result.stderr


def test_it_refuses_a_legacy_id_that_is_a_v2_edges():
    result = _runcloud("--legacy-edge-id", "edge-7", env={"FOG_EDGE_SECRETS": f"edge-7:{secrets.token_urlsafe(32)}"})
    assert result.returncode == 1 and "is an authenticated edge's id" in result.stderr


def test_it_keeps_legacy_on_loopback_unless_told():
    env = {"FOG_EDGE_SECRETS": f"edge-7:{secrets.token_urlsafe(32)}"}
    result = _runcloud("--bind", "0.0.0.0", "--insecure-plaintext", env=env)
    assert result.returncode == 1 and "--legacy-v1-public" in result.stderr
