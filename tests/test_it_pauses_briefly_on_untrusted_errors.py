"""Finding 9: an error frame the cloud did not tag may come from anyone, so it causes only a short pause.

A fake cloud on real pynng sockets answers every batch with an error frame.
Untagged (or tagged for another request), the edge sends the tuples again
after at most UNTRUSTED_PAUSE_SECONDS; only the cloud's own tagged
refusal of this very request earns the long backoff.
"""

import threading
import time

import pynng
import pytest

from edge_app.models import EdgeStatus, Status, WindowAggregate
from edge_app.sender import MAX_BACKOFF_SECONDS, UNTRUSTED_PAUSE_SECONDS, Sender
from fogwire import protocol as wire
from tests.conftest import EDGE_ID, EDGE_SECRET, _free_port, wait_for


def _answer_with(sock, make_reply, served):
    try:
        while True:
            request = sock.recv()
            sock.send(make_reply(request))
            served.append(request)
    except pynng.NNGException:
        pass  # closed by the test


ERRORS = {
    "untagged": lambda request: wire.error_frame(EDGE_ID, wire.split(request).nonce, wire.R_BAD_BODY, "forged"),
    "tagged for another request": lambda request: wire.error_frame(EDGE_ID, bytes(wire.NONCE_BYTES), wire.R_BAD_BODY,
                                                                   "replayed", EDGE_SECRET),
    "tagged, this request": lambda request: wire.error_frame(EDGE_ID, wire.split(request).nonce, wire.R_BAD_BODY,
                                                             "genuine", EDGE_SECRET),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("error", ERRORS)
def test_it_backs_off_long_only_for_the_clouds_own_refusal(error):
    port, served = _free_port(), []
    with pynng.Rep0(listen=f"tcp://127.0.0.1:{port}") as fake:
        thread = threading.Thread(target=_answer_with, args=(fake, ERRORS[error], served), daemon=True)
        thread.start()
        WindowAggregate.objects.create(household="h", window_start=1_577_142_000_000,
                                       window_end=1_577_142_005_000, day="2019-12-24", average_w=1.0, readings=1)
        sender = Sender(edge_id=EDGE_ID, secret=EDGE_SECRET, address=f"tcp://127.0.0.1:{port}", batch=10,
                        in_flight=1, ack_timeout_ms=3000)
        EdgeStatus.objects.filter(edge_id=EDGE_ID).update(connected=True)
        try:
            assert wait_for(lambda: sender.handle_one_round() == 0 and served, timeout=15)
            paused = sender.pause_until - time.monotonic()
        finally:
            sender.close()
            fake.close()
            thread.join(5)
    row = WindowAggregate.objects.get()
    assert row.status == Status.PENDING and sender.totals["acked"] == 0
    if error == "tagged, this request":
        assert row.refusal == wire.R_BAD_BODY and row.next_attempt_at is not None  # backs off, up to the most
    else:
        assert row.next_attempt_at is None and row.refusal == ""  # nothing recorded against the tuple
        assert 0 < paused <= UNTRUSTED_PAUSE_SECONDS < MAX_BACKOFF_SECONDS / 100
