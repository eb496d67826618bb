"""Unknown edges, bad tags and bad input are refused, nothing is half-written, the server serves on."""

import msgpack
import pytest

from cloud_app.keys import Keys
from fogwire import protocol as wire
from tests.conftest import EDGE_ID, EDGE_SECRET, CloudThread, cloud_stats, counted, deliver, make_rows, refusal
from tests.corpus import FRAMES as FRAME_CASES
from tests.corpus import HEARTBEATS as HEARTBEAT_CASES
from tests.corpus import V2_TUPLES as TUPLE_CASES


def _still_serves(cloud):
    codes, reasons = deliver(cloud, make_rows(1, "after"))
    return reasons == [""] and len(codes[0]) == 5


@pytest.mark.parametrize("case", FRAME_CASES)
def test_it_refuses_a_frame_it_cannot_use_and_serves_on(cloud, redis_client, case):
    frame, reason = FRAME_CASES[case]
    assert refusal(cloud.request(frame)) == reason
    assert redis_client.hlen(Keys(cloud.prefix).tuples(EDGE_ID)) == 0  # nothing half-written
    assert counted(lambda: cloud_stats(redis_client, cloud.prefix), f"refused:{reason}", 1)
    assert _still_serves(cloud)


@pytest.mark.parametrize("case", HEARTBEAT_CASES)
def test_it_refuses_a_heartbeat_it_cannot_use_and_records_nothing(cloud, redis_client, case):
    frame, reason = HEARTBEAT_CASES[case]
    assert refusal(cloud.request(frame, data=False)) == reason
    assert not redis_client.exists(Keys(cloud.prefix).edge(EDGE_ID))
    assert counted(lambda: cloud_stats(redis_client, cloud.prefix), f"refused:{reason}", 1)


def test_it_refuses_a_replayed_heartbeat(cloud, redis_client):
    """Finding 2: a recorded heartbeat played again (within the clock window) can't hide an outage."""
    beat = wire.heartbeat(EDGE_ID, EDGE_SECRET, backlog=5)
    assert wire.open_reply(cloud.request(beat, data=False), beat, EDGE_SECRET, wire.KIND_HEARTBEAT)
    redis_client.hdel(Keys(cloud.prefix).edge(EDGE_ID), "last_heartbeat_ms")
    assert refusal(cloud.request(beat, data=False)) == wire.R_REPLAYED
    assert not redis_client.hexists(Keys(cloud.prefix).edge(EDGE_ID), "last_heartbeat_ms")


def test_it_refuses_a_heartbeat_replayed_to_another_replica_or_after_a_restart(cloud, redis_url, redis_client):
    """Each replica remembers the nonces it saw; the store remembers them for all (and across a restart)."""
    beat = wire.heartbeat(EDGE_ID, EDGE_SECRET, backlog=5)
    assert wire.open_reply(cloud.request(beat, data=False), beat, EDGE_SECRET, wire.KIND_HEARTBEAT)
    redis_client.hdel(Keys(cloud.prefix).edge(EDGE_ID), "last_heartbeat_ms")
    other = CloudThread(redis_url, cloud.prefix, {EDGE_ID: EDGE_SECRET}).start()  # a fresh process's memory
    try:
        assert refusal(other.request(beat, data=False)) == wire.R_REPLAYED
        fresh = wire.heartbeat(EDGE_ID, EDGE_SECRET, backlog=6)
        assert wire.open_reply(other.request(fresh, data=False), fresh, EDGE_SECRET, wire.KIND_HEARTBEAT)
    finally:
        other.stop()
    assert redis_client.hget(Keys(cloud.prefix).edge(EDGE_ID), "backlog") == b"6"
    # Remembered while a replica whose clock is up to twice the skew behind would still take the beat's time.
    nonce_key = Keys(cloud.prefix).beat_nonce(EDGE_ID, wire.split(beat).nonce)
    assert redis_client.pttl(nonce_key) > 4 * wire.HEARTBEAT_SKEW_MS - 10_000


def test_it_stores_the_known_edge_state_a_heartbeat_carries(cloud, redis_client):
    beat = wire.heartbeat(EDGE_ID, EDGE_SECRET, backlog=7, paused=True, colour="red")
    wire.open_reply(cloud.request(beat, data=False), beat, EDGE_SECRET, wire.KIND_HEARTBEAT)
    record = redis_client.hgetall(Keys(cloud.prefix).edge(EDGE_ID))
    assert (record[b"backlog"], record[b"paused"]) == (b"7", b"1") and b"colour" not in record


def test_it_tells_a_v2_edge_to_upgrade(cloud, redis_client):
    edge = EDGE_ID.encode()
    body = msgpack.packb({"v": 2, "kind": "batch", "id": [1], "hh": ["h"], "ws": [1], "we": [2], "avg": [1.0], "n": [1]})
    for data in (True, False):
        reply = cloud.request(wire.MAGIC_V2 + bytes((len(edge),)) + edge + bytes(wire.TAG_BYTES) + body, data=data)
        assert reply[:4] == wire.MAGIC_V2  # in the v2 edge's own format, so it can read and log it
        payload = msgpack.unpackb(reply[5 + len(edge) + wire.TAG_BYTES:])
        assert payload["reason"] == wire.R_BAD_VERSION and "upgrade" in payload["detail"]
    assert redis_client.hlen(Keys(cloud.prefix).tuples(EDGE_ID)) == 0


def test_it_refuses_an_oversized_frame_before_decoding_it(cloud):
    frame = wire.MAGIC + bytes((wire.KIND_BATCH,)) + b"\x00" * wire.MAX_DATA_BYTES
    assert refusal(cloud.request(frame, timeout_ms=20000)) == wire.R_TOO_LARGE
    assert _still_serves(cloud)


@pytest.mark.parametrize("case", TUPLE_CASES)
def test_it_refuses_a_bad_tuple_and_stores_its_neighbours(cloud, redis_client, case):
    bad, reason = TUPLE_CASES[case]
    codes, reasons = deliver(cloud, make_rows(2, "good") + [bad])
    assert reasons == ["", "", reason]
    assert codes[2] == "" and all(len(c) == 5 for c in codes[:2])
    assert redis_client.hlen(Keys(cloud.prefix).tuples(EDGE_ID)) == 2
    assert counted(lambda: cloud_stats(redis_client, cloud.prefix), f"refused:{reason}", 1)


def test_it_refuses_the_second_of_two_tuples_with_one_id(cloud, redis_client):
    rows = make_rows(2)
    rows[1] = (rows[0][0],) + rows[1][1:]
    _, reasons = deliver(cloud, rows)
    assert reasons == ["", wire.R_DUPLICATE_ID]
    assert redis_client.hlen(Keys(cloud.prefix).tuples(EDGE_ID)) == 1


@pytest.mark.parametrize("payload", [[1, 2], "a string", None])
def test_it_tags_its_refusal_of_an_authenticated_frame_whose_body_is_not_a_map(cloud, payload):
    """The tag verified, so the refusal is the cloud's to sign: the edge can trust it and set the batch aside
    instead of sending it again for ever."""
    frame = wire.seal(wire.KIND_BATCH, EDGE_ID, EDGE_SECRET, payload)
    with pytest.raises(wire.ProtocolError) as refused:
        wire.open_reply(cloud.request(frame), frame, EDGE_SECRET, wire.KIND_BATCH)
    assert refused.value.reason == wire.R_BAD_BODY and refused.value.trusted
