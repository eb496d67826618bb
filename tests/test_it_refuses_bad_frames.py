"""Unknown edges, bad tags and bad input are refused, nothing is half-written, the server serves on."""

import pytest

from cloud_app.store import Keys
from fogwire import protocol as wire
from tests.conftest import EDGE_ID, EDGE_SECRET, make_rows
from tests.corpus import V2_FRAMES as FRAME_CASES
from tests.corpus import V2_TUPLES as TUPLE_CASES

NOW_MS = 1_577_142_000_000


def _error_reason(reply):
    with pytest.raises(wire.ProtocolError) as info:
        wire.read_reply(reply, EDGE_ID, EDGE_SECRET, 1)
    return info.value.reason


def _still_serves(cloud):
    codes, reasons = wire.read_reply(cloud.request(wire.batch_frame(EDGE_ID, EDGE_SECRET, make_rows(1, "after"))),
                                     EDGE_ID, EDGE_SECRET, 1)
    return reasons == [""] and len(codes[0]) == 5


@pytest.mark.parametrize("case", FRAME_CASES)
def test_it_refuses_a_frame_it_cannot_use_and_serves_on(cloud, redis_client, case):
    frame, reason = FRAME_CASES[case]
    assert _error_reason(cloud.request(frame)) == reason
    assert redis_client.hlen(Keys(cloud.prefix).tuples(EDGE_ID)) == 0  # nothing half-written
    assert int(redis_client.hget(Keys(cloud.prefix).stats, f"refused:{reason}")) == 1
    assert _still_serves(cloud)


def test_it_refuses_an_oversized_frame(cloud):
    frame = wire.MAGIC + b"\x00" * wire.MAX_FRAME_BYTES
    assert _error_reason(cloud.request(frame, timeout_ms=20000)) == wire.R_TOO_LARGE
    assert _still_serves(cloud)


@pytest.mark.parametrize("case", TUPLE_CASES)
def test_it_refuses_a_bad_tuple_and_stores_its_neighbours(cloud, redis_client, case):
    bad, reason = TUPLE_CASES[case]
    rows = make_rows(2, "good") + [bad]
    codes, reasons = wire.read_reply(cloud.request(wire.batch_frame(EDGE_ID, EDGE_SECRET, rows)),
                                     EDGE_ID, EDGE_SECRET, 3)
    assert reasons == ["", "", reason]
    assert codes[2] == "" and all(len(c) == 5 for c in codes[:2])
    assert redis_client.hlen(Keys(cloud.prefix).tuples(EDGE_ID)) == 2
    assert int(redis_client.hget(Keys(cloud.prefix).stats, f"refused:{reason}")) == 1


def test_it_refuses_the_second_of_two_tuples_with_one_id(cloud, redis_client):
    rows = make_rows(2)
    rows[1] = (rows[0][0],) + rows[1][1:]
    _, reasons = wire.read_reply(cloud.request(wire.batch_frame(EDGE_ID, EDGE_SECRET, rows)), EDGE_ID, EDGE_SECRET, 2)
    assert reasons == ["", wire.R_DUPLICATE_ID]
    assert redis_client.hlen(Keys(cloud.prefix).tuples(EDGE_ID)) == 1


def test_it_refuses_a_heartbeat_with_a_wrong_secret(cloud, redis_client):
    reply = cloud.request(wire.heartbeat(EDGE_ID, "wrong"), data=False)
    assert _error_reason(reply) == wire.R_BAD_TAG
    assert not redis_client.exists(Keys(cloud.prefix).edge(EDGE_ID))
