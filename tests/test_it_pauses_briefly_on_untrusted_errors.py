"""Finding 9: an error frame the cloud did not tag may come from anyone, so it causes only a short pause.

A fake cloud on real pynng sockets answers every batch with an error frame.
Untagged (or tagged for another request), the edge sends the tuples again
after at most UNTRUSTED_PAUSE_SECONDS; only the cloud's own tagged
refusal of this very request earns the long backoff.
"""

import time

import pytest

from edge_app.models import Status, WindowAggregate
from edge_app.sender import MAX_BACKOFF_SECONDS, UNTRUSTED_PAUSE_SECONDS
from fogwire import protocol as wire
from tests.conftest import EDGE_ID, EDGE_SECRET, FakeCloud, add_pending, edge_sender, wait_for


ERRORS = {
    "untagged": lambda request: wire.error_frame(EDGE_ID, wire.split(request).nonce, wire.R_BAD_BODY, "forged"),
    "tagged for another request": lambda request: wire.error_frame(EDGE_ID, bytes(wire.NONCE_BYTES), wire.R_BAD_BODY,
                                                                   "replayed", EDGE_SECRET),
    "tagged, this request": lambda request: wire.error_frame(EDGE_ID, wire.split(request).nonce, wire.R_BAD_BODY,
                                                             "genuine", EDGE_SECRET),
}


@pytest.mark.serial  # the pause is measured against the wall clock
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("error", ERRORS)
def test_it_backs_off_long_only_for_the_clouds_own_refusal(error):
    add_pending(1)
    with FakeCloud(ERRORS[error]) as fake:
        sender = edge_sender(fake.address, batch=10, in_flight=1, ack_timeout_ms=3000)
        try:
            assert wait_for(lambda: sender.handle_one_round() == 0 and fake.served, timeout=15)
            paused = sender.pause_until - time.monotonic()
        finally:
            sender.close()
    row = WindowAggregate.objects.get()
    assert row.status == Status.PENDING and sender.totals["acked"] == 0
    if error == "tagged, this request":
        assert row.refusal == wire.R_BAD_BODY and row.next_attempt_at is not None  # backs off, up to the most
    else:
        assert row.next_attempt_at is None and row.refusal == ""  # nothing recorded against the tuple
        assert 0 < paused <= UNTRUSTED_PAUSE_SECONDS < MAX_BACKOFF_SECONDS / 100
