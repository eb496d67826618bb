"""Unknown edges, bad tags and bad input are refused, nothing is half-written, the server serves on."""

import math

import pytest

from fogwire import protocol as wire
from tests.conftest import EDGE_ID, EDGE_SECRET, make_rows

NOW_MS = 1_577_142_000_000


def _error_reason(reply):
    with pytest.raises(wire.ProtocolError) as info:
        wire.read_reply(reply, EDGE_ID, EDGE_SECRET, 1)
    return info.value.reason


def _still_serves(cloud):
    codes, reasons = wire.read_reply(cloud.request(wire.batch_frame(EDGE_ID, EDGE_SECRET, make_rows(1, "after"))),
                                     EDGE_ID, EDGE_SECRET, 1)
    return reasons == [""] and len(codes[0]) == 5


def _columns(**override):
    payload = {"v": 2, "kind": "batch", "id": [1], "hh": ["h"], "ws": [NOW_MS], "we": [NOW_MS + 5000],
               "avg": [1.5], "n": [2]}
    payload.update(override)
    return payload


FRAME_CASES = {
    "garbage": (b"\x00\xffnot a frame at all", wire.R_BAD_FRAME),
    "empty": (b"", wire.R_BAD_FRAME),
    "truncated header": (wire.MAGIC + b"\x09edge", wire.R_BAD_FRAME),
    "unknown edge": (wire.batch_frame("edge-nobody", EDGE_SECRET, make_rows(1)), wire.R_UNKNOWN_EDGE),
    "wrong secret": (wire.batch_frame(EDGE_ID, "not-the-secret", make_rows(1)), wire.R_BAD_TAG),
    "wrong version": (wire.seal(EDGE_ID, EDGE_SECRET, {**_columns(), "v": 1}), wire.R_BAD_VERSION),
    "body not msgpack": (wire.MAGIC + bytes([len(EDGE_ID)]) + EDGE_ID.encode()
                         + wire._tag(EDGE_SECRET.encode(), EDGE_ID.encode(), b"\xc1\xc1")
                         + b"\xc1\xc1", wire.R_BAD_BODY),
    "body a list": (wire.seal(EDGE_ID, EDGE_SECRET, [1, 2]), wire.R_BAD_BODY),
    "wrong kind": (wire.seal(EDGE_ID, EDGE_SECRET, _columns(kind="hb")), wire.R_BAD_BODY),
    "missing column": (wire.seal(EDGE_ID, EDGE_SECRET, {k: v for k, v in _columns().items() if k != "avg"}),
                       wire.R_BAD_BODY),
    "string power": (wire.seal(EDGE_ID, EDGE_SECRET, _columns(avg=["12.5"])), wire.R_BAD_BODY),
    "float id": (wire.seal(EDGE_ID, EDGE_SECRET, _columns(id=[1.0])), wire.R_BAD_BODY),
    "columns of unequal length": (wire.seal(EDGE_ID, EDGE_SECRET, _columns(id=[1, 2])), wire.R_BAD_BODY),
    "empty batch": (wire.batch_frame(EDGE_ID, EDGE_SECRET, []), wire.R_EMPTY),
}


@pytest.mark.parametrize("case", FRAME_CASES)
def test_it_refuses_a_frame_it_cannot_use_and_serves_on(cloud, redis_client, case):
    frame, reason = FRAME_CASES[case]
    assert _error_reason(cloud.request(frame)) == reason
    assert redis_client.hlen(f"{cloud.prefix}t:{EDGE_ID}") == 0  # nothing half-written
    assert int(redis_client.hget(f"{cloud.prefix}stats", f"refused:{reason}")) == 1
    assert _still_serves(cloud)


def test_it_refuses_an_oversized_frame(cloud):
    frame = wire.MAGIC + b"\x00" * wire.MAX_FRAME_BYTES
    assert _error_reason(cloud.request(frame, timeout_ms=20000)) == wire.R_TOO_LARGE
    assert _still_serves(cloud)


TUPLE_CASES = {
    "nan": ((7, "h", NOW_MS, NOW_MS + 5000, math.nan, 3), wire.R_NOT_FINITE),
    "inf": ((7, "h", NOW_MS, NOW_MS + 5000, math.inf, 3), wire.R_NOT_FINITE),
    "negative power": ((7, "h", NOW_MS, NOW_MS + 5000, -1.0, 3), wire.R_NEGATIVE),
    "far future": ((7, "h", 4_102_444_800_000, 4_102_444_805_000, 1.0, 3), wire.R_FUTURE),
    "end before start": ((7, "h", NOW_MS, NOW_MS - 5000, 1.0, 3), wire.R_BAD_WINDOW),
    "seconds not ms": ((7, "h", NOW_MS // 1000, NOW_MS // 1000 + 5, 1.0, 3), wire.R_BAD_WINDOW),
    "no readings": ((7, "h", NOW_MS, NOW_MS + 5000, 1.0, 0), wire.R_BAD_COUNT),
    "empty household": ((7, "", NOW_MS, NOW_MS + 5000, 1.0, 3), wire.R_BAD_HOUSEHOLD),
}


@pytest.mark.parametrize("case", TUPLE_CASES)
def test_it_refuses_a_bad_tuple_and_stores_its_neighbours(cloud, redis_client, case):
    bad, reason = TUPLE_CASES[case]
    rows = make_rows(2, "good") + [bad]
    codes, reasons = wire.read_reply(cloud.request(wire.batch_frame(EDGE_ID, EDGE_SECRET, rows)),
                                     EDGE_ID, EDGE_SECRET, 3)
    assert reasons == ["", "", reason]
    assert codes[2] == "" and all(len(c) == 5 for c in codes[:2])
    assert redis_client.hlen(f"{cloud.prefix}t:{EDGE_ID}") == 2
    assert int(redis_client.hget(f"{cloud.prefix}stats", f"refused:{reason}")) == 1


def test_it_refuses_the_second_of_two_tuples_with_one_id(cloud, redis_client):
    rows = make_rows(2)
    rows[1] = (rows[0][0],) + rows[1][1:]
    _, reasons = wire.read_reply(cloud.request(wire.batch_frame(EDGE_ID, EDGE_SECRET, rows)), EDGE_ID, EDGE_SECRET, 2)
    assert reasons == ["", wire.R_DUPLICATE_ID]
    assert redis_client.hlen(f"{cloud.prefix}t:{EDGE_ID}") == 1


def test_it_refuses_a_heartbeat_with_a_wrong_secret(cloud, redis_client):
    reply = cloud.request(wire.heartbeat(EDGE_ID, "wrong"), data=False)
    assert _error_reason(reply) == wire.R_BAD_TAG
    assert not redis_client.exists(f"{cloud.prefix}edge:{EDGE_ID}")
