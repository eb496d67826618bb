"""The edge takes an ACK only from the cloud's reply to the very request it sent (finding 1, 2, 9).

A reply must be tagged with the edge's secret in the cloud-to-edge
direction and name the request's nonce; anything else is refused, and an
error frame nobody can vouch for is never trusted.
"""

import pytest

from fogwire import protocol as wire

EDGE, SECRET = "edge-a", "secret-a"
ROWS = [(1, "h", 1_577_142_000_000, 1_577_142_005_000, 10.0, 2), (2, "h", 1_577_142_005_000, 1_577_142_010_000, 11.0, 2)]


def _request(rows=ROWS):
    return wire.batch_frame(EDGE, SECRET, rows)


def _nonce(frame):
    return wire.split(frame).nonce


def test_it_reads_the_genuine_reply_to_its_request():
    request = _request()
    reply = wire.reply_frame(EDGE, SECRET, _nonce(request), ["80331", ""], ["", wire.R_NEGATIVE])
    assert wire.read_reply(reply, request, SECRET, 2) == (["80331", ""], ["", wire.R_NEGATIVE])


def test_it_refuses_a_genuine_reply_to_an_earlier_request():
    earlier, later = _request(), _request()  # the same tuples sent twice: still two requests
    replayed = wire.reply_frame(EDGE, SECRET, _nonce(earlier), ["80331", "80331"], ["", ""])
    with pytest.raises(wire.ProtocolError) as refused:
        wire.read_reply(replayed, later, SECRET, 2)
    assert refused.value.reason == wire.R_NOT_THE_REPLY and not refused.value.trusted


@pytest.mark.parametrize("name", ["another secret", "another edge", "untagged", "its own request bounced back"])
def test_it_refuses_a_reply_it_cannot_trust_as_an_ack(name):
    request = _request()
    nonce = _nonce(request)
    frame = {
        "another secret": wire.reply_frame(EDGE, "someone-else", nonce, ["80331"] * 2, [""] * 2),
        "another edge": wire.reply_frame("edge-b", SECRET, nonce, ["80331"] * 2, [""] * 2),
        "untagged": wire.seal(wire.KIND_REPLY, EDGE, None, {"plz": ["80331"] * 2, "why": [""] * 2}, nonce=nonce),
        "its own request bounced back": request,
    }[name]
    with pytest.raises(wire.ProtocolError) as refused:
        wire.read_reply(frame, request, SECRET, 2)
    assert refused.value.reason in (wire.R_BAD_TAG, wire.R_WRONG_KIND) and not refused.value.trusted


def test_it_refuses_its_own_heartbeat_reflected_as_the_clouds_answer():
    beat = wire.heartbeat(EDGE, SECRET, backlog=3)
    with pytest.raises(wire.ProtocolError) as refused:
        wire.open_reply(beat, beat, SECRET, wire.KIND_HEARTBEAT)
    assert refused.value.reason == wire.R_WRONG_KIND
    # Even with the kind byte changed, the tag is for the other direction.
    parts = wire.split(beat)
    forged = beat[:4] + bytes((wire.KIND_HEARTBEAT_REPLY,)) + beat[5:]
    with pytest.raises(wire.ProtocolError) as refused:
        wire.open_reply(forged, beat, SECRET, wire.KIND_HEARTBEAT)
    assert refused.value.reason == wire.R_BAD_TAG and parts.nonce == wire.split(forged).nonce


def test_it_trusts_only_a_tagged_error_that_names_its_request():
    request = _request()
    tagged = wire.error_frame(EDGE, _nonce(request), wire.R_STORE_DOWN, "later", SECRET)
    untagged = wire.error_frame(EDGE, _nonce(request), wire.R_BAD_BODY, "from anyone")
    for frame, trusted, reason in ((tagged, True, wire.R_STORE_DOWN), (untagged, False, wire.R_BAD_BODY)):
        with pytest.raises(wire.ProtocolError) as refused:
            wire.read_reply(frame, request, SECRET, 2)
        assert (refused.value.reason, refused.value.trusted) == (reason, trusted)


def _nested(depth):
    value = "x"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [900, 1023])
@pytest.mark.parametrize("secret, reason", [(SECRET, "<list>"), (None, wire.R_TOO_LARGE)], ids=["tagged", "untagged"])
def test_it_refuses_an_error_whose_reason_is_nested_deep_without_failing(depth, secret, reason):
    # Under msgpack's own nesting limit, but str() of it raises RecursionError: the loop reading it must not stop.
    # Untagged, it is longer than any cloud's error, and not even decoded.
    request = _request()
    poison = wire.seal(wire.KIND_ERROR, EDGE, secret, {"reason": _nested(depth), "detail": _nested(depth)},
                       nonce=_nonce(request))
    with pytest.raises(wire.ProtocolError) as refused:
        wire.read_reply(poison, request, SECRET, 2)
    assert refused.value.reason == reason and refused.value.trusted == (secret is not None)


def test_it_never_decodes_an_untagged_error_longer_than_a_clouds():
    """Anyone on the path may answer with an error: a body of empty maps took 75 times its size to decode."""
    import tracemalloc

    request = _request()
    poison = wire.seal(wire.KIND_ERROR, EDGE, None, {"reason": [{}] * 200_000}, nonce=_nonce(request))
    assert len(poison) < wire.MAX_REPLY_BYTES  # what the edge's socket takes in
    tracemalloc.start()
    try:
        with pytest.raises(wire.ProtocolError) as refused:
            wire.read_reply(poison, request, SECRET, 2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not refused.value.trusted and refused.value.reason == wire.R_TOO_LARGE
    assert peak < 3 * len(poison), peak  # its bytes copied at most: decoded, it took 75 times them
    longest = wire.error_frame(EDGE, _nonce(request), "r" * wire.MAX_REASON, "\U0001f600" * wire.MAX_DETAIL)
    with pytest.raises(wire.ProtocolError) as refused:  # the longest error a cloud writes is still read
        wire.read_reply(longest, request, SECRET, 2)
    assert refused.value.reason == "r" * wire.MAX_REASON


def test_it_refuses_an_edge_id_of_dots_alone():
    for edge in (".", ".."):
        assert not wire.EDGE_ID_RE.fullmatch(edge)
        with pytest.raises(ValueError, match="not dots alone"):
            wire.batch_frame(edge, SECRET, ROWS)
    assert wire.EDGE_ID_RE.fullmatch("edge.1") and wire.EDGE_ID_RE.fullmatch("...a")


@pytest.mark.parametrize("codes, reasons, message", [
    (["8033", ""], ["", ""], "not five digits"),
    (["80331\n", ""], ["", ""], "not five digits"),
    ([80331, ""], ["", ""], "not five digits"),
    (["80331", ""], ["", ["not-a-word"]], "not a word"),
    (["80331", ""], ["", "x" * 65], "not a word"),
])
def test_it_refuses_a_tagged_reply_whose_codes_or_reasons_the_edge_could_not_store(codes, reasons, message):
    request = _request()
    with pytest.raises(wire.ProtocolError, match=message):
        wire.read_reply(wire.reply_frame(EDGE, SECRET, _nonce(request), codes, reasons), request, SECRET, 2)


def test_it_refuses_an_edge_id_with_a_trailing_newline():
    with pytest.raises(wire.ProtocolError):
        wire.split(wire.batch_frame(EDGE, SECRET, ROWS).replace(b"edge-a", b"edge-\n", 1))


def test_it_refuses_a_reply_that_lists_another_number_of_tuples():
    request = _request()
    with pytest.raises(wire.ProtocolError, match="does not list 2 tuples"):
        wire.read_reply(wire.reply_frame(EDGE, SECRET, _nonce(request), ["80331"], [""]), request, SECRET, 2)


def test_it_refuses_an_oversized_reply_before_decoding_it():
    request = _request()
    huge = wire.MAGIC + bytes((wire.KIND_REPLY,)) + bytes(wire.MAX_REPLY_BYTES)
    with pytest.raises(wire.ProtocolError) as refused:
        wire.read_reply(huge, request, SECRET, 2)
    assert refused.value.reason == wire.R_TOO_LARGE


@pytest.mark.django_db(transaction=True)
def test_a_peer_that_bounces_heartbeats_back_never_brings_the_link_up():
    """Finding 2 on real sockets: a mirror where the cloud should be answers every beat with the beat itself."""
    status = beat_against(lambda beat: beat, 4)
    assert not status.connected and wire.R_WRONG_KIND in status.last_error


def beat_against(answer, beats):
    """The edge's status after `beats` heartbeats to a peer that answers each with answer(beat), none taken."""
    from edge_app.link import Heartbeat
    from edge_app.models import EdgeStatus
    from tests.conftest import FakeCloud

    with FakeCloud(answer) as peer:
        beat = Heartbeat(edge_id=EDGE, secret=SECRET, address=peer.address, timeout_ms=500)
        try:
            answers = [beat.handle_one_beat() for _ in range(beats)]
        finally:
            beat.close()
    assert peer.served and not any(answers)
    return EdgeStatus.objects.get(edge_id=EDGE)


@pytest.mark.django_db(transaction=True)
def test_it_says_a_heartbeats_unverified_refusal_is_unverified_and_once_however_its_words_vary(caplog, monkeypatch):
    """An untagged error may come from anyone on the path: its words are not shown as the cloud's, and a new
    reason on each beat is not a new warning each beat."""
    import logging

    monkeypatch.setattr(logging.getLogger("fog"), "propagate", True)  # to caplog's handler
    said = iter(range(1000))

    def forger(beat):
        return wire.error_frame(EDGE, wire.split(beat).nonce, f"reason-{next(said)}", "the cloud is gone for good")

    status = beat_against(forger, 6)
    assert not status.connected and status.last_error.startswith("a reply not provably the cloud's: reason-")
    said_down = {r.created for r in caplog.records if "does not answer" in r.getMessage()}  # a record may show twice
    assert len(said_down) == 1, [r.getMessage() for r in caplog.records]
