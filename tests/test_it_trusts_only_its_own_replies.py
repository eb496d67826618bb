"""The edge takes an ACK only from a reply tagged with its own secret and addressed to it."""

import pytest

from fogwire import protocol as wire

EDGE, SECRET = "edge-a", "secret-a"


def test_it_reads_a_genuine_reply():
    frame = wire.reply_frame(EDGE, SECRET, ["80331", ""], ["", wire.R_NEGATIVE])
    assert wire.read_reply(frame, EDGE, SECRET, 2) == (["80331", ""], ["", wire.R_NEGATIVE])


@pytest.mark.parametrize("frame", [
    wire.reply_frame(EDGE, "someone-else", ["80331"], [""]),  # forged: another secret
    wire.reply_frame("edge-b", SECRET, ["80331"], [""]),  # meant for another edge
    wire.seal(EDGE, None, {"v": 2, "kind": wire.KIND_REPLY, "plz": ["80331"], "why": [""]}),  # untagged
])
def test_it_refuses_a_reply_it_cannot_trust_as_an_ack(frame):
    with pytest.raises(wire.ProtocolError) as refused:
        wire.read_reply(frame, EDGE, SECRET, 1)
    assert refused.value.reason == wire.R_BAD_TAG


def test_it_raises_the_clouds_reason_for_an_error_reply():
    with pytest.raises(wire.ProtocolError) as refused:
        wire.read_reply(wire.error_frame(EDGE, wire.R_STORE_DOWN, "later"), EDGE, SECRET, 1)
    assert refused.value.reason == wire.R_STORE_DOWN


def test_it_refuses_a_reply_that_lists_another_number_of_tuples():
    with pytest.raises(wire.ProtocolError, match="does not list 3 tuples"):
        wire.read_reply(wire.reply_frame(EDGE, SECRET, ["80331"], [""]), EDGE, SECRET, 3)
